// Functional ops over several tensors and the nn functions (torch.nn.functional's names): cat,
// stack, where, linear, embedding, dropout, cross-entropy, MSE.
import { native } from "./native.ts";
import { tidy } from "./scope.ts";
import { REDUCTION, type Reduction, Tensor } from "./tensor.ts";

// --- several tensors ---------------------------------------------------------------------------

export function cat(tensors: Tensor[], dim = 0): Tensor {
  return new Tensor(native.cat(tensors.map((t) => t.id), dim));
}
export function stack(tensors: Tensor[], dim = 0): Tensor {
  return new Tensor(native.stack(tensors.map((t) => t.id), dim));
}
/** Elementwise `condition ? a : b`. */
export function where(condition: Tensor, a: Tensor, b: Tensor): Tensor {
  return new Tensor(native.where(condition.id, a.id, b.id));
}

// --- functional nn ops ----------------------------------------------------------------------

/** Rows up to which `batchInvariant` sends a linear layer to the row kernel (a decode step's batch). */
export const INVARIANT_ROWS = 16;
let invariantDepth = 0;

/**
 * Runs `fn` (generation's forward passes) with its small float32 CPU linear layers, up to
 * INVARIANT_ROWS rows, on the addon's row kernel: each output row is computed in an order that
 * does not depend on the other rows, so a sequence decoded in a batch gets the very logits it
 * gets alone (BLAS gemm/gemv choose kernels by size, and round differently). No autograd.
 */
export function batchInvariant<T>(fn: () => T): T {
  invariantDepth++;
  try {
    return fn();
  } finally {
    invariantDepth--;
  }
}

/** `input @ weight.T + bias`, input [..., in], weight [out, in]. */
export function linear(input: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  const inFeatures = weight.shape[1]!;
  if (invariantDepth > 0 && weight.ndim === 2 && input.numel <= INVARIANT_ROWS * inFeatures && input.dtype === "float32" && weight.dtype === "float32" && input.device === "cpu") {
    return tidy(() => {
      const rows = input.reshape([-1, inFeatures]);
      const out = new Tensor(native.rows_linear(rows.id, weight.id, bias ? bias.id : null));
      return out.view(...input.shape.slice(0, -1), weight.shape[0]!);
    });
  }
  if (weight.ndim === 2 && input.ndim >= 1 && input.numel === inFeatures) {
    // A single row (decoding one token): libtorch's addmm hands M = 1 to sgemm, which packs the
    // whole weight on every call; gemv reads it once, about twice as fast per token.
    return tidy(() => {
      const row = input.reshape([inFeatures]);
      const out = bias ? new Tensor(native.addmv(bias.id, weight.id, row.id)) : weight.mv(row);
      return out.view(...input.shape.slice(0, -1), weight.shape[0]!);
    });
  }
  return new Tensor(native.linear(input.id, weight.id, bias ? bias.id : null));
}

/** Rows of `weight` [V, E] picked by `indices` (int64, any shape) -> [..., E]. */
export function embedding(weight: Tensor, indices: Tensor, paddingIdx = -1): Tensor {
  return new Tensor(native.embedding(weight.id, indices.id, paddingIdx));
}

export function dropout(input: Tensor, p: number, training: boolean): Tensor {
  if (!training || p === 0) return input;
  return new Tensor(native.dropout(input.id, p, training));
}

export interface CrossEntropyOptions {
  ignoreIndex?: number;
  reduction?: Reduction;
  labelSmoothing?: number;
  weight?: Tensor | null;
}

/** torch.nn.functional.cross_entropy: logits [N, C] (or [N, C, ...]), target int64 [N]. */
export function crossEntropy(logits: Tensor, target: Tensor, options: CrossEntropyOptions = {}): Tensor {
  return new Tensor(
    native.cross_entropy(
      logits.id,
      target.id,
      options.weight ? options.weight.id : null,
      REDUCTION[options.reduction ?? "mean"],
      options.ignoreIndex ?? -100,
      options.labelSmoothing ?? 0,
    ),
  );
}

export function mseLoss(input: Tensor, target: Tensor, reduction: Reduction = "mean"): Tensor {
  return new Tensor(native.mse_loss(input.id, target.id, REDUCTION[reduction]));
}

/** `base ** exponent` elementwise, for a number base (RoPE frequencies). */
export function powScalarBase(base: number, exponent: Tensor): Tensor {
  return new Tensor(native.pow_scalar_base(base, exponent.id));
}
