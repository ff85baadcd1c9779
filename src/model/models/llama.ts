// The Llama family, following transformers' modeling_llama.py (and its Mistral, Qwen2 and Qwen3
// variants, switched by config flags): RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU.
// Property names are the HF checkpoint names, so weights load without key maps.
import {
  type Tensor,
  Embedding,
  Linear,
  Module,
  RMSNorm,
  arange,
  attentionComposed,
  full,
  scaledDotProductAttention,
  tidy,
} from "../../torch/index.ts";
import type { AttentionCache } from "../cache.ts";
import type { AttentionKernel, BuildOptions, CausalLM, DecoderLayer, ForwardOptions, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { RotaryEmbedding, applyRotary } from "../rope.ts";

/** What differs between the families that share this file (from the registry's alias table). */
export interface LlamaVariant {
  /** q/k/v projections carry a bias even when `attention_bias` is false (Qwen2). */
  qkvBias?: boolean;
  /** RMSNorm over each head of q and k before RoPE (Qwen3). */
  qkNorm?: boolean;
}

export type { BuildOptions, ForwardOptions } from "../causal_lm.ts";

/** RoPE tables and the mask every layer of one pass shares. */
interface LlamaContext extends LayerContext {
  cos: Tensor;
  sin: Tensor;
  mask: Tensor | null;
}

/** `eager` composes attention from matmul and softmax; `sdpa` uses the engine's fused kernel. */
function defaultKernel(eager: boolean): AttentionKernel {
  const attend = eager ? attentionComposed : scaledDotProductAttention;
  return (q, k, v, mask) => (mask ? attend(q, k, v, { mask }) : attend(q, k, v, { isCausal: true }));
}

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

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const, bias: config.mlp_bias };
    this.gate_proj = new Linear(config.hidden_size, config.intermediate_size, layer);
    this.up_proj = new Linear(config.hidden_size, config.intermediate_size, layer);
    this.down_proj = new Linear(config.intermediate_size, config.hidden_size, layer);
  }

  /** SwiGLU: down(silu(gate(x)) * up(x)) */
  forward(x: Tensor): Tensor {
    return this.down_proj.forward(this.gate_proj.forward(x).silu().mul(this.up_proj.forward(x)));
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
    const { cos, sin, mask } = context as LlamaContext;
    return tidy(() => {
      const h = x.add(this.self_attn.forward(this.input_layernorm.forward(x), cos, sin, mask, cache, layerIndex));
      return h.add(this.mlp.forward(this.post_attention_layernorm.forward(h)));
    });
  }
}

// --- Model ---------------------------------------------------------------------------------------

export class LlamaModel extends Module {
  embed_tokens: Embedding;
  layers: LlamaDecoderLayer[];
  norm: RMSNorm;
  private readonly _rotary: RotaryEmbedding;
  private readonly _slidingWindow: number | null;

  constructor(
    readonly config: ModelConfig,
    variant: LlamaVariant,
    options: BuildOptions,
  ) {
    super();
    this.embed_tokens = new Embedding(config.vocab_size, config.hidden_size, {
      dtype: options.dtype,
      device: options.device,
      init: "empty",
      paddingIdx: config.pad_token_id ?? null,
    });
    this.layers = Array.from({ length: config.num_hidden_layers }, () => new LlamaDecoderLayer(config, variant, options));
    this.norm = new RMSNorm(config.hidden_size, { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device });
    this._rotary = new RotaryEmbedding(config);
    this._slidingWindow = config.sliding_window ?? null;
  }

  /** ids [B, T] -> final hidden states [B, T, C]. */
  forward(inputIds: Tensor, options: ForwardOptions = {}): Tensor {
    const cache = options.cache ?? null;
    const context = this.prepare(inputIds, options);
    let hidden = this.embed_tokens.forward(inputIds);
    this.layers.forEach((layer, index) => {
      hidden = layer.forward(hidden, context, cache, index);
    });
    return this.norm.forward(hidden);
  }

  /** What every layer shares for this batch: RoPE cos/sin [B, T, D] and the attention mask. */
  prepare(inputIds: Tensor, options: ForwardOptions = {}): LlamaContext {
    const [B, T] = [inputIds.shape[0]!, inputIds.shape[1]!];
    const past = options.cache?.length ?? 0;
    const positions = options.positionIds ?? defaultPositions(B, T, past, options.attentionMask ?? null);
    const { cos, sin } = this._rotary.forward(positions);
    // Computed in float32, then cast to the activations' dtype as HF does.
    const dtype = this.embed_tokens.weight.dtype;
    // Rows with caches of their own have no shared mask (RowCaches: single tokens, no padding).
    const mask = options.cache?.perRow ? null : this.buildMask(B, T, past, options.attentionMask ?? null);
    const context = { cos: cos.to(dtype), sin: sin.to(dtype), mask: mask && mask.to(dtype) };
    return { ...context, tensors: [context.cos, context.sin, ...(context.mask ? [context.mask] : [])] };
  }

  /**
   * The additive mask [B, 1, T, S] (0 visible, -inf hidden), or null when causal attention with
   * the queries as the last T of S positions is exact (no padding, no sliding window in reach),
   * which lets attention use the fused causal kernel, or no mask at all for a single query.
   */
  private buildMask(B: number, T: number, past: number, attentionMask: Tensor | null): Tensor | null {
    const S = past + T;
    const windowActive = this._slidingWindow !== null && S > this._slidingWindow;
    if (!attentionMask && !windowActive) return null;
    const query = arange(past, S).view(T, 1); // absolute position of each query
    const key = arange(0, S).view(1, S);
    let visible = key.le(query); // [T, S]
    if (windowActive) visible = visible.logicalAnd(query.sub(key).lt(this._slidingWindow!));
    let mask = visible.view(1, 1, T, S).expand(B, 1, T, S);
    if (attentionMask) {
      mask = mask.logicalAnd(attentionMask.to("bool").view(B, 1, 1, S));
      if (past === 0) {
        // Neat packing numbers the examples of a row 1, 2, 3... (0 = padding): a token sees only
        // its own example (block-diagonal), as LLaMA-Factory's prepare_4d_attention_mask.
        const segments = attentionMask.to("int64");
        mask = mask.logicalAnd(segments.view(B, 1, T, 1).eq(segments.view(B, 1, 1, S)));
      }
      // A query on a left-padding slot sees no key at all; let it see every key instead (its output
      // is never used) so softmax gives no NaN, as HF's _unmask_unattended does.
      const blind = mask.to("int32").sum(-1, true).eq(0); // [B, 1, T, 1]
      mask = mask.logicalOr(blind);
    }
    return full([B, 1, T, S], 0, { dtype: "float32" }).maskedFill(mask.logicalNot(), -Infinity);
  }

  override dispose(): void {
    super.dispose();
    this._rotary.dispose();
  }
}

/** Positions [B, T]: from the padding mask when given (left padding), else past .. past+T-1. */
function defaultPositions(B: number, T: number, past: number, attentionMask: Tensor | null): Tensor {
  if (attentionMask) {
    // HF generate: position = cumsum(mask) - 1, with padded slots set to 1.
    const positions = attentionMask.to("int64").cumsum(-1).sub(1).maskedFill(attentionMask.eq(0), 1);
    return positions.slice(1, past, past + T);
  }
  return arange(past, past + T).view(1, T).expand(B, T);
}

export class LlamaForCausalLM extends Module implements CausalLM {
  model: LlamaModel;
  lm_head: Linear;
  upcastLogits = false;
  readonly perRowCaches = true;

  constructor(
    readonly config: ModelConfig,
    variant: LlamaVariant = {},
    options: BuildOptions = {},
  ) {
    super();
    this.model = new LlamaModel(config, variant, options);
    this.lm_head = new Linear(config.hidden_size, config.vocab_size, {
      bias: false,
      dtype: options.dtype,
      device: options.device,
      init: "empty",
    });
    if (config.tie_word_embeddings) {
      this.lm_head.weight.dispose();
      this.lm_head.weight = this.model.embed_tokens.weight;
    }
    if ((options.init ?? "hf") === "hf") this.initWeights();
  }

  /** HF `_init_weights`: Linear and Embedding ~ N(0, initializer_range), biases zero, norms one. */
  initWeights(): void {
    const std = this.config.initializer_range;
    for (const module of this.modules()) {
      if (module instanceof Linear || module instanceof Embedding) module.initNormal(std);
    }
  }

  get decoderLayers(): readonly DecoderLayer[] {
    return this.model.layers;
  }

  forward(inputIds: Tensor, options: ForwardOptions = {}): Tensor {
    return tidy(() => {
      let hidden = this.model.forward(inputIds, options);
      const keepLast = options.logitsToKeep ?? 0;
      // Generation needs the last position only; the vocabulary projection of a whole prompt is
      // often the largest matmul of the prefill.
      if (keepLast > 0 && keepLast < hidden.shape[1]!) hidden = hidden.narrow(1, hidden.shape[1]! - keepLast, keepLast);
      return this.logits(hidden);
    });
  }

  hiddenStates(inputIds: Tensor, options: ForwardOptions = {}): Tensor {
    return this.model.forward(inputIds, options);
  }

  embed(inputIds: Tensor): Tensor {
    return this.model.embed_tokens.forward(inputIds);
  }

  layerContext(inputIds: Tensor, options: ForwardOptions = {}): LayerContext {
    return this.model.prepare(inputIds, options);
  }

  finalNorm(hidden: Tensor): Tensor {
    return this.model.norm.forward(hidden);
  }

  logits(hidden: Tensor): Tensor {
    const logits = this.lm_head.forward(hidden);
    return this.upcastLogits ? logits.to("float32") : logits;
  }

  inputEmbeddings(): Embedding {
    return this.model.embed_tokens;
  }

  outputEmbeddings(): Linear {
    return this.lm_head;
  }
}
