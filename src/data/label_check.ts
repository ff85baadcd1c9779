// Whether processed rows leave anything to learn: a row whose labels are all IGNORE_INDEX after
// the shift (position t predicts label t + 1, as the loss counts them) adds nothing but padding. When
// cutoff_len is shorter than the prompts, every row is like that and the loss is 0 at every step.
import { UserError } from "../errors.ts";
import { IGNORE_INDEX } from "./types.ts";

/** Rows without a single trained label token. */
export function rowsWithoutLabels(rows: readonly { labels: readonly number[] }[]): number {
  let empty = 0;
  for (const { labels } of rows) {
    let trained = false;
    for (let t = 1; t < labels.length && !trained; t++) trained = labels[t] !== IGNORE_INDEX;
    if (!trained) empty++;
  }
  return empty;
}

/** Refuses a training set with no trained token; warns when most of its rows have none. */
export function checkTrainedLabels(rows: readonly { labels: readonly number[] }[], cutoffLen: number, print: (line: string) => void): void {
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
