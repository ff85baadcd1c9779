// The KTO processor, after LLaMA-Factory's `data/processor/feedback.py`: a desirable example has
// its answer in `_response[0]`, an undesirable one in `_response[1]`; each example also gets a
// mismatched "KL" completion, the answer of the previous example in the batch (the first takes the
// last's), for the KL term.
import type { Tokenizer } from "../tokenizer.ts";
import type { ChatTemplate } from "../templates/template.ts";
import type { AlignedExample, DroppedExample, FeedbackRow, Message, ProcessorResult } from "../types.ts";
import { ignored, inferSeqlen, ones } from "./utils.ts";

export interface FeedbackOptions {
  template: ChatTemplate;
  tokenizer: Tokenizer;
  cutoffLen: number;
}

function answerOf(response: Message[]): Message {
  return response[0]!.content ? response[0]! : response[1]!;
}

export function processFeedback(examples: readonly AlignedExample[], options: FeedbackOptions): ProcessorResult<FeedbackRow> {
  const { template, tokenizer, cutoffLen } = options;
  const rows: FeedbackRow[] = [];
  const dropped: DroppedExample[] = [];
  const eos = tokenizer.eosTokenId!;
  const encode = (example: AlignedExample, answer: Message): { ids: number[]; labels: number[] } => {
    let [promptIds, responseIds] = template.encodeOneturn(tokenizer, [...example._prompt, answer], example._system, example._tools);
    if (template.efficientEos) responseIds = [...responseIds, eos];
    const [sourceLen, targetLen] = inferSeqlen(promptIds.length, responseIds.length, cutoffLen);
    promptIds = promptIds.slice(0, sourceLen);
    responseIds = responseIds.slice(0, targetLen);
    return { ids: [...promptIds, ...responseIds], labels: [...ignored(sourceLen), ...responseIds] };
  };
  examples.forEach((example, index) => {
    if (example._prompt.length % 2 !== 1 || example._response.length < 2) {
      dropped.push({ index, reason: 'a KTO example needs an odd-length prompt and two responses (answer, "") or ("", answer)' });
      return;
    }
    const klExample = examples[(index - 1 + examples.length) % examples.length]!;
    const desirable = Boolean(example._response[0]!.content);
    const target = encode(example, answerOf(example._response));
    const kl = encode(example, klExample._response.length >= 2 ? answerOf(klExample._response) : { role: "assistant", content: "" });
    rows.push({
      input_ids: target.ids,
      attention_mask: ones(target.ids.length),
      labels: target.labels,
      kl_input_ids: kl.ids,
      kl_attention_mask: ones(kl.ids.length),
      kl_labels: kl.labels,
      kto_tags: desirable,
    });
  });
  return { rows, dropped };
}
