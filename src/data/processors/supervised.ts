// The sft processor, after LLaMA-Factory's `data/processor/supervised.py`: multi-turn examples
// become input_ids + labels with the prompt masked (IGNORE_INDEX), `train_on_prompt`,
// `mask_history`, efficient EOS and `cutoff_len` truncation; and the packed variant
// (`packing` / `neat_packing`) that fills rows of `cutoff_len + 1` tokens by greedy knapsack.
import type { Tokenizer } from "../tokenizer.ts";
import type { ChatTemplate } from "../templates/template.ts";
import { type AlignedExample, type DroppedExample, IGNORE_INDEX, type PackedRow, type ProcessorResult, type SupervisedRow } from "../types.ts";
import { greedyKnapsack, ignored, inferSeqlen, ones } from "./utils.ts";

export interface SupervisedOptions {
  template: ChatTemplate;
  tokenizer: Tokenizer;
  /** DataArguments `cutoff_len` as LLaMA-Factory holds it (already reduced by 1 at parse time when packing). */
  cutoffLen: number;
  trainOnPrompt?: boolean;
  maskHistory?: boolean;
  reservedLabelLen?: number;
}

export interface PackedSupervisedOptions extends SupervisedOptions {
  neatPacking?: boolean;
}

/** Why an sft example is unusable, or null (LLaMA-Factory: an odd number of prompt messages and exactly one response). */
export function invalidSupervised(example: AlignedExample): string | null {
  if (example._prompt.length % 2 !== 1) return `the prompt has ${example._prompt.length} messages; it needs an odd number (user, assistant, ..., user)`;
  if (example._response.length !== 1) return `the example has ${example._response.length} responses; sft needs exactly one`;
  return null;
}

/** input_ids and labels of one valid example. */
export function encodeSupervisedExample(example: AlignedExample, options: SupervisedOptions): { input_ids: number[]; labels: number[] } {
  const { template, tokenizer, cutoffLen } = options;
  const trainOnPrompt = options.trainOnPrompt ?? false;
  const maskHistory = options.maskHistory ?? false;
  const messages = [...example._prompt, ...example._response];
  let pairs = template.encodeMultiturn(tokenizer, messages, example._system, example._tools, {
    discardingHistoryCot: maskHistory && !template.preserveThinking,
  });
  const eos = tokenizer.eosTokenId;
  if (template.efficientEos && eos === null) throw new Error("efficient-EOS template with a tokenizer without EOS (fixSpecialTokens was not run)");
  let totalLength = template.efficientEos ? 1 : 0;
  // With mask_history the latest turns are kept first when the cutoff bites.
  if (maskHistory) pairs = [...pairs].reverse();
  let inputIds: number[] = [];
  let labels: number[] = [];
  for (const [turn, [fullSource, fullTarget]] of pairs.entries()) {
    if (totalLength >= cutoffLen) break;
    const [sourceLen, targetLen] = inferSeqlen(fullSource.length, fullTarget.length, cutoffLen - totalLength, options.reservedLabelLen);
    const source = fullSource.slice(0, sourceLen);
    const target = fullTarget.slice(0, targetLen);
    totalLength += sourceLen + targetLen;
    let sourceLabel: number[];
    if (trainOnPrompt) sourceLabel = source;
    // Efficient EOS: the previous answer's EOS is taught at the first token of the next prompt.
    else if (template.efficientEos && turn !== 0) sourceLabel = [eos!, ...ignored(sourceLen - 1)];
    else sourceLabel = ignored(sourceLen);
    const targetLabel = maskHistory && turn !== 0 ? ignored(targetLen) : target;
    if (maskHistory) {
      inputIds = [...source, ...target, ...inputIds];
      labels = [...sourceLabel, ...targetLabel, ...labels];
    } else {
      inputIds.push(...source, ...target);
      labels.push(...sourceLabel, ...targetLabel);
    }
  }
  if (template.efficientEos) {
    inputIds.push(eos!);
    labels.push(eos!);
  }
  return { input_ids: inputIds, labels };
}

export function processSupervised(examples: readonly AlignedExample[], options: SupervisedOptions): ProcessorResult<SupervisedRow> {
  const rows: SupervisedRow[] = [];
  const dropped: DroppedExample[] = [];
  examples.forEach((example, index) => {
    const problem = invalidSupervised(example);
    if (problem) {
      dropped.push({ index, reason: problem });
      return;
    }
    const { input_ids, labels } = encodeSupervisedExample(example, options);
    rows.push({ input_ids, attention_mask: ones(input_ids.length), labels });
  });
  return { rows, dropped };
}

/**
 * Packs examples into rows of exactly `cutoffLen + 1` tokens. Examples longer than `cutoffLen`
 * are dropped; position ids restart at 0 in every sub-sequence; with neat packing the attention
 * mask holds the sub-sequence index (1, 2, ...) and 0 on padding.
 */
export function processPackedSupervised(examples: readonly AlignedExample[], options: PackedSupervisedOptions): ProcessorResult<PackedRow> {
  const { cutoffLen, tokenizer } = options;
  const neat = options.neatPacking ?? false;
  const dropped: DroppedExample[] = [];
  const encoded: Array<{ input_ids: number[]; labels: number[] }> = [];
  const lengthToIndexes = new Map<number, number[]>();
  examples.forEach((example, index) => {
    const problem = invalidSupervised(example);
    if (problem) {
      dropped.push({ index, reason: problem });
      return;
    }
    const row = encodeSupervisedExample(example, options);
    if (row.input_ids.length > cutoffLen) {
      dropped.push({ index, reason: `${row.input_ids.length} tokens, longer than cutoff_len ${cutoffLen}` });
      return;
    }
    const indexes = lengthToIndexes.get(row.input_ids.length) ?? [];
    indexes.push(encoded.length);
    lengthToIndexes.set(row.input_ids.length, indexes);
    encoded.push(row);
  });
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
  const rows: PackedRow[] = [];
  const lengths = encoded.map((row) => row.input_ids.length);
  for (const knapsack of greedyKnapsack(lengths, cutoffLen)) {
    const row: PackedRow = { input_ids: [], attention_mask: [], labels: [], position_ids: [] };
    const boundaries = [0];
    knapsack.forEach((length, sub) => {
      // Equal lengths are taken last-first, as LLaMA-Factory pops them.
      const example = encoded[lengthToIndexes.get(length)!.pop()!]!;
      row.input_ids.push(...example.input_ids);
      row.labels.push(...example.labels);
      row.position_ids.push(...Array.from({ length }, (_, i) => i));
      row.attention_mask.push(...new Array<number>(length).fill(neat ? sub + 1 : 1));
      boundaries.push(boundaries[boundaries.length - 1]! + length);
    });
    const padLength = cutoffLen + 1 - row.input_ids.length;
    if (padLength > 0) {
      row.input_ids.push(...new Array<number>(padLength).fill(padId));
      row.labels.push(...new Array<number>(padLength).fill(IGNORE_INDEX));
      row.position_ids.push(...new Array<number>(padLength).fill(0));
      // Plain packing attends to the padding too (flash-attention then sees no mask at all).
      row.attention_mask.push(...new Array<number>(padLength).fill(neat ? 0 : 1));
      boundaries.push(boundaries[boundaries.length - 1]! + padLength);
    }
    if (neat) row.sequence_boundaries = boundaries;
    rows.push(row);
  }
  return { rows, dropped };
}
