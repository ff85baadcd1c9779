// GLM-4 in its 0414 layout (Glm4ForCausalLM, model_type glm4), following transformers'
// modeling_glm4.py: q/k/v with bias, partial rotary applied GLM's way (the first
// partial_rotary_factor of each head rotates adjacent channel pairs, cos/sin repeated per pair),
// norms after attention and after the MLP besides the pre-norms, and Phi-3's fused gate_up_proj MLP.
import { type Tensor, Linear, Module, RMSNorm, tidy } from "../../torch/index.ts";
import type { KVCache } from "../cache.ts";
import type { AttentionKernel, BuildOptions, DecoderLayer, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { applyInterleavedRotary } from "../rope.ts";
import { DecoderForCausalLM, DecoderModel, type RotaryContext, defaultKernel } from "./decoder.ts";
import { Phi3MLP } from "./phi3.ts";

// --- Attention -----------------------------------------------------------------------------------

export class Glm4Attention extends Module {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  attentionKernel: AttentionKernel;
  private readonly _heads: number;
  private readonly _kvHeads: number;
  private readonly _headDim: number;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const, bias: config.attention_bias };
    const [hidden, heads, kvHeads, headDim] = [config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim];
    this.q_proj = new Linear(hidden, heads * headDim, layer);
    this.k_proj = new Linear(hidden, kvHeads * headDim, layer);
    this.v_proj = new Linear(hidden, kvHeads * headDim, layer);
    this.o_proj = new Linear(heads * headDim, hidden, { ...layer, bias: false });
    this.attentionKernel = defaultKernel(config._attn_implementation === "eager");
    this._heads = heads;
    this._kvHeads = kvHeads;
    this._headDim = headDim;
  }

  /** x [B, T, C] -> [B, T, C] */
  forward(x: Tensor, context: RotaryContext, cache: KVCache | null, layerIndex: number): Tensor {
    const [B, T] = [x.shape[0]!, x.shape[1]!];
    const D = this._headDim;
    const q = applyInterleavedRotary(this.q_proj.forward(x).view(B, T, this._heads, D).transpose(1, 2), context.cos, context.sin); // [B, H, T, D]
    const k = applyInterleavedRotary(this.k_proj.forward(x).view(B, T, this._kvHeads, D).transpose(1, 2), context.cos, context.sin);
    let [keys, values] = [k, this.v_proj.forward(x).view(B, T, this._kvHeads, D).transpose(1, 2)];
    if (cache) [keys, values] = cache.update(layerIndex, keys, values); // [B, Hkv, S, D]
    const attended = this.attentionKernel(q, keys, values, context.mask, { training: this.training, cached: cache !== null });
    return this.o_proj.forward(attended.transpose(1, 2).reshape(B, T, this._heads * D));
  }
}

// --- Decoder layer -------------------------------------------------------------------------------

export class Glm4DecoderLayer extends Module implements DecoderLayer {
  self_attn: Glm4Attention;
  mlp: Phi3MLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
  post_self_attn_layernorm: RMSNorm;
  post_mlp_layernorm: RMSNorm;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    const norm = () => new RMSNorm(config.hidden_size, { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device });
    this.self_attn = new Glm4Attention(config, options);
    this.mlp = new Phi3MLP(config, options);
    this.input_layernorm = norm();
    this.post_attention_layernorm = norm();
    this.post_self_attn_layernorm = norm();
    this.post_mlp_layernorm = norm();
  }

  /** h = x + norm(attn(norm(x))); out = h + norm(mlp(norm(h))). */
  forward(x: Tensor, context: LayerContext, cache: KVCache | null, layerIndex: number): Tensor {
    return tidy(() => {
      const attended = this.self_attn.forward(this.input_layernorm.forward(x), context as RotaryContext, cache, layerIndex);
      const h = x.add(this.post_self_attn_layernorm.forward(attended));
      return h.add(this.post_mlp_layernorm.forward(this.mlp.forward(this.post_attention_layernorm.forward(h))));
    });
  }
}

// --- Model ---------------------------------------------------------------------------------------

export class Glm4Model extends DecoderModel<Glm4DecoderLayer> {}

export class Glm4ForCausalLM extends DecoderForCausalLM<Glm4Model> {
  constructor(config: ModelConfig, options: BuildOptions = {}) {
    super(config, new Glm4Model(config, options, { layer: () => new Glm4DecoderLayer(config, options) }), options);
  }
}
