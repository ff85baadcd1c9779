// Which batches each rank reads: accelerate's BatchSamplerShard (split_batches false, even_batches
// true), against the expected shards of accelerate's own tests (test_data_loader.py,
// test_batch_sampler_shards_with_no_splits), two processes over range(n) in batches of 3.
import assert from "node:assert/strict";
import { test } from "node:test";
import { evaluationShard, shardBatchCount, shardBatches } from "../../../src/train/distributed/sharding.ts";

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** accelerate's expected shards for (rows, drop_last). */
const EXPECTED: [number, boolean, number[][][]][] = [
  [24, false, [[[0, 1, 2], [6, 7, 8], [12, 13, 14], [18, 19, 20]], [[3, 4, 5], [9, 10, 11], [15, 16, 17], [21, 22, 23]]]],
  [24, true, [[[0, 1, 2], [6, 7, 8], [12, 13, 14], [18, 19, 20]], [[3, 4, 5], [9, 10, 11], [15, 16, 17], [21, 22, 23]]]],
  [21, false, [[[0, 1, 2], [6, 7, 8], [12, 13, 14], [18, 19, 20]], [[3, 4, 5], [9, 10, 11], [15, 16, 17], [0, 1, 2]]]],
  [21, true, [[[0, 1, 2], [6, 7, 8], [12, 13, 14]], [[3, 4, 5], [9, 10, 11], [15, 16, 17]]]],
  [22, false, [[[0, 1, 2], [6, 7, 8], [12, 13, 14], [18, 19, 20]], [[3, 4, 5], [9, 10, 11], [15, 16, 17], [21, 0, 1]]]],
  [22, true, [[[0, 1, 2], [6, 7, 8], [12, 13, 14]], [[3, 4, 5], [9, 10, 11], [15, 16, 17]]]],
  [20, false, [[[0, 1, 2], [6, 7, 8], [12, 13, 14], [18, 19, 0]], [[3, 4, 5], [9, 10, 11], [15, 16, 17], [1, 2, 3]]]],
  [20, true, [[[0, 1, 2], [6, 7, 8], [12, 13, 14]], [[3, 4, 5], [9, 10, 11], [15, 16, 17]]]],
  [2, false, [[[0, 1, 0]], [[1, 0, 1]]]],
  [2, true, [[], []]],
];

test("each rank's training batches are accelerate's BatchSamplerShard shards, and their count its __len__", () => {
  for (const [rows, dropLast, shards] of EXPECTED) {
    shards.forEach((expected, rank) => {
      assert.deepEqual(shardBatches(range(rows), 3, dropLast, 2, rank), expected, `range(${rows}), drop_last ${dropLast}, rank ${rank}`);
      assert.equal(shardBatchCount(rows, 3, dropLast, 2), expected.length, `len for range(${rows}), drop_last ${dropLast}`);
    });
  }
});

test("the shards deal the batches of the sampler's order, and one process reads the plain batches", () => {
  const order = [5, 3, 9, 0, 1, 8, 2, 7, 6, 4];
  assert.deepEqual(shardBatches(order, 2, false, 2, 0), [[5, 3], [1, 8], [6, 4]]);
  assert.deepEqual(shardBatches(order, 2, false, 2, 1), [[9, 0], [2, 7], [5, 3]]);
  assert.deepEqual(shardBatches(order, 3, false, 1, 0), [[5, 3, 9], [0, 1, 8], [2, 7, 6], [4]]);
  assert.deepEqual(shardBatches(order, 3, true, 1, 0), [[5, 3, 9], [0, 1, 8], [2, 7, 6]]);
  assert.equal(shardBatchCount(10, 3, false, 1), 4);
});

test("evaluation shards cover every row once (the rows accelerate repeats are dropped, as gather_for_metrics drops them)", () => {
  for (const [rows, worldSize] of [[7, 2], [10, 3], [2, 4], [12, 2]] as const) {
    const all = Array.from({ length: worldSize }, (_, rank) => evaluationShard(rows, 3, false, worldSize, rank)).flat(2).sort((a, b) => a - b);
    assert.deepEqual(all, range(rows), `${rows} rows on ${worldSize} ranks`);
  }
  // drop_last keeps complete rounds only, as accelerate's sampler does: 21 rows = 7 batches of 3, 3 rounds of 2.
  const dropped = [0, 1].map((rank) => evaluationShard(21, 3, true, 2, rank));
  assert.deepEqual(dropped, [[[0, 1, 2], [6, 7, 8], [12, 13, 14]], [[3, 4, 5], [9, 10, 11], [15, 16, 17]]]);
});
