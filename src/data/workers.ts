// `preprocessing_num_workers`: a batch function (a stage processor) mapped over fixed-size batches,
// in-thread or on `node:worker_threads`, like Hugging Face `Dataset.map(batched=True, num_proc)`.
// Batches are cut the same way whatever the worker count and reassembled in order, so the output is
// identical to one worker's (HF cuts per-process shards, which can change packing; we do not).
import { isAbsolute } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { UserError } from "../errors.ts";
import type { DroppedExample, ProcessorResult } from "./types.ts";

/** What a batch function may return: the rows, or a processor result with dropped examples. */
export type BatchOutput<Out> = Out[] | ProcessorResult<Out>;
export type BatchFunction<In, Out> = (batch: In[]) => BatchOutput<Out> | Promise<BatchOutput<Out>>;

/**
 * A batch function that a worker can re-create: `module` (a path or file URL) exports `exportName`,
 * a factory called once per thread with `args` (structured-cloneable: plain options, paths) that
 * returns the batch function, e.g. loading the tokenizer and template there.
 */
export interface BatchFunctionSpec {
  module: string;
  exportName: string;
  args?: unknown;
}

export interface MapBatchesOptions {
  /** Worker threads; 0, 1 or null runs in this thread. */
  numWorkers?: number | null;
  /** `preprocessing_batch_size`: examples per batch (the unit a processor packs and pairs within). */
  batchSize?: number;
  /** Called after each finished batch with examples done and total. */
  onProgress?: (done: number, total: number) => void;
}

export interface MappedRows<Out> {
  rows: Out[];
  /** Dropped examples with their index in the whole input. */
  dropped: DroppedExample[];
}

function moduleUrl(module: string): string {
  return module.startsWith("file:") ? module : pathToFileURL(isAbsolute(module) ? module : `${process.cwd()}/${module}`).href;
}

export async function loadBatchFunction<In, Out>(spec: BatchFunctionSpec): Promise<BatchFunction<In, Out>> {
  const loaded = (await import(moduleUrl(spec.module))) as Record<string, unknown>;
  const factory = loaded[spec.exportName];
  if (typeof factory !== "function") throw new Error(`${spec.module} has no exported function ${spec.exportName}`);
  const made = await (factory as (args: unknown) => unknown)(spec.args);
  if (typeof made !== "function") throw new Error(`${spec.module}#${spec.exportName}(args) did not return a batch function`);
  return made as BatchFunction<In, Out>;
}

function normalise<Out>(output: BatchOutput<Out>, offset: number): MappedRows<Out> {
  if (Array.isArray(output)) return { rows: output, dropped: [] };
  return { rows: output.rows, dropped: output.dropped.map((drop) => ({ ...drop, index: drop.index + offset })) };
}

/** Maps `process` over `items` in batches of `batchSize`; the same output for any `numWorkers`. */
export async function mapBatches<In, Out>(items: readonly In[], process: BatchFunctionSpec | BatchFunction<In, Out>, options: MapBatchesOptions = {}): Promise<MappedRows<Out>> {
  const batchSize = options.batchSize ?? 1000;
  if (!(Number.isInteger(batchSize) && batchSize > 0)) throw new UserError(`preprocessing_batch_size must be a positive integer, got ${batchSize}`, "preprocessing_batch_size", "e.g. 1000");
  const batches: In[][] = [];
  for (let start = 0; start < items.length; start += batchSize) batches.push(items.slice(start, start + batchSize));
  const workers = Math.min(options.numWorkers ?? 0, batches.length);
  const outputs = workers > 1 ? await runOnWorkers(batches, process, workers, items.length, options.onProgress) : await runInThread(batches, process, items.length, options.onProgress);
  const rows: Out[] = [];
  const dropped: DroppedExample[] = [];
  outputs.forEach((output, index) => {
    const part = normalise(output, index * batchSize);
    for (const row of part.rows) rows.push(row);
    dropped.push(...part.dropped);
  });
  return { rows, dropped };
}

async function runInThread<In, Out>(
  batches: In[][],
  process: BatchFunctionSpec | BatchFunction<In, Out>,
  total: number,
  onProgress?: (done: number, total: number) => void,
): Promise<BatchOutput<Out>[]> {
  const fn = typeof process === "function" ? process : await loadBatchFunction<In, Out>(process);
  const outputs: BatchOutput<Out>[] = [];
  let done = 0;
  for (const batch of batches) {
    outputs.push(await fn(batch));
    done += batch.length;
    onProgress?.(done, total);
  }
  return outputs;
}

// Runs in each worker (CommonJS eval context): load tsx when the module is TypeScript, build the
// batch function once, then answer {id, batch} jobs with {id, output} or {id, error}.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const ready = (async () => {
  if (workerData.tsxApi) (await import(workerData.tsxApi)).register();
  const loaded = await import(workerData.module);
  const factory = loaded[workerData.exportName];
  if (typeof factory !== "function") throw new Error(workerData.module + " has no exported function " + workerData.exportName);
  return await factory(workerData.args);
})();
const describe = (error) => ({ name: error && error.name, message: String(error && error.message || error), what: error && error.what, where: error && error.where, fix: error && error.fix, stack: error && error.stack });
parentPort.on("message", async ({ id, batch }) => {
  try {
    const fn = await ready;
    parentPort.postMessage({ id, output: await fn(batch) });
  } catch (error) {
    parentPort.postMessage({ id, error: describe(error) });
  }
});
`;

interface WorkerError {
  name?: string;
  message: string;
  what?: string;
  where?: string;
  fix?: string;
  stack?: string;
}

function rebuildError(error: WorkerError): Error {
  if (error.name === "UserError" && error.what !== undefined) return new UserError(error.what, error.where, error.fix);
  const rebuilt = new Error(`preprocessing worker failed: ${error.message}`);
  if (error.stack) rebuilt.stack = error.stack;
  return rebuilt;
}

async function runOnWorkers<In, Out>(
  batches: In[][],
  process: BatchFunctionSpec | BatchFunction<In, Out>,
  workerCount: number,
  total: number,
  onProgress?: (done: number, total: number) => void,
): Promise<BatchOutput<Out>[]> {
  if (typeof process === "function") {
    throw new Error("preprocessing_num_workers > 1 needs the processor as a { module, exportName, args } spec that worker threads can load");
  }
  const module = moduleUrl(process.module);
  const tsxApi = module.endsWith(".ts") || module.endsWith(".mts") ? import.meta.resolve("tsx/esm/api") : null;
  const workerData = { module, exportName: process.exportName, args: process.args, tsxApi };
  const outputs: BatchOutput<Out>[] = new Array(batches.length);
  const workers: Worker[] = [];
  let next = 0;
  let done = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      let finished = 0;
      let failed = false;
      const fail = (error: Error): void => {
        if (!failed) reject(error);
        failed = true;
      };
      const dispatch = (worker: Worker): void => {
        if (failed) return;
        if (next >= batches.length) return;
        const id = next++;
        worker.postMessage({ id, batch: batches[id] });
      };
      for (let index = 0; index < workerCount; index++) {
        const worker = new Worker(WORKER_SOURCE, { eval: true, workerData });
        workers.push(worker);
        worker.on("message", (message: { id: number; output?: BatchOutput<Out>; error?: WorkerError }) => {
          if (message.error) return fail(rebuildError(message.error));
          outputs[message.id] = message.output!;
          done += batches[message.id]!.length;
          onProgress?.(done, total);
          if (++finished === batches.length) resolve();
          else dispatch(worker);
        });
        worker.on("error", (error) => fail(error));
        worker.on("exit", (code) => {
          if (code !== 0 && finished < batches.length) fail(new Error(`preprocessing worker exited with code ${code}`));
        });
        dispatch(worker);
      }
    });
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  return outputs;
}
