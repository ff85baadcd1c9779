// Config patches applied before a model is built, as LLaMA-Factory's patch_config does:
// the attention kernel (flash_attn), RoPE scaling for a longer context (rope_scaling with
// model_max_length), LongLoRA's S²-Attn (shift_attn) and the MoE router loss (moe_aux_loss_coef,
// model_utils/moe.py's configure_moe). Each returns notices to print.
import type { ModelConfig, RopeScaling } from "../config.ts";
import { GROUP_SIZE_RATIO } from "./longlora.ts";

export type FlashAttn = "auto" | "disabled" | "sdpa" | "fa2" | "fa3";

export interface ConfigPatchOptions {
  flashAttn?: FlashAttn;
  ropeScaling?: RopeScaling["rope_type"] | null;
  /** The context the run needs (cutoff_len in training). */
  modelMaxLength?: number | null;
  shiftAttn?: boolean;
  training?: boolean;
  /** moe_aux_loss_coef: the router load-balancing loss's weight, switched on for training. */
  moeAuxLossCoef?: number | null;
}

/** model_types whose router loss configure_moe switches on and weighs (those lmfactory builds). */
const ROUTER_AUX_LOSS_MODEL_TYPES = new Set(["mixtral", "qwen2_moe", "qwen3_moe"]);
/**
 * DeepSeek's gate computes its balance loss whenever it trains, weighted by aux_loss_alpha, which
 * configure_moe sets for model_type deepseek; lmfactory does the same for deepseek_v2.
 */
const AUX_LOSS_ALPHA_MODEL_TYPES = new Set(["deepseek_v2"]);

/** model_types LongLoRA's patch supports, as upstream (SUPPORTED_CLASS_FOR_S2ATTN). */
const S2ATTN_MODEL_TYPES = new Set(["llama"]);

export function patchConfig(config: ModelConfig, options: ConfigPatchOptions): string[] {
  const notices: string[] = [];
  switch (options.flashAttn ?? "auto") {
    case "disabled":
      config._attn_implementation = "eager";
      break;
    case "fa2":
    case "fa3":
      notices.push(`flash_attn: ${options.flashAttn} kernels are not part of this engine; using its fused scaled-dot-product attention (sdpa) instead.`);
      config._attn_implementation = "sdpa";
      break;
    default:
      config._attn_implementation = "sdpa";
  }

  if (options.ropeScaling) {
    const old = config.rope_scaling?.original_max_position_embeddings ?? config.max_position_embeddings;
    let factor = 2.0;
    let apply = true;
    if (options.training) {
      const wanted = options.modelMaxLength ?? 0;
      if (wanted > old) {
        factor = Math.ceil(wanted / old);
      } else {
        notices.push(`rope_scaling: the input length (${wanted}) fits the model's ${old} positions; RoPE scaling is not applied.`);
        apply = false;
      }
    }
    if (apply) {
      const scaling: RopeScaling = { rope_type: options.ropeScaling, factor };
      if (options.ropeScaling === "dynamic" || options.ropeScaling === "yarn") scaling.original_max_position_embeddings = old;
      if (options.ropeScaling === "llama3") {
        Object.assign(scaling, { original_max_position_embeddings: old, low_freq_factor: 1.0, high_freq_factor: 4.0 });
      }
      config.rope_scaling = scaling;
      config.max_position_embeddings = old * factor;
      notices.push(`rope_scaling: ${options.ropeScaling} with factor ${factor} (max_position_embeddings ${old} -> ${old * factor}).`);
    }
  }

  if (options.shiftAttn) {
    if (!options.training) {
      notices.push("shift_attn: S²-Attn applies to training only; inference uses full attention.");
    } else if (S2ATTN_MODEL_TYPES.has(config.model_type)) {
      config.group_size_ratio = GROUP_SIZE_RATIO;
      notices.push(`shift_attn: LongLoRA S²-Attn with group size ratio ${GROUP_SIZE_RATIO}.`);
    } else {
      notices.push(`shift_attn: S²-Attn supports model_type llama only, not ${config.model_type}; training with full attention.`);
    }
  }
  if (options.moeAuxLossCoef) {
    if (!options.training) {
      notices.push("moe_aux_loss_coef: the router auxiliary loss applies to training only.");
    } else if (ROUTER_AUX_LOSS_MODEL_TYPES.has(config.model_type)) {
      config.output_router_logits = true;
      config.router_aux_loss_coef = options.moeAuxLossCoef;
      notices.push(`moe_aux_loss_coef: the router load-balancing loss joins the training loss with weight ${options.moeAuxLossCoef}.`);
    } else if (AUX_LOSS_ALPHA_MODEL_TYPES.has(config.model_type)) {
      config.aux_loss_alpha = options.moeAuxLossCoef;
      notices.push(`moe_aux_loss_coef: DeepSeek's balance loss joins the training loss with weight ${options.moeAuxLossCoef} (aux_loss_alpha).`);
    } else {
      const types = [...ROUTER_AUX_LOSS_MODEL_TYPES, ...AUX_LOSS_ALPHA_MODEL_TYPES].join(", ");
      notices.push(`moe_aux_loss_coef: model_type ${config.model_type} has no router auxiliary loss to weigh (${types} do); ignored.`);
    }
  }
  return notices;
}
