// Mixing and splitting against the semantics of Hugging Face `interleave_datasets`,
// `train_test_split` and `IterableDataset.shuffle/take/skip`, which LLaMA-Factory calls.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  interleave,
  interleaveStreams,
  mergeDatasets,
  resample,
  SeededRandom,
  shuffleStream,
  skipStream,
  type Stream,
  takeStream,
  trainTestSplit,
} from "../../src/data/mix.ts";

const letters = ["a0", "a1", "a2"];
const digits = ["b0", "b1", "b2", "b3", "b4"];

function fromArray<T>(items: readonly T[]): Stream<T> {
  return {
    async *[Symbol.asyncIterator]() {
      yield* items;
    },
  };
}
async function collect<T>(stream: Stream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

test("the seeded generator is reproducible and roughly uniform", () => {
  const first = new SeededRandom(3);
  const second = new SeededRandom(3);
  const draws = Array.from({ length: 1000 }, () => first.next());
  assert.deepEqual(draws, Array.from({ length: 1000 }, () => second.next()));
  assert.notDeepEqual(draws.slice(0, 5), Array.from({ length: 5 }, () => new SeededRandom(4).next()));
  const mean = draws.reduce((sum, value) => sum + value, 0) / draws.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05);
  assert.deepEqual([...new SeededRandom(1).permutation(50)].sort((x, y) => x - y), Array.from({ length: 50 }, (_, index) => index));
});

describe("interleave (map-style)", () => {
  test("round robin without probabilities: first_exhausted, all_exhausted, without replacement", () => {
    assert.deepEqual(interleave([letters, digits], { probs: null, seed: 0, stopping: "first_exhausted" }), ["a0", "b0", "a1", "b1", "a2", "b2"]);
    assert.deepEqual(interleave([letters, digits], { probs: null, seed: 0, stopping: "all_exhausted" }), ["a0", "b0", "a1", "b1", "a2", "b2", "a0", "b3", "a1", "b4"]);
    assert.deepEqual(interleave([letters, digits], { probs: null, seed: 0, stopping: "all_exhausted_without_replacement" }), ["a0", "b0", "a1", "b1", "a2", "b2", "b3", "b4"]);
  });

  test("with probabilities: stop after the first dataset runs out, or after all have; order within a dataset kept", () => {
    const under = interleave([letters, digits], { probs: [0.5, 0.5], seed: 1, stopping: "first_exhausted" });
    const ofA = under.filter((item) => item.startsWith("a"));
    const ofB = under.filter((item) => item.startsWith("b"));
    assert.ok(ofA.length === 3 || ofB.length === 5, "one dataset is used up");
    assert.deepEqual(ofA, letters.slice(0, ofA.length));
    assert.deepEqual(ofB, digits.slice(0, ofB.length));
    const over = interleave([letters, digits], { probs: [0.5, 0.5], seed: 1, stopping: "all_exhausted" });
    assert.ok(over.filter((item) => item.startsWith("a")).length >= 3 && over.filter((item) => item.startsWith("b")).length >= 5);
    const once = interleave([letters, digits], { probs: [0.9, 0.1], seed: 1, stopping: "all_exhausted_without_replacement" });
    assert.deepEqual([...once].sort(), [...letters, ...digits].sort());
    assert.deepEqual(interleave([letters, digits], { probs: [0.5, 0.5], seed: 1, stopping: "first_exhausted" }), under);
  });

  test("probabilities skew the mix", () => {
    const big = (tag: string) => Array.from({ length: 1000 }, (_, index) => `${tag}${index}`);
    const mixed = interleave([big("a"), big("b")], { probs: [0.8, 0.2], seed: 5, stopping: "first_exhausted" });
    const share = mixed.filter((item) => item.startsWith("a")).length / mixed.length;
    assert.ok(share > 0.75 && share < 0.85, `share ${share}`);
  });

  test("mergeDatasets: concat keeps order; probabilities must sum to 1", () => {
    assert.deepEqual(mergeDatasets([letters, digits], { strategy: "concat", seed: 0 }), [...letters, ...digits]);
    assert.throws(() => mergeDatasets([letters, digits], { strategy: "interleave_under", probs: [0.5, 0.6], seed: 0 }), /sum to 1.1/);
    assert.throws(() => mergeDatasets([letters, digits], { strategy: "interleave_under", probs: [1], seed: 0 }), /one probability per dataset/);
  });
});

test("train_test_split: ceil of a fraction, exact counts, disjoint, seeded", () => {
  const items = Array.from({ length: 10 }, (_, index) => index);
  const split = trainTestSplit(items, 0.15, 42);
  assert.equal(split.eval.length, 2);
  assert.equal(split.train.length, 8);
  assert.deepEqual([...split.train, ...split.eval].sort((x, y) => x - y), items);
  assert.deepEqual(trainTestSplit(items, 0.15, 42), split);
  assert.notDeepEqual(trainTestSplit(items, 0.15, 43), split);
  assert.equal(trainTestSplit(items, 3, 42).eval.length, 3);
  assert.throws(() => trainTestSplit(items, 2.5, 42), /neither a fraction/);
});

test("resample (num_samples): every example once before any repeats", () => {
  const items = ["a", "b", "c"];
  assert.deepEqual(resample(items, 2, 0).length, 2);
  const seven = resample(items, 7, 0);
  assert.equal(seven.length, 7);
  assert.deepEqual([...new Set(seven.slice(0, 3))].sort(), items);
});

describe("streams", () => {
  test("shuffle buffer: a permutation, reproducible, local to the buffer size", async () => {
    const items = Array.from({ length: 100 }, (_, index) => index);
    const shuffled = await collect(shuffleStream(fromArray(items), 10, 3));
    assert.deepEqual([...shuffled].sort((x, y) => x - y), items);
    assert.notDeepEqual(shuffled, items);
    assert.deepEqual(await collect(shuffleStream(fromArray(items), 10, 3)), shuffled);
    // With a buffer of 10, item i cannot come out before position i - 10.
    shuffled.forEach((item, position) => assert.ok(position >= item - 10));
    assert.deepEqual(await collect(shuffleStream(fromArray(items), 1, 3)), items);
  });

  test("take and skip split one stream", async () => {
    const source = fromArray([1, 2, 3, 4, 5]);
    assert.deepEqual(await collect(takeStream(source, 2)), [1, 2]);
    assert.deepEqual(await collect(skipStream(source, 2)), [3, 4, 5]);
  });

  test("interleaved streams: round robin, first_exhausted, all_exhausted restarts, without replacement", async () => {
    const sources = [fromArray(letters), fromArray(digits)];
    assert.deepEqual(await collect(interleaveStreams(sources, { probs: null, seed: 0, stopping: "first_exhausted" })), ["a0", "b0", "a1", "b1", "a2", "b2"]);
    assert.deepEqual(await collect(interleaveStreams(sources, { probs: null, seed: 0, stopping: "all_exhausted" })), ["a0", "b0", "a1", "b1", "a2", "b2", "a0", "b3", "a1", "b4"]);
    assert.deepEqual(await collect(interleaveStreams(sources, { probs: null, seed: 0, stopping: "all_exhausted_without_replacement" })), ["a0", "b0", "a1", "b1", "a2", "b2", "b3", "b4"]);
    const once = await collect(interleaveStreams(sources, { probs: [0.3, 0.7], seed: 2, stopping: "all_exhausted_without_replacement" }));
    assert.deepEqual([...once].sort(), [...letters, ...digits].sort());
  });
});
