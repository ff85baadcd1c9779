// The GGUF v3 container (ggml docs/gguf.md): typed metadata, tensor infos with ggml types and
// dims innermost first, data aligned to `general.alignment`. Format only: what goes in a file is
// the business of the mappings beside it (llama.ts, tokenizer.ts). Tensor data is asked for tensor
// by tensor at write time, so a model is never held twice in memory.
import { closeSync, openSync, writeSync } from "node:fs";

/** "GGUF" as the first four bytes of the file. */
export const GGUF_MAGIC = "GGUF";
export const GGUF_VERSION = 3;
/** Tensor data alignment when the file has no `general.alignment` key. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** gguf_type: the codes of metadata value types. */
export const GGUF_VALUE_TYPE = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;

export type GgufScalarType = Exclude<keyof typeof GGUF_VALUE_TYPE, "array">;
export type GgufScalar = number | bigint | boolean | string;

/** A metadata value with its GGUF type spelled out (JS numbers alone do not say u32 or f32). */
export type GgufValue =
  | { type: GgufScalarType; value: GgufScalar }
  | { type: "array"; itemType: GgufScalarType; value: readonly GgufScalar[] };

export const u32 = (value: number): GgufValue => ({ type: "uint32", value });
export const i32 = (value: number): GgufValue => ({ type: "int32", value });
export const f32 = (value: number): GgufValue => ({ type: "float32", value });
export const bool = (value: boolean): GgufValue => ({ type: "bool", value });
export const str = (value: string): GgufValue => ({ type: "string", value });
export const arr = (itemType: GgufScalarType, value: readonly GgufScalar[]): GgufValue => ({ type: "array", itemType, value });

/**
 * ggml_type codes with their block layout: `blockSize` elements take `typeSize` bytes. The
 * quantized rows are here so that a quantizing exporter only has to produce the bytes.
 */
export const GGML_TYPE = {
  F32: { code: 0, blockSize: 1, typeSize: 4 },
  F16: { code: 1, blockSize: 1, typeSize: 2 },
  Q4_0: { code: 2, blockSize: 32, typeSize: 18 },
  Q4_1: { code: 3, blockSize: 32, typeSize: 20 },
  Q5_0: { code: 6, blockSize: 32, typeSize: 22 },
  Q5_1: { code: 7, blockSize: 32, typeSize: 24 },
  Q8_0: { code: 8, blockSize: 32, typeSize: 34 },
  Q2_K: { code: 10, blockSize: 256, typeSize: 84 },
  Q3_K: { code: 11, blockSize: 256, typeSize: 110 },
  Q4_K: { code: 12, blockSize: 256, typeSize: 144 },
  Q5_K: { code: 13, blockSize: 256, typeSize: 176 },
  Q6_K: { code: 14, blockSize: 256, typeSize: 210 },
  BF16: { code: 30, blockSize: 1, typeSize: 2 },
} as const;

export type GgmlTypeName = keyof typeof GGML_TYPE;

export interface GgufTensor {
  name: string;
  /** Row-major shape as torch writes it ([out, in] for a Linear weight); GGUF stores it reversed. */
  shape: readonly number[];
  type: GgmlTypeName;
  /** The encoded bytes, asked for only when the tensor's turn to be written comes. */
  data: () => Uint8Array;
}

export interface GgufFile {
  /** Key → value, written in this order. `general.alignment` (uint32), when present, sets the alignment. */
  metadata: ReadonlyArray<readonly [string, GgufValue]>;
  tensors: readonly GgufTensor[];
}

const alignUp = (offset: number, alignment: number): number => Math.ceil(offset / alignment) * alignment;

/** Bytes a tensor of this shape and type takes in the file (without padding). */
export function ggmlByteSize(shape: readonly number[], type: GgmlTypeName): number {
  const { blockSize, typeSize } = GGML_TYPE[type];
  const rowLength = shape.length ? shape[shape.length - 1]! : 1;
  if (rowLength % blockSize !== 0) {
    throw new Error(`GGUF: ${type} needs rows that are a multiple of ${blockSize} elements, got ${rowLength}`);
  }
  const count = shape.reduce((a, b) => a * b, 1);
  return (count / blockSize) * typeSize;
}

/** A growable little-endian byte buffer for the header part of the file. */
class ByteWriter {
  private buffer = new Uint8Array(1 << 16);
  private view = new DataView(this.buffer.buffer);
  length = 0;

  private reserve(bytes: number): number {
    if (this.length + bytes > this.buffer.length) {
      const grown = new Uint8Array(Math.max(this.buffer.length * 2, this.length + bytes));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
      this.view = new DataView(grown.buffer);
    }
    const at = this.length;
    this.length += bytes;
    return at;
  }

  bytes(data: Uint8Array): void {
    const at = this.reserve(data.length);
    this.buffer.set(data, at);
  }
  u8(v: number): void {
    const at = this.reserve(1);
    this.view.setUint8(at, v);
  }
  i8(v: number): void {
    const at = this.reserve(1);
    this.view.setInt8(at, v);
  }
  u16(v: number): void {
    const at = this.reserve(2);
    this.view.setUint16(at, v, true);
  }
  i16(v: number): void {
    const at = this.reserve(2);
    this.view.setInt16(at, v, true);
  }
  u32(v: number): void {
    const at = this.reserve(4);
    this.view.setUint32(at, v, true);
  }
  i32(v: number): void {
    const at = this.reserve(4);
    this.view.setInt32(at, v, true);
  }
  f32(v: number): void {
    const at = this.reserve(4);
    this.view.setFloat32(at, v, true);
  }
  f64(v: number): void {
    const at = this.reserve(8);
    this.view.setFloat64(at, v, true);
  }
  u64(v: number | bigint): void {
    const at = this.reserve(8);
    this.view.setBigUint64(at, BigInt(v), true);
  }
  i64(v: number | bigint): void {
    const at = this.reserve(8);
    this.view.setBigInt64(at, BigInt(v), true);
  }
  /** gguf_string: uint64 byte length, then UTF-8 bytes without a terminator. */
  string(s: string): void {
    const encoded = new TextEncoder().encode(s);
    this.u64(encoded.length);
    this.bytes(encoded);
  }
  zeros(count: number): void {
    this.reserve(count);
    this.buffer.fill(0, this.length - count, this.length);
  }
  result(): Uint8Array {
    return this.buffer.subarray(0, this.length);
  }
}

function writeScalar(out: ByteWriter, type: GgufScalarType, value: GgufScalar, key: string): void {
  const number = (): number => {
    if (typeof value !== "number") throw new Error(`GGUF: metadata "${key}" is ${type} but got ${typeof value}`);
    return value;
  };
  switch (type) {
    case "uint8":
      return out.u8(number());
    case "int8":
      return out.i8(number());
    case "uint16":
      return out.u16(number());
    case "int16":
      return out.i16(number());
    case "uint32":
      return out.u32(number());
    case "int32":
      return out.i32(number());
    case "float32":
      return out.f32(number());
    case "float64":
      return out.f64(number());
    case "uint64":
      return out.u64(typeof value === "bigint" ? value : number());
    case "int64":
      return out.i64(typeof value === "bigint" ? value : number());
    case "bool":
      if (typeof value !== "boolean") throw new Error(`GGUF: metadata "${key}" is bool but got ${typeof value}`);
      return out.u8(value ? 1 : 0);
    case "string":
      if (typeof value !== "string") throw new Error(`GGUF: metadata "${key}" is string but got ${typeof value}`);
      return out.string(value);
  }
}

function writeValue(out: ByteWriter, key: string, entry: GgufValue): void {
  out.u32(GGUF_VALUE_TYPE[entry.type]);
  if (entry.type === "array") {
    out.u32(GGUF_VALUE_TYPE[entry.itemType]);
    out.u64(entry.value.length);
    for (const item of entry.value) writeScalar(out, entry.itemType, item, key);
  } else {
    writeScalar(out, entry.type, entry.value, key);
  }
}

/** The alignment a file's metadata asks for (`general.alignment`), else the default 32. */
function alignmentOf(metadata: GgufFile["metadata"]): number {
  const entry = metadata.find(([key]) => key === "general.alignment")?.[1];
  if (!entry) return GGUF_DEFAULT_ALIGNMENT;
  const value = entry.value;
  if (entry.type !== "uint32" || typeof value !== "number" || value <= 0 || (value & (value - 1)) !== 0) {
    throw new Error("GGUF: general.alignment must be a uint32 power of two");
  }
  return value;
}

/**
 * The bytes before the tensor data: header, metadata, tensor infos, padding to the alignment.
 * Returns them with each tensor's offset into the data section and its byte size.
 */
export function encodeGgufHeader(file: GgufFile): { header: Uint8Array; offsets: number[]; sizes: number[]; alignment: number } {
  const alignment = alignmentOf(file.metadata);
  const seen = new Set<string>();
  for (const { name } of file.tensors) {
    if (seen.has(name)) throw new Error(`GGUF: tensor "${name}" appears twice`);
    seen.add(name);
  }
  const out = new ByteWriter();
  out.bytes(new TextEncoder().encode(GGUF_MAGIC));
  out.u32(GGUF_VERSION);
  out.u64(file.tensors.length);
  out.u64(file.metadata.length);
  for (const [key, value] of file.metadata) {
    out.string(key);
    writeValue(out, key, value);
  }
  const offsets: number[] = [];
  const sizes: number[] = [];
  let dataOffset = 0;
  for (const { name, shape, type } of file.tensors) {
    const size = ggmlByteSize(shape, type);
    out.string(name);
    out.u32(shape.length);
    // ggml's ne[0] is the fastest-varying (innermost) dimension: the torch shape reversed.
    for (const dim of [...shape].reverse()) out.u64(dim);
    out.u32(GGML_TYPE[type].code);
    out.u64(dataOffset);
    offsets.push(dataOffset);
    sizes.push(size);
    dataOffset = alignUp(dataOffset + size, alignment);
  }
  out.zeros(alignUp(out.length, alignment) - out.length);
  return { header: out.result(), offsets, sizes, alignment };
}

/** Writes a GGUF file: the header, then each tensor's data padded to the alignment. */
export function writeGguf(path: string, file: GgufFile): void {
  const { header, sizes, alignment } = encodeGgufHeader(file);
  const fd = openSync(path, "w");
  try {
    writeSync(fd, header);
    file.tensors.forEach((entry, index) => {
      const data = entry.data();
      if (data.length !== sizes[index]) {
        throw new Error(`GGUF: tensor "${entry.name}" has ${data.length} bytes, its shape and ${entry.type} need ${sizes[index]}`);
      }
      writeSync(fd, data);
      const padding = alignUp(data.length, alignment) - data.length;
      if (padding) writeSync(fd, new Uint8Array(padding));
    });
  } finally {
    closeSync(fd);
  }
}

