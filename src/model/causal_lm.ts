// What generation, gradient checkpointing, value heads, adapters and the trainer need of a causal
// language model, whatever its architecture (transformers' PreTrainedModel surface: input/output
// embeddings, the decoder layers, the final norm, the LM head). Each file under models/ implements it.
import type { DType, Embedding, Linear, Module, Tensor } from "../torch/index.ts";
import type { AttentionCache } from "./cache.ts";
import type { ModelConfig } from "./config.ts";

export interface BuildOptions {
  dtype?: DType;
  device?: string;
  /** "empty" skips initialisation for weights about to be loaded. */
  init?: "hf" | "empty";
}

export interface ForwardOptions {
  /**
   * [B, S] 1 for real tokens, 0 for padding, over cached + new positions; or, without a cache,
   * neat packing's example numbers (1, 1, 2, 2, 2, 0...), which also blocks attention across examples.
   */
  attentionMask?: Tensor | null;
  /** [B, T] positions; by default counted from the cache length (or from the mask's cumsum). */
  positionIds?: Tensor | null;
  /** A KVCache, or RowCaches for rows at different lengths (then positionIds are required). */
  cache?: AttentionCache | null;
  /** Logits of the last this many positions only (HF's logits_to_keep); 0 keeps all. */
  logitsToKeep?: number;
}

/**
 * What every decoder layer of one forward pass shares (RoPE tables, the attention mask), made once
 * per batch by `layerContext`. Its tensors are listed so that callers can keep or free them.
 */
export interface LayerContext {
  readonly tensors: readonly Tensor[];
}

export interface DecoderLayer extends Module {
  /** hidden [B, T, C] -> [B, T, C] for layer `layerIndex`, reading and filling `cache` when given. */
  forward(hidden: Tensor, context: LayerContext, cache: AttentionCache | null, layerIndex: number): Tensor;
}

/** What an attention module tells its kernel besides q, k, v and the mask. */
export interface AttentionState {
  training: boolean;
  cached: boolean;
  /** Multiplies q·kᵀ; 1/sqrt(D) when absent (Gemma: query_pre_attn_scalar^-0.5; MLA: its softmax_scale). */
  scale?: number;
  /** Scores become cap·tanh(scores/cap) before the mask (Gemma 2's attn_logit_softcapping). */
  softcap?: number | null;
}

/**
 * The attention computation proper, q [B, H, T, D] with k [B, Hkv, S, D], v [B, Hkv, S, Dv] ->
 * [B, H, T, Dv]; `mask` is additive [B, 1, T, S] or null for causal. Attention modules hold one as
 * `attentionKernel`, so that patches (LongLoRA's S²-Attn) swap it by surgery, as adapters swap
 * Linear layers.
 */
export type AttentionKernel = (q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null, state: AttentionState) => Tensor;

export interface CausalLM extends Module {
  readonly config: ModelConfig;
  /** upcast_lmhead_output: logits in float32 whatever the weights' dtype. */
  upcastLogits: boolean;
  /** Its layers attend through `cache.attend`, so a batch of rows with caches of their own (RowCaches) works. */
  readonly perRowCaches?: boolean;
  /** The decoder layers, first to last. */
  readonly decoderLayers: readonly DecoderLayer[];
  /** ids [B, T] -> logits [B, T, V] (or [B, logitsToKeep, V]). */
  forward(inputIds: Tensor, options?: ForwardOptions): Tensor;
  /** ids [B, T] -> the last hidden states [B, T, C], after the final norm (HF's `last_hidden_state`). */
  hiddenStates(inputIds: Tensor, options?: ForwardOptions): Tensor;
  /** ids [B, T] -> the first layer's input [B, T, C]. */
  embed(inputIds: Tensor): Tensor;
  layerContext(inputIds: Tensor, options?: ForwardOptions): LayerContext;
  /** The last layer's output [B, T, C] -> after the final norm. */
  finalNorm(hidden: Tensor): Tensor;
  /** Normed hidden states [B, T, C] -> logits [B, T, V]. */
  logits(hidden: Tensor): Tensor;
  inputEmbeddings(): Embedding;
  outputEmbeddings(): Linear;
  /**
   * The weighted auxiliary loss of the last forward pass (a mixture of experts' router load
   * balancing, router_aux_loss_coef x transformers' load_balancing_loss_func, when the config's
   * output_router_logits is on), a scalar with a graph to the weights when the pass had one; null
   * for models without one. Each pass (each `layerContext`) starts a new collection. A stage adds
   * it to its loss once per pass, as transformers' XxxForCausalLM adds it to the LM loss.
   */
  auxiliaryLoss(): Tensor | null;
  /**
   * For gradient checkpointing, after layer `layerIndex`'s forward was recomputed with gradients:
   * a scalar whose gradient through that layer equals the gradient of what the stage took of
   * `auxiliaryLoss()` (the rest of the pass held fixed), to backpropagate with the layer's output;
   * null when the layer adds none or the stage took none.
   */
  auxiliaryLossOfLayer(layerIndex: number): Tensor | null;
}

/** The device the model's weights live on. */
export function modelDevice(model: CausalLM): string {
  return model.outputEmbeddings().weight.device;
}
