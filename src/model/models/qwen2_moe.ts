// Qwen2-MoE and Qwen3-MoE, following transformers' modeling_qwen2_moe.py and modeling_qwen3_moe.py:
// Qwen2's (or Qwen3's, with q/k norms) attention, and on every decoder_sparse_step-th layer not in
// mlp_only_layers a sparse block (`mlp`: router `gate`, `experts` of moe_intermediate_size, top
// num_experts_per_tok renormalised when norm_topk_prob), plus in Qwen2-MoE a `shared_expert` every
// token passes through, scaled by sigmoid(`shared_expert_gate`). Other layers keep a dense MLP.
import { type Tensor, Linear, Module, RMSNorm, tidy } from "../../torch/index.ts";
import type { KVCache } from "../cache.ts";
import type { BuildOptions, DecoderLayer, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { DecoderForCausalLM, DecoderModel, type RotaryContext } from "./decoder.ts";
import { LlamaAttention, LlamaMLP } from "./llama.ts";
import { RouterLoadBalancing, dispatchExperts, topKRouting } from "./moe.ts";

/** What differs between Qwen2-MoE and Qwen3-MoE (from the registry's alias table). */
export interface QwenMoeVariant {
  /** Qwen3-MoE: q/k norms, no q/k/v bias, no shared expert. */
  qwen3?: boolean;
}

export class QwenMoeSparseBlock extends Module {
  gate: Linear;
  experts: LlamaMLP[];
  shared_expert: LlamaMLP | null = null;
  shared_expert_gate: Linear | null = null;
  private readonly _topK: number;
  private readonly _normTopK: boolean;

  constructor(config: ModelConfig, variant: QwenMoeVariant, options: BuildOptions) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const, bias: false };
    const numExperts = config.num_experts as number;
    this.gate = new Linear(config.hidden_size, numExperts, layer);
    this.experts = Array.from({ length: numExperts }, () => new LlamaMLP(config, options, config.moe_intermediate_size as number, false));
    if (!variant.qwen3) {
      this.shared_expert = new LlamaMLP(config, options, config.shared_expert_intermediate_size as number, false);
      this.shared_expert_gate = new Linear(config.hidden_size, 1, layer);
    }
    this._topK = config.num_experts_per_tok as number;
    this._normTopK = config.norm_topk_prob === true;
  }

  /** x [B, T, C] -> [B, T, C]; `record` receives the router logits [B*T, E]. */
  forward(x: Tensor, record: (routerLogits: Tensor) => void): Tensor {
    return tidy(() => {
      const [B, T, C] = x.shape as [number, number, number];
      const hidden = x.reshape(B * T, C);
      const routerLogits = this.gate.forward(hidden); // [N, E]
      record(routerLogits);
      const { weights, experts } = topKRouting(routerLogits, this._topK, this._normTopK);
      let out = dispatchExperts(hidden, this.experts, experts, weights);
      if (this.shared_expert && this.shared_expert_gate) {
        out = out.add(this.shared_expert_gate.forward(hidden).sigmoid().mul(this.shared_expert.forward(hidden)));
      }
      return out.view(B, T, C);
    });
  }
}

/** Whether layer `index` is sparse: HF's mlp_only_layers and decoder_sparse_step. */
function isSparse(config: ModelConfig, index: number): boolean {
  const dense = (config.mlp_only_layers as number[] | undefined) ?? [];
  const step = (config.decoder_sparse_step as number | undefined) ?? 1;
  return !dense.includes(index) && (config.num_experts as number) > 0 && (index + 1) % step === 0;
}

export class QwenMoeDecoderLayer extends Module implements DecoderLayer {
  self_attn: LlamaAttention;
  mlp: QwenMoeSparseBlock | LlamaMLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
  private readonly _balance: RouterLoadBalancing;

  constructor(config: ModelConfig, variant: QwenMoeVariant, index: number, balance: RouterLoadBalancing, options: BuildOptions) {
    super();
    const norm = { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device };
    const qkvBias = variant.qwen3 ? false : config.qkv_bias !== false;
    this.self_attn = new LlamaAttention(config, { qkvBias, qkNorm: variant.qwen3 }, options);
    this.mlp = isSparse(config, index) ? new QwenMoeSparseBlock(config, variant, options) : new LlamaMLP(config, options, config.intermediate_size, false);
    this.input_layernorm = new RMSNorm(config.hidden_size, norm);
    this.post_attention_layernorm = new RMSNorm(config.hidden_size, norm);
    this._balance = balance;
  }

  forward(x: Tensor, context: LayerContext, cache: KVCache | null, layerIndex: number): Tensor {
    const { cos, sin, mask } = context as RotaryContext;
    return tidy(() => {
      const h = x.add(this.self_attn.forward(this.input_layernorm.forward(x), cos, sin, mask, cache, layerIndex));
      const normed = this.post_attention_layernorm.forward(h);
      const mlp = this.mlp instanceof QwenMoeSparseBlock ? this.mlp.forward(normed, (logits) => this._balance.record(layerIndex, logits)) : this.mlp.forward(normed);
      return h.add(mlp);
    });
  }
}

export class QwenMoeModel extends DecoderModel<QwenMoeDecoderLayer> {}

export class QwenMoeForCausalLM extends DecoderForCausalLM<QwenMoeModel> {
  constructor(config: ModelConfig, variant: QwenMoeVariant = {}, options: BuildOptions = {}) {
    const balance = new RouterLoadBalancing(config, config.num_experts as number, config.num_experts_per_tok as number);
    const layer = (index: number) => new QwenMoeDecoderLayer(config, variant, index, balance, options);
    super(config, new QwenMoeModel(config, options, { layer, auxiliary: balance }), options);
  }
}
