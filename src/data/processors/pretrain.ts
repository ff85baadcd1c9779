// The pt processor, after LLaMA-Factory's `data/processor/pretrain.py`: each text gets an EOS;
// with packing (pt's default) the batch is concatenated and cut into `cutoffLen` blocks (the
// remainder dropped, a BOS written over each block's first token when the tokenizer adds one);
// without packing each text is truncated to `cutoffLen`. Labels are the input ids.
import type { Tokenizer } from "../tokenizer.ts";
import type { AlignedExample, DroppedExample, ProcessorResult, SupervisedRow } from "../types.ts";
import { ones } from "./utils.ts";

export interface PretrainOptions {
  tokenizer: Tokenizer;
  cutoffLen: number;
  packing: boolean;
  /** The `template` name: LLaMA-Factory ends llama3 documents with `<|end_of_text|>`, not the chat EOS. */
  templateName?: string | null;
}

export function processPretrain(examples: readonly AlignedExample[], options: PretrainOptions): ProcessorResult<SupervisedRow> {
  const { tokenizer, cutoffLen } = options;
  const eosToken = options.templateName === "llama3" ? "<|end_of_text|>" : (tokenizer.eosToken ?? "");
  const dropped: DroppedExample[] = [];
  const texts: string[] = [];
  examples.forEach((example, index) => {
    const text = example._prompt[0]?.content;
    if (typeof text !== "string") {
      dropped.push({ index, reason: "no text (pre-training reads _prompt[0].content)" });
      return;
    }
    texts.push(text + eosToken);
  });
  const addBos = tokenizer.addBosToken && tokenizer.bosToken !== null;
  const rows: SupervisedRow[] = [];
  if (!options.packing) {
    for (const text of texts) {
      const ids = tokenizer.encode(addBos ? tokenizer.bosToken + text : text, { addSpecialTokens: false }).slice(0, cutoffLen);
      rows.push({ input_ids: ids, attention_mask: ones(ids.length), labels: [...ids] });
    }
    return { rows, dropped };
  }
  const all = texts.flatMap((text) => tokenizer.encode(text, { addSpecialTokens: false }));
  const total = Math.floor(all.length / cutoffLen) * cutoffLen;
  for (let start = 0; start < total; start += cutoffLen) {
    const ids = all.slice(start, start + cutoffLen);
    if (addBos) ids[0] = tokenizer.bosTokenId!;
    rows.push({ input_ids: ids, attention_mask: ones(ids.length), labels: [...ids] });
  }
  return { rows, dropped };
}
