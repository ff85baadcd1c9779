// GGUF export: a writer for the GGUF v3 container (ggml docs/gguf.md) and the mapping of Llama-family
// checkpoints to llama.cpp's architectures, tensor names and metadata keys, as llama.cpp's
// convert_hf_to_gguf.py and gguf-py/gguf/constants.py write them (`llama` also for Mistral, `qwen2`,
// `qwen3`). Tensor data is streamed tensor by tensor, so a model is never held twice in memory.
import { closeSync, openSync, writeSync } from "node:fs";
import { UserError } from "../errors.ts";
import type { CausalLM } from "../model/registry.ts";
import { type DType, type Tensor, noGrad, tidy } from "../torch/index.ts";

// --- the container ------------------------------------------------------------------------------

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

// --- tokenizer metadata -------------------------------------------------------------------------

/** llama.cpp's token types (tokenizer.ggml.token_type). */
export const GGUF_TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface GgufTokenizer {
  /** "gpt2" (byte-level BPE) or "llama" (SentencePiece). */
  model: "gpt2" | "llama";
  /** tokenizer.ggml.pre: llama.cpp's pre-tokenizer name ("default" when absent). */
  pre?: string;
  tokens: readonly string[];
  tokenTypes: readonly number[];
  /** SentencePiece scores (llama model). */
  scores?: readonly number[];
  /** BPE merges as "left right" (gpt2 model; llama.cpp requires the key, even empty). */
  merges?: readonly string[];
  bosTokenId?: number | null;
  eosTokenId?: number | null;
  padTokenId?: number | null;
  unknownTokenId?: number | null;
  addBosToken?: boolean;
  chatTemplate?: string | null;
}

/** GPT-2's byte → printable character table (bytes_to_unicode), which byte-level BPE vocabularies use. */
function byteLevelCharacter(byte: number): string {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  if (printable(byte)) return String.fromCharCode(byte);
  let shifted = 0;
  for (let b = 0; b < byte; b++) if (!printable(b)) shifted++;
  return String.fromCharCode(256 + shifted);
}

/**
 * A byte-level BPE vocabulary of `vocabSize` tokens without merges, for random test models whose
 * prompts are token ids: one token per byte value, control tokens at the special ids, and
 * user-defined filler tokens past 256.
 */
export function syntheticTokenizer(
  vocabSize: number,
  special: { bosTokenId?: number | null; eosTokenId?: number | null; padTokenId?: number | null } = {},
): GgufTokenizer {
  const tokens: string[] = [];
  const tokenTypes: number[] = [];
  const names = new Map<number, string>();
  if (special.bosTokenId != null) names.set(special.bosTokenId, "<|bos|>");
  if (special.eosTokenId != null) names.set(special.eosTokenId, "<|eos|>");
  if (special.padTokenId != null && !names.has(special.padTokenId)) names.set(special.padTokenId, "<|pad|>");
  for (let id = 0; id < vocabSize; id++) {
    const name = names.get(id);
    if (name) {
      tokens.push(name);
      tokenTypes.push(GGUF_TOKEN_TYPE.CONTROL);
    } else if (id < 256) {
      tokens.push(byteLevelCharacter(id));
      tokenTypes.push(GGUF_TOKEN_TYPE.NORMAL);
    } else {
      tokens.push(`<|extra_${id}|>`);
      tokenTypes.push(GGUF_TOKEN_TYPE.USER_DEFINED);
    }
  }
  return { model: "gpt2", tokens, tokenTypes, merges: [], ...special };
}

function tokenizerMetadata(tokenizer: GgufTokenizer): [string, GgufValue][] {
  if (tokenizer.tokenTypes.length !== tokenizer.tokens.length) {
    throw new UserError(`tokenizer has ${tokenizer.tokens.length} tokens but ${tokenizer.tokenTypes.length} token types`, "GGUF export");
  }
  const entries: [string, GgufValue][] = [
    ["tokenizer.ggml.model", str(tokenizer.model)],
    ["tokenizer.ggml.pre", str(tokenizer.pre ?? "default")],
    ["tokenizer.ggml.tokens", arr("string", tokenizer.tokens)],
    ["tokenizer.ggml.token_type", arr("int32", tokenizer.tokenTypes)],
  ];
  if (tokenizer.scores) entries.push(["tokenizer.ggml.scores", arr("float32", tokenizer.scores)]);
  if (tokenizer.model === "gpt2") entries.push(["tokenizer.ggml.merges", arr("string", tokenizer.merges ?? [])]);
  const ids: [string, number | null | undefined][] = [
    ["tokenizer.ggml.bos_token_id", tokenizer.bosTokenId],
    ["tokenizer.ggml.eos_token_id", tokenizer.eosTokenId],
    ["tokenizer.ggml.unknown_token_id", tokenizer.unknownTokenId],
    ["tokenizer.ggml.padding_token_id", tokenizer.padTokenId],
  ];
  for (const [key, id] of ids) if (id != null) entries.push([key, u32(id)]);
  if (tokenizer.addBosToken !== undefined) entries.push(["tokenizer.ggml.add_bos_token", bool(tokenizer.addBosToken)]);
  if (tokenizer.chatTemplate) entries.push(["tokenizer.chat_template", str(tokenizer.chatTemplate)]);
  return entries;
}

// --- Llama-family models ------------------------------------------------------------------------

/** HF model_type → llama.cpp architecture. Mistral is llama.cpp's `llama`. */
const GGUF_ARCHITECTURE: Record<string, string> = { llama: "llama", mistral: "llama", qwen2: "qwen2", qwen3: "qwen3" };

/** HF parameter name inside a decoder layer → llama.cpp tensor name inside `blk.N`. */
const LAYER_TENSOR_NAMES: Record<string, string> = {
  "input_layernorm.weight": "attn_norm.weight",
  "self_attn.q_proj.weight": "attn_q.weight",
  "self_attn.q_proj.bias": "attn_q.bias",
  "self_attn.k_proj.weight": "attn_k.weight",
  "self_attn.k_proj.bias": "attn_k.bias",
  "self_attn.v_proj.weight": "attn_v.weight",
  "self_attn.v_proj.bias": "attn_v.bias",
  "self_attn.o_proj.weight": "attn_output.weight",
  "self_attn.o_proj.bias": "attn_output.bias",
  "self_attn.q_norm.weight": "attn_q_norm.weight",
  "self_attn.k_norm.weight": "attn_k_norm.weight",
  "post_attention_layernorm.weight": "ffn_norm.weight",
  "mlp.gate_proj.weight": "ffn_gate.weight",
  "mlp.up_proj.weight": "ffn_up.weight",
  "mlp.down_proj.weight": "ffn_down.weight",
};

/** Tensors an architecture's llama.cpp graph has no slot for (it refuses a file that carries them). */
const NOT_IN_GRAPH: Record<string, RegExp> = { qwen2: /\.attn_output\.bias$/, qwen3: /\.attn_output\.bias$/ };

/** The llama.cpp name of an HF parameter, or null for one GGUF does not carry. */
export function ggufTensorName(hfName: string): string | null {
  if (hfName === "model.embed_tokens.weight") return "token_embd.weight";
  if (hfName === "model.norm.weight") return "output_norm.weight";
  if (hfName === "lm_head.weight") return "output.weight";
  const match = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  const inner = match && LAYER_TENSOR_NAMES[match[2]!];
  return inner ? `blk.${match[1]}.${inner}` : null;
}

/**
 * convert_hf_to_gguf.py's LlamaModel.permute: HF orders each head's q/k rows as [first half,
 * second half] for rotate-half RoPE; llama.cpp's `llama` rope (GPT-J style) rotates adjacent
 * pairs, so the rows of each head are interleaved. [heads*D, ...] -> same shape.
 */
export function permuteForLlamaRope(weight: Tensor, heads: number): Tensor {
  const rows = weight.shape[0]!;
  const rest = weight.shape.slice(1);
  return weight
    .reshape(heads, 2, rows / heads / 2, ...rest)
    .transpose(1, 2)
    .reshape(rows, ...rest);
}

/**
 * convert_hf_to_gguf.py's llama3 `rope_freqs.weight`: per-frequency divisors of RoPE's theta that
 * reproduce HF's llama3 rope scaling in llama.cpp. [D/2]
 */
function llama3RopeFactors(headDim: number, base: number, scaling: Record<string, unknown>): number[] {
  const factor = Number(scaling.factor ?? 8);
  const lowFreqFactor = Number(scaling.low_freq_factor ?? 1);
  const highFreqFactor = Number(scaling.high_freq_factor ?? 4);
  const oldContext = Number(scaling.original_max_position_embeddings ?? 8192);
  const lowFreqWavelen = oldContext / lowFreqFactor;
  const highFreqWavelen = oldContext / highFreqFactor;
  const factors: number[] = [];
  for (let i = 0; i < headDim; i += 2) {
    const freq = 1 / Math.pow(base, i / headDim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highFreqWavelen) factors.push(1);
    else if (wavelen > lowFreqWavelen) factors.push(factor);
    else {
      const smooth = (oldContext / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      factors.push(1 / ((1 - smooth) / factor + smooth));
    }
  }
  return factors;
}

export interface ExportGgufOptions {
  /** Tensor type of the 2-D weights; norms, biases and other 1-D tensors stay f32 (as convert_hf_to_gguf.py). */
  type?: "f32" | "f16";
  /** general.name; defaults to "lmfactory-export". */
  name?: string;
}

/** general.file_type (llama_ftype): ALL_F32 = 0, MOSTLY_F16 = 1. */
const FILE_TYPE = { f32: 0, f16: 1 } as const;

/** Writes `model` as a GGUF file llama.cpp loads, with the tokenizer's vocabulary. */
export function exportGguf(model: CausalLM, tokenizer: GgufTokenizer, path: string, options: ExportGgufOptions = {}): void {
  const config = model.config;
  const type = options.type ?? "f32";
  const arch = GGUF_ARCHITECTURE[config.model_type];
  if (!arch) {
    throw new UserError(
      `GGUF export does not support model_type '${config.model_type}'`,
      "export",
      `supported: ${Object.keys(GGUF_ARCHITECTURE).join(", ")}`,
    );
  }
  if (tokenizer.tokens.length !== config.vocab_size) {
    throw new UserError(
      `the tokenizer has ${tokenizer.tokens.length} tokens but the model's vocab_size is ${config.vocab_size}`,
      "GGUF export",
      "pad the tokenizer's vocabulary to vocab_size (llama.cpp takes n_vocab from the token list)",
    );
  }
  const headDim = config.head_dim;
  const metadata: [string, GgufValue][] = [
    ["general.architecture", str(arch)],
    ["general.name", str(options.name ?? "lmfactory-export")],
    ["general.file_type", u32(FILE_TYPE[type])],
    [`${arch}.vocab_size`, u32(config.vocab_size)],
    [`${arch}.context_length`, u32(config.max_position_embeddings)],
    [`${arch}.embedding_length`, u32(config.hidden_size)],
    [`${arch}.block_count`, u32(config.num_hidden_layers)],
    [`${arch}.feed_forward_length`, u32(config.intermediate_size)],
    [`${arch}.attention.head_count`, u32(config.num_attention_heads)],
    [`${arch}.attention.head_count_kv`, u32(config.num_key_value_heads)],
    [`${arch}.attention.layer_norm_rms_epsilon`, f32(config.rms_norm_eps)],
    [`${arch}.attention.key_length`, u32(headDim)],
    [`${arch}.attention.value_length`, u32(headDim)],
    [`${arch}.rope.freq_base`, f32(config.rope_theta)],
    [`${arch}.rope.dimension_count`, u32(Math.floor(headDim * (config.partial_rotary_factor ?? 1)))],
  ];

  const tensors: GgufTensor[] = [];
  const scaling = config.rope_scaling;
  if (scaling && scaling.rope_type !== "default") {
    const factor = scaling.factor ?? 1;
    if (scaling.rope_type === "linear") {
      metadata.push([`${arch}.rope.scaling.type`, str("linear")], [`${arch}.rope.scaling.factor`, f32(factor)]);
    } else if (scaling.rope_type === "yarn") {
      metadata.push(
        [`${arch}.rope.scaling.type`, str("yarn")],
        [`${arch}.rope.scaling.factor`, f32(factor)],
        [`${arch}.rope.scaling.original_context_length`, u32(scaling.original_max_position_embeddings ?? config.max_position_embeddings)],
      );
    } else if (scaling.rope_type === "llama3" && arch === "llama") {
      const factors = llama3RopeFactors(headDim, config.rope_theta, scaling as unknown as Record<string, unknown>);
      tensors.push({ name: "rope_freqs.weight", shape: [factors.length], type: "F32", data: () => new Uint8Array(new Float32Array(factors).buffer) });
    } else {
      throw new UserError(`GGUF export does not support rope_scaling '${scaling.rope_type}' for ${arch}`, "export", "llama.cpp has no equivalent; export without it");
    }
  }
  metadata.push(...tokenizerMetadata(tokenizer));

  // Only `llama` uses GPT-J style rope in llama.cpp; qwen2/qwen3 use NEOX style, which is HF's own layout.
  const permuteHeads: Record<string, number> =
    arch === "llama" ? { "attn_q.": config.num_attention_heads, "attn_k.": config.num_key_value_heads } : {};
  const state = model.stateDict();
  for (const [hfName, weight] of Object.entries(state)) {
    // Tied heads: llama.cpp falls back to token_embd when output.weight is missing.
    if (hfName === "lm_head.weight" && config.tie_word_embeddings) continue;
    const name = ggufTensorName(hfName);
    if (!name) {
      throw new UserError(`GGUF export has no llama.cpp name for parameter "${hfName}"`, "export", "merge adapters before exporting");
    }
    if (NOT_IN_GRAPH[arch]?.test(name)) {
      // An all-zero bias is the same as none (HF Qwen2/Qwen3 have no o_proj bias); a trained one can't go.
      if (tidy(() => weight.abs().max().item()) === 0) continue;
      throw new UserError(`llama.cpp's ${arch} has no "${name}"; this model's is non-zero`, "GGUF export", "set attention_bias: false for this model");
    }
    const heads = Object.entries(permuteHeads).find(([prefix]) => name.includes(`.${prefix}`))?.[1];
    // Norms and 1-D tensors stay f32, as in convert_hf_to_gguf.py.
    const ggmlType: GgmlTypeName = type === "f16" && weight.ndim >= 2 ? "F16" : "F32";
    const dtype: DType = ggmlType === "F16" ? "float16" : "float32";
    tensors.push({
      name,
      shape: weight.shape,
      type: ggmlType,
      data: () => tidy(() => noGrad(() => (heads ? permuteForLlamaRope(weight, heads) : weight).to(dtype).contiguous().bytes())),
    });
  }
  writeGguf(path, { metadata, tensors });
}
