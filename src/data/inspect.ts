// `lmf data inspect`: the first examples exactly as the trainer will receive them, token by token
// with its id and whether its label is trained (green) or masked (dim), or as JSON for machines,
// plus summary counts. What LLaMA-Factory prints as "training example" at start-up, made browsable.
import type { Tokenizer } from "./tokenizer.ts";
import { IGNORE_INDEX, type SupervisedRow } from "./types.ts";

export interface InspectOptions {
  n: number;
  json: boolean;
  color: boolean;
  cutoffLen: number;
  dropped: number;
}

export interface InspectSummary {
  examples: number;
  tokens: number;
  trained_tokens: number;
  at_cutoff: number;
  dropped: number;
}

export function summarize(rows: readonly SupervisedRow[], cutoffLen: number, dropped: number): InspectSummary {
  let tokens = 0;
  let trained = 0;
  let atCutoff = 0;
  for (const row of rows) {
    tokens += row.input_ids.length;
    trained += row.labels.filter((label) => label !== IGNORE_INDEX).length;
    if (row.input_ids.length >= cutoffLen) atCutoff += 1;
  }
  return { examples: rows.length, tokens, trained_tokens: trained, at_cutoff: atCutoff, dropped };
}

/** The report as text (or a JSON array of {input_ids, labels, text} when `json`). */
export function renderInspection(rows: readonly SupervisedRow[], tokenizer: Tokenizer, options: InspectOptions): string {
  const shown = rows.slice(0, options.n);
  if (options.json) {
    return JSON.stringify(shown.map((row) => ({ input_ids: row.input_ids, labels: row.labels, text: tokenizer.decode(row.input_ids, { skipSpecialTokens: false }) })));
  }
  const trained = (text: string) => (options.color ? `\x1b[32m${text}\x1b[0m` : `[${text}]`);
  const masked = (text: string) => (options.color ? `\x1b[2m${text}\x1b[0m` : text);
  const lines: string[] = [];
  shown.forEach((row, index) => {
    lines.push(`--- example ${index} (${row.input_ids.length} tokens, ${row.labels.filter((l) => l !== IGNORE_INDEX).length} trained) ---`);
    lines.push(tokenizer.decode(row.input_ids, { skipSpecialTokens: false }));
    const pieces = row.input_ids.map((id, t) => {
      const piece = `${JSON.stringify(tokenizer.decode([id], { skipSpecialTokens: false }))}:${id}`;
      return row.labels[t] === IGNORE_INDEX ? masked(piece) : trained(piece);
    });
    lines.push(pieces.join(" "));
  });
  const summary = summarize(rows, options.cutoffLen, options.dropped);
  lines.push(
    `--- ${summary.examples} examples, ${summary.tokens} tokens, ${summary.trained_tokens} trained tokens, ` +
      `${summary.at_cutoff} at cutoff_len (truncated or packed), ${summary.dropped} dropped ---`,
  );
  if (!options.color) lines.push("(tokens in [brackets] are trained; the others are masked with -100)");
  return lines.join("\n");
}
