// Rows with nothing to learn: a training set whose rows keep no label token after truncation is
// refused (it would train at loss 0), and one where most rows lose their labels is warned about.
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkTrainedLabels, rowsWithoutLabels } from "../../src/data/label_check.ts";
import { UserError } from "../../src/errors.ts";

const I = -100;

test("a row counts as trained only with a label after the first position (position t predicts label t + 1)", () => {
  assert.equal(rowsWithoutLabels([{ labels: [5, I, I] }, { labels: [I, I, 7] }, { labels: [] }, { labels: [I] }]), 3);
});

test("no trained token in the whole training set is refused with the reason; most rows empty is a warning", () => {
  assert.throws(
    () => checkTrainedLabels([{ labels: [I, I] }, { labels: [3, I] }], 2, () => {}),
    (error: unknown) => error instanceof UserError && error.where === "cutoff_len" && /none of the 2 training rows keeps a label token after truncation to cutoff_len 2/.test(error.what),
  );
  const lines: string[] = [];
  checkTrainedLabels([{ labels: [I, I] }, { labels: [I, I] }, { labels: [I, 4] }], 2, (line) => lines.push(line));
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /2 of 3 training rows keep no label token/);
  lines.length = 0;
  checkTrainedLabels([{ labels: [I, I] }, { labels: [I, 4] }], 2, (line) => lines.push(line));
  assert.deepEqual(lines, []);
});
