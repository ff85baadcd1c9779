// Qwen2-MoE and Qwen3-MoE as GGUF: llama.cpp's `qwen2moe` and `qwen3moe`, as the converter's
// Qwen2MoeModel / Qwen3MoeModel write them: the router as ffn_gate_inp (float32), experts stacked
// into 3-D ffn_{gate,up,down}_exps [E, out, in], Qwen2-MoE's shared expert as ffn_*_shexp with its
// sigmoid gate ffn_gate_inp_shexp, expert sizes as expert_(shared_)feed_forward_length. llama.cpp's
// graphs renormalise top-k weights for qwen3moe, never for qwen2moe, and have every layer sparse.
import type { ModelConfig } from "../../model/config.ts";
import { type GgufFamily, type Metadata, commonMetadata, expertMetadata, ropeDimensions, ropeScalingMetadata } from "./family.ts";
import { LAYER_TENSOR_NAMES } from "./llama.ts";
import { u32 } from "./writer.ts";

const isQwen3 = (config: ModelConfig) => config.model_type === "qwen3_moe";

export const qwenMoeFamily: GgufFamily = {
  arch: (config) => (isQwen3(config) ? "qwen3moe" : "qwen2moe"),
  refuse(config) {
    const norm = config.norm_topk_prob === true;
    if (isQwen3(config) && !norm) return "llama.cpp's qwen3moe renormalises the top-k routing weights, and this config has norm_topk_prob: false";
    if (!isQwen3(config) && norm) return "llama.cpp's qwen2moe never renormalises the top-k routing weights, and this config has norm_topk_prob: true";
    const dense = (config.mlp_only_layers as number[] | undefined) ?? [];
    const step = (config.decoder_sparse_step as number | undefined) ?? 1;
    if (dense.length || step !== 1) return "llama.cpp's graph has every layer sparse, and this config has dense MLP layers (mlp_only_layers / decoder_sparse_step)";
    if (config.use_sliding_window) return "llama.cpp's graph has no sliding-window attention (use_sliding_window)";
    return null;
  },
  metadata(config, arch) {
    const metadata: Metadata = [
      ...commonMetadata(config, arch),
      ...ropeDimensions(config, arch),
      ...ropeScalingMetadata(config, arch),
      ...expertMetadata(arch, config.num_experts as number, config.num_experts_per_tok as number),
      [`${arch}.expert_feed_forward_length`, u32(config.moe_intermediate_size as number)],
    ];
    if (!isQwen3(config)) metadata.push([`${arch}.expert_shared_feed_forward_length`, u32(config.shared_expert_intermediate_size as number)]);
    return metadata;
  },
  layerNames: () => ({
    ...LAYER_TENSOR_NAMES,
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
  }),
  expertNames: { "gate_proj.weight": "ffn_gate_exps.weight", "up_proj.weight": "ffn_up_exps.weight", "down_proj.weight": "ffn_down_exps.weight" },
  notInGraph: /\.attn_output\.bias$/,
  // llama.cpp's qwen2moe loader requires output.weight.
  untieOutput: true,
};
