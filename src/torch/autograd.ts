// Autograd is libtorch's: grad mode switches and torch.autograd.grad. `autogradGrad` lets
// gradient checkpointing recompute a segment's forward and backpropagate through it here.
import { native } from "./native.ts";
import { Tensor } from "./tensor.ts";

/** Runs `fn` with gradient recording off (torch.no_grad). */
export function noGrad<T>(fn: () => T): T {
  const previous = native.set_grad_enabled(false);
  try {
    return fn();
  } finally {
    native.set_grad_enabled(previous);
  }
}

/** Runs `fn` with gradient recording on, even inside `noGrad` (torch.enable_grad). */
export function enableGrad<T>(fn: () => T): T {
  const previous = native.set_grad_enabled(true);
  try {
    return fn();
  } finally {
    native.set_grad_enabled(previous);
  }
}

export function isGradEnabled(): boolean {
  return native.is_grad_enabled();
}

/**
 * torch.autograd.grad: the gradients of `outputs` (weighted by `gradOutputs`) with respect to
 * `inputs`, returned rather than accumulated into `.grad`; null for an input not used when
 * `allowUnused`.
 */
export function autogradGrad(
  outputs: Tensor[],
  inputs: Tensor[],
  gradOutputs: Tensor[],
  options: { retainGraph?: boolean; allowUnused?: boolean } = {},
): (Tensor | null)[] {
  const ids = native.autograd_grad(
    outputs.map((t) => t.id),
    inputs.map((t) => t.id),
    gradOutputs.map((t) => t.id),
    options.retainGraph ?? false,
    options.allowUnused ?? false,
  );
  return ids.map((id) => (id === null ? null : new Tensor(id)));
}
