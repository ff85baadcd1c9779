// The stage table: `stage` -> its declaration. A new stage is one file here plus its processor.
import { UserError } from "../../errors.ts";
import type { FinetuningArguments } from "../../hparams/index.ts";
import { rlhfFields } from "../../hparams/rlhf.ts";
import { dpo } from "./dpo.ts";
import { kto } from "./kto.ts";
import { pt } from "./pt.ts";
import { rm } from "./rm.ts";
import { sft } from "./sft.ts";
import type { Stage } from "./stage.ts";

export type { AttachContext, CollateOptions, CollatedBatch, LossInputs, Stage, StageLoss, StageRun, TrainingExample } from "./stage.ts";
export { attachStage } from "./stage.ts";

/** The preference fields lmfactory honours, and which of them a stage (with its settings) reads. */
const PREFERENCE_FIELDS = ["pref_beta", "pref_ftx", "pref_bco_weight", "pref_loss", "dpo_label_smoothing", "kto_chosen_weight", "kto_rejected_weight", "simpo_gamma", "ld_alpha", "ref_model", "ref_model_adapters"] as const;

function fieldsRead(stage: string, finetuning: FinetuningArguments): Set<string> {
  const reference = ["ref_model", ...(finetuning.ref_model ? ["ref_model_adapters"] : [])];
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

const STAGES: Record<string, Stage> = { pt, sft, rm, dpo, kto: kto as unknown as Stage };

export function stageFor(name: string): Stage {
  const stage = STAGES[name];
  if (!stage) throw new UserError(`stage ${name} is not built yet`, "stage", `use one of: ${Object.keys(STAGES).join(", ")}`);
  return stage;
}
