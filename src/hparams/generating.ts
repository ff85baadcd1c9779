// GeneratingArguments: decoding settings for chat, the API and predictions
// (LLaMA-Factory `hparams/generating_args.py`), with its `to_dict()` length rule.
import { type ArgsOf, bool, defineGroup, float, int } from "./schema.ts";

export const generatingFields = {
  do_sample: bool(true, "Sample the next token; greedy decoding when false."),
  temperature: float(0.95, "Divide logits by this before sampling (0 means greedy).", { min: 0 }),
  top_p: float(0.7, "Sample from the smallest set of tokens whose probabilities add up to top_p.", { min: 0, max: 1 }),
  top_k: int(50, "Sample from the k most likely tokens (0 turns the filter off).", { min: 0 }),
  num_beams: int(1, "Beams for beam search; 1 means no beam search.", { min: 1 }),
  max_length: int(1024, "Longest sequence, prompt included; max_new_tokens takes precedence when positive.", { min: 1 }),
  max_new_tokens: int(1024, "Most tokens to generate after the prompt.", { min: 0 }),
  repetition_penalty: float(1.0, "Penalty on tokens already present; 1.0 means none.", { min: 0 }),
  length_penalty: float(1.0, "Exponent on length in beam scores; above 1 favours longer outputs.", {}),
  skip_special_tokens: bool(true, "Drop special tokens from the decoded text."),
};

export type GeneratingArguments = ArgsOf<typeof generatingFields>;

/** Keeps `max_new_tokens` and drops `max_length` when `max_new_tokens > 0`, else the reverse. */
function generatingToDict(values: Record<string, unknown>): Record<string, unknown> {
  const out = { ...values };
  if (typeof out.max_new_tokens === "number" && out.max_new_tokens > 0) delete out.max_length;
  else delete out.max_new_tokens;
  return out;
}

export const generatingGroup = defineGroup<typeof generatingFields>(
  "GeneratingArguments",
  "generating",
  [["GeneratingArguments", generatingFields]],
  generatingToDict,
);
