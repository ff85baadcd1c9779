// Phi-3 / Phi-3.5 / Phi-4 as GGUF: llama.cpp's `phi3`, as convert_hf_to_gguf.py's Phi3MiniModel
// writes it: qkv_proj as attn_qkv, gate_up_proj as ffn_up (SwiGLU, gate first), partial rotary as
// rope.dimension_count, LongRoPE (`su` / `longrope`) as rope_factors_short / _long with the
// attention factor. llama.cpp picks the long factors by its context size (n_ctx, padded to 256,
// above the original context), HF by sequence length.
import type { ModelConfig } from "../../model/config.ts";
import { type GgufFamily, type Metadata, commonMetadata } from "./family.ts";
import { f32, u32 } from "./writer.ts";

const isLongrope = (config: ModelConfig) => {
  const type = config.rope_scaling?.rope_type as string | undefined;
  return type === "longrope" || type === "su";
};

/** Phi3MiniModel's rope_dims: int(partial_rotary_factor * hidden) // heads. */
const ropeDims = (config: ModelConfig) => Math.floor(Math.floor((config.partial_rotary_factor ?? 1) * config.hidden_size) / config.num_attention_heads);

/** The pretrained context LongRoPE stretches (Phi-3's top-level field, else the scaling's). */
function originalContext(config: ModelConfig): number {
  const topLevel = config.original_max_position_embeddings;
  return typeof topLevel === "number" ? topLevel : (config.rope_scaling?.original_max_position_embeddings ?? config.max_position_embeddings);
}

export const phi3Family: GgufFamily = {
  arch: () => "phi3",
  refuse(config) {
    const type = config.rope_scaling?.rope_type ?? "default";
    if (type !== "default" && !isLongrope(config)) return `llama.cpp's phi3 reads LongRoPE scaling only, not ${type}`;
    if (config.attention_bias) return "llama.cpp's phi3 has no attention biases";
    if (config.head_dim * config.num_attention_heads !== config.hidden_size) return "llama.cpp's phi3 needs heads × head_dim = hidden_size";
    const scaling = config.rope_scaling;
    if (scaling && isLongrope(config) && scaling.attention_factor !== undefined && scaling.attention_factor !== null) {
      return "llama.cpp's phi3 computes the LongRoPE attention factor itself; this config sets rope_scaling.attention_factor";
    }
    return null;
  },
  metadata(config, arch) {
    const metadata: Metadata = [
      ...commonMetadata(config, arch),
      [`${arch}.rope.scaling.original_context_length`, u32(originalContext(config))],
      [`${arch}.rope.dimension_count`, u32(ropeDims(config))],
      // Phi3MiniModel writes 0 for no window; llama.cpp's phi3 reads it but does not slide.
      [`${arch}.attention.sliding_window`, u32(config.sliding_window ?? 0)],
    ];
    if (isLongrope(config)) {
      const scale = config.max_position_embeddings / originalContext(config);
      const attnFactor = scale > 1 ? Math.sqrt(1 + Math.log(scale) / Math.log(originalContext(config))) : 1;
      metadata.push([`${arch}.rope.scaling.attn_factor`, f32(attnFactor)]);
    }
    return metadata;
  },
  layerNames: () => ({
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
  }),
  extraTensors(config) {
    const scaling = config.rope_scaling;
    if (!scaling || !isLongrope(config)) return [];
    const half = ropeDims(config) / 2;
    const [long, short] = [scaling.long_factor ?? [], scaling.short_factor ?? []];
    if (long.length !== half || short.length !== half) throw new Error(`GGUF export: LongRoPE needs ${half} long and short factors, got ${long.length} and ${short.length}`);
    return [
      { name: "rope_factors_long.weight", values: long },
      { name: "rope_factors_short.weight", values: short },
    ];
  },
};
