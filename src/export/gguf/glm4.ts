// GLM-4 (0414 layout, Glm4ForCausalLM) as GGUF: llama.cpp's `glm4`, as convert_hf_to_gguf.py's
// Glm4Model writes it: q/k/v with their biases, the fused gate_up_proj as ffn_up (SwiGLU, gate
// first), the extra norms after attention (post_attention_norm) and after the MLP (post_ffw_norm),
// and the partial rotary dimension. GLM rotates interleaved pairs, which is llama.cpp's own
// (non-NEOX) RoPE layout for glm4, so q/k are written as they are.
import { type GgufFamily, commonMetadata, ropeDimensions, ropeScalingMetadata } from "./family.ts";

export const glm4Family: GgufFamily = {
  arch: () => "glm4",
  metadata: (config, arch) => [...commonMetadata(config, arch), ...ropeDimensions(config, arch), ...ropeScalingMetadata(config, arch)],
  layerNames: () => ({
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_self_attn_layernorm.weight": "post_attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_mlp_layernorm.weight": "post_ffw_norm.weight",
  }),
};
