// Loads the native addon (native/build/Release/lmfactory.node). Only src/torch/ imports this.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
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

/** The hand-written part of the addon (native/src/addon.cc, autograd.cc, serialization.cc). */
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
}

export type Native = NativeOps & NativeCore;

const addonPath = join(dirname(fileURLToPath(import.meta.url)), "../../native/build/Release/lmfactory.node");

function load(): Native {
  if (!existsSync(addonPath)) {
    throw new UserError("the native engine is not built", addonPath, "run `npm run setup` from the lmfactory folder");
  }
  return createRequire(import.meta.url)(addonPath) as Native;
}

export const native: Native = load();
