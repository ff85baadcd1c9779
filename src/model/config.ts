// A model's config.json as lmfactory reads it: the fields the Llama family uses, with Hugging
// Face's defaults (transformers LlamaConfig / MistralConfig / Qwen2Config / Qwen3Config).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";

export interface RopeScaling {
  rope_type: "default" | "linear" | "dynamic" | "yarn" | "llama3";
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
