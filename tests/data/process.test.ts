// processDataset: worker threads give exactly the single-thread output (rows, dropped indices,
// batch neighbours), errors cross threads as UserErrors, and the tokenized cache reloads,
// invalidates on a changed key, rebuilds on overwrite_cache and never deletes foreign folders.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { threadId } from "node:worker_threads";
import { describe, test } from "node:test";
import { UserError } from "../../src/errors.ts";
import { processDataset } from "../../src/data/dataset.ts";
import { hashFiles } from "../../src/data/cache.ts";
import type { AlignedExample } from "../../src/data/types.ts";
import { type FixtureRow, makeProcessor } from "./batch-fixture.ts";

const fixture = fileURLToPath(new URL("./batch-fixture.ts", import.meta.url));
const spec = { module: fixture, exportName: "makeProcessor", args: { scale: 2 } };
const examples: AlignedExample[] = Array.from({ length: 257 }, (_, index) => ({
  _prompt: [{ role: "user", content: index % 50 === 7 ? `drop ${index}` : `example ${index} ✓` }],
  _response: [{ role: "assistant", content: "ok" }],
  _system: "",
  _tools: "",
}));

describe("workers", () => {
  test("3 workers give the single-thread output exactly", async () => {
    const single = await processDataset<FixtureRow>(examples, spec, { numWorkers: 1, batchSize: 20 });
    const direct = await processDataset<FixtureRow>(examples, makeProcessor({ scale: 2 }), { batchSize: 20 });
    const parallel = await processDataset<FixtureRow>(examples, spec, { numWorkers: 3, batchSize: 20 });
    assert.deepEqual(parallel, single);
    assert.deepEqual(direct, single);
    assert.equal(single.rows.length, 257 - 5);
    assert.deepEqual(single.dropped.map((drop) => drop.index), [7, 57, 107, 157, 207]);
    // The last row of a batch pairs with the first of the same batch, so batch cuts are kept.
    assert.equal(single.rows[18]!.neighbour, "example 0 ✓");
  });

  test("preprocessing_num_workers spreads the batches over that many threads; preprocessing_batch_size cuts them", async () => {
    const reporter = { module: fixture, exportName: "makeThreadReporter" };
    const threads = async (numWorkers: number | null, batchSize: number) => {
      const { rows } = await processDataset<{ thread: number; batch: number }>(examples, reporter, { numWorkers, batchSize });
      return { threads: new Set(rows.map((row) => row.thread)), batches: new Set(rows.map((row) => row.batch)) };
    };
    const inThread = await threads(null, 20);
    assert.deepEqual([...inThread.threads], [threadId]);
    assert.deepEqual([...inThread.batches].sort((a, b) => a - b), [17, 20]);
    const onThree = await threads(3, 20);
    assert.equal(onThree.threads.size, 3);
    assert.ok(!onThree.threads.has(threadId));
    assert.deepEqual([...(await threads(null, 100)).batches].sort((a, b) => a - b), [57, 100]);
  });

  test("progress is reported up to the total", async () => {
    const seen: number[] = [];
    await processDataset<FixtureRow>(examples, spec, { numWorkers: 2, batchSize: 100, onProgress: (done) => seen.push(done) });
    assert.deepEqual(seen.sort((a, b) => a - b).at(-1), 257);
  });

  test("a UserError in a worker arrives as a UserError", async () => {
    await assert.rejects(processDataset(examples, { module: fixture, exportName: "makeFailing" }, { numWorkers: 2, batchSize: 50 }), (error: unknown) => {
      return error instanceof UserError && /refused the batch/.test(error.message);
    });
  });
});

describe("tokenized cache", () => {
  const root = mkdtempSync(join(tmpdir(), "lmf-cache-"));
  const key = { template: "qwen", cutoff_len: 16, tokenizer: "abc" };

  test("saved, reloaded without loading data, invalidated by a changed key, rebuilt on overwrite", async () => {
    const cachePath = join(root, "tokenized", "train");
    const logs: string[] = [];
    const log = (message: string) => logs.push(message);
    const built = await processDataset<FixtureRow>(examples, spec, { batchSize: 64, cachePath, cacheKey: key, log });
    assert.equal(built.fromCache, false);
    let loads = 0;
    const lazy = async () => {
      loads++;
      return examples;
    };
    const reloaded = await processDataset<FixtureRow>(lazy, spec, { batchSize: 64, cachePath, cacheKey: { ...key }, log });
    assert.equal(reloaded.fromCache, true);
    assert.equal(loads, 0);
    assert.deepEqual([reloaded.rows, reloaded.dropped], [built.rows, built.dropped]);

    const changed = await processDataset<FixtureRow>(lazy, spec, { batchSize: 64, cachePath, cacheKey: { ...key, template: "llama3" }, log });
    assert.equal(changed.fromCache, false);
    assert.ok(logs.some((message) => /different template; rebuilding/.test(message)));
    const forced = await processDataset<FixtureRow>(lazy, spec, { batchSize: 64, cachePath, cacheKey: { ...key, template: "llama3" }, overwriteCache: true });
    assert.equal(forced.fromCache, false);
    assert.equal(loads, 2);
    assert.deepEqual(readdirSync(join(root, "tokenized")), ["train"], "no temp folders left behind");
  });

  test("a folder that is not our cache is never overwritten; tokenizer files hash by content", async () => {
    const foreign = join(root, "foreign");
    mkdirSync(foreign);
    writeFileSync(join(foreign, "keep.txt"), "precious");
    await assert.rejects(processDataset(examples, spec, { cachePath: foreign, cacheKey: key }), /not an lmfactory tokenized-dataset cache/);
    assert.ok(existsSync(join(foreign, "keep.txt")));
    const file = join(root, "tokenizer.json");
    writeFileSync(file, "{}");
    const before = hashFiles([file, join(root, "missing.json")]);
    writeFileSync(file, '{"x": 1}');
    assert.notEqual(hashFiles([file]), before);
  });
});
