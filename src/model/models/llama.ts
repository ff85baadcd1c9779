// The Llama family, following transformers' modeling_llama.py (and its Mistral, Qwen2 and Qwen3
// variants, switched by config flags): RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU.
// Property names are the HF checkpoint names, so weights load without key maps.
import { type Tensor, Linear, Module, RMSNorm, tidy } from "../../torch/index.ts";
import type { AttentionCache } from "../cache.ts";
import type { AttentionKernel, BuildOptions, DecoderLayer, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { applyRotary } from "../rope.ts";
import { DecoderForCausalLM, DecoderModel, type RotaryContext, activation, defaultKernel } from "./decoder.ts";

/** What differs between the families that share this file (from the registry's alias table). */
export interface LlamaVariant {
  /** q/k/v projections carry a bias even when `attention_bias` is false (Qwen2). */
  qkvBias?: boolean;
  /** RMSNorm over each head of q and k before RoPE (Qwen3). */
  qkNorm?: boolean;
}

export type { BuildOptions, ForwardOptions } from "../causal_lm.ts";

// --- Attention -----------------------------------------------------------------------------------

export class LlamaAttention extends Module {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  q_norm: RMSNorm | null = null;
  k_norm: RMSNorm | null = null;
  attentionKernel: AttentionKernel;
  private readonly _heads: number;
  private readonly _kvHeads: number;
  private readonly _headDim: number;

  constructor(config: ModelConfig, variant: LlamaVariant, options: BuildOptions) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const };
    const [hidden, heads, kvHeads, headDim] = [config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim];
    const qkvBias = variant.qkvBias || config.attention_bias;
    this.q_proj = new Linear(hidden, heads * headDim, { ...layer, bias: qkvBias });
    this.k_proj = new Linear(hidden, kvHeads * headDim, { ...layer, bias: qkvBias });
    this.v_proj = new Linear(hidden, kvHeads * headDim, { ...layer, bias: qkvBias });
    this.o_proj = new Linear(heads * headDim, hidden, { ...layer, bias: config.attention_bias });
    if (variant.qkNorm) {
      this.q_norm = new RMSNorm(headDim, { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device });
      this.k_norm = new RMSNorm(headDim, { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device });
    }
    this.attentionKernel = defaultKernel(config._attn_implementation === "eager");
    this._heads = heads;
    this._kvHeads = kvHeads;
    this._headDim = headDim;
  }

  /** x [B, T, C] -> [B, T, C]; `mask` is additive [B, 1, T, S] or null for plain causal. */
  forward(x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | null, cache: AttentionCache | null, layerIndex: number): Tensor {
    const [B, T] = [x.shape[0]!, x.shape[1]!];
    const D = this._headDim;
    let q = this.q_proj.forward(x).view(B, T, this._heads, D); // [B, T, H, D]
    let k = this.k_proj.forward(x).view(B, T, this._kvHeads, D);
    const v = this.v_proj.forward(x).view(B, T, this._kvHeads, D).transpose(1, 2); // [B, Hkv, T, D]
    if (this.q_norm && this.k_norm) {
      q = this.q_norm.forward(q);
      k = this.k_norm.forward(k);
    }
    q = applyRotary(q.transpose(1, 2), cos, sin); // [B, H, T, D]
    k = applyRotary(k.transpose(1, 2), cos, sin); // [B, Hkv, T, D]
    // With a cache, k/v join the cached [B, Hkv, S, D] (each row its own, with RowCaches).
    const state = { training: this.training, cached: cache !== null };
    const attend = (query: Tensor, keys: Tensor, values: Tensor) => this.attentionKernel(query, keys, values, mask, state);
    const attended = cache ? cache.attend(layerIndex, q, k, v, attend) : attend(q, k, v);
    return this.o_proj.forward(attended.transpose(1, 2).reshape(B, T, this._heads * D));
  }
}

// --- MLP -----------------------------------------------------------------------------------------

export class LlamaMLP extends Module {
  gate_proj: Linear;
  up_proj: Linear;
  down_proj: Linear;
  private readonly _act: (x: Tensor) => Tensor;

  /** `intermediateSize` defaults to the config's (MoE experts pass moe_intermediate_size). */
  constructor(config: ModelConfig, options: BuildOptions, intermediateSize = config.intermediate_size, bias = config.mlp_bias) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const, bias };
    this.gate_proj = new Linear(config.hidden_size, intermediateSize, layer);
    this.up_proj = new Linear(config.hidden_size, intermediateSize, layer);
    this.down_proj = new Linear(intermediateSize, config.hidden_size, layer);
    this._act = activation(config.hidden_act);
  }

  /** SwiGLU (GeGLU with a gelu hidden_act): down(act(gate(x)) * up(x)) */
  forward(x: Tensor): Tensor {
    return this.down_proj.forward(this._act(this.gate_proj.forward(x)).mul(this.up_proj.forward(x)));
  }
}

// --- Decoder layer -------------------------------------------------------------------------------

export class LlamaDecoderLayer extends Module implements DecoderLayer {
  self_attn: LlamaAttention;
  mlp: LlamaMLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;

  constructor(config: ModelConfig, variant: LlamaVariant, options: BuildOptions) {
    super();
    const norm = { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device };
    this.self_attn = new LlamaAttention(config, variant, options);
    this.mlp = new LlamaMLP(config, options);
    this.input_layernorm = new RMSNorm(config.hidden_size, norm);
    this.post_attention_layernorm = new RMSNorm(config.hidden_size, norm);
  }

  /**
   * Pre-norm residual blocks: h = x + attn(norm(x)); out = h + mlp(norm(h)). Its own `tidy`, so a
   * layer's temporaries are freed as soon as it is done (autograd keeps what backward needs), as
   * Python frees them when they go out of scope; a frozen layer then leaves nothing behind.
   */
  forward(x: Tensor, context: LayerContext, cache: AttentionCache | null, layerIndex: number): Tensor {
    const { cos, sin, mask } = context as RotaryContext;
    return tidy(() => {
      const h = x.add(this.self_attn.forward(this.input_layernorm.forward(x), cos, sin, mask, cache, layerIndex));
      return h.add(this.mlp.forward(this.post_attention_layernorm.forward(h)));
    });
  }
}

// --- Model ---------------------------------------------------------------------------------------

export class LlamaModel extends DecoderModel<LlamaDecoderLayer> {}

export class LlamaForCausalLM extends DecoderForCausalLM<LlamaModel> {
  /** Its layers attend through `cache.attend`: continuous batching gives each row its own cache (RowCaches). */
  readonly perRowCaches = true;

  constructor(config: ModelConfig, variant: LlamaVariant = {}, options: BuildOptions = {}) {
    super(config, new LlamaModel(config, options, { layer: () => new LlamaDecoderLayer(config, variant, options) }), options);
  }
}
