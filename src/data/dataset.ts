// The dataset glue, after LLaMA-Factory's `data/loader.py` (`_load_single_dataset`,
// `_get_merged_dataset`, `get_dataset`): names → files → rows → aligned examples, with num_samples,
// max_samples, mixing and the validation split; streaming keeps everything as re-iterable async
// streams. `processDataset` runs a stage processor over the result (workers + tokenized cache).
import { statSync } from "node:fs";
import { UserError } from "../errors.ts";
import { alignRows, BadRowReport, detectSpec } from "./aligner.ts";
import { listDataFiles, readDataFiles } from "./loaders.ts";
import {
  checkInterleaveProbs,
  type MixStrategy,
  MIX_STRATEGIES,
  mergeDatasets,
  mergeStreams,
  resample,
  shuffleStream,
  skipStream,
  type Stream,
  takeStream,
  trainTestSplit,
  validationCount,
} from "./mix.ts";
import { cacheMismatch, readCache, readManifest, writeCache } from "./cache.ts";
import { checkSplit, type DatasetAttr, getDatasetAttrs } from "./registry.ts";
import type { AlignedExample, DroppedExample } from "./types.ts";
import { type BatchFunction, type BatchFunctionSpec, mapBatches } from "./workers.ts";

export interface LoadDatasetsOptions {
  /** `dataset`: names from dataset_info.json, or file/folder paths. */
  datasetNames: readonly string[];
  /** `eval_dataset`: loaded and mixed the same way; excludes `valSize`. */
  evalDatasetNames?: readonly string[] | null;
  datasetDir?: string;
  split?: string;
  maxSamples?: number | null;
  mixStrategy?: MixStrategy;
  interleaveProbs?: readonly number[] | null;
  valSize?: number;
  seed?: number;
  streaming?: boolean;
  bufferSize?: number;
  /** `skip_bad_rows`: count and report bad rows instead of stopping. */
  skipBadRows?: boolean;
  /** The training stage; rm and dpo need ranking datasets, every other stage plain ones. */
  stage?: string | null;
  /** `eval_on_each_dataset`: keep one eval set per eval dataset, in `evalByName`. */
  evalOnEachDataset?: boolean;
  /** Progress and bad-row notices; silent when not given. */
  log?: (message: string) => void;
}

export interface LoadedDatasets<Data> {
  train: Data | null;
  eval: Data | null;
  /** With `evalOnEachDataset`: each eval dataset on its own, by name. */
  evalByName: Record<string, Data> | null;
  badRows: BadRowReport;
}

export type StreamingDatasets = LoadedDatasets<Stream<AlignedExample>>;
export type InMemoryDatasets = LoadedDatasets<AlignedExample[]>;

/** LLaMA-Factory: rm and dpo read ranking (chosen/rejected) datasets, and only they do. */
const RANKING_STAGES = new Set(["rm", "dpo"]);

/** Checks LLaMA-Factory's DataArguments rules that concern loading. */
export function checkLoadOptions(options: LoadDatasetsOptions): void {
  const valSize = options.valSize ?? 0;
  const strategy = options.mixStrategy ?? "concat";
  if (!MIX_STRATEGIES.includes(strategy)) throw new UserError(`unknown mix_strategy "${strategy}"`, "mix_strategy", `use one of: ${MIX_STRATEGIES.join(", ")}`);
  if (options.datasetNames.length === 0 && valSize > 1e-6) throw new UserError("cannot specify val_size without a dataset", "val_size", "set dataset, or remove val_size");
  if (options.evalDatasetNames?.length && valSize > 1e-6) throw new UserError("cannot specify val_size together with eval_dataset", "val_size", "use one of them");
  if (valSize < 0) throw new UserError(`val_size must not be negative, got ${valSize}`, "val_size", "use a fraction in (0, 1) or a count");
  checkInterleaveProbs(options.interleaveProbs, options.datasetNames.length, strategy);
  if (options.evalDatasetNames?.length) checkInterleaveProbs(options.interleaveProbs, options.evalDatasetNames.length, strategy);
  if (options.streaming) {
    if (valSize > 1e-6 && valSize < 1) throw new UserError("streaming mode should have an integer val size", "val_size", "give val_size as a count of examples, e.g. 500");
    if (options.maxSamples !== null && options.maxSamples !== undefined) throw new UserError("max_samples is incompatible with streaming", "max_samples", "remove max_samples, or turn streaming off");
  }
  if (options.maxSamples !== null && options.maxSamples !== undefined && !(Number.isInteger(options.maxSamples) && options.maxSamples > 0)) {
    throw new UserError(`max_samples must be a positive integer, got ${options.maxSamples}`, "max_samples", "e.g. max_samples: 1000");
  }
}

/** Loads, aligns and mixes the datasets into in-memory train/eval sets (or streams with `streaming`). */
export async function loadDatasets(options: LoadDatasetsOptions & { streaming: true }): Promise<StreamingDatasets>;
export async function loadDatasets(options: LoadDatasetsOptions & { streaming?: false }): Promise<InMemoryDatasets>;
export async function loadDatasets(options: LoadDatasetsOptions): Promise<InMemoryDatasets | StreamingDatasets>;
export async function loadDatasets(options: LoadDatasetsOptions): Promise<InMemoryDatasets | StreamingDatasets> {
  checkLoadOptions(options);
  const datasetDir = options.datasetDir ?? "data";
  const seed = options.seed ?? 42;
  const split = options.split ?? "train";
  const report = new BadRowReport();
  const trainAttrs = await resolveAttrs(options.datasetNames, datasetDir, split, options.stage ?? null);
  const evalAttrs = options.evalDatasetNames?.length ? await resolveAttrs(options.evalDatasetNames, datasetDir, split, options.stage ?? null) : [];
  const mix = { strategy: options.mixStrategy ?? "concat", probs: options.interleaveProbs ?? null, seed };

  if (options.streaming) {
    const open = (attr: DatasetAttr): Stream<AlignedExample> => {
      if (attr.numSamples !== null) options.log?.(`dataset "${attr.name}": num_samples is ignored in streaming mode`);
      return { [Symbol.asyncIterator]: () => alignRows(readDataFiles(listDataFiles(attr.path)), attr, { skipBadRows: options.skipBadRows, report }) };
    };
    let train: Stream<AlignedExample> | null = trainAttrs.length ? mergeStreams(trainAttrs.map(open), mix) : null;
    let evalSet: Stream<AlignedExample> | null = evalAttrs.length ? mergeStreams(evalAttrs.map(open), mix) : null;
    if (train) {
      train = shuffleStream(train, options.bufferSize ?? 16384, seed);
      const evalCount = validationCount(options.valSize ?? 0, null);
      if (evalCount > 0) {
        evalSet = takeStream(train, evalCount);
        train = skipStream(train, evalCount);
      }
    }
    const evalByName = options.evalOnEachDataset && evalAttrs.length ? Object.fromEntries(evalAttrs.map((attr) => [attr.name, open(attr)])) : null;
    return { train, eval: evalSet, evalByName, badRows: report };
  }

  const load = async (attr: DatasetAttr): Promise<AlignedExample[]> => {
    const examples = await loadOne(attr, { maxSamples: options.maxSamples ?? null, seed, skipBadRows: options.skipBadRows ?? false, report });
    options.log?.(`dataset "${attr.name}": ${examples.length} examples from ${attr.path}`);
    return examples;
  };
  const trainSets: AlignedExample[][] = [];
  for (const attr of trainAttrs) trainSets.push(await load(attr));
  const evalSets: AlignedExample[][] = [];
  for (const attr of evalAttrs) evalSets.push(await load(attr));
  if (report.count > 0) options.log?.(report.summary());

  let train = trainSets.length ? mergeDatasets(trainSets, mix) : null;
  let evalSet = evalSets.length ? mergeDatasets(evalSets, mix) : null;
  if (train && (options.valSize ?? 0) > 1e-6) {
    const parts = trainTestSplit(train, options.valSize!, seed);
    train = parts.train;
    evalSet = parts.eval;
  }
  const evalByName = options.evalOnEachDataset && evalAttrs.length ? Object.fromEntries(evalAttrs.map((attr, index) => [attr.name, evalSets[index]!])) : null;
  return { train, eval: evalSet, evalByName, badRows: report };
}

async function resolveAttrs(names: readonly string[], datasetDir: string, split: string, stage: string | null): Promise<DatasetAttr[]> {
  const attrs = getDatasetAttrs(names, datasetDir);
  const resolved: DatasetAttr[] = [];
  for (const attr of attrs) {
    checkSplit(attr, split);
    const concrete = attr.formatting === "auto" ? await detectFormat(attr) : attr;
    if (stage !== null && RANKING_STAGES.has(stage) !== concrete.ranking) {
      throw new UserError(
        `dataset "${attr.name}" is not applicable in the ${stage} stage: ${concrete.ranking ? "it is a ranking (chosen/rejected) dataset" : `${stage} needs a ranking (chosen/rejected) dataset`}`,
        "dataset",
        concrete.ranking ? 'use it with stage rm or dpo, or remove "ranking": true' : 'use a dataset with chosen/rejected answers and "ranking": true in dataset_info.json',
      );
    }
    // KTO reads tagged answers; any other stage would drop every row of a tagged dataset.
    const tagged = concrete.columns.kto_tag !== null;
    if (stage !== null && (stage === "kto") !== tagged) {
      throw new UserError(
        `dataset "${attr.name}" is not applicable in the ${stage} stage: ${tagged ? "it is a KTO dataset (answers tagged desirable or not)" : "kto needs answers tagged desirable or not"}`,
        "dataset",
        tagged ? 'use it with stage kto, or remove "kto_tag" from its columns' : 'use a dataset with a boolean tag column mapped as "kto_tag" in dataset_info.json',
      );
    }
    resolved.push(concrete);
  }
  return resolved;
}

/** A path dataset's format, from its first parsable row. */
async function detectFormat(attr: DatasetAttr): Promise<DatasetAttr> {
  const rows = readDataFiles(listDataFiles(attr.path));
  try {
    for await (const row of rows) {
      if (row.parseError !== undefined) continue;
      const spec = detectSpec(row.data, `dataset "${attr.name}" (${row.file})`);
      return { ...attr, ...spec };
    }
  } finally {
    await rows.return(undefined);
  }
  throw new UserError(`dataset "${attr.name}" (${attr.path}) has no rows`, "dataset", "check the file; an empty dataset cannot be trained on");
}

/** One dataset: rows (up to max_samples unless num_samples resamples) → aligned → num_samples → max_samples. */
export async function loadOne(
  attr: DatasetAttr,
  options: { maxSamples: number | null; seed: number; skipBadRows: boolean; report: BadRowReport },
): Promise<AlignedExample[]> {
  const rows = readDataFiles(listDataFiles(attr.path));
  const stopAt = attr.numSamples === null ? options.maxSamples : null;
  const examples: AlignedExample[] = [];
  let rowCount = 0;
  const limited = (async function* () {
    for await (const row of rows) {
      if (stopAt !== null && rowCount >= stopAt) return;
      rowCount++;
      yield row;
    }
  })();
  for await (const example of alignRows(limited, attr, { skipBadRows: options.skipBadRows, report: options.report })) examples.push(example);
  let result = attr.numSamples !== null ? resample(examples, attr.numSamples, options.seed) : examples;
  if (options.maxSamples !== null && result.length > options.maxSamples) result = result.slice(0, options.maxSamples);
  if (result.length === 0) {
    throw new UserError(
      `dataset "${attr.name}" (${attr.path}) has no usable examples${options.report.count ? ` (${options.report.count} bad rows skipped so far)` : ""}`,
      "dataset",
      "check the file and its dataset_info.json entry (formatting, columns, tags)",
    );
  }
  return result;
}

/** Sizes and modification times of a dataset list's files, for a cache key: edited data rebuilds the cache. */
export function dataFilesFingerprint(names: readonly string[], datasetDir: string): { path: string; size: number; mtimeMs: number }[] {
  return getDatasetAttrs(names, datasetDir).flatMap((attr) =>
    listDataFiles(attr.path).map((path) => {
      const stat = statSync(path);
      return { path, size: stat.size, mtimeMs: Math.floor(stat.mtimeMs) };
    }),
  );
}

export interface ProcessDatasetOptions {
  /** `preprocessing_num_workers` (worker threads need `process` as a module spec). */
  numWorkers?: number | null;
  /** `preprocessing_batch_size`. */
  batchSize?: number;
  /** A folder for this split's tokenized rows (e.g. `<tokenized_path>/train`). */
  cachePath?: string | null;
  /** What the rows depend on: tokenizer hash, template name, stage, cutoff_len, data fingerprint... */
  cacheKey?: unknown;
  overwriteCache?: boolean;
  log?: (message: string) => void;
  onProgress?: (done: number, total: number) => void;
}

export interface ProcessedDataset<Row> {
  rows: Row[];
  dropped: DroppedExample[];
  fromCache: boolean;
}

/**
 * Runs a stage processor over aligned examples: from the cache when it matches `cacheKey`, else in
 * batches on `numWorkers` threads, then saved to the cache. `examples` may be a thunk, so a cache
 * hit does not even load the data.
 */
export async function processDataset<Row>(
  examples: readonly AlignedExample[] | AsyncIterable<AlignedExample> | (() => Promise<readonly AlignedExample[] | AsyncIterable<AlignedExample>>),
  process: BatchFunctionSpec | BatchFunction<AlignedExample, Row>,
  options: ProcessDatasetOptions = {},
): Promise<ProcessedDataset<Row>> {
  const { cachePath, cacheKey = null } = options;
  if (cachePath && !options.overwriteCache) {
    const mismatch = cacheMismatch(cachePath, cacheKey);
    if (mismatch === null) {
      const cached = await readCache<Row>(cachePath);
      options.log?.(`loaded ${cached.rows.length} tokenized rows from ${cachePath}`);
      return { ...cached, fromCache: true };
    }
    if (readManifest(cachePath)) options.log?.(`tokenized cache at ${cachePath} was ${mismatch}; rebuilding it`);
  }
  const source = typeof examples === "function" ? await examples() : examples;
  let items: readonly AlignedExample[];
  if (Array.isArray(source)) items = source;
  else {
    const collected: AlignedExample[] = [];
    for await (const example of source as AsyncIterable<AlignedExample>) collected.push(example);
    items = collected;
  }
  if (items.length === 0) throw new UserError("no examples to preprocess", "dataset", "check the dataset and max_samples");
  const { rows, dropped } = await mapBatches<AlignedExample, Row>(items, process, { numWorkers: options.numWorkers, batchSize: options.batchSize, onProgress: options.onProgress });
  if (rows.length === 0) {
    throw new UserError(
      `cannot find valid samples: all ${items.length} examples were dropped${dropped[0] ? ` (first: ${dropped[0].reason})` : ""}`,
      "dataset",
      "check the data format (dataset_info.json formatting/columns), cutoff_len and the stage",
    );
  }
  if (cachePath) {
    await writeCache(cachePath, cacheKey, rows, dropped);
    options.log?.(`saved ${rows.length} tokenized rows to ${cachePath}`);
  }
  return { rows, dropped, fromCache: false };
}
