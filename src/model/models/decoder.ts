// The decoder-only skeleton every family shares, after transformers' XxxModel / XxxForCausalLM:
// the token embedding, the decoder layers, the final norm and the LM head (tied or not), HF's
// `_init_weights`, the positions and attention mask of a pass, and the attention kernel. A family
// file supplies its decoder layers (and, where it differs, its norm, embedding or layer context).
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
  tensor,
  tidy,
} from "../../torch/index.ts";
import type { AttentionKernel, BuildOptions, CausalLM, DecoderLayer, ForwardOptions, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { RotaryEmbedding } from "../rope.ts";

/** A norm module: RMSNorm, or a family's own (Gemma's 1 + w). */
export type Norm = Module & { weight: Tensor; forward(x: Tensor): Tensor };

/** RoPE tables and the mask every layer of one pass shares (the common case). */
export interface RotaryContext extends LayerContext {
  cos: Tensor;
  sin: Tensor;
  mask: Tensor | null;
}

/**
 * What collects an auxiliary loss during a pass (models/moe.ts's router load balancing); see
 * CausalLM.auxiliaryLoss and auxiliaryLossOfLayer for the contract.
 */
export interface AuxiliaryCollector {
  /**
   * A new pass over tokens [B, T] (`attentionMask` over them, or null), decoding with a cache or
   * not, the model training or not: the collector decides whether the pass records anything.
   */
  begin(B: number, T: number, attentionMask: Tensor | null, pass: { cached: boolean; training: boolean }): void;
  loss(): Tensor | null;
  lossOfLayer(layerIndex: number): Tensor | null;
  dispose(): void;
}

/** `eager` composes attention from matmul and softmax; `sdpa` uses the engine's fused kernel. */
export function defaultKernel(eager: boolean): AttentionKernel {
  const attend = eager ? attentionComposed : scaledDotProductAttention;
  return (q, k, v, mask, state) => {
    const options = { scale: state.scale, softcap: state.softcap };
    return mask ? attend(q, k, v, { ...options, mask }) : attend(q, k, v, { ...options, isCausal: true });
  };
}

/** transformers' ACT2FN for the activations the families use. */
export function activation(name: string): (x: Tensor) => Tensor {
  switch (name) {
    case "silu":
    case "swish":
      return (x) => x.silu();
    case "gelu":
      return (x) => x.gelu();
    case "gelu_pytorch_tanh":
    case "gelu_new":
    case "gelu_fast":
      return (x) => x.gelu("tanh");
    case "relu":
      return (x) => x.relu();
    default:
      throw new Error(`hidden activation '${name}' is not supported`);
  }
}

/** HF's `_init_weights`: Linear and Embedding ~ N(0, initializer_range), biases zero. */
export function initWeights(model: Module, std: number): void {
  for (const module of model.modules()) {
    if (module instanceof Linear || module instanceof Embedding) module.initNormal(std);
  }
}

/** Positions [B, T]: from the padding mask when given (left padding), else past .. past+T-1. */
export function defaultPositions(B: number, T: number, past: number, attentionMask: Tensor | null): Tensor {
  if (attentionMask) {
    // HF generate: position = cumsum(mask) - 1, with padded slots set to 1.
    const positions = attentionMask.to("int64").cumsum(-1).sub(1).maskedFill(attentionMask.eq(0), 1);
    return positions.slice(1, past, past + T);
  }
  return arange(past, past + T).view(1, T).expand(B, T);
}

/**
 * The additive mask [B, 1, T, S] (0 visible, -inf hidden), or null when causal attention with
 * the queries as the last T of S positions is exact (no padding, no sliding window in reach),
 * which lets attention use the fused causal kernel. A key is in a query's window when
 * query - key < window (transformers' sliding_window_causal mask).
 */
export function attentionMask(B: number, T: number, past: number, attentionMask: Tensor | null, slidingWindow: number | null): Tensor | null {
  const S = past + T;
  const windowActive = slidingWindow !== null && S > slidingWindow;
  if (!attentionMask && !windowActive) return null;
  const query = arange(past, S).view(T, 1); // absolute position of each query
  const key = arange(0, S).view(1, S);
  let visible = key.le(query); // [T, S]
  if (windowActive) visible = visible.logicalAnd(query.sub(key).lt(slidingWindow!));
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

/** The model's pass: its length so far (the cache's), positions and the padding mask. */
export function passGeometry(inputIds: Tensor, options: ForwardOptions) {
  const [B, T] = [inputIds.shape[0]!, inputIds.shape[1]!];
  const past = options.cache?.length ?? 0;
  const mask = options.attentionMask ?? null;
  const positions = options.positionIds ?? defaultPositions(B, T, past, mask);
  return { B, T, past, mask, positions };
}

/** cos/sin of `rotary` at the positions and the mask with `window`, cast to `dtype` as HF does. */
export function rotaryContext(rotary: RotaryEmbedding, inputIds: Tensor, options: ForwardOptions, window: number | null, dtype: Tensor["dtype"]): RotaryContext {
  const { B, T, past, mask, positions } = passGeometry(inputIds, options);
  const { cos, sin } = rotary.forward(positions); // computed in float32
  // Rows with caches of their own have no shared mask (RowCaches: single tokens, no padding).
  const additive = options.cache?.perRow ? null : attentionMask(B, T, past, mask, window);
  const context = { cos: cos.to(dtype), sin: sin.to(dtype), mask: additive && additive.to(dtype) };
  return { ...context, tensors: [context.cos, context.sin, ...(context.mask ? [context.mask] : [])] };
}

export interface DecoderParts<Layer extends DecoderLayer> {
  /** The decoder layer at `index`. */
  layer: (index: number) => Layer;
  /** The norm of the family (RMSNorm by default). */
  norm?: (size: number) => Norm;
  /** Collects an auxiliary loss during each pass (mixtures of experts); the model disposes it. */
  auxiliary?: AuxiliaryCollector;
}

/** HF's XxxModel: embed_tokens, layers, norm; one RoPE table and one mask per pass. */
export class DecoderModel<Layer extends DecoderLayer = DecoderLayer> extends Module {
  embed_tokens: Embedding;
  layers: Layer[];
  norm: Norm;
  protected readonly _rotary: RotaryEmbedding;
  protected readonly _slidingWindow: number | null;
  readonly _auxiliary: AuxiliaryCollector | null;

  constructor(
    readonly config: ModelConfig,
    options: BuildOptions,
    parts: DecoderParts<Layer>,
  ) {
    super();
    this.embed_tokens = new Embedding(config.vocab_size, config.hidden_size, {
      dtype: options.dtype,
      device: options.device,
      init: "empty",
      paddingIdx: config.pad_token_id ?? null,
    });
    this.layers = Array.from({ length: config.num_hidden_layers }, (_, index) => parts.layer(index));
    const norm = parts.norm ?? ((size: number) => new RMSNorm(size, { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device }));
    this.norm = norm(config.hidden_size);
    this._rotary = new RotaryEmbedding(config);
    this._slidingWindow = config.sliding_window ?? null;
    this._auxiliary = parts.auxiliary ?? null;
  }

  /** ids [B, T] -> the first layer's input [B, T, C]. */
  embed(inputIds: Tensor): Tensor {
    return this.embed_tokens.forward(inputIds);
  }

  /** ids [B, T] -> final hidden states [B, T, C]. */
  forward(inputIds: Tensor, options: ForwardOptions = {}): Tensor {
    const cache = options.cache ?? null;
    const context = this.prepare(inputIds, options);
    let hidden = this.embed(inputIds);
    this.layers.forEach((layer, index) => {
      hidden = layer.forward(hidden, context, cache, index);
    });
    return this.norm.forward(hidden);
  }

  /** What every layer shares for this batch; also starts the pass's auxiliary collection. */
  prepare(inputIds: Tensor, options: ForwardOptions = {}): LayerContext {
    this.beginPass(inputIds, options);
    return rotaryContext(this._rotary, inputIds, options, this._slidingWindow, this.embed_tokens.weight.dtype);
  }

  /** Starts the auxiliary collection of a pass. */
  protected beginPass(inputIds: Tensor, options: ForwardOptions): void {
    const [B, T] = [inputIds.shape[0]!, inputIds.shape[1]!];
    this._auxiliary?.begin(B, T, options.attentionMask ?? null, { cached: Boolean(options.cache), training: this.training });
  }

  override dispose(): void {
    super.dispose();
    this._rotary.dispose();
    this._auxiliary?.dispose();
  }
}

/** HF's XxxForCausalLM around a DecoderModel: the LM head, tied or not, and the CausalLM surface. */
export class DecoderForCausalLM<Model extends DecoderModel = DecoderModel> extends Module implements CausalLM {
  model: Model;
  lm_head: Linear;
  upcastLogits = false;

  constructor(
    readonly config: ModelConfig,
    model: Model,
    options: BuildOptions,
  ) {
    super();
    this.model = model;
    this.lm_head = new Linear(config.hidden_size, config.vocab_size, { bias: false, dtype: options.dtype, device: options.device, init: "empty" });
    if (config.tie_word_embeddings) {
      this.lm_head.weight.dispose();
      this.lm_head.weight = this.model.embed_tokens.weight;
    }
    if ((options.init ?? "hf") === "hf") this.initWeights();
  }

  /** HF `_init_weights`: Linear and Embedding ~ N(0, initializer_range), biases zero, norms as built. */
  initWeights(): void {
    initWeights(this, this.config.initializer_range);
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
    return this.model.embed(inputIds);
  }

  layerContext(inputIds: Tensor, options: ForwardOptions = {}): LayerContext {
    return this.model.prepare(inputIds, options);
  }

  finalNorm(hidden: Tensor): Tensor {
    return this.model.norm.forward(hidden);
  }

  /** lm_head, then final_logit_softcapping where configured (Gemma 2): cap · tanh(logits / cap). */
  logits(hidden: Tensor): Tensor {
    return tidy(() => {
      let logits = this.lm_head.forward(hidden);
      const cap = this.config.final_logit_softcapping;
      if (typeof cap === "number" && cap > 0) logits = logits.div(cap).tanh().mul(cap);
      return this.upcastLogits ? logits.to("float32") : logits;
    });
  }

  inputEmbeddings(): Embedding {
    return this.model.embed_tokens;
  }

  outputEmbeddings(): Linear {
    return this.lm_head;
  }

  auxiliaryLoss(): Tensor | null {
    return this.model._auxiliary?.loss() ?? null;
  }

  auxiliaryLossOfLayer(layerIndex: number): Tensor | null {
    return this.model._auxiliary?.lossOfLayer(layerIndex) ?? null;
  }
}

/** The embedding normalizer sqrt(C) rounded to `dtype`, as transformers makes it a tensor of that dtype. */
export function embeddingScale(hiddenSize: number, dtype: Tensor["dtype"]): number {
  return tidy(() => tensor([Math.sqrt(hiddenSize)], { dtype: "float64" }).to(dtype).to("float64").item());
}
