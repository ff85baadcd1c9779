// The dataset registry: `dataset_info.json` in `dataset_dir`, after LLaMA-Factory's
// `data/parser.py` (DatasetAttr, `get_dataset_list`) and `data/README.md`. A dataset name may also be
// a path to a file or folder, whose format is then recognised from its first row (see aligner.ts).
// Hub and script entries are refused: nothing remote is reachable here.
import { existsSync, readFileSync, statSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { UserError } from "../errors.ts";
import { closestName } from "../names.ts";

export type Formatting = "alpaca" | "sharegpt" | "openai";

export const COLUMN_NAMES = ["prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected", "kto_tag"] as const;
export type ColumnName = (typeof COLUMN_NAMES)[number];
export type ColumnMap = Record<ColumnName, string | null>;

export const TAG_NAMES = ["role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"] as const;
export type TagName = (typeof TAG_NAMES)[number];
export type TagMap = Record<TagName, string | null>;

/** Media columns are parsed (LLaMA-Factory accepts them) but this text-only port does not use them. */
const MEDIA_COLUMNS = ["images", "videos", "audios"];

/** One dataset as LLaMA-Factory's DatasetAttr holds it, resolved to local files. */
export interface DatasetAttr {
  name: string;
  /** The file or folder the rows come from. */
  path: string;
  /** `auto` for a dataset given as a bare path: recognised from its first row. */
  formatting: Formatting | "auto";
  ranking: boolean;
  subset: string | null;
  split: string;
  folder: string | null;
  numSamples: number | null;
  columns: ColumnMap;
  tags: TagMap;
}

export const ALPACA_COLUMNS: ColumnMap = {
  prompt: "instruction",
  query: "input",
  response: "output",
  history: null,
  messages: null,
  system: null,
  tools: null,
  chosen: null,
  rejected: null,
  kto_tag: null,
};

export const SHAREGPT_TAGS: TagMap = {
  role_tag: "from",
  content_tag: "value",
  user_tag: "human",
  assistant_tag: "gpt",
  observation_tag: "observation",
  function_tag: "function_call",
  system_tag: "system",
};

/** OpenAI chat messages; LLaMA-Factory makes users spell these out, we take them as the default. */
export const OPENAI_TAGS: TagMap = {
  role_tag: "role",
  content_tag: "content",
  user_tag: "user",
  assistant_tag: "assistant",
  observation_tag: "tool",
  function_tag: "function",
  system_tag: "system",
};

const ENTRY_KEYS = new Set([
  "hf_hub_url",
  "ms_hub_url",
  "om_hub_url",
  "script_url",
  "cloud_file_name",
  "file_name",
  "file_sha1",
  "formatting",
  "ranking",
  "subset",
  "split",
  "folder",
  "num_samples",
  "columns",
  "tags",
]);

export const DATASET_INFO = "dataset_info.json";

/** The parsed `dataset_info.json` of `datasetDir`, or null when there is none. */
export function readDatasetInfo(datasetDir: string): Record<string, unknown> | null {
  const path = join(datasetDir, DATASET_INFO);
  if (!existsSync(path)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new UserError(`cannot open ${path} due to ${(error as Error).message}`, "dataset_dir", "fix the JSON syntax of dataset_info.json");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new UserError(`${path} must hold one JSON object mapping dataset names to entries`, "dataset_dir", 'e.g. {"my_data": {"file_name": "my_data.json"}}');
  }
  return parsed as Record<string, unknown>;
}

/** Resolves each name of `dataset` (or `eval_dataset`) to a DatasetAttr. */
export function getDatasetAttrs(names: readonly string[], datasetDir: string): DatasetAttr[] {
  let info: Record<string, unknown> | null | undefined;
  return names.map((rawName) => {
    const name = rawName.trim();
    info ??= readDatasetInfo(datasetDir);
    if (info && Object.hasOwn(info, name)) return parseEntry(name, info[name], datasetDir);
    const path = pathDataset(name, datasetDir);
    if (path) return pathAttr(name, path);
    if (!info) {
      throw new UserError(
        `dataset "${name}" is neither a file or folder nor defined, and ${join(datasetDir, DATASET_INFO)} does not exist`,
        "dataset",
        "set dataset_dir to the folder holding dataset_info.json, or give a path to a data file",
      );
    }
    const nearest = closestName(name, Object.keys(info));
    throw new UserError(
      `undefined dataset "${name}" in ${join(datasetDir, DATASET_INFO)}${nearest ? ` (did you mean "${nearest}"?)` : ""}`,
      "dataset",
      "add an entry for it to dataset_info.json, or give a path to a data file or folder",
    );
  });
}

function pathDataset(name: string, datasetDir: string): string | null {
  const candidates = isAbsolute(name) ? [name] : [resolve(name), join(datasetDir, name)];
  return candidates.find((candidate) => existsSync(candidate)) ?? null;
}

function pathAttr(name: string, path: string): DatasetAttr {
  return {
    name,
    path,
    formatting: "auto",
    ranking: false,
    subset: null,
    split: "train",
    folder: null,
    numSamples: null,
    columns: { ...ALPACA_COLUMNS },
    tags: { ...SHAREGPT_TAGS },
  };
}

function fail(name: string, what: string, fix: string): never {
  throw new UserError(what, `dataset_info.json "${name}"`, fix);
}

function stringOrNull(name: string, key: string, value: unknown): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") fail(name, `"${key}" must be a string, got ${JSON.stringify(value)}`, `write "${key}": "<column name>"`);
  return value;
}

export function parseEntry(name: string, entry: unknown, datasetDir: string): DatasetAttr {
  if (entry === null || typeof entry !== "object" || Array.isArray(entry)) fail(name, "the entry must be an object", 'e.g. {"file_name": "data.json"}');
  const raw = entry as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (!ENTRY_KEYS.has(key)) {
      const nearest = closestName(key, [...ENTRY_KEYS]);
      fail(name, `unknown key "${key}"${nearest ? ` (did you mean "${nearest}"?)` : ""}`, `known keys: ${[...ENTRY_KEYS].join(", ")}`);
    }
  }
  const fileName = stringOrNull(name, "file_name", raw.file_name);
  const localPath = fileName === null ? null : isAbsolute(fileName) ? fileName : join(datasetDir, fileName);
  const remoteKey = ["hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name"].find((key) => raw[key] !== undefined);
  // Hub entries win over file_name upstream; here a local file that exists is the only usable source.
  if (remoteKey && !(localPath && existsSync(localPath))) {
    fail(
      name,
      `the dataset comes from ${remoteKey} "${String(raw[remoteKey])}", which is not reachable here (no hub or cloud access)`,
      `download it (e.g. as .json/.jsonl/.parquet) into ${datasetDir} and point "file_name" at it`,
    );
  }
  if (localPath === null) fail(name, 'the entry has no "file_name"', 'add "file_name": "<file or folder under dataset_dir>"');

  const formatting = raw.formatting ?? "alpaca";
  if (formatting !== "alpaca" && formatting !== "sharegpt" && formatting !== "openai") {
    fail(name, `unknown formatting "${String(formatting)}"`, 'use "alpaca", "sharegpt" or "openai"');
  }
  if (raw.ranking !== undefined && typeof raw.ranking !== "boolean") fail(name, '"ranking" must be true or false', 'write "ranking": true');
  const numSamples = raw.num_samples;
  if (numSamples !== undefined && numSamples !== null && !(Number.isInteger(numSamples) && (numSamples as number) > 0)) {
    fail(name, `"num_samples" must be a positive integer, got ${JSON.stringify(numSamples)}`, 'e.g. "num_samples": 1000');
  }
  const split = stringOrNull(name, "split", raw.split) ?? "train";

  // As upstream: without a `columns` object the alpaca defaults apply; with one, every column it
  // does not name is absent (so {"prompt": "text"} is a plain-text dataset).
  let columns: ColumnMap;
  if (raw.columns === undefined || raw.columns === null) {
    columns = { ...ALPACA_COLUMNS, messages: formatting === "alpaca" ? null : defaultMessages(formatting) };
    if (formatting !== "alpaca") Object.assign(columns, { prompt: null, query: null, response: null });
  } else {
    if (typeof raw.columns !== "object" || Array.isArray(raw.columns)) fail(name, '"columns" must be an object', 'e.g. "columns": {"prompt": "question", "response": "answer"}');
    const given = raw.columns as Record<string, unknown>;
    checkKeys(name, "columns", given, [...COLUMN_NAMES, ...MEDIA_COLUMNS]);
    columns = Object.fromEntries(COLUMN_NAMES.map((column) => [column, stringOrNull(name, `columns.${column}`, given[column])])) as ColumnMap;
    if (formatting !== "alpaca") columns.messages ??= defaultMessages(formatting);
  }

  // Unnamed tags keep their defaults (upstream leaves them unset, which only ever rejects rows).
  const tags: TagMap = { ...(formatting === "openai" ? OPENAI_TAGS : SHAREGPT_TAGS) };
  if (raw.tags !== undefined && raw.tags !== null) {
    if (typeof raw.tags !== "object" || Array.isArray(raw.tags)) fail(name, '"tags" must be an object', 'e.g. "tags": {"role_tag": "role", "content_tag": "content"}');
    const given = raw.tags as Record<string, unknown>;
    checkKeys(name, "tags", given, TAG_NAMES);
    for (const tag of TAG_NAMES) {
      const value = stringOrNull(name, `tags.${tag}`, given[tag]);
      if (value !== null) tags[tag] = value;
    }
  }

  return {
    name,
    path: localPath,
    formatting,
    ranking: raw.ranking === true,
    subset: stringOrNull(name, "subset", raw.subset),
    split,
    folder: stringOrNull(name, "folder", raw.folder),
    numSamples: (numSamples as number | undefined) ?? null,
    columns,
    tags,
  };
}

function defaultMessages(formatting: Formatting): string {
  return formatting === "openai" ? "messages" : "conversations";
}

function checkKeys(name: string, group: string, given: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(given)) {
    if (known.includes(key)) continue;
    const nearest = closestName(key, known);
    fail(name, `unknown key "${group}.${key}"${nearest ? ` (did you mean "${nearest}"?)` : ""}`, `known ${group}: ${known.join(", ")}`);
  }
}

/** Local files have one split, `train`; asking for another is a mistake worth stopping for. */
export function checkSplit(attr: DatasetAttr, split: string): void {
  const wanted = split === "train" ? attr.split : split;
  if (wanted !== "train") {
    throw new UserError(
      `dataset "${attr.name}" is a local ${existsSync(attr.path) && statSync(attr.path).isDirectory() ? "folder" : "file"}, which has only the "train" split, but split "${wanted}" was asked for`,
      "split",
      "use split: train, and put other splits in their own files (e.g. as eval_dataset)",
    );
  }
}
