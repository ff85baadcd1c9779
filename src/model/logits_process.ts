// Logits processors and warpers for generation, following transformers' generation/logits_process.py:
// RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper
// (min_tokens_to_keep = 1, filter value -inf). Each takes scores [B, V] and returns new scores [B, V].
import { type Tensor, arange, tensor, where } from "../torch/index.ts";

/**
 * RepetitionPenaltyLogitsProcessor: every token already in a row (prompt + generated) has its
 * score divided by `penalty` when positive and multiplied by it when negative.
 * `tokenIds` holds each row's tokens without padding; rows must not be empty.
 */
export function applyRepetitionPenalty(scores: Tensor, tokenIds: number[][], penalty: number): Tensor {
  if (penalty === 1) return scores;
  const width = Math.max(...tokenIds.map((row) => row.length));
  // Rows differ in length: a short row is filled with its own last token, and a repeated index
  // writes the same value twice, so the scatter stays exact.
  const rows = tokenIds.map((row) => {
    if (row.length === 0) throw new Error("applyRepetitionPenalty: a row has no tokens");
    return [...row, ...new Array<number>(width - row.length).fill(row[row.length - 1]!)];
  });
  const index = tensor(rows, { dtype: "int64", device: scores.device }); // [B, L]
  const picked = scores.gather(1, index); // [B, L]
  const penalized = where(picked.lt(0), picked.mul(penalty), picked.div(penalty));
  return scores.scatter(1, index, penalized);
}

/** TemperatureLogitsWarper: scores / temperature. */
export function applyTemperature(scores: Tensor, temperature: number): Tensor {
  if (!(temperature > 0)) throw new Error(`temperature must be > 0 (got ${temperature})`);
  return temperature === 1 ? scores : scores.div(temperature);
}

/** TopKLogitsWarper: everything below the k-th largest score of its row becomes -inf (ties kept). */
export function applyTopK(scores: Tensor, topK: number): Tensor {
  const V = scores.shape[1]!;
  const k = Math.min(Math.max(topK, 1), V);
  const kth = scores.topk(k, 1).values.narrow(1, k - 1, 1); // [B, 1]
  return scores.maskedFill(scores.lt(kth), -Infinity);
}

/**
 * TopPLogitsWarper: sort ascending, drop the tokens whose cumulative probability stays ≤ 1 - top_p
 * (the low tail), always keeping the most likely token.
 */
export function applyTopP(scores: Tensor, topP: number): Tensor {
  const V = scores.shape[1]!;
  const { values: sorted, indices } = scores.sort(1, false); // [B, V] ascending
  const cumulative = sorted.softmax(1).cumsum(1);
  const notLast = arange(0, V, 1, { device: scores.device }).lt(V - 1).view(1, V);
  const removeSorted = cumulative.le(1 - topP).logicalAnd(notLast); // [B, V] in sorted order
  const remove = removeSorted.scatter(1, indices, removeSorted); // back to vocabulary order
  return scores.maskedFill(remove, -Infinity);
}

/** The warpers HF applies when sampling, in its order; each only when it changes something. */
export function warpForSampling(scores: Tensor, temperature: number, topK: number, topP: number): Tensor {
  let out = applyTemperature(scores, temperature);
  if (topK > 0) out = applyTopK(out, topK);
  if (topP < 1) out = applyTopP(out, topP);
  return out;
}
