// Dataset pipeline throughput: reading + aligning a generated 50k-row alpaca .json file (the
// streaming array splitter and the aligner), then a CPU-bound stand-in processor (word hashing
// into ids and labels) on 1, 2 and 4 worker threads through processDataset. Prints a table and
// writes bench/results/data.json. Not part of the tests.
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { isMainThread } from "node:worker_threads";
import { loadDatasets, processDataset } from "../src/data/dataset.ts";
import type { AlignedExample } from "../src/data/types.ts";

const ROWS = 50_000;

/** The stand-in processor, re-created in each worker: FNV-1a word hashes as token ids. */
export function makeWordHasher(args: { vocab: number; rounds: number }): (batch: AlignedExample[]) => { input_ids: number[]; labels: number[] }[] {
  // `rounds` repeats the hashing to stand in for a real tokenizer's cost per row.
  const hash = (word: string): number => {
    let value = 0x811c9dc5;
    for (let round = 0; round < args.rounds; round++) {
      for (let index = 0; index < word.length; index++) value = Math.imul(value ^ word.charCodeAt(index), 0x01000193) >>> 0;
    }
    return value % args.vocab;
  };
  return (batch) =>
    batch.map((example) => {
      const prompt = example._prompt.flatMap((message) => message.content.split(/\s+/)).map(hash);
      const answer = (example._response[0]?.content ?? "").split(/\s+/).map(hash);
      return { input_ids: [...prompt, ...answer], labels: [...prompt.map(() => -100), ...answer] };
    });
}

function writeAlpaca(path: string): void {
  const words = "the quick brown fox jumps over a lazy dog while seven curious owls watch from an old oak tree".split(" ");
  const sentence = (seed: number, length: number): string => Array.from({ length }, (_, index) => words[(seed * 7 + index * 13) % words.length]).join(" ");
  const rows = Array.from({ length: ROWS }, (_, index) => ({ instruction: sentence(index, 20 + (index % 30)), input: index % 3 ? "" : sentence(index + 1, 10), output: sentence(index + 2, 40 + (index % 60)) }));
  writeFileSync(path, JSON.stringify(rows, null, 1));
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "lmf-bench-data-"));
  try {
    const file = join(dir, "alpaca_50k.json");
    writeAlpaca(file);
    const megabytes = statSync(file).size / 2 ** 20;
    const results: { step: string; workers: number; seconds: number; rowsPerSecond: number }[] = [];

    let start = performance.now();
    const { train } = await loadDatasets({ datasetNames: [file], datasetDir: dir });
    let seconds = (performance.now() - start) / 1000;
    results.push({ step: `load + align (${megabytes.toFixed(1)} MiB json)`, workers: 1, seconds, rowsPerSecond: train!.length / seconds });

    for (const rounds of [1, 200]) {
    const spec = { module: fileURLToPath(import.meta.url), exportName: "makeWordHasher", args: { vocab: 32000, rounds } };
    let reference: string | null = null;
    for (const workers of [1, 2, 4]) {
      start = performance.now();
      // In this thread the function is passed directly: importing this still-running module would wait on itself.
      const processed = await processDataset(train!, workers > 1 ? spec : makeWordHasher(spec.args), { numWorkers: workers, batchSize: 1000 });
      seconds = (performance.now() - start) / 1000;
      const digest = JSON.stringify(processed.rows.slice(0, 50)) + processed.rows.length;
      reference ??= digest;
      if (digest !== reference) throw new Error(`${workers} workers gave different rows`);
      results.push({ step: `process (word hashing x${rounds})`, workers, seconds, rowsPerSecond: processed.rows.length / seconds });
    }
    }

    console.log(`| step | workers | seconds | rows/s |\n| --- | ---: | ---: | ---: |`);
    for (const row of results) console.log(`| ${row.step} | ${row.workers} | ${row.seconds.toFixed(2)} | ${Math.round(row.rowsPerSecond).toLocaleString("en-US")} |`);
    mkdirSync("bench/results", { recursive: true });
    writeFileSync("bench/results/data.json", JSON.stringify({ rows: ROWS, fileMiB: megabytes, results }, null, 2) + "\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMainThread) await main();
