// The stage processor as a batch function that a worker thread can rebuild from plain options:
// it loads the tokenizer and template once per thread, then turns aligned examples into rows
// (LLaMA-Factory's preprocess functions behind `dataset.map(num_proc=...)`).
import { processPretrain } from "../data/processors/pretrain.ts";
import { processPackedSupervised, processSupervised } from "../data/processors/supervised.ts";
import { getTemplateAndFixTokenizer } from "../data/templates/index.ts";
import type { AlignedExample, ProcessorResult, SupervisedRow } from "../data/types.ts";
import { loadTokenizer } from "../model/tokenizer.ts";

export interface StageProcessorOptions {
  stage: "pt" | "sft";
  modelFolder: string;
  tokenizer: { splitSpecialTokens?: boolean; addTokens?: string[]; addSpecialTokens?: string[] };
  template: string | null;
  templateOptions: { defaultSystem?: string | null; enableThinking?: boolean | null; toolFormat?: string | null; trainOnPrompt?: boolean };
  cutoffLen: number;
  packing: boolean;
  neatPacking: boolean;
  trainOnPrompt: boolean;
  maskHistory: boolean;
  reservedLabelLen?: number;
}

/** Factory for `mapBatches`/`processDataset`: called once per thread with the options above. */
export function makeStageProcessor(options: StageProcessorOptions): (batch: AlignedExample[]) => ProcessorResult<SupervisedRow> {
  const tokenizer = loadTokenizer(options.modelFolder, options.tokenizer);
  const templateName = options.stage === "pt" && !options.template ? "empty" : options.template;
  const { template } = getTemplateAndFixTokenizer(templateName, tokenizer, options.templateOptions);
  return (batch) => {
    if (options.stage === "pt") return processPretrain(batch, { tokenizer, cutoffLen: options.cutoffLen, packing: options.packing, templateName: options.template });
    const supervised = { template, tokenizer, cutoffLen: options.cutoffLen, trainOnPrompt: options.trainOnPrompt, maskHistory: options.maskHistory };
    if (options.packing) return processPackedSupervised(batch, { ...supervised, neatPacking: options.neatPacking });
    return processSupervised(batch, { ...supervised, reservedLabelLen: options.reservedLabelLen });
  };
}
