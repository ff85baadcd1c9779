// Sharded checkpoints as Hugging Face transformers writes them: tensors split in order by a size
// limit (huggingface_hub `split_state_dict_into_shards_factory`), files named
// `model-00001-of-00003.safetensors`, and an index `<weights>.index.json` with
// `metadata.total_size` and `weight_map`, dumped as Python's `json.dumps(indent=2, sort_keys=True)`.
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { UserError } from "../../errors.ts";
import { writeAll, writeAtomically } from "./files.ts";

/**
 * A shard size limit in bytes from a number or a string as transformers'
 * `convert_file_size_to_int` reads it: "5GB" = 5e9, "500MB", "10KB", "2GiB" = 2*2^30,
 * and a lowercase-b "8Gb" meaning bits (divided by 8).
 */
export function parseShardSize(size: number | string): number {
  if (typeof size === "number") {
    if (!Number.isInteger(size) || size <= 0) {
      throw new UserError(`max_shard_size ${size} is not a positive whole number of bytes`, undefined, 'give bytes or a size like "5GB"');
    }
    return size;
  }
  const match = /^\s*(\d+)\s*(GiB|MiB|KiB|GB|MB|KB)\s*$/i.exec(size);
  if (!match) {
    throw new UserError(`max_shard_size "${size}" is not a size`, undefined, 'use an integer followed by a unit, e.g. "5GB", "500MB" or "2GiB"');
  }
  const count = Number(match[1]);
  const unit = match[2]!;
  const upper = unit.toUpperCase();
  if (upper.endsWith("IB")) return count * 2 ** { GIB: 30, MIB: 20, KIB: 10 }[upper as "GIB" | "MIB" | "KIB"];
  const bytes = count * { GB: 1e9, MB: 1e6, KB: 1e3 }[upper as "GB" | "MB" | "KB"];
  // transformers treats a lowercase trailing "b" as bits.
  return unit.endsWith("b") ? Math.floor(bytes / 8) : bytes;
}

/**
 * Groups `(name, byteLength)` items into shards in their given order: a tensor bigger than the
 * limit gets a shard of its own; otherwise a new shard starts when the next tensor would overflow
 * the current one (huggingface_hub's rule, including where the lone big shard lands).
 */
export function planShards<T extends { name: string; byteLength: number }>(items: T[], maxBytes: number): T[][] {
  const shards: T[][] = [];
  let current: T[] = [];
  let currentBytes = 0;
  for (const item of items) {
    if (item.byteLength > maxBytes) {
      shards.push([item]);
      continue;
    }
    if (currentBytes + item.byteLength > maxBytes) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(item);
    currentBytes += item.byteLength;
  }
  if (current.length > 0) shards.push(current);
  return shards.filter((shard) => shard.length > 0);
}

/** `model.safetensors` → `model-00002-of-00003.safetensors` (transformers' naming). */
export function shardFileName(weightsName: string, index: number, count: number): string {
  const dot = weightsName.lastIndexOf(".");
  const stem = weightsName.slice(0, dot);
  const extension = weightsName.slice(dot);
  const pad = (n: number) => String(n).padStart(5, "0");
  return `${stem}-${pad(index + 1)}-of-${pad(count)}${extension}`;
}

export function indexFileName(weightsName: string): string {
  return `${weightsName}.index.json`;
}

/** JSON as Python's `json.dumps(value, indent=2, sort_keys=True)` writes it (ASCII-escaped). */
export function pythonJsonDumps(value: unknown): string {
  const sorted = (item: unknown): unknown => {
    if (Array.isArray(item)) return item.map(sorted);
    if (item !== null && typeof item === "object") {
      return Object.fromEntries(Object.keys(item).sort().map((key) => [key, sorted((item as Record<string, unknown>)[key])]));
    }
    return item;
  };
  return JSON.stringify(sorted(value), null, 2).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

export interface ShardIndex {
  path: string;
  metadata: Record<string, unknown>;
  /** tensor name → shard file name (relative to the index's folder) */
  weightMap: Map<string, string>;
}

/** Reads and checks `<weights>.index.json`. */
export function readShardIndex(path: string): ShardIndex {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new UserError(`the shard index is not valid JSON (${(error as Error).message})`, path, "re-download the checkpoint or re-save it");
  }
  const weightMap = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (weightMap === null || typeof weightMap !== "object" || Array.isArray(weightMap)) {
    throw new UserError("the shard index has no `weight_map` object", path, "re-download the checkpoint or re-save it");
  }
  const map = new Map<string, string>();
  for (const [name, file] of Object.entries(weightMap)) {
    if (typeof file !== "string" || file.includes("/") || file.includes("\\")) {
      throw new UserError(`weight_map["${name}"] is not a shard file name`, path, "each value must be a file name in the same folder");
    }
    map.set(name, file);
  }
  const metadata = (parsed as { metadata?: unknown }).metadata;
  return { path, metadata: metadata !== null && typeof metadata === "object" ? (metadata as Record<string, unknown>) : {}, weightMap: map };
}

/** Writes the index transformers writes, atomically. */
export function writeShardIndex(path: string, totalSize: number, weightMap: Record<string, string>): void {
  const text = pythonJsonDumps({ metadata: { total_size: totalSize }, weight_map: weightMap }) + "\n";
  writeAtomically(path, (fd) => writeAll(fd, Buffer.from(text, "utf8")));
}

/**
 * After a save into `folder`, removes shard files and an index from an earlier save of the same
 * weights name that this save did not write (as transformers' save_pretrained does), so a loader
 * never mixes old and new shards.
 */
export function removeStaleShards(folder: string, weightsName: string, written: string[]): void {
  const dot = weightsName.lastIndexOf(".");
  const stem = weightsName.slice(0, dot);
  const extension = weightsName.slice(dot);
  const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const shardPattern = new RegExp(`^${escape(stem)}-\\d{5}-of-\\d{5}${escape(extension)}$`);
  const keep = new Set(written.map((file) => basename(file)));
  for (const name of readdirSync(folder)) {
    const stale = (shardPattern.test(name) || name === weightsName || name === indexFileName(weightsName)) && !keep.has(name);
    if (stale && statSync(join(folder, name)).isFile()) rmSync(join(folder, name));
  }
}

/** Where a checkpoint path points: one weights file, or an index of shards. */
export function resolveWeights(path: string, weightsName: string, what: string): { kind: "file" | "index"; path: string } {
  if (!existsSync(path)) throw new UserError(`${what} not found`, path, "check the path");
  if (statSync(path).isDirectory()) {
    const index = join(path, indexFileName(weightsName));
    if (existsSync(index)) return { kind: "index", path: index };
    const single = join(path, weightsName);
    if (existsSync(single)) return { kind: "file", path: single };
    throw new UserError(`the folder has neither ${weightsName} nor ${indexFileName(weightsName)}`, path, `point at a folder holding ${weightsName} (or its shards and index), or at the file itself`);
  }
  return { kind: path.endsWith(".index.json") ? "index" : "file", path };
}

export function shardPath(index: ShardIndex, file: string): string {
  return join(dirname(index.path), file);
}
