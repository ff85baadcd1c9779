// The causal-LM loss shared by pt and sft (transformers' ForCausalLMLoss): position t predicts
// label t + 1, summed over trained tokens and divided by the trained tokens of the accumulated batch.
import { collateSupervised } from "../../data/processors/collator.ts";
import { IGNORE_INDEX } from "../../data/types.ts";
import { type Tensor, cat, crossEntropy, full, noGrad, tidy } from "../../torch/index.ts";
import type { CollatedBatch, Stage } from "./stage.ts";

/** Trained tokens of a batch: labels after the shift (position t predicts t+1) that count. */
export function countTrainedTokens(labels: number[][]): number {
  let count = 0;
  for (const row of labels) for (let t = 1; t < row.length; t++) if (row[t] !== IGNORE_INDEX) count++;
  return count;
}

/**
 * Sum of the token losses of one micro-batch divided by `denominator` (the trained tokens of the
 * whole accumulated batch), so that summed over micro-batches it is the mean over all of them.
 * The labels are shifted left and the last position gets IGNORE_INDEX, as transformers'
 * ForCausalLMLoss does, so the logits [B, T, V] enter the loss as a view, not as a copy of all
 * but their last column (the largest tensor of a step).
 */
export function causalLmLoss(labels: Tensor, denominator: number) {
  return (logits: Tensor): Tensor =>
    tidy(() => {
      const [B, V] = [logits.shape[0]!, logits.shape[2]!];
      const shifted = cat([labels.slice(1, 1), full([B, 1], IGNORE_INDEX, { dtype: "int64", device: labels.device })], 1); // [B, T]
      return crossEntropy(logits.reshape(-1, V).to("float32"), shifted.reshape(-1), { reduction: "sum", ignoreIndex: IGNORE_INDEX }).div(Math.max(denominator, 1));
    });
}

/**
 * LLaMA-Factory's ComputeAccuracy (train/sft/metric.py): per example, the share of trained tokens
 * whose argmax prediction at t - 1 equals the label at t; `record` averages over examples.
 * An example with no trained token has no accuracy and is left out.
 */
export function recordTokenAccuracy(logits: Tensor, labels: number[][], record: (name: string, value: number) => void): void {
  const predictions = noGrad(() => tidy(() => logits.argmax(-1).toArray())) as number[][]; // [B, T]
  labels.forEach((row, b) => {
    let counted = 0;
    let correct = 0;
    for (let t = 1; t < row.length; t++) {
      if (row[t] === IGNORE_INDEX) continue;
      counted++;
      if (predictions[b]![t - 1] === row[t]) correct++;
    }
    if (counted > 0) record("accuracy", correct / counted);
  });
}

/** The parts pt and sft share: padded batches, the causal-LM loss, perplexity, effective tokens. */
export const languageModeling: Pick<Stage<CollatedBatch>, "collate" | "lossDenominator" | "loss" | "evalMetrics" | "effectiveTokens"> = {
  collate: (rows, options) => collateSupervised(rows, options),
  lossDenominator: (batches) => batches.reduce((sum, batch) => sum + countTrainedTokens(batch.labels), 0),
  // The logits and their float copy are freed before backward, which does not need them.
  loss: ({ model, hidden, labels, batch, denominator, record, predictionMetrics }) =>
    tidy(() => {
      const logits = model.logits(hidden);
      if (predictionMetrics) recordTokenAccuracy(logits, batch.labels, record);
      return causalLmLoss(labels, denominator)(logits);
    }),
  evalMetrics: (evalLoss) => ({ perplexity: Math.exp(evalLoss) }),
  effectiveTokens: (rows) => rows.reduce((sum, row) => sum + row.input_ids.length, 0),
};
