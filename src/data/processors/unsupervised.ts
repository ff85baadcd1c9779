// The unsupervised processor (ppo, and sft predict with `predict_with_generate`), after
// LLaMA-Factory's `data/processor/unsupervised.py`: input_ids are the prompt with the generation
// prompt; labels are the reference answer's ids (unmasked), both cut by `inferSeqlen`.
import type { Tokenizer } from "../tokenizer.ts";
import type { ChatTemplate } from "../templates/template.ts";
import type { AlignedExample, DroppedExample, Message, ProcessorResult, SupervisedRow } from "../types.ts";
import { inferSeqlen, ones } from "./utils.ts";

export interface UnsupervisedOptions {
  template: ChatTemplate;
  tokenizer: Tokenizer;
  cutoffLen: number;
}

export function processUnsupervised(examples: readonly AlignedExample[], options: UnsupervisedOptions): ProcessorResult<SupervisedRow> {
  const { template, tokenizer, cutoffLen } = options;
  const rows: SupervisedRow[] = [];
  const dropped: DroppedExample[] = [];
  examples.forEach((example, index) => {
    if (example._prompt.length % 2 !== 1) {
      dropped.push({ index, reason: `the prompt has ${example._prompt.length} messages; it needs an odd number` });
      return;
    }
    const answer: Message = example._response.length === 1 ? example._response[0]! : { role: "assistant", content: "" };
    let [inputIds, labels] = template.encodeOneturn(tokenizer, [...example._prompt, answer], example._system, example._tools);
    if (template.efficientEos) labels = [...labels, tokenizer.eosTokenId!];
    const [sourceLen, targetLen] = inferSeqlen(inputIds.length, labels.length, cutoffLen);
    inputIds = inputIds.slice(0, sourceLen);
    labels = labels.slice(0, targetLen);
    rows.push({ input_ids: inputIds, attention_mask: ones(inputIds.length), labels });
  });
  return { rows, dropped };
}
