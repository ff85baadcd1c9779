// The contract between the dataset half of src/data (registry, loaders, aligners) and the
// template/processor half: LLaMA-Factory's aligned example (`data/converter.py`) and the rows its
// stage processors emit (`data/processor/*.py`), as plain JS arrays.

export type Role = "user" | "assistant" | "system" | "function" | "observation";

export interface Message {
  role: Role;
  content: string;
}

/** One row after alignment. For pre-training the text is `_prompt[0].content` and `_response` is []. */
export interface AlignedExample {
  /** Alternating user/assistant turns ending with a user (or observation) turn. */
  _prompt: Message[];
  /** [] unsupervised, [answer] sft, [chosen, rejected] pairwise, [answer, ""] / ["", answer] kto. */
  _response: Message[];
  _system: string;
  /** JSON string of tool definitions, "" when none. */
  _tools: string;
  _kto_tag?: boolean | null;
}

/** Label value the loss ignores (PyTorch's cross-entropy default, LLaMA-Factory's IGNORE_INDEX). */
export const IGNORE_INDEX = -100;

/** pt, sft, unsupervised (ppo / predict): LLaMA-Factory's `input_ids`, `attention_mask`, `labels`. */
export interface SupervisedRow {
  input_ids: number[];
  attention_mask: number[];
  labels: number[];
}

/**
 * A packed sft row (`packing` / `neat_packing`): several examples in one row of `cutoff_len + 1`
 * tokens. `attention_mask` is 1 everywhere with plain packing; with neat packing it holds the
 * 1-based sub-sequence index (0 on padding) so the collator can forbid attention across examples.
 */
export interface PackedRow extends SupervisedRow {
  position_ids: number[];
  /** Cumulative token offsets of the sub-sequences (neat packing only), e.g. [0, 100, 250, 512]. */
  sequence_boundaries?: number[];
}

export interface PairwiseRow {
  chosen_input_ids: number[];
  chosen_attention_mask: number[];
  chosen_labels: number[];
  rejected_input_ids: number[];
  rejected_attention_mask: number[];
  rejected_labels: number[];
}

export interface FeedbackRow extends SupervisedRow {
  kl_input_ids: number[];
  kl_attention_mask: number[];
  kl_labels: number[];
  kto_tags: boolean;
}

/** An example a processor left out, by its index in the batch it was given. */
export interface DroppedExample {
  index: number;
  reason: string;
}

export interface ProcessorResult<Row> {
  rows: Row[];
  dropped: DroppedExample[];
}
