// Stage pt, LLaMA-Factory's run_pt: causal language modelling on raw text (packed into cutoff_len
// blocks by default).
import { processorSpec } from "../../data/processors/factories.ts";
import { languageModeling } from "./language_modeling.ts";
import type { Stage } from "./stage.ts";

export const pt: Stage = {
  name: "pt",
  processor: (options) => processorSpec("makePretrainProcessor", options),
  packsByDefault: true,
  ...languageModeling,
};
