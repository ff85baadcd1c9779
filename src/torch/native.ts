// Loads the native addon (Release/lmfactory.node in the build folder addon_paths.ts finds: the
// package's native/build or the per-user cache `lmf setup` builds into). Only src/torch/ imports this.
import { createRequire } from "node:module";
import { UserError } from "../errors.ts";
import { addonFile, findAddonBuild, readStamp } from "./addon_paths.ts";
import type { NativeOps } from "./native_ops.d.ts";

export interface BuildInfo {
  torch_version: string;
  config: string;
  parallel: string;
  cuda_available: boolean;
  cuda_device_count: number;
  num_threads: number;
}

/** The hand-written part of the addon (native/src/addon.cc, autograd.cc, serialization.cc, distributed.cc, quant.cc, autocast.cc, rows_linear.cc). */
export interface NativeCore {
  dispose(id: number): boolean;
  live_count(): number;
  from_buffer(bytes: ArrayBufferView | ArrayBuffer, shape: number[], dtype: number): number;
  to_buffer(id: number): ArrayBuffer;
  manual_seed(seed: number): void;
  rng_state(): number;
  set_rng_state(id: number): void;
  set_num_threads(threads: number): void;
  get_num_threads(): number;
  build_info(): BuildInfo;
  sdpa(query: number, key: number, value: number, mask: number | null, dropoutP: number, isCausal: boolean): number;
  backward(output: number, gradient: number | null, retainGraph: boolean): void;
  autograd_grad(outputs: number[], inputs: number[], gradOutputs: number[], retainGraph: boolean, allowUnused: boolean): (number | null)[];
  set_grad(id: number, grad: number | null): void;
  set_grad_enabled(enabled: boolean): boolean;
  is_grad_enabled(): boolean;
  pickle_save(names: string[], tensors: number[], path: string): void;
  pickle_load(path: string): { names: string[]; tensors: number[] };
  dist_available(): boolean;
  dist_init?(rank: number, worldSize: number, masterAddr: string, masterPort: number, timeoutMs: number): void;
  dist_all_reduce?(tensors: number[], op: number): void;
  dist_broadcast?(tensors: number[], root: number): void;
  dist_all_gather?(tensor: number): number[];
  dist_barrier?(): void;
  dist_destroy?(): void;
  read_tensor(fd: number, position: number, shape: number[], dtype: number): [number, number];
  quantize_4bit(a: number, blocksize: number, nf4: boolean): number[];
  quantize_blockwise(a: number, code: number, blocksize: number): number[];
  dequantize(levels: number, table: number, scale: number, zero: number | null, bits: number, blocksize: number, numel: number, dtype: number, composed: boolean): number;
  packed_linear(x: number, levels: number, table: number, scale: number, zero: number | null, bits: number, blocksize: number, out: number, inFeatures: number, composed: boolean): number;
  autocast_state(deviceType: "cpu" | "cuda"): { enabled: boolean; dtype: number };
  autocast_enter(deviceType: "cpu" | "cuda", enabled: boolean, dtype: number): { enabled: boolean; dtype: number };
  autocast_exit(deviceType: "cpu" | "cuda", previousEnabled: boolean, previousDtype: number): void;
  rows_linear(input: number, weight: number, bias: number | null): number;
  rows_linear_invariant(): boolean;
}

export type Native = NativeOps & NativeCore;

/** Why OMP_WAIT_POLICY is what it is, for `lmf env`; null when lmfactory left it alone. */
export let threadPoolNote: string | null = null;

/**
 * libtorch runs elementwise ops on an OpenMP pool whose idle threads spin for a while (libgomp:
 * 300k rounds) waiting for the next parallel region; OpenBLAS built on pthreads keeps a pool of its
 * own for matmuls. With one thread per core, each pool's spinning takes the cores the other needs
 * (a Llama forward measured 2.2x slower here). So, unless the user chose a policy, idle OpenMP
 * threads sleep. libgomp reads the variable once, when libtorch loads, hence before `load`.
 */
function settleThreadPools(build: string): void {
  if (process.env.OMP_WAIT_POLICY !== undefined || process.env.GOMP_SPINCOUNT !== undefined) return;
  const blas = readStamp(build)?.blas ?? [];
  if (blas.some((path) => /openblas/i.test(path) && !/openmp/i.test(path))) {
    process.env.OMP_WAIT_POLICY = "PASSIVE";
    threadPoolNote = "OMP_WAIT_POLICY=PASSIVE set by lmfactory (OpenBLAS has its own thread pool)";
  }
}

/** The build folder the engine was loaded from (`lmf env` shows it). */
export let addonBuild = "";

function load(): Native {
  const found = findAddonBuild();
  if (found.build === null && found.mismatch) {
    throw new UserError(
      `the native engine was built against ${found.mismatch.source}, not LIBTORCH=${process.env.LIBTORCH}`,
      found.mismatch.build,
      "run `lmf setup` to build it for this LIBTORCH, or unset LIBTORCH",
    );
  }
  if (found.build === null) {
    throw new UserError(`the native engine is not built (looked in ${found.looked.join(", ")})`, undefined, "run `lmf setup`: it finds or installs libtorch and builds the engine");
  }
  addonBuild = found.build;
  settleThreadPools(found.build);
  return createRequire(import.meta.url)(addonFile(found.build)) as Native;
}

export const native: Native = load();
