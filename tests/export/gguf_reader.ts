// A small GGUF v3 reader for tests, written from ggml's docs/gguf.md (independent of the writer):
// metadata values and each tensor's ggml type, dims and raw bytes.
import { readFileSync } from "node:fs";

export interface ReadTensor {
  name: string;
  /** ggml dims, innermost first. */
  dims: number[];
  type: number;
  bytes: Buffer;
}

export interface ReadGguf {
  metadata: Map<string, unknown>;
  tensors: Map<string, ReadTensor>;
}

/** ggml type code -> [block size, bytes per block] for the types tests meet. */
const TYPE_SIZES: Record<number, [number, number]> = {
  0: [1, 4], 1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34],
  10: [256, 84], 11: [256, 110], 12: [256, 144], 13: [256, 176], 14: [256, 210], 30: [1, 2],
};

export function readGguf(path: string): ReadGguf {
  const buffer = readFileSync(path);
  let at = 0;
  const u32 = () => ((at += 4), buffer.readUInt32LE(at - 4));
  const u64 = () => ((at += 8), Number(buffer.readBigUInt64LE(at - 8)));
  const string = () => {
    const length = u64();
    at += length;
    return buffer.toString("utf8", at - length, at);
  };
  const scalar = (type: number): unknown => {
    switch (type) {
      case 0: return buffer.readUInt8(at++);
      case 1: return buffer.readInt8(at++);
      case 2: return ((at += 2), buffer.readUInt16LE(at - 2));
      case 3: return ((at += 2), buffer.readInt16LE(at - 2));
      case 4: return u32();
      case 5: return ((at += 4), buffer.readInt32LE(at - 4));
      case 6: return ((at += 4), buffer.readFloatLE(at - 4));
      case 7: return buffer.readUInt8(at++) !== 0;
      case 8: return string();
      case 10: return u64();
      case 11: return ((at += 8), Number(buffer.readBigInt64LE(at - 8)));
      case 12: return ((at += 8), buffer.readDoubleLE(at - 8));
      default: throw new Error(`GGUF value type ${type}`);
    }
  };
  if (buffer.toString("ascii", 0, 4) !== "GGUF") throw new Error("not a GGUF file");
  at = 4;
  if (u32() !== 3) throw new Error("not GGUF v3");
  const tensorCount = u64();
  const kvCount = u64();
  const metadata = new Map<string, unknown>();
  for (let i = 0; i < kvCount; i++) {
    const key = string();
    const type = u32();
    if (type === 9) {
      const itemType = u32();
      const count = u64();
      metadata.set(key, Array.from({ length: count }, () => scalar(itemType)));
    } else {
      metadata.set(key, scalar(type));
    }
  }
  const infos: { name: string; dims: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = string();
    const nDims = u32();
    const dims = Array.from({ length: nDims }, () => u64());
    infos.push({ name, dims, type: u32(), offset: u64() });
  }
  const alignment = (metadata.get("general.alignment") as number | undefined) ?? 32;
  const dataStart = Math.ceil(at / alignment) * alignment;
  const tensors = new Map<string, ReadTensor>();
  for (const info of infos) {
    const [block, size] = TYPE_SIZES[info.type]!;
    const count = info.dims.reduce((a, b) => a * b, 1);
    const start = dataStart + info.offset;
    tensors.set(info.name, { name: info.name, dims: info.dims, type: info.type, bytes: buffer.subarray(start, start + (count / block) * size) });
  }
  return { metadata, tensors };
}
