// Llama-family checkpoints as GGUF: llama.cpp's architectures, tensor names and metadata keys as
// llama.cpp's convert_hf_to_gguf.py and gguf-py/gguf/constants.py write them (`llama` also for
// Mistral, `qwen2`, `qwen3`), Q/K rows permuted to llama.cpp's RoPE layout.
import { UserError } from "../../errors.ts";
import type { CausalLM } from "../../model/registry.ts";
import { type Tensor, noGrad, tidy } from "../../torch/index.ts";
import { GGUF_FILE_TYPES, type GgufFileType, tensorTypes } from "./mix.ts";
import { encodeTensor } from "./quants.ts";
import { type GgufTokenizer, tokenizerMetadata } from "./tokenizer.ts";
import { type GgufTensor, type GgufValue, f32, str, u32, writeGguf } from "./writer.ts";


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
  /**
   * The file type (llama.cpp's names): f32, f16, bf16, or a quantization whose per-tensor mix is
   * llama-quantize's; norms, biases and other 1-D tensors stay f32 in every type.
   */
  type?: GgufFileType;
  /** general.name; defaults to "lmfactory-export". */
  name?: string;
}

/** ggml's GGML_QNT_VERSION, which llama.cpp writes as general.quantization_version. */
const QUANTIZATION_VERSION = 2;

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
    ["general.file_type", u32(GGUF_FILE_TYPES[type].ftype)],
    ["general.quantization_version", u32(QUANTIZATION_VERSION)],
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
  const weights: { name: string; weight: Tensor; heads: number | undefined }[] = [];
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
    weights.push({ name, weight, heads });
  }
  const types = tensorTypes(
    [...tensors, ...weights.map(({ name, weight }) => ({ name, shape: weight.shape }))],
    type,
    { arch, numLayers: config.num_hidden_layers, numHeads: config.num_attention_heads, numKvHeads: config.num_key_value_heads },
  );
  for (const { name, weight, heads } of weights) {
    const ggmlType = types.get(name)!;
    tensors.push({
      name,
      shape: weight.shape,
      type: ggmlType,
      // The float32 values llama.cpp's converter would write, then encoded as llama-quantize encodes them.
      data: () => encodeTensor(tidy(() => noGrad(() => (heads ? permuteForLlamaRope(weight, heads) : weight).to("float32").contiguous().data() as Float32Array)), ggmlType),
    });
  }
  writeGguf(path, { metadata, tensors });
}
