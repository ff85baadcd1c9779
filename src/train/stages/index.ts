// The stage table: `stage` -> its declaration. A new stage is one file here plus its processor.
import { UserError } from "../../errors.ts";
import { dpo } from "./dpo.ts";
import { kto } from "./kto.ts";
import { ppo } from "./ppo.ts";
import { pt } from "./pt.ts";
import { rm } from "./rm.ts";
import { sft } from "./sft.ts";
import type { Stage } from "./stage.ts";

export type { AttachContext, CollateOptions, OwnLoopParts, CollatedBatch, LossInputs, Stage, StageLoss, StageRun, TrainingExample } from "./stage.ts";
export { attachStage } from "./stage.ts";
export { unreadSettings, unreadSettingsNotice } from "./unread_settings.ts";

const STAGES: Record<string, Stage> = { pt, sft, rm, ppo, dpo, kto };

export function stageFor(name: string): Stage {
  const stage = STAGES[name];
  if (!stage) throw new UserError(`stage ${name} is not built yet`, "stage", `use one of: ${Object.keys(STAGES).join(", ")}`);
  return stage;
}

