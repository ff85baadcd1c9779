// GLM-4 in its 0414 layout (Glm4ForCausalLM, model_type glm4), following transformers'
// modeling_glm4.py: q/k/v with bias, partial rotary applied GLM's way (the first
// partial_rotary_factor of each head rotates adjacent channel pairs, cos/sin repeated per pair),
// norms after attention and after the MLP besides the pre-norms, and Phi-3's fused gate_up_proj MLP.
import { type Tensor, Linear, Module, RMSNorm, cat, stack, tidy } from "../../torch/index.ts";
import type { KVCache } from "../cache.ts";
import type { AttentionKernel, BuildOptions, DecoderLayer, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { DecoderForCausalLM, DecoderModel, type RotaryContext, defaultKernel } from "./decoder.ts";
import { Phi3MLP } from "./phi3.ts";

/**
 * GLM's apply_rotary_pos_emb on x [B, H, T, D] with cos/sin [B, T, R] (R <= D, emb = cat(f, f)):
 * the first R channels rotate as pairs (2i, 2i+1) by frequency i, the rest pass.
 */
export function applyInterleavedRotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  return tidy(() => {
    const [B, H, T, D] = x.shape as [number, number, number, number];
    const R = cos.shape[2]!;
    const pairCos = cos.narrow(2, 0, R / 2).repeatInterleave(2, 2).unsqueeze(1); // [B, 1, T, R]
    const pairSin = sin.narrow(2, 0, R / 2).repeatInterleave(2, 2).unsqueeze(1);
    const part = x.narrow(3, 0, R);
    const pairs = part.reshape(B, H, T, R / 2, 2);
    const rotated = stack([pairs.select(4, 1).neg(), pairs.select(4, 0)], -1).reshape(B, H, T, R); // (-x1, x0) per pair
    const embedded = part.mul(pairCos).add(rotated.mul(pairSin));
    return R < D ? cat([embedded, x.narrow(3, R, D - R)], 3) : embedded;
  });
}

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
