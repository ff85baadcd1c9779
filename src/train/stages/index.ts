// The stage table: `stage` -> its declaration. A new stage is one file here plus its processor.
import { UserError } from "../../errors.ts";
import { pt } from "./pt.ts";
import { sft } from "./sft.ts";
import type { Stage } from "./stage.ts";

export type { CollateOptions, CollatedBatch, LossInputs, Stage, TrainingExample } from "./stage.ts";

const STAGES: Record<string, Stage> = { pt, sft };

export function stageFor(name: string): Stage {
  const stage = STAGES[name];
  if (!stage) throw new UserError(`stage ${name} is not built yet`, "stage", `use one of: ${Object.keys(STAGES).join(", ")}`);
  return stage;
}
