// Sequence log-probabilities of the labelled tokens, LLaMA-Factory's `get_batch_logps`
// (train/trainer_utils.py): position t predicts label t + 1, the log-softmax of the float32 logits
// is summed over the tokens whose label is not IGNORE_INDEX; with `ld_alpha` (LD-DPO) the tokens
// past the shorter answer of a chosen/rejected pair weigh ld_alpha. Used by dpo and kto.
import { IGNORE_INDEX } from "../../data/types.ts";
import type { CausalLM } from "../../model/causal_lm.ts";
import { type Tensor, crossEntropy, tensor, tidy } from "../../torch/index.ts";

/** The rows of a padded batch a model reads: ids, mask, labels (and packed positions). */
export interface LabelledRows {
  input_ids: number[][];
  attention_mask: number[][];
  labels: number[][];
  position_ids?: number[][];
}

export interface SequenceLogProbs {
  /** [N] summed (weighted) log-probabilities of each row's labelled tokens. */
  logps: Tensor;
  /** Labelled tokens of each row after the shift. */
  validLength: number[];
}

/** Labels shifted left by one, IGNORE_INDEX in the last column (the logits then enter as a view). */
function shiftedLabels(labels: number[][]): number[][] {
  return labels.map((row) => [...row.slice(1), IGNORE_INDEX]);
}

/**
 * LD-DPO's token weights over a pairwise batch (chosen rows, then rejected rows): 1 up to the
 * shorter answer of the pair counted from the first labelled token, `ldAlpha` after it, 0 where unlabelled.
 */
function ldWeights(shifted: number[][], validLength: number[], ldAlpha: number): number[][] {
  const pairs = shifted.length / 2;
  return shifted.map((row, i) => {
    const pair = i % pairs;
    const shorter = Math.min(validLength[pair]!, validLength[pair + pairs]!);
    const first = Math.max(0, row.findIndex((label) => label !== IGNORE_INDEX));
    return row.map((label, t) => (label === IGNORE_INDEX ? 0 : t < first + shorter ? 1 : ldAlpha));
  });
}

/**
 * logits [N, T, V] and labels [N][T] -> summed log-probabilities [N] (float32) and the labelled
 * token counts. `ldAlpha` (pairwise batches only) down-weights the verbose tail of the longer answer.
 */
export function sequenceLogProbs(logits: Tensor, labels: number[][], ldAlpha: number | null = null): SequenceLogProbs {
  const shifted = shiftedLabels(labels);
  const validLength = shifted.map((row) => row.reduce((count, label) => count + (label !== IGNORE_INDEX ? 1 : 0), 0));
  const logps = tidy(() => {
    const [N, T, V] = logits.shape as [number, number, number];
    const target = tensor(shifted, { dtype: "int64", device: logits.device }); // [N, T]
    // cross_entropy is -log_softmax gathered at the label, 0 where ignored.
    const tokenLogps = crossEntropy(logits.reshape(-1, V).to("float32"), target.reshape(-1), { reduction: "none", ignoreIndex: IGNORE_INDEX }).neg().view(N, T);
    if (ldAlpha === null) return tokenLogps.sum(-1);
    return tokenLogps.mul(tensor(ldWeights(shifted, validLength, ldAlpha), { dtype: "float32", device: logits.device })).sum(-1);
  });
  return { logps, validLength };
}

/** The attention mask as a tensor, or null when nothing is padded (the fused causal kernel then applies). */
function maskOrNull(attentionMask: number[][], device: string): Tensor | null {
  return attentionMask.every((row) => row.every((v) => v === 1)) ? null : tensor(attentionMask, { device });
}

/** The last hidden states [N, T, C] of `model` over `rows`, as the trainer's forward reads a batch (the caller decides about autograd). */
export function hiddenStatesOf(model: CausalLM, rows: Omit<LabelledRows, "labels">, device: string): Tensor {
  return tidy(() =>
    model.hiddenStates(tensor(rows.input_ids, { device }), {
      attentionMask: maskOrNull(rows.attention_mask, device),
      positionIds: rows.position_ids ? tensor(rows.position_ids, { device }) : null,
    }),
  );
}

/** The float32 logits [N, T, V] of `model` over `rows`. */
export function logitsOf(model: CausalLM, rows: LabelledRows, device: string): Tensor {
  return tidy(() => model.logits(hiddenStatesOf(model, rows, device)).to("float32"));
}

/** Sequence log-probabilities of `rows` under `model`. */
export function modelLogProbs(model: CausalLM, rows: LabelledRows, device: string, ldAlpha: number | null = null): SequenceLogProbs {
  const logits = logitsOf(model, rows, device);
  try {
    return sequenceLogProbs(logits, rows.labels, ldAlpha);
  } finally {
    logits.dispose();
  }
}

/** logps [N] divided by each row's labelled token count (rows with none give 0/0, as in torch). */
export function averaged(logps: Tensor, validLength: number[]): Tensor {
  return tidy(() => logps.div(tensor(validLength, { dtype: "float32", device: logps.device })));
}
