// Whether processed rows leave anything to learn: a row whose labels are all IGNORE_INDEX after
// the shift (position t predicts label t + 1, as the loss counts them) adds nothing but padding. When
// cutoff_len is shorter than the prompts, every row is like that and the loss is 0 at every step.
import { UserError } from "../errors.ts";
import { IGNORE_INDEX } from "./types.ts";

/** A processed row of any stage: causal-LM rows carry `labels`, pairwise rows chosen and rejected ones. */
export type LabelledRow = { labels: readonly number[] } | { chosen_labels: readonly number[]; rejected_labels: readonly number[] };

function hasTrainedToken(labels: readonly number[]): boolean {
  for (let t = 1; t < labels.length; t++) if (labels[t] !== IGNORE_INDEX) return true;
  return false;
}

/** Rows without a single trained label token (a pairwise row when either side has none). */
export function rowsWithoutLabels(rows: readonly LabelledRow[]): number {
  let empty = 0;
  for (const row of rows) {
    const sides = "labels" in row ? [row.labels] : [row.chosen_labels, row.rejected_labels];
    if (!sides.every(hasTrainedToken)) empty++;
  }
  return empty;
}

/** Refuses a training set with no trained token; warns when most of its rows have none. */
export function checkTrainedLabels(rows: readonly LabelledRow[], cutoffLen: number, print: (line: string) => void): void {
  if (rows.length === 0) return;
  const empty = rowsWithoutLabels(rows);
  if (empty === rows.length) {
    throw new UserError(
      `none of the ${rows.length} training rows keeps a label token after truncation to cutoff_len ${cutoffLen} and prompt masking, so the loss would be 0 at every step and nothing would be learned`,
      "cutoff_len",
      "raise cutoff_len so that the responses fit after their prompts",
    );
  }
  if (empty > rows.length / 2) {
    print(`warning: ${empty} of ${rows.length} training rows keep no label token after truncation to cutoff_len ${cutoffLen}; they are trained on as padding only (raise cutoff_len so that the responses fit)`);
  }
}
