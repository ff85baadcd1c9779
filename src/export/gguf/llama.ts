// The Llama family as GGUF: llama.cpp's `llama` (also Mistral, and Mixtral with its experts stacked
// into 3-D tensors), `qwen2` and `qwen3`, with tensor names and metadata keys as llama.cpp's
// convert_hf_to_gguf.py (LlamaModel, Qwen2Model, Qwen3Model) and gguf-py/gguf/constants.py write
// them, Q/K rows permuted to llama.cpp's RoPE layout for `llama`.
import type { ModelConfig } from "../../model/config.ts";
import type { Tensor } from "../../torch/index.ts";
import { type GgufFamily, commonMetadata, expertMetadata, ropeDimensions, ropeScalingMetadata } from "./family.ts";

/** HF parameter name inside a decoder layer → llama.cpp tensor name inside `blk.N` (tensor_mapping.py). */
export const LAYER_TENSOR_NAMES: Record<string, string> = {
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

/** HF model_type → llama.cpp architecture. Mistral and Mixtral are llama.cpp's `llama`. */
const ARCHITECTURE: Record<string, string> = { llama: "llama", mistral: "llama", mixtral: "llama", qwen2: "qwen2", qwen3: "qwen3" };

const isLlamaRope3 = (config: ModelConfig) => config.rope_scaling?.rope_type === "llama3";

export const llamaFamily: GgufFamily = {
  arch: (config) => ARCHITECTURE[config.model_type]!,
  refuse(config) {
    if (isLlamaRope3(config) && ARCHITECTURE[config.model_type] !== "llama") return "llama3 rope scaling is read by llama.cpp's `llama` architecture only";
    return null;
  },
  metadata(config, arch) {
    const metadata = [...commonMetadata(config, arch), ...ropeDimensions(config, arch), ...ropeScalingMetadata(config, arch, ["llama3"])];
    // LlamaModel writes Mixtral's router sizes; its experts are feed_forward_length wide.
    if (config.model_type === "mixtral") metadata.push(...expertMetadata(arch, config.num_local_experts as number, config.num_experts_per_tok as number));
    return metadata;
  },
  layerNames: () => ({ ...LAYER_TENSOR_NAMES, "block_sparse_moe.gate.weight": "ffn_gate_inp.weight" }),
  expertNames: { "w1.weight": "ffn_gate_exps.weight", "w2.weight": "ffn_down_exps.weight", "w3.weight": "ffn_up_exps.weight" },
  rewrite(name, weight, config) {
    // Only `llama` uses GPT-J style rope in llama.cpp; qwen2/qwen3 use NEOX style, which is HF's own layout.
    if (ARCHITECTURE[config.model_type] !== "llama") return weight;
    if (/\.attn_q\.(weight|bias)$/.test(name)) return permuteForLlamaRope(weight, config.num_attention_heads);
    if (/\.attn_k\.(weight|bias)$/.test(name)) return permuteForLlamaRope(weight, config.num_key_value_heads);
    return weight;
  },
  extraTensors(config) {
    const scaling = config.rope_scaling;
    if (!scaling || !isLlamaRope3(config)) return [];
    return [{ name: "rope_freqs.weight", values: llama3RopeFactors(config.head_dim, config.rope_theta, scaling as unknown as Record<string, unknown>) }];
  },
};

/**
 * Qwen2/Qwen3: llama.cpp's graphs have no attention output bias; an all-zero one is the same as none
 * (HF Qwen2/Qwen3 have no o_proj bias), a trained one can't go.
 */
export const qwenFamily: GgufFamily = { ...llamaFamily, notInGraph: /\.attn_output\.bias$/ };
