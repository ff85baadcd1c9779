// Gradient clipping as torch.nn.utils.clip_grad_norm_ (torch 1.13): the total norm is the norm of
// the per-tensor norms, and every gradient is scaled in place by min(1, maxNorm / (total + 1e-6)).
import { noGrad } from "../autograd.ts";
import { fullLike } from "../creation.ts";
import { stack } from "../functional.ts";
import { tidy } from "../scope.ts";
import { Tensor } from "../tensor.ts";

/** Clips the gradients of `parameters` in place; returns the total norm before clipping. */
export function clipGradNorm(parameters: Iterable<Tensor>, maxNorm: number, normType = 2): number {
  return tidy(() =>
    noGrad(() => {
      const grads: Tensor[] = [];
      for (const tensor of parameters) {
        const grad = tensor.grad;
        if (grad) grads.push(grad);
      }
      if (grads.length === 0) return 0;
      let total: Tensor;
      if (normType === Infinity) {
        const maxima = grads.map((grad) => grad.abs().max());
        total = maxima.length === 1 ? maxima[0]! : stack(maxima).max();
      } else {
        total = stack(grads.map((grad) => grad.norm(normType))).norm(normType);
      }
      // The coefficient is computed as a tensor, as torch does, so the scaled grads match bit for bit.
      const coefficient = fullLike(total, maxNorm).div(total.add(1e-6)).clamp(null, 1);
      for (const grad of grads) grad.mul_(coefficient);
      return total.item();
    }),
  );
}
