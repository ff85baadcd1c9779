// `lmf data inspect`: the first examples exactly as the trainer will receive them, token by token
// with its id and whether its label is trained (green) or masked (dim), or as JSON for machines,
// plus summary counts. What LLaMA-Factory prints as "training example" at start-up, made browsable.
// Pairwise rows (rm, dpo) show their chosen and rejected sequences; KTO rows their tag, answer and KL row;
// PPO's prompt rows the prompt the policy answers and the dataset's answer, neither trained on.
import type { Tokenizer } from "./tokenizer.ts";
import { type FeedbackRow, IGNORE_INDEX, type PairwiseRow, type SupervisedRow } from "./types.ts";

export interface InspectOptions {
  n: number;
  json: boolean;
  color: boolean;
  cutoffLen: number;
  dropped: number;
  /** PPO's rows (the unsupervised processor): input_ids are the prompt, labels the dataset's answer. */
  prompts?: boolean;
}

export interface InspectSummary {
  examples: number;
  tokens: number;
  trained_tokens: number;
  at_cutoff: number;
  dropped: number;
}

export type InspectedRow = SupervisedRow | PairwiseRow | FeedbackRow;

interface Sequence {
  input_ids: number[];
  labels: number[];
}

const untrained = (ids: number[]): Sequence => ({ input_ids: ids, labels: ids.map(() => IGNORE_INDEX) });

/** The named token sequences of a row: one for sft/pt, chosen and rejected for pairwise, answer and KL for KTO, prompt and answer for PPO. */
function sequencesOf(row: InspectedRow, prompts = false): [name: string, sequence: Sequence][] {
  if (prompts) {
    const { input_ids, labels } = row as SupervisedRow;
    return [
      ["prompt", untrained(input_ids)],
      ["dataset answer (not trained on: PPO answers with the policy)", untrained(labels)],
    ];
  }
  if ("chosen_input_ids" in row) {
    return [
      ["chosen", { input_ids: row.chosen_input_ids, labels: row.chosen_labels }],
      ["rejected", { input_ids: row.rejected_input_ids, labels: row.rejected_labels }],
    ];
  }
  if ("kto_tags" in row) {
    return [
      [row.kto_tags ? "desirable" : "undesirable", row],
      ["kl", { input_ids: row.kl_input_ids, labels: row.kl_labels }],
    ];
  }
  return [["", row]];
}

const trainedIn = (sequence: Sequence) => sequence.labels.filter((label) => label !== IGNORE_INDEX).length;

export function summarize(rows: readonly InspectedRow[], cutoffLen: number, dropped: number, prompts = false): InspectSummary {
  let tokens = 0;
  let trained = 0;
  let atCutoff = 0;
  for (const row of rows) {
    // PPO counts its prompts: the dataset answer never reaches the model.
    const sequences = sequencesOf(row, prompts).map(([, sequence]) => sequence).slice(0, prompts ? 1 : undefined);
    tokens += sequences.reduce((sum, sequence) => sum + sequence.input_ids.length, 0);
    trained += sequences.reduce((sum, sequence) => sum + trainedIn(sequence), 0);
    if (sequences.some((sequence) => sequence.input_ids.length >= cutoffLen)) atCutoff += 1;
  }
  return { examples: rows.length, tokens, trained_tokens: trained, at_cutoff: atCutoff, dropped };
}

/** One sequence as JSON: ids, labels and the decoded text. */
function sequenceJson(sequence: Sequence, tokenizer: Tokenizer) {
  return { input_ids: sequence.input_ids, labels: sequence.labels, text: tokenizer.decode(sequence.input_ids, { skipSpecialTokens: false }) };
}

function rowJson(row: InspectedRow, tokenizer: Tokenizer): Record<string, unknown> {
  if ("chosen_input_ids" in row) {
    const [[, chosen], [, rejected]] = sequencesOf(row) as [[string, Sequence], [string, Sequence]];
    return { chosen: sequenceJson(chosen, tokenizer), rejected: sequenceJson(rejected, tokenizer) };
  }
  if ("kto_tags" in row) {
    return { ...sequenceJson(row, tokenizer), kto_tag: row.kto_tags, kl: sequenceJson({ input_ids: row.kl_input_ids, labels: row.kl_labels }, tokenizer) };
  }
  return sequenceJson(row, tokenizer);
}

/** The report as text (or a JSON array: {input_ids, labels, text}; {chosen, rejected}; or with kto_tag and kl). */
export function renderInspection(rows: readonly InspectedRow[], tokenizer: Tokenizer, options: InspectOptions): string {
  const shown = rows.slice(0, options.n);
  if (options.json) return JSON.stringify(shown.map((row) => rowJson(row, tokenizer)));
  const trained = (text: string) => (options.color ? `\x1b[32m${text}\x1b[0m` : `[${text}]`);
  const masked = (text: string) => (options.color ? `\x1b[2m${text}\x1b[0m` : text);
  const lines: string[] = [];
  shown.forEach((row, index) => {
    for (const [name, sequence] of sequencesOf(row, options.prompts)) {
      const label = name ? `example ${index} ${name}` : `example ${index}`;
      lines.push(`--- ${label} (${sequence.input_ids.length} tokens, ${trainedIn(sequence)} trained) ---`);
      lines.push(tokenizer.decode(sequence.input_ids, { skipSpecialTokens: false }));
      const pieces = sequence.input_ids.map((id, t) => {
        const piece = `${JSON.stringify(tokenizer.decode([id], { skipSpecialTokens: false }))}:${id}`;
        return sequence.labels[t] === IGNORE_INDEX ? masked(piece) : trained(piece);
      });
      lines.push(pieces.join(" "));
    }
  });
  const summary = summarize(rows, options.cutoffLen, options.dropped, options.prompts);
  lines.push(
    `--- ${summary.examples} examples, ${summary.tokens} tokens, ${summary.trained_tokens} trained tokens, ` +
      `${summary.at_cutoff} at cutoff_len (truncated or packed), ${summary.dropped} dropped ---`,
  );
  if (!options.color) lines.push("(tokens in [brackets] are trained; the others are masked with -100)");
  return lines.join("\n");
}
