// The GGUF container writer (src/export/gguf/writer.ts): the bytes of a hand-specified file checked
// against the GGUF v3 spec (ggml docs/gguf.md), written here with independent encoders.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type GgufFile, arr, bool, f32, str, u32, writeGguf } from "../../src/export/gguf/writer.ts";

const workDir = mkdtempSync(join(tmpdir(), "lmf-gguf-"));
process.on("exit", () => rmSync(workDir, { recursive: true, force: true }));


/** Little-endian encoders written from the spec, independent of the writer's own. */
const le = {
  u32: (v: number) => Buffer.from(new Uint32Array([v]).buffer),
  i32: (v: number) => Buffer.from(new Int32Array([v]).buffer),
  u64: (v: number | bigint) => Buffer.from(new BigUint64Array([BigInt(v)]).buffer),
  f32: (v: number) => Buffer.from(new Float32Array([v]).buffer),
  string: (s: string) => Buffer.concat([Buffer.from(new BigUint64Array([BigInt(Buffer.byteLength(s))]).buffer), Buffer.from(s, "utf8")]),
};

test("GGUF writer: header, typed KVs, tensor infos, alignment and offsets follow the v3 spec", () => {
  const matrix = new Float32Array([0, 1, 2, 3, 4, 5]); // [2, 3]
  const halves = Buffer.from([0x00, 0x3c, 0x00, 0x40, 0x00, 0xb8]); // f16 1.0, 2.0, -0.5
  const file: GgufFile = {
    metadata: [
      ["general.architecture", str("test")],
      ["general.alignment", u32(64)],
      ["test.eps", f32(0.5)],
      ["test.flag", bool(true)],
      ["test.big", { type: "uint64", value: 2n ** 40n }],
      ["test.words", arr("string", ["a", "bé"])],
      ["test.ids", arr("int32", [-1, 2])],
    ],
    tensors: [
      { name: "a", shape: [2, 3], type: "F32", data: () => new Uint8Array(matrix.buffer) },
      { name: "b.half", shape: [3], type: "F16", data: () => new Uint8Array(halves) },
    ],
  };
  const path = join(workDir, "hand.gguf");
  writeGguf(path, file);
  const bytes = readFileSync(path);

  const kv = (key: string, type: number, value: Buffer) => Buffer.concat([le.string(key), le.u32(type), value]);
  const expectedHead = Buffer.concat([
    Buffer.from("GGUF", "ascii"),
    le.u32(3), // version
    le.u64(2), // tensor count
    le.u64(7), // KV count
    kv("general.architecture", 8, le.string("test")),
    kv("general.alignment", 4, le.u32(64)),
    kv("test.eps", 6, le.f32(0.5)),
    kv("test.flag", 7, Buffer.from([1])),
    kv("test.big", 10, le.u64(2n ** 40n)),
    kv("test.words", 9, Buffer.concat([le.u32(8), le.u64(2), le.string("a"), le.string("bé")])),
    kv("test.ids", 9, Buffer.concat([le.u32(5), le.u64(2), le.i32(-1), le.i32(2)])),
    // tensor infos: name, n_dims, dims innermost first, ggml type, offset into the data section
    le.string("a"), le.u32(2), le.u64(3), le.u64(2), le.u32(0), le.u64(0),
    le.string("b.half"), le.u32(1), le.u64(3), le.u32(1), le.u64(64), // 24 bytes of "a" padded to 64
  ]);
  const dataStart = Math.ceil(expectedHead.length / 64) * 64;
  assert.deepEqual(bytes.subarray(0, expectedHead.length), expectedHead);
  assert.ok(bytes.subarray(expectedHead.length, dataStart).every((b) => b === 0), "zero padding before the data section");
  assert.deepEqual(bytes.subarray(dataStart, dataStart + 24), Buffer.from(matrix.buffer));
  assert.ok(bytes.subarray(dataStart + 24, dataStart + 64).every((b) => b === 0));
  assert.deepEqual(bytes.subarray(dataStart + 64, dataStart + 70), halves);
  assert.equal(bytes.length, dataStart + 128, "each tensor's data is padded to the alignment");
});

test("GGUF writer: a tensor whose bytes do not match its shape and type is refused", () => {
  const file: GgufFile = { metadata: [], tensors: [{ name: "x", shape: [4], type: "F32", data: () => new Uint8Array(12) }] };
  assert.throws(() => writeGguf(join(workDir, "bad.gguf"), file), /has 12 bytes.*need 16/);
});

test("a header larger than the writer's first buffer (a 32k-token vocabulary) is written whole", () => {
  const path = join(mkdtempSync(join(tmpdir(), "lmf-gguf-big-")), "big.gguf");
  const tokens = Array.from({ length: 32000 }, (_, i) => `token_${i}`);
  writeGguf(path, { metadata: [["tokenizer.ggml.tokens", arr("string", tokens)]], tensors: [] });
  const bytes = readFileSync(path);
  assert.equal(bytes.toString("ascii", 0, 4), "GGUF");
  assert.ok(bytes.includes(Buffer.from("token_31999")));
});
