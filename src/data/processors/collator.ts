// Batch padding, after transformers' DataCollatorForSeq2Seq as LLaMA-Factory uses it
// (`data/collator.py`): pad to the batch's longest row, rounded up to `padToMultipleOf`, on the
// left or right; attention 0 and labels IGNORE_INDEX (or the pad id) on padding. Pairwise batches
// put all chosen rows before all rejected ones; KTO batches carry the KL rows alongside. Plain
// arrays out: the trainer makes the tensors.
import { IGNORE_INDEX, type FeedbackRow, type PackedRow, type PairwiseRow, type SupervisedRow } from "../types.ts";

export interface PadOptions {
  padTokenId: number;
  /** IGNORE_INDEX with `ignore_pad_token_for_loss` (default), else the pad id. */
  labelPadTokenId?: number;
  padToMultipleOf?: number | null;
  paddingSide?: "left" | "right";
}

export interface Batch {
  input_ids: number[][];
  attention_mask: number[][];
  labels: number[][];
  /** Packed rows only: positions restart at 0 in each packed example. */
  position_ids?: number[][];
}

function targetLength(lengths: number[], multiple: number | null | undefined): number {
  const longest = Math.max(0, ...lengths);
  return multiple ? Math.ceil(longest / multiple) * multiple : longest;
}

function pad(row: readonly number[], length: number, value: number, side: "left" | "right"): number[] {
  const fill = new Array<number>(Math.max(0, length - row.length)).fill(value);
  return side === "left" ? [...fill, ...row] : [...row, ...fill];
}

export function collateSupervised(rows: ReadonlyArray<SupervisedRow | PackedRow>, options: PadOptions): Batch {
  const side = options.paddingSide ?? "right";
  const labelPad = options.labelPadTokenId ?? IGNORE_INDEX;
  const length = targetLength(rows.map((row) => row.input_ids.length), options.padToMultipleOf);
  const batch: Batch = {
    input_ids: rows.map((row) => pad(row.input_ids, length, options.padTokenId, side)),
    attention_mask: rows.map((row) => pad(row.attention_mask, length, 0, side)),
    labels: rows.map((row) => pad(row.labels, length, labelPad, side)),
  };
  if (rows.length > 0 && rows.every((row) => "position_ids" in row)) {
    batch.position_ids = rows.map((row) => pad((row as PackedRow).position_ids, length, 0, side));
  }
  return batch;
}

/** Chosen rows then rejected rows in one batch of 2B (LLaMA-Factory's PairwiseDataCollatorWithPadding). */
export function collatePairwise(rows: readonly PairwiseRow[], options: PadOptions): Batch {
  const chosen = rows.map((row) => ({ input_ids: row.chosen_input_ids, attention_mask: row.chosen_attention_mask, labels: row.chosen_labels }));
  const rejected = rows.map((row) => ({ input_ids: row.rejected_input_ids, attention_mask: row.rejected_attention_mask, labels: row.rejected_labels }));
  return collateSupervised([...chosen, ...rejected], options);
}

export interface FeedbackBatch extends Batch {
  kl_input_ids: number[][];
  kl_attention_mask: number[][];
  kl_labels: number[][];
  kto_tags: boolean[];
}

/** The target rows and the KL rows, each padded on its own (LLaMA-Factory's KTODataCollatorWithPadding). */
export function collateFeedback(rows: readonly FeedbackRow[], options: PadOptions): FeedbackBatch {
  const target = collateSupervised(rows, options);
  const kl = collateSupervised(
    rows.map((row) => ({ input_ids: row.kl_input_ids, attention_mask: row.kl_attention_mask, labels: row.kl_labels })),
    options,
  );
  return {
    ...target,
    kl_input_ids: kl.input_ids,
    kl_attention_mask: kl.attention_mask,
    kl_labels: kl.labels,
    kto_tags: rows.map((row) => row.kto_tags),
  };
}

/**
 * Which positions a query may attend to in a neat-packed row (attention_mask holding sub-sequence
 * indices, 0 on padding): causal and within its own sub-sequence; padding attends to nothing.
 * allowed[q][k] — LLaMA-Factory's `prepare_4d_attention_mask`, as booleans.
 */
export function neatPackingAllowed(segmentIds: readonly number[]): boolean[][] {
  return segmentIds.map((segment, query) =>
    segmentIds.map((other, key) => segment !== 0 && key <= query && other === segment),
  );
}
