// The Gemma family, following transformers' modeling_gemma.py, modeling_gemma2.py and
// modeling_gemma3.py (Gemma3ForCausalLM, text only), switched by variant flags: (1 + w) RMSNorm,
// the embedding scaled by sqrt(hidden) in its own dtype, GeGLU, and for Gemma 2 and 3 norms before
// and after attention and MLP, attention scaled by query_pre_attn_scalar^-0.5, soft-capped
// attention and final logits, and sliding-window layers alternating with global ones (Gemma 3:
// q/k norms, a local RoPE base on sliding layers and the scaled global RoPE on the others).
import { type Tensor, Linear, Module, parameter, tidy, zeros } from "../../torch/index.ts";
import type { KVCache } from "../cache.ts";
import type { AttentionKernel, BuildOptions, DecoderLayer, ForwardOptions, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { RotaryEmbedding, applyRotary } from "../rope.ts";
import { DecoderForCausalLM, DecoderModel, type RotaryContext, defaultKernel, embeddingScale, rotaryContext } from "./decoder.ts";
import { LlamaMLP } from "./llama.ts";

/** What differs between Gemma, Gemma 2 and Gemma 3 (from the registry's alias table). */
export interface GemmaVariant {
  /** post_attention / pre_feedforward / post_feedforward norms, query_pre_attn_scalar, soft-capping (Gemma 2, 3). */
  sandwichNorms?: boolean;
  /** Which layers attend in a sliding window when config.json has no `layer_types`: every `n`-th layer is global. */
  globalEvery?: number;
  /** q_norm / k_norm over each head, and rope_local_base_freq on sliding layers (Gemma 3). */
  gemma3?: boolean;
}

type LayerType = "sliding_attention" | "full_attention";

/** config.json's `layer_types`, or the family's pattern (Gemma 2: layers 0, 2, ... slide; Gemma 3: all but every 6th). */
function layerTypes(config: ModelConfig, variant: GemmaVariant): LayerType[] {
  if (Array.isArray(config.layer_types)) return config.layer_types as LayerType[];
  const every = variant.gemma3 ? ((config.sliding_window_pattern as number | undefined) ?? variant.globalEvery ?? 6) : variant.globalEvery;
  return Array.from({ length: config.num_hidden_layers }, (_, i) => (every && (i + 1) % every !== 0 ? "sliding_attention" : "full_attention"));
}

/** Gemma's RMSNorm: x · rsqrt(mean(x²) + eps) · (1 + w), in float32 (or float64), cast back to x's dtype. */
export class GemmaRMSNorm extends Module {
  weight: Tensor;
  readonly eps: number;

  constructor(size: number, eps: number, options: BuildOptions) {
    super();
    // HF initialises the weight to zeros: the norm starts as a plain RMS normalisation.
    this.weight = parameter(zeros([size], { dtype: options.dtype ?? "float32", device: options.device ?? "cpu" }));
    this.eps = eps;
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const compute = x.dtype === "float64" ? "float64" : "float32";
      const hidden = x.to(compute);
      const normalised = hidden.mul(hidden.pow(2).mean(-1, true).add(this.eps).rsqrt());
      return normalised.mul(this.weight.to(compute).add(1)).to(x.dtype);
    });
  }
}

/** The sliding and the global layers' RoPE tables and masks for one pass. */
interface GemmaContext extends LayerContext {
  sliding: RotaryContext;
  full: RotaryContext;
}

// --- Attention -----------------------------------------------------------------------------------

export class GemmaAttention extends Module {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  q_norm: GemmaRMSNorm | null = null;
  k_norm: GemmaRMSNorm | null = null;
  attentionKernel: AttentionKernel;
  private readonly _heads: number;
  private readonly _kvHeads: number;
  private readonly _headDim: number;
  private readonly _scale: number;
  private readonly _softcap: number | null;

  constructor(config: ModelConfig, variant: GemmaVariant, options: BuildOptions) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const, bias: config.attention_bias };
    const [hidden, heads, kvHeads, headDim] = [config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim];
    this.q_proj = new Linear(hidden, heads * headDim, layer);
    this.k_proj = new Linear(hidden, kvHeads * headDim, layer);
    this.v_proj = new Linear(hidden, kvHeads * headDim, layer);
    this.o_proj = new Linear(heads * headDim, hidden, layer);
    if (variant.gemma3) {
      this.q_norm = new GemmaRMSNorm(headDim, config.rms_norm_eps, options);
      this.k_norm = new GemmaRMSNorm(headDim, config.rms_norm_eps, options);
    }
    this.attentionKernel = defaultKernel(config._attn_implementation === "eager");
    this._heads = heads;
    this._kvHeads = kvHeads;
    this._headDim = headDim;
    const scalar = variant.sandwichNorms ? ((config.query_pre_attn_scalar as number | undefined) ?? headDim) : headDim;
    this._scale = scalar ** -0.5;
    this._softcap = variant.sandwichNorms ? ((config.attn_logit_softcapping as number | null | undefined) ?? null) : null;
  }

  /** x [B, T, C] -> [B, T, C] */
  forward(x: Tensor, context: RotaryContext, cache: KVCache | null, layerIndex: number): Tensor {
    const [B, T] = [x.shape[0]!, x.shape[1]!];
    const D = this._headDim;
    let q = this.q_proj.forward(x).view(B, T, this._heads, D).transpose(1, 2); // [B, H, T, D]
    let k = this.k_proj.forward(x).view(B, T, this._kvHeads, D).transpose(1, 2); // [B, Hkv, T, D]
    const v = this.v_proj.forward(x).view(B, T, this._kvHeads, D).transpose(1, 2);
    if (this.q_norm && this.k_norm) {
      q = this.q_norm.forward(q);
      k = this.k_norm.forward(k);
    }
    q = applyRotary(q, context.cos, context.sin);
    k = applyRotary(k, context.cos, context.sin);
    let [keys, values] = [k, v];
    if (cache) [keys, values] = cache.update(layerIndex, k, v); // [B, Hkv, S, D]
    const state = { training: this.training, cached: cache !== null, scale: this._scale, softcap: this._softcap };
    const attended = this.attentionKernel(q, keys, values, context.mask, state);
    return this.o_proj.forward(attended.transpose(1, 2).reshape(B, T, this._heads * D));
  }
}

// --- Decoder layer -------------------------------------------------------------------------------

export class GemmaDecoderLayer extends Module implements DecoderLayer {
  self_attn: GemmaAttention;
  mlp: LlamaMLP;
  input_layernorm: GemmaRMSNorm;
  post_attention_layernorm: GemmaRMSNorm;
  pre_feedforward_layernorm: GemmaRMSNorm | null = null;
  post_feedforward_layernorm: GemmaRMSNorm | null = null;
  readonly layerType: LayerType;

  constructor(config: ModelConfig, variant: GemmaVariant, layerType: LayerType, options: BuildOptions) {
    super();
    const norm = () => new GemmaRMSNorm(config.hidden_size, config.rms_norm_eps, options);
    this.self_attn = new GemmaAttention(config, variant, options);
    // GeGLU: Gemma's MLP is Llama's with the tanh-approximated GELU (hidden_activation).
    const act = (config.hidden_activation as string | undefined) ?? "gelu_pytorch_tanh";
    this.mlp = new LlamaMLP({ ...config, hidden_act: act }, options, config.intermediate_size, false);
    this.input_layernorm = norm();
    this.post_attention_layernorm = norm();
    if (variant.sandwichNorms) {
      this.pre_feedforward_layernorm = norm();
      this.post_feedforward_layernorm = norm();
    }
    this.layerType = layerType;
  }

  /**
   * Gemma: h = x + attn(norm(x)); out = h + mlp(norm(h)). Gemma 2 and 3 also norm each block's
   * output: h = x + norm(attn(norm(x))); out = h + norm(mlp(norm(h))).
   */
  forward(x: Tensor, context: LayerContext, cache: KVCache | null, layerIndex: number): Tensor {
    const { sliding, full } = context as GemmaContext;
    return tidy(() => {
      const attended = this.self_attn.forward(this.input_layernorm.forward(x), this.layerType === "sliding_attention" ? sliding : full, cache, layerIndex);
      if (!this.pre_feedforward_layernorm || !this.post_feedforward_layernorm) {
        const h = x.add(attended);
        return h.add(this.mlp.forward(this.post_attention_layernorm.forward(h)));
      }
      const h = x.add(this.post_attention_layernorm.forward(attended));
      return h.add(this.post_feedforward_layernorm.forward(this.mlp.forward(this.pre_feedforward_layernorm.forward(h))));
    });
  }
}

// --- Model ---------------------------------------------------------------------------------------

export class GemmaModel extends DecoderModel<GemmaDecoderLayer> {
  /** Gemma 3's RoPE of the sliding layers (rope_local_base_freq, unscaled); null: the global one. */
  private readonly _localRotary: RotaryEmbedding | null;
  /** sqrt(hidden) rounded to the embedding's dtype, by dtype. */
  private readonly _normalizers = new Map<string, number>();

  constructor(config: ModelConfig, variant: GemmaVariant, options: BuildOptions) {
    const types = layerTypes(config, variant);
    super(config, options, {
      layer: (index) => new GemmaDecoderLayer(config, variant, types[index] ?? "full_attention", options),
      norm: (size) => new GemmaRMSNorm(size, config.rms_norm_eps, options),
    });
    const local = { ...config, rope_theta: (config.rope_local_base_freq as number | undefined) ?? 10000, rope_scaling: null };
    this._localRotary = variant.gemma3 ? new RotaryEmbedding(local) : null;
  }

  /** The embedding times sqrt(hidden), that factor rounded to the embedding's dtype as in HF. */
  override embed(inputIds: Tensor): Tensor {
    const dtype = this.embed_tokens.weight.dtype;
    if (!this._normalizers.has(dtype)) this._normalizers.set(dtype, embeddingScale(this.config.hidden_size, dtype));
    return tidy(() => this.embed_tokens.forward(inputIds).mul(this._normalizers.get(dtype)!));
  }

  override prepare(inputIds: Tensor, options: ForwardOptions = {}): GemmaContext {
    this.beginPass(inputIds, options);
    const dtype = this.embed_tokens.weight.dtype;
    const full = rotaryContext(this._rotary, inputIds, options, null, dtype);
    const sliding = rotaryContext(this._localRotary ?? this._rotary, inputIds, options, this._slidingWindow, dtype);
    return { full, sliding, tensors: [...full.tensors, ...sliding.tensors] };
  }

  override dispose(): void {
    super.dispose();
    this._localRotary?.dispose();
  }
}

export class GemmaForCausalLM extends DecoderForCausalLM<GemmaModel> {
  constructor(config: ModelConfig, variant: GemmaVariant = {}, options: BuildOptions = {}) {
    super(config, new GemmaModel(config, variant, options), options);
  }
}

