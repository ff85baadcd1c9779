// DeepSeek-V2 / V2-Lite as GGUF: llama.cpp's `deepseek2`, as convert_hf_to_gguf.py's DeepseekV2Model
// writes it: MLA as MQA over the compressed KV (head_count_kv 1, key_length kv_lora_rank + rope,
// key_length_mla / value_length_mla for the decompressed heads), kv_b_proj split into attn_k_b
// (transposed) and attn_v_b, the leading dense layers, stacked routed experts and shared experts.
// llama.cpp normalises and then scales routing weights and has no V2 group-limited routing.
import { type GgufFamily, type Metadata, commonMetadata, expertMetadata, ropeScalingMetadata } from "./family.ts";
import { bool, f32, u32 } from "./writer.ts";

const num = (value: unknown, fallback: number): number => (typeof value === "number" ? value : fallback);

/** DeepSeek's yarn_get_mscale. */
const yarnMscale = (scale: number, mscale: number): number => (scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1);

/** Keys DeepseekV2Model replaces in TextModel's set (MLA's MQA view of the heads). */
const REPLACED = /\.attention\.(head_count_kv|key_length|value_length)$/;

export const deepseekV2Family: GgufFamily = {
  arch: () => "deepseek2",
  refuse(config) {
    if (config.topk_method === "group_limited_greedy") return "llama.cpp's deepseek2 has no DeepSeek-V2 group-limited routing (its expert groups are DeepSeek-V3's)";
    if (config.norm_topk_prob === true && num(config.routed_scaling_factor, 1) !== 1) {
      return "llama.cpp's deepseek2 normalises and then scales the top-k weights, and DeepSeek-V2 with norm_topk_prob does not scale (routed_scaling_factor is not 1)";
    }
    if (num(config.moe_layer_freq, 1) !== 1) return "llama.cpp's deepseek2 has every layer after the leading dense ones sparse (moe_layer_freq 1)";
    const scaling = config.rope_scaling?.rope_type ?? "default";
    if (scaling !== "default" && scaling !== "yarn") return `llama.cpp's deepseek2 reads YaRN RoPE scaling only, not ${scaling}`;
    const yarn = config.rope_scaling;
    if (yarn?.rope_type === "yarn") {
      // DeepSeek scales cos/sin by mscale(f, mscale) / mscale(f, mscale_all_dim); llama.cpp has no slot for that ratio.
      const factor = yarn.factor ?? 1;
      const ratio = yarnMscale(factor, num(yarn.mscale, 1)) / yarnMscale(factor, num(yarn.mscale_all_dim, 0));
      if (Math.abs(ratio - 1) > 1e-9) return "llama.cpp's deepseek2 YaRN needs rope_scaling.mscale equal to mscale_all_dim (as DeepSeek-V2 and V2-Lite have)";
    }
    return null;
  },
  metadata(config, arch) {
    const [rank, rope, nope, v] = [num(config.kv_lora_rank, 512), num(config.qk_rope_head_dim, 64), num(config.qk_nope_head_dim, 128), num(config.v_head_dim, 128)];
    const routed = config.n_routed_experts as number | null | undefined;
    const metadata: Metadata = [
      ...commonMetadata(config, arch).filter(([key]) => !REPLACED.test(key)),
      [`${arch}.attention.head_count_kv`, u32(1)],
      [`${arch}.attention.key_length`, u32(rank + rope)],
      [`${arch}.attention.value_length`, u32(rank)],
      [`${arch}.leading_dense_block_count`, u32(routed ? num(config.first_k_dense_replace, 0) : config.num_hidden_layers)],
      // The converter writes no q_lora_rank for V2-Lite (llama.cpp tells "lite" by its layer count); 0 says so for any depth.
      [`${arch}.attention.q_lora_rank`, u32(num(config.q_lora_rank, 0))],
      [`${arch}.attention.kv_lora_rank`, u32(rank)],
      [`${arch}.attention.key_length_mla`, u32(nope + rope)],
      [`${arch}.attention.value_length_mla`, u32(v)],
      [`${arch}.expert_feed_forward_length`, u32(num(config.moe_intermediate_size, config.intermediate_size))],
      ...(routed ? expertMetadata(arch, routed, num(config.num_experts_per_tok, 1)) : []),
      [`${arch}.expert_shared_count`, u32(num(config.n_shared_experts, 0))],
      [`${arch}.expert_weights_scale`, f32(num(config.routed_scaling_factor, 1))],
      [`${arch}.rope.dimension_count`, u32(rope)],
      ...ropeScalingMetadata(config, arch),
    ];
    const scaling = config.rope_scaling;
    if (scaling?.rope_type === "yarn") {
      // [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX]: the converter writes 0.1 * mscale_all_dim, llama.cpp divides by 0.1.
      if (typeof scaling.mscale_all_dim === "number") metadata.push([`${arch}.rope.scaling.yarn_log_multiplier`, f32(0.1 * scaling.mscale_all_dim)]);
      if (typeof scaling.beta_fast === "number") metadata.push([`${arch}.rope.scaling.yarn_beta_fast`, f32(scaling.beta_fast)]);
      if (typeof scaling.beta_slow === "number") metadata.push([`${arch}.rope.scaling.yarn_beta_slow`, f32(scaling.beta_slow)]);
    }
    if (config.norm_topk_prob === true) metadata.push([`${arch}.expert_weights_norm`, bool(true)]);
    return metadata;
  },
  layerNames: () => ({
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_a_proj.weight": "attn_q_a.weight",
    "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
    "self_attn.q_b_proj.weight": "attn_q_b.weight",
    "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
    "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
    "self_attn.kv_b_proj.weight": "attn_kv_b.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
  }),
  expertNames: { "gate_proj.weight": "ffn_gate_exps.weight", "up_proj.weight": "ffn_up_exps.weight", "down_proj.weight": "ffn_down_exps.weight" },
  /** MLA's absorption: kv_b [H*(nope+v), rank] -> attn_k_b [H, rank, nope] and attn_v_b [H, v, rank]. */
  split(name, config) {
    if (!name.endsWith(".attn_kv_b.weight")) return null;
    const [rank, nope, v, H] = [num(config.kv_lora_rank, 512), num(config.qk_nope_head_dim, 128), num(config.v_head_dim, 128), config.num_attention_heads];
    const prefix = name.slice(0, -".attn_kv_b.weight".length);
    return [
      { name: `${prefix}.attn_k_b.weight`, shape: [H, rank, nope], make: (w) => w.view(H, nope + v, rank).narrow(1, 0, nope).transpose(1, 2) },
      { name: `${prefix}.attn_v_b.weight`, shape: [H, v, rank], make: (w) => w.view(H, nope + v, rank).narrow(1, nope, v) },
    ];
  },
};
