// Automatic mixed precision, as torch.autocast (torch/amp/autocast_mode.py): inside `autocast(fn)`
// libtorch's own autocast dispatch casts the inputs of the ops on its lists (linear, matmul, bmm,
// ... to bfloat16; losses such as cross_entropy to float32), so float32 weights stay float32 and
// receive float32 gradients. Backward should run outside the scope, as PyTorch recommends.
import { type DType, SCALAR_TYPE, dtypeFromCode } from "./dtype.ts";
import { native } from "./native.ts";

export type AutocastDevice = "cpu" | "cuda";

export interface AutocastState {
  enabled: boolean;
  dtype: DType;
}

/** "cuda:1" -> "cuda"; autocast is per device type, as in PyTorch. */
export function autocastDeviceOf(device: string): AutocastDevice {
  return device.startsWith("cuda") ? "cuda" : "cpu";
}

/** Whether autocast is on for `device`, and its dtype. */
export function autocastState(device: AutocastDevice = "cpu"): AutocastState {
  const state = native.autocast_state(device);
  return { enabled: state.enabled, dtype: dtypeFromCode(state.dtype) };
}

/**
 * Runs `fn` under autocast to `dtype` on `device` (torch.autocast(device, dtype)); `enabled: false`
 * turns it off inside (torch.autocast(..., enabled=False)). Weights cast during the outermost scope
 * are cached until it ends, as in PyTorch. Nesting restores the outer state on exit, even on a throw.
 */
export function autocast<T>(fn: () => T, options: { device?: AutocastDevice; dtype?: DType; enabled?: boolean } = {}): T {
  const device = options.device ?? "cpu";
  const dtype = options.dtype ?? (device === "cpu" ? "bfloat16" : "float16");
  if (dtype !== "bfloat16" && dtype !== "float16") throw new Error(`autocast: dtype must be bfloat16 or float16, got ${dtype}`);
  const previous = native.autocast_enter(device, options.enabled ?? true, SCALAR_TYPE[dtype]);
  try {
    return fn();
  } finally {
    native.autocast_exit(device, previous.enabled, previous.dtype);
  }
}

/** `fn` under `state` (a state read earlier, e.g. by gradient checkpointing for its recomputation). */
export function withAutocastState<T>(device: AutocastDevice, state: AutocastState, fn: () => T): T {
  return autocast(fn, { device, dtype: state.dtype, enabled: state.enabled });
}

/** What a training pass autocasts to (the trainer's bf16), or null for none. */
export interface AutocastSpec {
  device: AutocastDevice;
  dtype: DType;
}

/** `fn` under autocast when `spec` is given, as is otherwise. */
export function autocastIf<T>(spec: AutocastSpec | null | undefined, fn: () => T): T {
  return spec ? autocast(fn, spec) : fn();
}
