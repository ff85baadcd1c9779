// Loads the native addon (native/build/Release/lmfactory.node). Only src/torch/ imports this.
import { createRequire } from "node:module";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { UserError } from "../errors.ts";
import type { NativeOps } from "./native_ops.d.ts";

export interface BuildInfo {
  torch_version: string;
  config: string;
  parallel: string;
  cuda_available: boolean;
  cuda_device_count: number;
  num_threads: number;
}

/** The hand-written part of the addon (native/src/addon.cc, autograd.cc, serialization.cc, autocast.cc, rows_linear.cc). */
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
  autocast_state(deviceType: "cpu" | "cuda"): { enabled: boolean; dtype: number };
  autocast_enter(deviceType: "cpu" | "cuda", enabled: boolean, dtype: number): { enabled: boolean; dtype: number };
  autocast_exit(deviceType: "cpu" | "cuda", previousEnabled: boolean, previousDtype: number): void;
  rows_linear(input: number, weight: number, bias: number | null): number;
  rows_linear_invariant(): boolean;
}

export type Native = NativeOps & NativeCore;

const buildFolder = join(dirname(fileURLToPath(import.meta.url)), "../../native/build");
const addonPath = join(buildFolder, "Release/lmfactory.node");

/** Why OMP_WAIT_POLICY is what it is, for `lmf env`; null when lmfactory left it alone. */
export let threadPoolNote: string | null = null;

/**
 * libtorch runs elementwise ops on an OpenMP pool whose idle threads spin for a while (libgomp:
 * 300k rounds) waiting for the next parallel region; OpenBLAS built on pthreads keeps a pool of its
 * own for matmuls. With one thread per core, each pool's spinning takes the cores the other needs
 * (a Llama forward measured 2.2x slower here). So, unless the user chose a policy, idle OpenMP
 * threads sleep. libgomp reads the variable once, when libtorch loads, hence before `load`.
 */
function settleThreadPools(): void {
  if (process.env.OMP_WAIT_POLICY !== undefined || process.env.GOMP_SPINCOUNT !== undefined) return;
  let blas: string[] = [];
  try {
    blas = (JSON.parse(readFileSync(join(buildFolder, "libtorch.json"), "utf8")) as { blas?: string[] }).blas ?? [];
  } catch {
    return; // not built yet: load() says so
  }
  if (blas.some((path) => /openblas/i.test(path) && !/openmp/i.test(path))) {
    process.env.OMP_WAIT_POLICY = "PASSIVE";
    threadPoolNote = "OMP_WAIT_POLICY=PASSIVE set by lmfactory (OpenBLAS has its own thread pool)";
  }
}

function load(): Native {
  if (!existsSync(addonPath)) {
    throw new UserError("the native engine is not built", addonPath, "run `npm run setup` from the lmfactory folder");
  }
  settleThreadPools();
  return createRequire(import.meta.url)(addonPath) as Native;
}

export const native: Native = load();
