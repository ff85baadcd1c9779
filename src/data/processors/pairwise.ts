// The pairwise processor (rm, dpo/orpo/simpo), after LLaMA-Factory's `data/processor/pairwise.py`:
// the prompt with the chosen and with the rejected answer, one shared prompt budget and one answer
// budget from `inferSeqlen(prompt, max(chosen, rejected))`, prompt labels masked.
import type { Tokenizer } from "../tokenizer.ts";
import type { ChatTemplate } from "../templates/template.ts";
import type { AlignedExample, DroppedExample, PairwiseRow, ProcessorResult } from "../types.ts";
import { ignored, inferSeqlen, ones } from "./utils.ts";

export interface PairwiseOptions {
  template: ChatTemplate;
  tokenizer: Tokenizer;
  cutoffLen: number;
}

export function processPairwise(examples: readonly AlignedExample[], options: PairwiseOptions): ProcessorResult<PairwiseRow> {
  const { template, tokenizer, cutoffLen } = options;
  const rows: PairwiseRow[] = [];
  const dropped: DroppedExample[] = [];
  examples.forEach((example, index) => {
    if (example._prompt.length % 2 !== 1 || example._response.length < 2) {
      dropped.push({ index, reason: "a pairwise example needs an odd-length prompt and a chosen and a rejected answer" });
      return;
    }
    const [chosen, rejected] = example._response as [AlignedExample["_response"][0], AlignedExample["_response"][0]];
    let [promptIds, chosenIds] = template.encodeOneturn(tokenizer, [...example._prompt, chosen], example._system, example._tools);
    let [, rejectedIds] = template.encodeOneturn(tokenizer, [...example._prompt, rejected], example._system, example._tools);
    if (template.efficientEos) {
      chosenIds = [...chosenIds, tokenizer.eosTokenId!];
      rejectedIds = [...rejectedIds, tokenizer.eosTokenId!];
    }
    const [sourceLen, targetLen] = inferSeqlen(promptIds.length, Math.max(chosenIds.length, rejectedIds.length), cutoffLen);
    promptIds = promptIds.slice(0, sourceLen);
    chosenIds = chosenIds.slice(0, targetLen);
    rejectedIds = rejectedIds.slice(0, targetLen);
    const chosenInput = [...promptIds, ...chosenIds];
    const rejectedInput = [...promptIds, ...rejectedIds];
    rows.push({
      chosen_input_ids: chosenInput,
      chosen_attention_mask: ones(chosenInput.length),
      chosen_labels: [...ignored(sourceLen), ...chosenIds],
      rejected_input_ids: rejectedInput,
      rejected_attention_mask: ones(rejectedInput.length),
      rejected_labels: [...ignored(sourceLen), ...rejectedIds],
    });
  });
  return { rows, dropped };
}
