// The preference and PPO settings (RLHFArguments lmfactory honours) a stage does not read with the
// given settings, e.g. `kto_chosen_weight` in dpo, `simpo_gamma` without simpo, `ppo_epochs` in dpo
// or `reward_model_adapters` with an api reward: LLaMA-Factory ignores them silently; lmfactory
// names them in one notice.
import type { FinetuningArguments } from "../../hparams/index.ts";
import { rlhfFields } from "../../hparams/rlhf.ts";

/** The preference fields lmfactory honours, and which of them a stage (with its settings) reads. */
const PREFERENCE_FIELDS = [
  "pref_beta", "pref_ftx", "pref_bco_weight", "pref_loss", "dpo_label_smoothing", "kto_chosen_weight", "kto_rejected_weight", "simpo_gamma", "ld_alpha", "ref_model", "ref_model_adapters", "ref_model_quantization_bit",
  "ppo_buffer_size", "ppo_epochs", "ppo_score_norm", "ppo_target", "ppo_whiten_rewards", "ppo_logger", "reward_model", "reward_model_adapters", "reward_model_type", "reward_model_quantization_bit",
] as const;

function fieldsRead(stage: string, finetuning: FinetuningArguments): Set<string> {
  const reference = ["ref_model", ...(finetuning.ref_model ? ["ref_model_adapters", "ref_model_quantization_bit"] : [])];
  if (stage === "ppo") {
    const ppo = ["ppo_buffer_size", "ppo_epochs", "ppo_score_norm", "ppo_target", "ppo_whiten_rewards", "ppo_logger", "reward_model", "reward_model_type"];
    return new Set([...ppo, ...reference, ...(finetuning.reward_model_type === "full" ? ["reward_model_adapters", "reward_model_quantization_bit"] : [])]);
  }
  if (stage === "kto") return new Set(["pref_beta", "pref_ftx", "kto_chosen_weight", "kto_rejected_weight", ...reference]);
  if (stage !== "dpo") return new Set();
  const read = ["pref_beta", "pref_ftx", "pref_loss", "ld_alpha", "dpo_label_smoothing"];
  if (finetuning.pref_loss === "simpo") read.push("simpo_gamma");
  if (!["orpo", "simpo"].includes(finetuning.pref_loss)) read.push("pref_bco_weight", ...reference);
  return new Set(read);
}

/** Preference settings given a non-default value that this stage does not read (LLaMA-Factory ignores them silently). */
export function unreadSettings(stage: string, finetuning: FinetuningArguments): string[] {
  const read = fieldsRead(stage, finetuning);
  return PREFERENCE_FIELDS.filter((name) => !read.has(name) && JSON.stringify(finetuning[name]) !== JSON.stringify(rlhfFields[name].default));
}

/** One notice naming the unread settings, or null. */
export function unreadSettingsNotice(stage: string, finetuning: FinetuningArguments): string | null {
  const unread = unreadSettings(stage, finetuning);
  if (!unread.length) return null;
  return `notice: stage ${stage}${stage === "dpo" ? ` with pref_loss ${finetuning.pref_loss}` : ""} does not use ${unread.join(", ")}; ignored.`;
}
