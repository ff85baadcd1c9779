// safetensors read and write, following huggingface/safetensors (safetensors/src/tensor.rs):
// 8-byte little-endian header length N, N bytes of JSON header padded with spaces to a multiple
// of 8, then the raw little-endian tensor data; `data_offsets` count from the first data byte.
// Reading parses the header only and loads tensors one at a time on demand; writing streams one
// tensor at a time into a temp file that is renamed into place.
import { closeSync, fstatSync, openSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../../errors.ts";
import { type DType, ITEM_SIZE, SCALAR_TYPE } from "../dtype.ts";
import { tidy } from "../scope.ts";
import { native } from "../native.ts";
import { type Shape, Tensor } from "../tensor.ts";
import { readAt, requireFile, writeAll, writeAtomically } from "./files.ts";
import {
  type ShardIndex,
  indexFileName,
  parseShardSize,
  planShards,
  readShardIndex,
  removeStaleShards,
  resolveWeights,
  shardFileName,
  shardPath,
  writeShardIndex,
} from "./shards.ts";

/** safetensors dtype names → ours. F8/U16/U32/U64 have no libtorch 1.13 type and are refused. */
const FROM_SAFETENSORS: Record<string, DType> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
  F64: "float64",
  I64: "int64",
  I32: "int32",
  I16: "int16",
  I8: "int8",
  U8: "uint8",
  BOOL: "bool",
};
const TO_SAFETENSORS = Object.fromEntries(Object.entries(FROM_SAFETENSORS).map(([name, dtype]) => [dtype, name])) as Record<DType, string>;

/** Position in the reference's `Dtype` enum (increasing alignment); the writer sorts by it, descending. */
const ALIGNMENT_RANK: Record<DType, number> = {
  bool: 0,
  uint8: 1,
  int8: 2,
  int16: 5,
  float16: 7,
  bfloat16: 8,
  int32: 9,
  float32: 11,
  float64: 12,
  int64: 13,
};

const FLOATING = new Set<DType>(["float16", "bfloat16", "float32", "float64"]);

/** The reference refuses headers above 100 MB; so do we, before allocating for one. */
const MAX_HEADER_BYTES = 100_000_000;

const FIX_CORRUPT = "the file is corrupt or truncated: download or save it again";

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: Shape;
  byteLength: number;
  /** The file that holds the tensor (a shard, for a sharded checkpoint). */
  file: string;
}

export interface LoadOptions {
  /** Cast to this dtype right after loading (the file's dtype copy is freed at once). */
  dtype?: DType;
  /** Move to this device right after loading. */
  device?: string;
}

/** A checkpoint whose tensors load one at a time: a single file or a sharded folder. */
export interface TensorReader {
  readonly path: string;
  /** The `__metadata__` map (of the first shard, when sharded). */
  readonly metadata: Record<string, string>;
  /** Names in file order (shard by shard), which reads the disk front to back. */
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** Loads one tensor; the caller owns it (dispose it, or let a `tidy` do so). */
  get(name: string, options?: LoadOptions): Tensor;
  /** Yields `[name, tensor]` one at a time; each tensor is the caller's to keep or dispose. */
  tensors(options?: LoadOptions): Generator<[string, Tensor]>;
  close(): void;
}

interface Entry extends TensorInfo {
  /** Absolute position of the tensor's first byte in the file. */
  position: number;
}

/**
 * Opens a `.safetensors` file, a `model.safetensors.index.json`, or a folder holding either
 * (the index wins, as in transformers). Only headers are read here.
 */
export function openSafetensors(path: string): TensorReader {
  const target = resolveWeights(path, "model.safetensors", "safetensors checkpoint");
  return target.kind === "index" ? new ShardedSafetensors(target.path) : new SafetensorsFile(target.path);
}

/** Loads every tensor of a safetensors checkpoint into a name → tensor record. */
export function loadSafetensors(path: string, options: LoadOptions = {}): Record<string, Tensor> {
  const reader = openSafetensors(path);
  try {
    const out: Record<string, Tensor> = {};
    for (const [name, tensor] of reader.tensors(options)) out[name] = tensor;
    return out;
  } finally {
    reader.close();
  }
}

/** One `.safetensors` file, header parsed, data read on demand with positional reads. */
export class SafetensorsFile implements TensorReader {
  readonly path: string;
  readonly metadata: Record<string, string>;
  #fd: number | null;
  #entries: Map<string, Entry>;

  constructor(path: string) {
    requireFile(path, "safetensors file", "check the path, or download the checkpoint again");
    this.path = path;
    this.#fd = openSync(path, "r");
    try {
      const parsed = parseHeader(this.#fd, path);
      this.metadata = parsed.metadata;
      this.#entries = parsed.entries;
    } catch (error) {
      closeSync(this.#fd);
      this.#fd = null;
      throw error;
    }
  }

  names(): string[] {
    return [...this.#entries.values()].sort((a, b) => a.position - b.position).map((entry) => entry.name);
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  info(name: string): TensorInfo {
    const { position: _position, ...info } = this.#entry(name);
    return info;
  }

  get(name: string, options: LoadOptions = {}): Tensor {
    const entry = this.#entry(name);
    if (this.#fd === null) throw new Error(`${this.path}: read after close()`);
    // Read straight into the new tensor: no JS buffer holds a second copy of the bytes.
    const [id, got] = native.read_tensor(this.#fd, entry.position, entry.shape, SCALAR_TYPE[entry.dtype]);
    const loaded = new Tensor(id);
    if (got !== entry.byteLength) {
      loaded.dispose();
      throw new UserError(`tensor "${name}" is cut short: ${got} of ${entry.byteLength} bytes could be read`, this.path, FIX_CORRUPT);
    }
    return convert(loaded, options);
  }

  *tensors(options: LoadOptions = {}): Generator<[string, Tensor]> {
    for (const name of this.names()) yield [name, this.get(name, options)];
  }

  close(): void {
    if (this.#fd !== null) closeSync(this.#fd);
    this.#fd = null;
  }

  #entry(name: string): Entry {
    const entry = this.#entries.get(name);
    if (!entry) throw new UserError(`no tensor named "${name}"`, this.path, `the file holds ${describeNames(this.#entries.keys())}`);
    return entry;
  }
}

/** Shards listed by `model.safetensors.index.json`; every shard's header is checked at open. */
export class ShardedSafetensors implements TensorReader {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** The index's own `metadata` (`total_size`). */
  readonly indexMetadata: Record<string, unknown>;
  #shards = new Map<string, SafetensorsFile>();
  #index: ShardIndex;

  constructor(indexPath: string) {
    requireFile(indexPath, "shard index", "check the path, or download the checkpoint again");
    this.path = indexPath;
    this.#index = readShardIndex(indexPath);
    this.indexMetadata = this.#index.metadata;
    try {
      for (const file of new Set(this.#index.weightMap.values())) {
        this.#shards.set(file, new SafetensorsFile(shardPath(this.#index, file)));
      }
      for (const [name, file] of this.#index.weightMap) {
        if (!this.#shards.get(file)!.has(name)) {
          throw new UserError(`the index maps "${name}" to ${file}, which does not hold it`, indexPath, FIX_CORRUPT);
        }
      }
    } catch (error) {
      this.close();
      throw error;
    }
    this.metadata = this.#shards.values().next().value?.metadata ?? {};
  }

  names(): string[] {
    const names: string[] = [];
    for (const [file, shard] of this.#shards) {
      for (const name of shard.names()) if (this.#index.weightMap.get(name) === file) names.push(name);
    }
    return names;
  }

  has(name: string): boolean {
    return this.#index.weightMap.has(name);
  }

  info(name: string): TensorInfo {
    return this.#shard(name).info(name);
  }

  get(name: string, options: LoadOptions = {}): Tensor {
    return this.#shard(name).get(name, options);
  }

  *tensors(options: LoadOptions = {}): Generator<[string, Tensor]> {
    for (const name of this.names()) yield [name, this.get(name, options)];
  }

  close(): void {
    for (const shard of this.#shards.values()) shard.close();
  }

  #shard(name: string): SafetensorsFile {
    const file = this.#index.weightMap.get(name);
    if (file === undefined) throw new UserError(`no tensor named "${name}"`, this.path, `the checkpoint holds ${describeNames(this.#index.weightMap.keys())}`);
    return this.#shards.get(file)!;
  }
}

/** Applies `LoadOptions`, freeing each intermediate so only one copy of the tensor is alive. */
export function convert(loaded: Tensor, options: LoadOptions): Tensor {
  let out = loaded;
  if (options.dtype && options.dtype !== out.dtype) {
    const cast = out.to(options.dtype);
    out.dispose();
    out = cast;
  }
  if (options.device && options.device !== out.device) {
    const moved = out.to(options.device);
    out.dispose();
    out = moved;
  }
  return out;
}

function describeNames(names: Iterable<string>): string {
  const list = [...names];
  const shown = list.slice(0, 5).map((name) => `"${name}"`).join(", ");
  return list.length > 5 ? `${list.length} tensors, e.g. ${shown}` : list.length ? shown : "no tensors";
}

function parseHeader(fd: number, path: string): { metadata: Record<string, string>; entries: Map<string, Entry> } {
  const fileSize = fstatSync(fd).size;
  const prefix = Buffer.alloc(8);
  if (readAt(fd, prefix, 8, 0) < 8) {
    throw new UserError(`the file is ${fileSize} bytes, shorter than the 8-byte header length every safetensors file starts with`, path, FIX_CORRUPT);
  }
  const headerLength = prefix.readBigUInt64LE(0);
  if (headerLength > BigInt(fileSize - 8)) {
    throw new UserError(`the header length (${headerLength} bytes) is larger than the rest of the file (${fileSize - 8} bytes)`, path, `${FIX_CORRUPT}; check it is a .safetensors file`);
  }
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new UserError(`the header is ${headerLength} bytes, over the 100 MB safetensors allows`, path, FIX_CORRUPT);
  }
  const length = Number(headerLength);
  const headerBytes = Buffer.alloc(length);
  readAt(fd, headerBytes, length, 8);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (error) {
    throw new UserError(`the header is not valid UTF-8 JSON (${(error as Error).message})`, path, FIX_CORRUPT);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new UserError("the header is not a JSON object", path, FIX_CORRUPT);
  }
  const dataStart = 8 + length;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries = new Map<string, Entry>();
  for (const [name, value] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (value === null || typeof value !== "object" || Array.isArray(value) || Object.values(value).some((v) => typeof v !== "string")) {
        throw new UserError("`__metadata__` is not a map of strings to strings", path, FIX_CORRUPT);
      }
      Object.assign(metadata, value);
      continue;
    }
    entries.set(name, parseEntry(name, value, path, dataStart, dataSize));
  }
  return { metadata, entries };
}

function parseEntry(name: string, value: unknown, path: string, dataStart: number, dataSize: number): Entry {
  const { dtype, shape, data_offsets: offsets } = (value ?? {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  const isCount = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  if (typeof dtype !== "string" || !Array.isArray(shape) || !shape.every(isCount) || !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw new UserError(`tensor "${name}" needs "dtype" (a string), "shape" (whole numbers) and "data_offsets" ([begin, end])`, path, FIX_CORRUPT);
  }
  const ours = FROM_SAFETENSORS[dtype];
  if (!ours) {
    throw new UserError(`tensor "${name}" has dtype "${dtype}", which lmfactory cannot load`, path, `supported dtypes are ${Object.keys(FROM_SAFETENSORS).join(", ")}; convert the checkpoint to one of them`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > dataSize) {
    throw new UserError(`tensor "${name}" has data_offsets [${begin}, ${end}] outside the ${dataSize} data bytes of the file`, path, FIX_CORRUPT);
  }
  const expected = (shape as number[]).reduce((a, b) => a * b, 1) * ITEM_SIZE[ours];
  if (end - begin !== expected) {
    throw new UserError(`tensor "${name}" spans ${end - begin} bytes, but shape [${shape.join(", ")}] of ${dtype} needs ${expected}`, path, FIX_CORRUPT);
  }
  return { name, dtype: ours, shape: shape as number[], byteLength: expected, file: path, position: dataStart + begin };
}

// ---------------------------------------------------------------------------------------------
// Writing

export type NamedTensors = Record<string, Tensor> | Iterable<[string, Tensor]>;

/** `[name, tensor]` pairs from a record, Map or array; names must be unique. */
export function toPairs(tensors: NamedTensors): [string, Tensor][] {
  const pairs: [string, Tensor][] = Symbol.iterator in tensors ? [...(tensors as Iterable<[string, Tensor]>)] : Object.entries(tensors);
  const seen = new Set<string>();
  for (const [name] of pairs) {
    if (name === "__metadata__") throw new UserError('a tensor cannot be named "__metadata__"', undefined, "rename the tensor");
    if (seen.has(name)) throw new UserError(`tensor name "${name}" appears twice`, undefined, "give each tensor its own name");
    seen.add(name);
  }
  return pairs;
}

function byteLengthOf(tensor: Tensor): number {
  return tensor.numel * ITEM_SIZE[tensor.dtype];
}

/** The reference's layout: descending dtype alignment, then name (bytewise), so data stays aligned. */
function layoutOrder(pairs: [string, Tensor][]): [string, Tensor][] {
  return [...pairs].sort(([nameA, a], [nameB, b]) => ALIGNMENT_RANK[b.dtype] - ALIGNMENT_RANK[a.dtype] || Buffer.compare(Buffer.from(nameA), Buffer.from(nameB)));
}

/** The 8-byte length and the space-padded JSON header for tensors already in layout order. */
function encodeHeader(ordered: [string, Tensor][], metadata: Record<string, string> | undefined): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const entries: string[] = [];
  for (const [name, tensor] of ordered) {
    const end = offset + byteLengthOf(tensor);
    // Built entry by entry: an object would move integer-like names ("0") ahead of the rest.
    entries.push(`${JSON.stringify(name)}:${JSON.stringify({ dtype: TO_SAFETENSORS[tensor.dtype], shape: tensor.shape, data_offsets: [offset, end] })}`);
    offset = end;
  }
  const parts = metadata ? [`"__metadata__":${JSON.stringify(metadata)}`, ...entries] : entries;
  const json = Buffer.from(`{${parts.join(",")}}`, "utf8");
  const padding = (8 - (json.byteLength % 8)) % 8;
  const out = Buffer.alloc(8 + json.byteLength + padding, 0x20);
  out.writeBigUInt64LE(BigInt(json.byteLength + padding), 0);
  json.copy(out, 8);
  return out;
}

/**
 * Writes tensors to one safetensors file, streaming one tensor's bytes at a time, through
 * `path + ".tmp"` renamed into place. `metadata` becomes `__metadata__` (transformers expects
 * `{ format: "pt" }` there when present).
 */
export function saveSafetensors(path: string, tensors: NamedTensors, metadata?: Record<string, string>): void {
  const ordered = layoutOrder(toPairs(tensors));
  if (metadata && Object.values(metadata).some((value) => typeof value !== "string")) {
    throw new UserError("safetensors metadata values must be strings", path, "convert the values with String() or JSON.stringify()");
  }
  const header = encodeHeader(ordered, metadata);
  writeAtomically(path, (fd) => {
    writeAll(fd, header);
    for (const [name, tensor] of ordered) {
      const bytes = tensor.bytes();
      if (bytes.byteLength !== byteLengthOf(tensor)) throw new Error(`saveSafetensors: tensor "${name}" gave ${bytes.byteLength} bytes, expected ${byteLengthOf(tensor)}`);
      writeAll(fd, bytes);
    }
  });
}

export interface ShardedSaveOptions {
  /** Bytes, or a size string as transformers reads it ("5GB", "500MB", "2GiB"). Default "5GB". */
  maxShardSize?: number | string;
  /** Each shard's `__metadata__`; default `{ format: "pt" }` as transformers writes. */
  metadata?: Record<string, string>;
  /** Default "model.safetensors" (shards `model-0000i-of-0000n.safetensors`). */
  weightsName?: string;
  /** Cast floating tensors to this dtype, one shard at a time (shard sizes count the cast bytes). */
  dtype?: DType;
}

/**
 * Saves tensors into `folder` as transformers' save_pretrained does: one `model.safetensors`
 * when they fit in one shard, else numbered shards plus `model.safetensors.index.json`.
 * Returns the files written (index last).
 */
export function saveSafetensorsSharded(folder: string, tensors: NamedTensors, options: ShardedSaveOptions = {}): string[] {
  const weightsName = options.weightsName ?? "model.safetensors";
  return saveSharded(
    folder,
    toPairs(tensors),
    weightsName,
    options.maxShardSize ?? "5GB",
    (path, shard) => saveSafetensors(path, shard, options.metadata ?? { format: "pt" }),
    options.dtype,
  );
}

/** The sharding shared by the safetensors and `.bin` writers. */
export function saveSharded(
  folder: string,
  pairs: [string, Tensor][],
  weightsName: string,
  maxShardSize: number | string,
  writeShard: (path: string, tensors: [string, Tensor][]) => void,
  dtype?: DType,
): string[] {
  const limit = parseShardSize(maxShardSize);
  mkdirSync(folder, { recursive: true });
  const target = (tensor: Tensor): DType => (dtype && FLOATING.has(tensor.dtype) ? dtype : tensor.dtype);
  const items = pairs.map(([name, tensor]) => ({ name, tensor, byteLength: tensor.numel * ITEM_SIZE[target(tensor)] }));
  // Each shard's cast copies live only while that shard is written.
  const write = (path: string, shard: typeof items) =>
    tidy(() => writeShard(path, shard.map((item) => [item.name, target(item.tensor) === item.tensor.dtype ? item.tensor : item.tensor.to(target(item.tensor))])));
  const shards = planShards(items, limit);
  const written: string[] = [];
  if (shards.length <= 1) {
    const path = join(folder, weightsName);
    write(path, items);
    written.push(path);
  } else {
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, index) => {
      const file = shardFileName(weightsName, index, shards.length);
      write(join(folder, file), shard);
      for (const item of shard) weightMap[item.name] = file;
      written.push(join(folder, file));
    });
    const indexPath = join(folder, indexFileName(weightsName));
    writeShardIndex(indexPath, items.reduce((sum, item) => sum + item.byteLength, 0), weightMap);
    written.push(indexPath);
  }
  removeStaleShards(folder, weightsName, written);
  return written;
}
