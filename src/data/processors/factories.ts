// Stage processors as batch functions that a worker thread rebuilds from plain options: each
// factory loads the tokenizer and template once per thread, then turns aligned examples into rows
// (LLaMA-Factory's preprocess functions behind `dataset.map(num_proc=...)`). A stage names its
// factory by module URL and export name (src/train/stages/).
import { loadTokenizer } from "../tokenizer.ts";
import { getTemplateAndFixTokenizer } from "../templates/index.ts";
import type { TemplateOptions } from "../templates/index.ts";
import type { AlignedExample, FeedbackRow, PairwiseRow, ProcessorResult, SupervisedRow } from "../types.ts";
import { processFeedback } from "./feedback.ts";
import { processPairwise } from "./pairwise.ts";
import { processPretrain } from "./pretrain.ts";
import { processPackedSupervised, processSupervised } from "./supervised.ts";
import { processUnsupervised } from "./unsupervised.ts";

export interface ProcessorOptions {
  modelFolder: string;
  tokenizer: { splitSpecialTokens?: boolean; addTokens?: string[]; addSpecialTokens?: string[] };
  template: string | null;
  templateOptions: TemplateOptions;
  cutoffLen: number;
  packing: boolean;
  neatPacking: boolean;
  trainOnPrompt: boolean;
  maskHistory: boolean;
  reservedLabelLen?: number;
}

export type BatchProcessor<Row> = (batch: AlignedExample[]) => ProcessorResult<Row>;

/** Where a stage's processor factory lives, and the options it is rebuilt from on each thread. */
export interface ProcessorSpec {
  module: string;
  exportName: string;
  args: ProcessorOptions;
}

const THIS_MODULE = new URL(import.meta.url).href;

/** The spec of one of this file's factories. */
export function processorSpec(
  exportName: "makePretrainProcessor" | "makeSupervisedProcessor" | "makeUnsupervisedProcessor" | "makePairwiseProcessor" | "makeFeedbackProcessor",
  args: ProcessorOptions,
): ProcessorSpec {
  return { module: THIS_MODULE, exportName, args };
}

function setup(options: ProcessorOptions) {
  const tokenizer = loadTokenizer(options.modelFolder, options.tokenizer);
  const { template } = getTemplateAndFixTokenizer(options.template, tokenizer, options.templateOptions);
  return { tokenizer, template };
}

/** pt: texts with EOS, concatenated and cut into cutoff_len blocks (or one row each without packing). */
export function makePretrainProcessor(options: ProcessorOptions): BatchProcessor<SupervisedRow> {
  const { tokenizer } = setup({ ...options, template: options.template ?? "empty" });
  return (batch) => processPretrain(batch, { tokenizer, cutoffLen: options.cutoffLen, packing: options.packing, templateName: options.template });
}

/** sft: prompt labels masked, the template's turns; packed (and neat-packed) when asked. */
export function makeSupervisedProcessor(options: ProcessorOptions): BatchProcessor<SupervisedRow> {
  const { tokenizer, template } = setup(options);
  const supervised = { template, tokenizer, cutoffLen: options.cutoffLen, trainOnPrompt: options.trainOnPrompt, maskHistory: options.maskHistory };
  return (batch) =>
    options.packing ? processPackedSupervised(batch, { ...supervised, neatPacking: options.neatPacking }) : processSupervised(batch, { ...supervised, reservedLabelLen: options.reservedLabelLen });
}

/** ppo: the prompt with the generation prompt (input_ids), the reference answer as labels. */
export function makeUnsupervisedProcessor(options: ProcessorOptions): BatchProcessor<SupervisedRow> {
  const { tokenizer, template } = setup(options);
  return (batch) => processUnsupervised(batch, { template, tokenizer, cutoffLen: options.cutoffLen });
}

/** rm and dpo: the prompt with the chosen and with the rejected answer, prompt labels masked. */
export function makePairwiseProcessor(options: ProcessorOptions): BatchProcessor<PairwiseRow> {
  const { tokenizer, template } = setup(options);
  return (batch) => processPairwise(batch, { template, tokenizer, cutoffLen: options.cutoffLen });
}

/** kto: the tagged answer and a KL completion (the previous example's answer) per example. */
export function makeFeedbackProcessor(options: ProcessorOptions): BatchProcessor<FeedbackRow> {
  const { tokenizer, template } = setup(options);
  return (batch) => processFeedback(batch, { template, tokenizer, cutoffLen: options.cutoffLen });
}
