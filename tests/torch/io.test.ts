// Checkpoint I/O: safetensors and PyTorch `.bin` round trips in every dtype, bit for bit; files
// checked byte by byte against the safetensors reference's own test vectors and hand-built
// layouts; HF sharding; bad files as UserErrors; and PyTorch (python3-torch) as the reference.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../src/errors.ts";
import {
  type DType,
  ITEM_SIZE,
  type Tensor,
  fromBytes,
  liveTensors,
  loadSafetensors,
  loadTorchBin,
  iterateTorchBin,
  openSafetensors,
  parseShardSize,
  saveSafetensors,
  saveSafetensorsSharded,
  saveTorchBin,
  saveTorchBinSharded,
  shardFileName,
  tensor,
  tidy,
} from "../../src/torch/index.ts";

const DTYPES: DType[] = ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"];
const PYTHON = "/usr/bin/python3";
const REFERENCE_SCRIPT = join(import.meta.dirname, "../reference/torch_io.py");

const folder = mkdtempSync(join(tmpdir(), "lmf-io-"));
process.on("exit", () => rmSync(folder, { recursive: true, force: true }));
let fileCounter = 0;
const tempPath = (name: string) => join(folder, `${fileCounter++}-${name}`);

/** Deterministic pseudo-random bytes; for bool only 0/1 (other bytes are not valid bools). */
function sampleBytes(dtype: DType, count: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(count * ITEM_SIZE[dtype]);
  let state = seed >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    bytes[i] = dtype === "bool" ? (state >>> 31) & 1 : state >>> 24;
  }
  return bytes;
}

/** One tensor per dtype of raw random bytes (float NaN payloads included), plus a scalar and an empty one. */
function sampleTensors(): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  DTYPES.forEach((dtype, k) => {
    out[`layers.${k}.${dtype}`] = fromBytes(sampleBytes(dtype, 6, k + 1), [2, 3], dtype);
  });
  out["scalar"] = fromBytes(sampleBytes("float32", 1, 99), [], "float32");
  out["empty"] = fromBytes(new Uint8Array(0), [0, 4], "bfloat16");
  return out;
}

function hex(t: Tensor): string {
  return Buffer.from(t.bytes()).toString("hex");
}

function assertSameTensors(actual: Record<string, Tensor>, expected: Record<string, Tensor>): void {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort());
  for (const [name, want] of Object.entries(expected)) {
    const got = actual[name]!;
    assert.equal(got.dtype, want.dtype, name);
    assert.deepEqual(got.shape, want.shape, name);
    assert.equal(hex(got), hex(want), name);
  }
}

function disposeAll(tensors: Record<string, Tensor>): void {
  for (const t of Object.values(tensors)) t.dispose();
}

/** `fn` throws a UserError whose message names `path` and matches `pattern`. */
function assertUserError(fn: () => unknown, path: string, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof UserError, `expected a UserError, got ${String(error)}`);
    assert.ok(error.message.includes(path), `message does not name the file: ${error.message}`);
    assert.match(error.message, pattern);
    assert.ok(error.fix, "a UserError for a bad file says how to fix it");
    return true;
  });
}

/** A safetensors file from a header object (or raw header text) and data, laid out by hand. */
function handBuiltFile(header: object | string, data: Uint8Array, headerLength?: bigint): Buffer {
  const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header));
  const padded = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(headerLength ?? BigInt(padded.length));
  return Buffer.concat([prefix, padded, data]);
}

const pythonTorch = (() => {
  try {
    execFileSync(PYTHON, ["-c", "import torch"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();
const pythonSafetensors =
  pythonTorch &&
  (() => {
    try {
      execFileSync(PYTHON, ["-c", "import safetensors.torch"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

function runReference(command: string, path: string): Record<string, { dtype: DType; shape: number[]; hex: string }> {
  return JSON.parse(execFileSync(PYTHON, [REFERENCE_SCRIPT, command, path], { encoding: "utf8" }));
}

// ---------------------------------------------------------------------------------------------
// safetensors round trips

test("safetensors round trip keeps every dtype bit for bit, with metadata", () => {
  const before = liveTensors();
  const originals = sampleTensors();
  const path = tempPath("all.safetensors");
  saveSafetensors(path, originals, { format: "pt", note: "π ünïcode" });
  assert.ok(!existsSync(`${path}.tmp`));
  const reader = openSafetensors(path);
  assert.deepEqual(reader.metadata, { format: "pt", note: "π ünïcode" });
  assert.equal(reader.info("layers.2.bfloat16").dtype, "bfloat16");
  assert.deepEqual(reader.info("empty").shape, [0, 4]);
  reader.close();
  const loaded = loadSafetensors(path);
  assertSameTensors(loaded, originals);
  disposeAll(loaded);
  disposeAll(originals);
  assert.equal(liveTensors(), before);
});

test("safetensors round trip of known values in every dtype", () => {
  const values = [0, 1, -2, 3, 100, -7];
  for (const dtype of DTYPES) {
    tidy(() => {
      const source = dtype === "bool" ? [true, false, true, true, false, false] : dtype === "uint8" ? values.map(Math.abs) : values;
      const original = tensor(source, { dtype, shape: [2, 3] });
      const path = tempPath(`${dtype}.safetensors`);
      saveSafetensors(path, [["x", original]]);
      const loaded = loadSafetensors(path).x!;
      assert.equal(loaded.dtype, dtype);
      assert.deepEqual(loaded.toArray(), original.toArray(), dtype);
    });
  }
});

test("tensors load on demand, one at a time, and straight into another dtype", () => {
  const path = tempPath("cast.safetensors");
  tidy(() => saveSafetensors(path, { a: tensor([1.5, -2.25, 3], { dtype: "bfloat16" }), b: tensor([7, 8], { dtype: "int64" }) }));
  const reader = openSafetensors(path);
  const before = liveTensors();
  const a = reader.get("a", { dtype: "float32" });
  // The bf16 copy was freed after the cast: exactly one new tensor is alive.
  assert.equal(liveTensors(), before + 1);
  assert.equal(a.dtype, "float32");
  assert.deepEqual(a.toArray(), [1.5, -2.25, 3]);
  a.dispose();
  for (const [name, t] of reader.tensors({ dtype: "float64" })) {
    assert.equal(t.dtype, "float64", name);
    t.dispose();
  }
  assert.equal(liveTensors(), before);
  assertUserError(() => reader.get("c"), path, /no tensor named "c"/);
  reader.close();
});

test("a non-contiguous tensor is written in its logical order", () => {
  const path = tempPath("transposed.safetensors");
  tidy(() => {
    const matrix = tensor([[1, 2, 3], [4, 5, 6]], { dtype: "float32" });
    saveSafetensors(path, { t: matrix.transpose(0, 1) });
    assert.deepEqual(loadSafetensors(path).t!.toArray(), [[1, 4], [2, 5], [3, 6]]);
  });
});

// ---------------------------------------------------------------------------------------------
// byte-exact layout

/** The reference implementation's own vectors (safetensors/src/tensor.rs, tests module). */
const REFERENCE_VECTORS: { name: string; tensors: () => [string, Tensor][]; metadata?: Record<string, string>; bytes: number[] }[] = [
  {
    name: "test_serialization",
    tensors: () => [["attn.0", tensor([0, 1, 2, 3, 4, 5], { dtype: "float32", shape: [1, 2, 3] })]],
    bytes: [
      64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115,
      104, 97, 112, 101, 34, 58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50,
      52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
    ],
  },
  {
    name: "test_empty",
    tensors: () => [],
    bytes: [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32],
  },
  {
    name: "test_empty with metadata",
    tensors: () => [],
    metadata: { framework: "pt" },
    bytes: [
      40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95, 95, 34, 58, 123, 34, 102, 114, 97, 109, 101, 119, 111, 114,
      107, 34, 58, 34, 112, 116, 34, 125, 125, 32, 32, 32, 32, 32,
    ],
  },
  {
    name: "test_serialization_forced_alignement",
    tensors: () => [["attn0", tensor([0, 1, 2, 3, 4, 5], { dtype: "float32", shape: [1, 1, 2, 3] })]],
    bytes: [
      72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104,
      97, 112, 101, 34, 58, 91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44,
      50, 52, 93, 125, 125, 32, 32, 32, 32, 32, 32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
    ],
  },
];

for (const vector of REFERENCE_VECTORS) {
  test(`writer matches the safetensors reference vector ${vector.name}, and reads it back`, () => {
    tidy(() => {
      const path = tempPath("vector.safetensors");
      const tensors = vector.tensors();
      saveSafetensors(path, tensors, vector.metadata);
      assert.deepEqual([...readFileSync(path)], vector.bytes);
      const readBack = tempPath("vector-in.safetensors");
      writeFileSync(readBack, Uint8Array.from(vector.bytes));
      const loaded = loadSafetensors(readBack);
      assertSameTensors(loaded, Object.fromEntries(tensors));
      const reader = openSafetensors(readBack);
      assert.deepEqual(reader.metadata, vector.metadata ?? {});
      reader.close();
    });
  });
}

test("a hand-built mixed-dtype file: our writer produces exactly its bytes, and our reader reads it", () => {
  tidy(() => {
    // The layout the reference writes: descending dtype alignment (I64, F32, BF16, BOOL), then
    // name; compact JSON with __metadata__ first; spaces to a multiple of 8; raw little-endian data.
    const ids = new BigInt64Array([5n, -1n]);
    const bias = new Float32Array([0.5]);
    const weight = Uint8Array.from([0x80, 0x3f, 0x00, 0xc0]); // bf16 1.0, -2.0
    const mask = Uint8Array.from([1, 0, 1]);
    const header =
      '{"__metadata__":{"format":"pt"},' +
      '"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},' +
      '"a.bias":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},' +
      '"b.weight":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]},' +
      '"mask":{"dtype":"BOOL","shape":[3],"data_offsets":[24,27]}}';
    const paddedLength = Math.ceil(header.length / 8) * 8;
    const expected = Buffer.alloc(8 + paddedLength + 27, 0x20);
    expected.writeBigUInt64LE(BigInt(paddedLength), 0);
    expected.write(header, 8, "latin1");
    const data = Buffer.concat([Buffer.from(ids.buffer), Buffer.from(bias.buffer), weight, mask]);
    data.copy(expected, 8 + paddedLength);

    const handBuilt = tempPath("hand.safetensors");
    writeFileSync(handBuilt, expected);
    const loaded = loadSafetensors(handBuilt);
    assert.deepEqual(Object.keys(loaded), ["ids", "a.bias", "b.weight", "mask"]);
    assert.deepEqual(loaded.ids!.toArray(), [5, -1]);
    assert.deepEqual(loaded["a.bias"]!.toArray(), [0.5]);
    assert.equal(loaded["b.weight"]!.dtype, "bfloat16");
    assert.deepEqual(loaded["b.weight"]!.toArray(), [1, -2]);
    assert.deepEqual(loaded.mask!.toArray(), [true, false, true]);

    const written = tempPath("ours.safetensors");
    saveSafetensors(
      written,
      {
        mask: tensor([true, false, true]),
        "b.weight": tensor([1, -2], { dtype: "bfloat16" }),
        ids: tensor([5, -1], { dtype: "int64" }),
        "a.bias": tensor([0.5], { dtype: "float32" }),
      },
      { format: "pt" },
    );
    assert.deepEqual(readFileSync(written), expected);
  });
});

// ---------------------------------------------------------------------------------------------
// sharding

test("shard sizes parse as transformers' convert_file_size_to_int", () => {
  assert.equal(parseShardSize("5GB"), 5_000_000_000);
  assert.equal(parseShardSize("500MB"), 500_000_000);
  assert.equal(parseShardSize("10KB"), 10_000);
  assert.equal(parseShardSize("2GiB"), 2 * 2 ** 30);
  assert.equal(parseShardSize("3mib"), 3 * 2 ** 20);
  assert.equal(parseShardSize("8Gb"), 1_000_000_000);
  assert.equal(parseShardSize(1234), 1234);
  assert.throws(() => parseShardSize("1.5GB"), UserError);
  assert.throws(() => parseShardSize("lots"), UserError);
  assert.equal(shardFileName("model.safetensors", 0, 3), "model-00001-of-00003.safetensors");
  assert.equal(shardFileName("pytorch_model.bin", 11, 12), "pytorch_model-00012-of-00012.bin");
});

test("sharded safetensors save writes HF-named shards and index, and loads through folder or index", () => {
  const before = liveTensors();
  const dir = tempPath("sharded");
  // 40, 40, 100 (over the limit: a shard of its own), 24, 24 bytes with a 64-byte limit.
  const originals: [string, Tensor][] = [
    ["model.embed_tokens.weight", fromBytes(sampleBytes("float32", 10, 1), [2, 5], "float32")],
    ["model.layers.0.weight", fromBytes(sampleBytes("bfloat16", 20, 2), [4, 5], "bfloat16")],
    ["model.layers.1.weight", fromBytes(sampleBytes("float32", 25, 3), [5, 5], "float32")],
    ["model.norm.weight", fromBytes(sampleBytes("int64", 3, 4), [3], "int64")],
    ["lm_head.weight", fromBytes(sampleBytes("float16", 12, 5), [3, 4], "float16")],
  ];
  const written = saveSafetensorsSharded(dir, originals, { maxShardSize: 64 });
  const shardNames = ["model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors", "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors"];
  assert.deepEqual(written, [...shardNames, "model.safetensors.index.json"].map((name) => join(dir, name)));
  assert.deepEqual(readdirSync(dir).sort(), [...shardNames, "model.safetensors.index.json"].sort());
  // huggingface_hub's rule: layer 0 would overflow shard 1 and starts a new one; the 100-byte
  // tensor goes alone into shard 2, ahead of the one being filled (layer 0 + norm = 64 bytes,
  // shard 3); lm_head would overflow that and lands in shard 4.
  const expectedIndex =
    JSON.stringify(
      {
        metadata: { total_size: 40 + 40 + 100 + 24 + 24 },
        weight_map: {
          "lm_head.weight": shardNames[3],
          "model.embed_tokens.weight": shardNames[0],
          "model.layers.0.weight": shardNames[2],
          "model.layers.1.weight": shardNames[1],
          "model.norm.weight": shardNames[2],
        },
      },
      null,
      2,
    ) + "\n";
  assert.equal(readFileSync(join(dir, "model.safetensors.index.json"), "utf8"), expectedIndex);

  for (const source of [dir, join(dir, "model.safetensors.index.json")]) {
    const reader = openSafetensors(source);
    assert.deepEqual(reader.metadata, { format: "pt" });
    assert.equal(reader.info("model.layers.1.weight").file, join(dir, shardNames[1]!));
    reader.close();
    const loaded = loadSafetensors(source);
    assertSameTensors(loaded, Object.fromEntries(originals));
    disposeAll(loaded);
  }

  // Saving again in one shard leaves one model.safetensors and no stale shards or index.
  saveSafetensorsSharded(dir, originals);
  assert.deepEqual(readdirSync(dir), ["model.safetensors"]);
  const single = loadSafetensors(dir);
  assertSameTensors(single, Object.fromEntries(originals));
  disposeAll(single);
  for (const [, t] of originals) t.dispose();
  assert.equal(liveTensors(), before);
});

test("shard planning follows huggingface_hub for an oversized tensor", () => {
  const dir = tempPath("plan");
  const make = (n: number) => fromBytes(new Uint8Array(n), [n], "uint8");
  tidy(() => {
    saveSafetensorsSharded(dir, [["a", make(40)], ["b", make(40)], ["big", make(100)], ["c", make(20)]], { maxShardSize: 64 });
    const index = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8"));
    assert.deepEqual(index.weight_map, {
      a: "model-00001-of-00003.safetensors",
      big: "model-00002-of-00003.safetensors",
      b: "model-00003-of-00003.safetensors",
      c: "model-00003-of-00003.safetensors",
    });
  });
});

// ---------------------------------------------------------------------------------------------
// .bin

test(".bin round trip keeps every dtype bit for bit", () => {
  const before = liveTensors();
  const originals = sampleTensors();
  const path = tempPath("pytorch_model.bin");
  saveTorchBin(path, originals);
  assert.ok(!existsSync(`${path}.tmp`));
  const loaded = loadTorchBin(path);
  assertSameTensors(loaded, originals);
  disposeAll(loaded);
  const cast = loadTorchBin(path, { dtype: "float32" });
  assert.ok(Object.values(cast).every((t) => t.dtype === "float32"));
  disposeAll(cast);
  disposeAll(originals);
  assert.equal(liveTensors(), before);
});

test("sharded .bin save and load through pytorch_model.bin.index.json", () => {
  const before = liveTensors();
  const dir = tempPath("bin-sharded");
  const originals = sampleTensors();
  const written = saveTorchBinSharded(dir, originals, { maxShardSize: 40 });
  assert.ok(written.at(-1)!.endsWith("pytorch_model.bin.index.json"));
  assert.ok(written.length > 3);
  assert.ok(readdirSync(dir).every((name) => /^pytorch_model(-\d{5}-of-\d{5}\.bin|\.bin\.index\.json)$/.test(name)));
  const loaded = loadTorchBin(dir);
  assertSameTensors(loaded, originals);
  disposeAll(loaded);
  // Stopping early frees the rest of the shard that was in memory.
  for (const [, t] of iterateTorchBin(join(dir, "pytorch_model.bin.index.json"))) {
    t.dispose();
    break;
  }
  disposeAll(originals);
  assert.equal(liveTensors(), before);
});

// ---------------------------------------------------------------------------------------------
// bad files

test("bad safetensors files give a UserError naming the file, the problem and the fix", () => {
  const write = (name: string, bytes: Uint8Array) => {
    const path = tempPath(name);
    writeFileSync(path, bytes);
    return path;
  };
  const good = { x: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
  const eightBytes = new Uint8Array(8);

  const missing = join(folder, "nothing-here.safetensors");
  assertUserError(() => openSafetensors(missing), missing, /not found/);

  const tiny = write("tiny.safetensors", Uint8Array.from([1, 2, 3]));
  assertUserError(() => openSafetensors(tiny), tiny, /3 bytes, shorter than the 8-byte header length/);

  const tooLong = write("long-header.safetensors", handBuiltFile(good, eightBytes, 1000n));
  assertUserError(() => openSafetensors(tooLong), tooLong, /header length \(1000 bytes\) is larger than the rest of the file/);

  const huge = write("huge-header.safetensors", handBuiltFile(good, eightBytes, 2n ** 63n));
  assertUserError(() => openSafetensors(huge), huge, /larger than the rest of the file/);

  const badJson = write("bad-json.safetensors", handBuiltFile('{"x": {"dtype": "F32",', eightBytes));
  assertUserError(() => openSafetensors(badJson), badJson, /not valid UTF-8 JSON/);

  const notObject = write("array.safetensors", handBuiltFile("[1, 2]", eightBytes));
  assertUserError(() => openSafetensors(notObject), notObject, /not a JSON object/);

  const unknownDtype = write("f8.safetensors", handBuiltFile({ x: { dtype: "F8_E4M3", shape: [8], data_offsets: [0, 8] } }, eightBytes));
  assertUserError(() => openSafetensors(unknownDtype), unknownDtype, /dtype "F8_E4M3", which lmfactory cannot load.*BF16/);

  const outOfRange = write("range.safetensors", handBuiltFile({ x: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, eightBytes));
  assertUserError(() => openSafetensors(outOfRange), outOfRange, /data_offsets \[0, 16\] outside the 8 data bytes/);

  const reversed = write("reversed.safetensors", handBuiltFile({ x: { dtype: "F32", shape: [0], data_offsets: [8, 0] } }, eightBytes));
  assertUserError(() => openSafetensors(reversed), reversed, /data_offsets \[8, 0\]/);

  const sizeMismatch = write("size.safetensors", handBuiltFile({ x: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, eightBytes));
  assertUserError(() => openSafetensors(sizeMismatch), sizeMismatch, /spans 8 bytes, but shape \[3\] of F32 needs 12/);

  const noShape = write("no-shape.safetensors", handBuiltFile({ x: { dtype: "F32", data_offsets: [0, 8] } }, eightBytes));
  assertUserError(() => openSafetensors(noShape), noShape, /needs "dtype".*"shape"/);

  const badMetadata = write("meta.safetensors", handBuiltFile({ __metadata__: { step: 3 }, ...good }, eightBytes));
  assertUserError(() => openSafetensors(badMetadata), badMetadata, /__metadata__/);

  // A real file cut short in its data.
  const truncated = tempPath("truncated.safetensors");
  tidy(() => saveSafetensors(truncated, { a: tensor([1, 2, 3, 4], { dtype: "float32" }), b: tensor([5, 6], { dtype: "float32" }) }));
  truncateSync(truncated, readFileSync(truncated).length - 4);
  assertUserError(() => openSafetensors(truncated), truncated, /outside the \d+ data bytes/);

  const emptyFolder = tempPath("no-weights");
  execFileSync("mkdir", [emptyFolder]);
  assertUserError(() => openSafetensors(emptyFolder), emptyFolder, /neither model\.safetensors nor model\.safetensors\.index\.json/);
});

test("a shard index pointing at a missing shard, or at a shard without the tensor, is a UserError", () => {
  const dir = tempPath("bad-index");
  tidy(() => saveSafetensorsSharded(dir, [["a", tensor([1, 2, 3, 4], { dtype: "float32" })], ["b", tensor([5, 6, 7, 8], { dtype: "float32" })]], { maxShardSize: 16 }));
  const indexPath = join(dir, "model.safetensors.index.json");
  const index = JSON.parse(readFileSync(indexPath, "utf8"));
  index.weight_map.c = "model-00001-of-00002.safetensors";
  writeFileSync(indexPath, JSON.stringify(index));
  assertUserError(() => openSafetensors(dir), indexPath, /maps "c" to model-00001-of-00002\.safetensors, which does not hold it/);
  delete index.weight_map.c;
  index.weight_map.b = "model-00009-of-00009.safetensors";
  writeFileSync(indexPath, JSON.stringify(index));
  assertUserError(() => openSafetensors(dir), "model-00009-of-00009.safetensors", /safetensors file not found/);
  writeFileSync(indexPath, "{ not json");
  assertUserError(() => openSafetensors(dir), indexPath, /not valid JSON/);
});

test("a missing or corrupt .bin is a UserError", () => {
  const missing = join(folder, "missing.bin");
  assertUserError(() => loadTorchBin(missing), missing, /not found/);
  const corrupt = tempPath("corrupt.bin");
  writeFileSync(corrupt, Buffer.from("this is not a pickle at all"));
  assertUserError(() => loadTorchBin(corrupt), corrupt, /not a readable PyTorch state dict/);
});

// ---------------------------------------------------------------------------------------------
// PyTorch as the reference

test("torch.save's .bin loads here with the same bytes", (t) => {
  if (!pythonTorch) return t.skip("python3-torch not installed");
  const path = tempPath("from-torch.bin");
  const expected = runReference("write-bin", path);
  tidy(() => {
    const loaded = loadTorchBin(path);
    assert.deepEqual(Object.keys(loaded).sort(), Object.keys(expected).sort());
    for (const [name, want] of Object.entries(expected)) {
      assert.equal(loaded[name]!.dtype, want.dtype, name);
      assert.deepEqual(loaded[name]!.shape, want.shape, name);
      assert.equal(hex(loaded[name]!), want.hex, name);
    }
  });
});

function assertMatchesReference(actual: ReturnType<typeof runReference>, originals: Record<string, Tensor>): void {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(originals).sort());
  for (const [name, want] of Object.entries(originals)) {
    assert.equal(actual[name]!.dtype, want.dtype, name);
    assert.deepEqual(actual[name]!.shape, want.shape, name);
    assert.equal(actual[name]!.hex, hex(want), name);
  }
}

test("torch.load reads our .bin with the same bytes", (t) => {
  if (!pythonTorch) return t.skip("python3-torch not installed");
  tidy(() => {
    const originals = sampleTensors();
    const path = tempPath("for-torch.bin");
    saveTorchBin(path, originals);
    assertMatchesReference(runReference("read-bin", path), originals);
  });
});

test("PyTorch reads our safetensors file (safetensors package, else a spec reader) with the same bytes", (t) => {
  if (!pythonTorch) return t.skip("python3-torch not installed");
  tidy(() => {
    const originals = sampleTensors();
    const path = tempPath("for-torch.safetensors");
    saveSafetensors(path, originals, { format: "pt" });
    assertMatchesReference(runReference("read-safetensors", path), originals);
  });
});

test("the safetensors package's file loads here with the same bytes", (t) => {
  if (!pythonSafetensors) return t.skip("python3 safetensors package not installed (Debian 12 has no python3-safetensors)");
  const path = tempPath("from-safetensors.safetensors");
  const expected = runReference("write-safetensors", path);
  tidy(() => {
    const loaded = loadSafetensors(path);
    for (const [name, want] of Object.entries(expected)) assert.equal(hex(loaded[name]!), want.hex, name);
  });
});
