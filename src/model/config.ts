// A model's config.json as lmfactory reads it: the fields the families use, with Hugging Face's
// defaults per model_type (transformers' LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config,
// GemmaConfig, Gemma2Config, Gemma3TextConfig, ...).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";

export interface RopeScaling {
  rope_type: "default" | "linear" | "dynamic" | "yarn" | "llama3" | "longrope";
  factor?: number;
  original_max_position_embeddings?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  attention_factor?: number;
  beta_fast?: number;
  beta_slow?: number;
  mscale?: number;
  mscale_all_dim?: number;
  truncate?: boolean;
  /** longrope: per-frequency rescale factors within and past the pretrained context. */
  short_factor?: number[];
  long_factor?: number[];
}

export interface ModelConfig {
  model_type: string;
  architectures?: string[];
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  hidden_act: string;
  max_position_embeddings: number;
  initializer_range: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: RopeScaling | null;
  partial_rotary_factor?: number;
  attention_bias: boolean;
  mlp_bias: boolean;
  tie_word_embeddings: boolean;
  sliding_window: number | null;
  use_sliding_window?: boolean;
  max_window_layers?: number;
  bos_token_id?: number | number[] | null;
  eos_token_id?: number | number[] | null;
  pad_token_id?: number | null;
  torch_dtype?: string;
  /** Set by lmfactory, as transformers does: "sdpa" (fused kernel) or "eager" (composed). */
  _attn_implementation?: "sdpa" | "eager";
  /** LongLoRA S²-Attn group size ratio (shift_attn), as LLaMA-Factory sets it. */
  group_size_ratio?: number;
  /** Every other key of config.json, kept so that a saved config round-trips. */
  [key: string]: unknown;
}

const FAMILY_DEFAULTS: Record<string, Partial<ModelConfig>> = {
  llama: { vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, max_position_embeddings: 2048, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, sliding_window: null },
  mistral: { vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, max_position_embeddings: 4096 * 32, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, sliding_window: 4096 },
  qwen2: { vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, sliding_window: 4096, use_sliding_window: false },
  gemma: { vocab_size: 256000, hidden_size: 3072, intermediate_size: 24576, num_hidden_layers: 28, num_attention_heads: 16, num_key_value_heads: 16, head_dim: 256, max_position_embeddings: 8192, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: true, sliding_window: null },
  gemma2: { vocab_size: 256000, hidden_size: 2304, intermediate_size: 9216, num_hidden_layers: 26, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 256, hidden_activation: "gelu_pytorch_tanh", max_position_embeddings: 8192, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: true, query_pre_attn_scalar: 256, sliding_window: 4096, final_logit_softcapping: 30.0, attn_logit_softcapping: 50.0 },
  gemma3_text: { vocab_size: 262208, hidden_size: 2304, intermediate_size: 9216, num_hidden_layers: 26, num_attention_heads: 8, num_key_value_heads: 4, head_dim: 256, hidden_activation: "gelu_pytorch_tanh", max_position_embeddings: 131072, rms_norm_eps: 1e-6, rope_theta: 1_000_000, rope_local_base_freq: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: true, query_pre_attn_scalar: 256, sliding_window: 4096, sliding_window_pattern: 6, final_logit_softcapping: null, attn_logit_softcapping: null },
  phi3: { vocab_size: 32064, hidden_size: 3072, intermediate_size: 8192, num_hidden_layers: 32, num_attention_heads: 32, max_position_embeddings: 4096, original_max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, sliding_window: null, resid_pdrop: 0 },
  mixtral: { vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, max_position_embeddings: 4096 * 32, rms_norm_eps: 1e-5, rope_theta: 1e6, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, sliding_window: null, num_experts_per_tok: 2, num_local_experts: 8, output_router_logits: false, router_aux_loss_coef: 0.001, router_jitter_noise: 0 },
  qwen2_moe: { vocab_size: 151936, hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 24, num_attention_heads: 16, num_key_value_heads: 16, max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, qkv_bias: true, mlp_bias: false, tie_word_embeddings: false, use_sliding_window: false, sliding_window: 4096, decoder_sparse_step: 1, moe_intermediate_size: 1408, shared_expert_intermediate_size: 5632, num_experts_per_tok: 4, num_experts: 60, norm_topk_prob: false, output_router_logits: false, router_aux_loss_coef: 0.001, mlp_only_layers: [] },
  qwen3_moe: { vocab_size: 151936, hidden_size: 2048, intermediate_size: 6144, num_hidden_layers: 24, num_attention_heads: 32, num_key_value_heads: 4, max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, use_sliding_window: false, sliding_window: 4096, decoder_sparse_step: 1, moe_intermediate_size: 768, num_experts_per_tok: 8, num_experts: 128, norm_topk_prob: false, output_router_logits: false, router_aux_loss_coef: 0.001, mlp_only_layers: [] },
  glm4: { vocab_size: 151552, hidden_size: 4096, intermediate_size: 13696, num_hidden_layers: 40, num_attention_heads: 32, num_key_value_heads: 2, head_dim: 128, partial_rotary_factor: 0.5, max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 10000, attention_bias: true, mlp_bias: false, tie_word_embeddings: false, sliding_window: null },
  deepseek_v2: { vocab_size: 102400, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 30, num_attention_heads: 32, max_position_embeddings: 2048, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, sliding_window: null, moe_intermediate_size: 1407, n_shared_experts: null, n_routed_experts: null, routed_scaling_factor: 1.0, kv_lora_rank: 512, q_lora_rank: 1536, qk_rope_head_dim: 64, v_head_dim: 128, qk_nope_head_dim: 128, topk_method: "greedy", n_group: null, topk_group: null, num_experts_per_tok: null, moe_layer_freq: 1, first_k_dense_replace: 0, norm_topk_prob: false, scoring_func: "softmax", aux_loss_alpha: 0.001, seq_aux: true },
  qwen3: { vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, head_dim: 128, max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, sliding_window: 4096, use_sliding_window: false },
};

/** Fills HF's defaults and derived fields into a raw config.json object. */
export function normalizeConfig(raw: Record<string, unknown>, where = "config.json"): ModelConfig {
  const modelType = raw.model_type;
  if (typeof modelType !== "string") {
    throw new UserError("config.json has no model_type", where, "use a Hugging Face model folder whose config.json names its model_type");
  }
  const defaults = FAMILY_DEFAULTS[modelType] ?? FAMILY_DEFAULTS.llama!;
  const config = { hidden_act: "silu", initializer_range: 0.02, ...defaults, ...raw } as ModelConfig;
  config.num_key_value_heads ??= config.num_attention_heads;
  config.head_dim ??= Math.floor(config.hidden_size / config.num_attention_heads);
  // Qwen2 and Qwen3 ignore sliding_window unless use_sliding_window is set.
  if (config.use_sliding_window === false) config.sliding_window = null;
  if (config.rope_scaling) {
    const scaling = config.rope_scaling as RopeScaling & { type?: string };
    scaling.rope_type ??= (scaling.type as RopeScaling["rope_type"]) ?? "default";
    // transformers renamed Phi-3's "su" scaling to "longrope".
    if ((scaling.rope_type as string) === "su") scaling.rope_type = "longrope";
  }
  for (const key of ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"] as const) {
    if (!Number.isInteger(config[key]) || (config[key] as number) <= 0) {
      throw new UserError(`${key} must be a positive integer, got ${JSON.stringify(config[key])}`, where);
    }
  }
  if (config.num_attention_heads % config.num_key_value_heads !== 0) {
    throw new UserError(
      `num_attention_heads (${config.num_attention_heads}) is not a multiple of num_key_value_heads (${config.num_key_value_heads})`,
      where,
    );
  }
  return config;
}

export function loadConfig(folder: string): ModelConfig {
  const path = join(folder, "config.json");
  if (!existsSync(path)) {
    throw new UserError("no config.json", folder, "model_name_or_path must be a Hugging Face model folder");
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new UserError(`config.json is not valid JSON (${(error as Error).message})`, path);
  }
  return normalizeConfig(raw, path);
}

/**
 * The longest sequence (prompt + answer) the model serves. yarn extends its original length by its
 * factor (transformers and vLLM: `original_max_position_embeddings`, else max_position_embeddings,
 * times factor: Qwen2.5 and Qwen3 with yarn 4 serve 131072). Every other scaling is read as the
 * config already stating the extended length in max_position_embeddings: llama3 checkpoints do, and
 * so does LLaMA-Factory's rope_scaling patch for linear and dynamic (patches/config.ts).
 */
export function contextLength(config: ModelConfig): number {
  const declared = config.max_position_embeddings;
  const scaling = config.rope_scaling;
  if (scaling?.rope_type !== "yarn" || !((scaling.factor ?? 1) > 1)) return declared;
  return Math.floor((scaling.original_max_position_embeddings ?? declared) * scaling.factor!);
}
