// DataArguments: which datasets, how they are templated, cut, mixed, split and cached
// (LLaMA-Factory `hparams/data_args.py`), plus two older fields lmfactory keeps
// (`reserved_label_len`, `split`) and one of its own (`skip_bad_rows`).
import {
  type ArgsOf,
  bool,
  choice,
  defineGroup,
  float,
  int,
  optBool,
  optFloats,
  optInt,
  optList,
  optStr,
  str,
} from "./schema.ts";

export const dataFields = {
  template: optStr("Chat template name; without one the tokenizer's own chat_template is used."),
  dataset: optList("Training datasets: names from dataset_info.json or paths, comma-separated."),
  eval_dataset: optList("Evaluation datasets: names from dataset_info.json or paths, comma-separated."),
  dataset_dir: str("data", "Folder holding dataset_info.json and the dataset files."),
  media_dir: optStr("Folder with images, videos or audio (defaults to dataset_dir).", { tier: "out" }),
  split: str("train", "Which split of each dataset to load."),
  cutoff_len: int(2048, "Longest tokenized example; longer ones are truncated.", { min: 1 }),
  reserved_label_len: optInt("Fewest label tokens kept when truncating; must be below cutoff_len.", { min: 1 }),
  train_on_prompt: bool(false, "Also compute the loss on prompt tokens."),
  mask_history: bool(false, "Compute the loss on the last turn only."),
  streaming: bool(false, "Read datasets as streams instead of loading them whole."),
  buffer_size: int(16384, "Shuffle-buffer size when streaming.", { min: 1 }),
  // lmfactory's own key (LLaMA-Factory stops at a bad row, or fails inside `datasets`).
  skip_bad_rows: bool(false, "Skip dataset rows that cannot be read (missing column, wrong role order, empty answer...), then count and report them, instead of stopping at the first."),
  mix_strategy: choice(
    ["concat", "interleave_under", "interleave_over", "interleave_once"],
    "concat",
    "How several datasets are combined: concatenated, or interleaved (undersampling, oversampling, or each example once).",
  ),
  interleave_probs: optFloats("Sampling probability of each dataset when interleaving, comma-separated."),
  overwrite_cache: bool(false, "Rebuild the tokenized-dataset cache."),
  preprocessing_batch_size: int(1000, "Examples per preprocessing batch.", { min: 1 }),
  preprocessing_num_workers: optInt("Worker processes for preprocessing.", { min: 1 }),
  max_samples: optInt("Keep at most this many examples of each dataset (for debugging).", { min: 1 }),
  eval_num_beams: optInt("Beams used when generating predictions.", {
    min: 1,
    noEffect: "as in LLaMA-Factory, it only fills generation_num_beams, which prediction never reads: num_beams from the generating arguments applies",
  }),
  ignore_pad_token_for_loss: bool(true, "Give padding positions the ignore label so they add no loss."),
  val_size: float(0, "Validation split taken from the training data: a fraction in [0, 1) or a count of examples.", {
    min: 0,
  }),
  eval_on_each_dataset: bool(false, "Evaluate each evaluation dataset separately.", { tier: "later" }),
  packing: optBool(null, "Pack several examples into each sequence (on by default for pt).", {
    aliases: ["sft_packing"],
  }),
  neat_packing: bool(false, "Pack without attention across example boundaries."),
  tool_format: optStr("Function-call format used in tool examples."),
  default_system: optStr("Replace the template's default system message."),
  enable_thinking: optBool(true, "Reasoning mode for templates with thinking."),
  preserve_thinking: bool(false, "Keep the thinking text of earlier turns.", { tier: "later" }),
  tokenized_path: optStr("Where the tokenized dataset is saved to or loaded from.", { aliases: ["cache_path"] }),
  data_shared_file_system: bool(false, "Datasets live on a file system shared between nodes.", {
    noEffect: "in a distributed run rank 0 alone preprocesses the data and sends the rows to the other workers, so no file system needs to be shared",
  }),
};

export type DataArguments = ArgsOf<typeof dataFields>;

export const dataGroup = defineGroup<typeof dataFields>("DataArguments", "data", [["DataArguments", dataFields]]);
