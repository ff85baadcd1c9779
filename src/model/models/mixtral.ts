// Mixtral, following transformers' modeling_mixtral.py: Mistral's attention with each MLP replaced
// by a sparse mixture of experts (`block_sparse_moe`: a softmax router `gate` choosing the top
// num_experts_per_tok of num_local_experts SwiGLU experts w1/w2/w3, their weights renormalised),
// with router jitter in training and the router's load-balancing loss (moe.ts).
import { type Tensor, Linear, Module, RMSNorm, rand, tidy } from "../../torch/index.ts";
import type { KVCache } from "../cache.ts";
import type { BuildOptions, DecoderLayer, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { DecoderForCausalLM, DecoderModel, type RotaryContext, activation } from "./decoder.ts";
import { LlamaAttention } from "./llama.ts";
import { RouterLoadBalancing, dispatchExperts, topKRouting } from "./moe.ts";

/** An expert: w2(act(w1(x)) * w3(x)) (HF's MixtralBlockSparseTop2MLP). */
export class MixtralExpert extends Module {
  w1: Linear;
  w2: Linear;
  w3: Linear;
  private readonly _act: (x: Tensor) => Tensor;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const, bias: false };
    this.w1 = new Linear(config.hidden_size, config.intermediate_size, layer);
    this.w2 = new Linear(config.intermediate_size, config.hidden_size, layer);
    this.w3 = new Linear(config.hidden_size, config.intermediate_size, layer);
    this._act = activation(config.hidden_act);
  }

  forward(x: Tensor): Tensor {
    return this.w2.forward(this._act(this.w1.forward(x)).mul(this.w3.forward(x)));
  }
}

export class MixtralSparseMoeBlock extends Module {
  gate: Linear;
  experts: MixtralExpert[];
  private readonly _topK: number;
  private readonly _jitter: number;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    const numExperts = config.num_local_experts as number;
    this.gate = new Linear(config.hidden_size, numExperts, { dtype: options.dtype, device: options.device, init: "empty", bias: false });
    this.experts = Array.from({ length: numExperts }, () => new MixtralExpert(config, options));
    this._topK = config.num_experts_per_tok as number;
    this._jitter = (config.router_jitter_noise as number | undefined) ?? 0;
  }

  /** x [B, T, C] -> [B, T, C]; `record` receives the router logits [B*T, E]. */
  forward(x: Tensor, record: (routerLogits: Tensor) => void): Tensor {
    return tidy(() => {
      const [B, T, C] = x.shape as [number, number, number];
      let hidden = x.reshape(B * T, C);
      // Router jitter: the input of both the router and the experts is scaled by U(1 - j, 1 + j).
      if (this.training && this._jitter > 0) hidden = hidden.mul(rand(hidden.shape, { dtype: hidden.dtype, device: hidden.device }).mul(2 * this._jitter).add(1 - this._jitter));
      const routerLogits = this.gate.forward(hidden); // [N, E]
      record(routerLogits);
      const { weights, experts } = topKRouting(routerLogits, this._topK, true);
      return dispatchExperts(hidden, this.experts, experts, weights).view(B, T, C);
    });
  }
}

export class MixtralDecoderLayer extends Module implements DecoderLayer {
  self_attn: LlamaAttention;
  block_sparse_moe: MixtralSparseMoeBlock;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
  private readonly _balance: RouterLoadBalancing;

  constructor(config: ModelConfig, balance: RouterLoadBalancing, options: BuildOptions) {
    super();
    const norm = { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device };
    this.self_attn = new LlamaAttention(config, {}, options);
    this.block_sparse_moe = new MixtralSparseMoeBlock(config, options);
    this.input_layernorm = new RMSNorm(config.hidden_size, norm);
    this.post_attention_layernorm = new RMSNorm(config.hidden_size, norm);
    this._balance = balance;
  }

  forward(x: Tensor, context: LayerContext, cache: KVCache | null, layerIndex: number): Tensor {
    const { cos, sin, mask } = context as RotaryContext;
    return tidy(() => {
      const h = x.add(this.self_attn.forward(this.input_layernorm.forward(x), cos, sin, mask, cache, layerIndex));
      const moe = this.block_sparse_moe.forward(this.post_attention_layernorm.forward(h), (logits) => this._balance.record(layerIndex, logits));
      return h.add(moe);
    });
  }
}

export class MixtralModel extends DecoderModel<MixtralDecoderLayer> {}

export class MixtralForCausalLM extends DecoderForCausalLM<MixtralModel> {
  constructor(config: ModelConfig, options: BuildOptions = {}) {
    const balance = new RouterLoadBalancing(config, config.num_local_experts as number, config.num_experts_per_tok as number);
    super(config, new MixtralModel(config, options, { layer: () => new MixtralDecoderLayer(config, balance, options), auxiliary: balance }), options);
  }
}
