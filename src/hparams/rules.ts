// Cross-field rules checked at parse time, before any model loads: LLaMA-Factory's `__post_init__`
// checks, `get_train_args`, `_verify_model_args` and `export_model` (see reference §2), plus a few
// of Hugging Face's own. Each rule is one row `{ name, when, message, fix }`, tested in
// tests/hparams/rules.test.ts; the first rule that fires is reported.
import { existsSync } from "node:fs";
import type { DataArguments } from "./data.ts";
import type { EvaluationArguments } from "./evaluation.ts";
import type { FinetuningArguments } from "./finetuning.ts";
import type { GeneratingArguments } from "./generating.ts";
import type { ModelArguments } from "./model.ts";
import type { TrainingArguments } from "./training.ts";

export type Command = "train" | "chat" | "api" | "export" | "eval";

export interface RuleArgs {
  command: Command;
  model: ModelArguments;
  data: DataArguments;
  finetuning: FinetuningArguments;
  training?: TrainingArguments;
  generating?: GeneratingArguments;
  evaluation?: EvaluationArguments;
}

export interface Rule {
  name: string;
  when(args: RuleArgs): boolean;
  message: string | ((args: RuleArgs) => string);
  fix: string;
}

const EPSILON = 1e-6;
const loraOnlyOptions = ["loraplus_lr_ratio", "use_rslora", "use_dora", "pissa_init"] as const;
const ppoLoggers = new Set(["wandb", "tensorboard", "trackio", "none"]);

const isPpo = (a: RuleArgs) => a.finetuning.stage === "ppo";
const usesRefModel = (a: RuleArgs) => a.finetuning.stage === "dpo" && !["orpo", "simpo"].includes(a.finetuning.pref_loss);
const loraOptionsSet = (a: RuleArgs) =>
  loraOnlyOptions.filter((name) => (name === "loraplus_lr_ratio" ? a.finetuning[name] !== null : a.finetuning[name]));
const optimizersSet = (a: RuleArgs) => (["use_galore", "use_apollo", "use_badam"] as const).filter((name) => a.finetuning[name]);
/** Training-only rules see the TrainingArguments, which only `lmf train` has. */
const training = (a: RuleArgs): TrainingArguments | null => (a.command === "train" && a.training ? a.training : null);

const modelRules: Rule[] = [
  {
    name: "model_name_or_path_required",
    when: (a) => !a.model.model_name_or_path,
    message: "`model_name_or_path` is required",
    fix: "set it to a local Hugging Face model folder",
  },
  {
    name: "split_special_tokens_needs_slow_tokenizer",
    when: (a) => a.model.split_special_tokens && a.model.use_fast_tokenizer,
    message: "`split_special_tokens` is not supported by the fast tokenizer",
    fix: "set `use_fast_tokenizer: false`, or drop `split_special_tokens`",
  },
  {
    name: "export_quantization_needs_dataset",
    when: (a) => a.model.export_quantization_bit !== null && !a.model.export_quantization_dataset,
    message: "`export_quantization_bit` needs calibration data",
    fix: "set `export_quantization_dataset`, or drop `export_quantization_bit`",
  },
  {
    name: "processor_pixel_bounds",
    when: (a) =>
      a.model.image_max_pixels < a.model.image_min_pixels || a.model.video_max_pixels < a.model.video_min_pixels,
    message: "`image_max_pixels`/`video_max_pixels` cannot be smaller than the matching `*_min_pixels`",
    fix: "raise the maximum or lower the minimum",
  },
  {
    name: "adapter_needs_lora",
    when: (a) => a.model.adapter_name_or_path !== null && a.finetuning.finetuning_type !== "lora",
    message: "`adapter_name_or_path` is only valid with `finetuning_type: lora`",
    fix: "set `finetuning_type: lora`, or merge the adapter into the model first (`lmf export`)",
  },
  {
    name: "quantization_method_is_on_the_fly",
    when: (a) => a.model.quantization_bit !== null && !["bnb", "bitsandbytes", "hqq", "eetq"].includes(a.model.quantization_method),
    message: (a) =>
      `\`quantization_method: ${a.model.quantization_method}\` names a checkpoint format, not a way to quantize while loading (\`quantization_bit\`)`,
    fix: "use `quantization_method: bnb`, or load a checkpoint already quantized in that format (its config.json says so) without `quantization_bit`",
  },
  {
    name: "quantization_needs_lora",
    when: (a) => a.model.quantization_bit !== null && !["lora", "oft"].includes(a.finetuning.finetuning_type),
    message: "a quantized model (`quantization_bit`) can only be trained with LoRA",
    fix: "set `finetuning_type: lora`, or drop `quantization_bit`",
  },
  {
    name: "quantization_excludes_pissa_init",
    when: (a) => a.model.quantization_bit !== null && a.finetuning.pissa_init,
    message: "`pissa_init` cannot initialise from a quantized model",
    fix: "initialise PiSSA on the unquantized model first, then train with `quantization_bit`",
  },
  {
    name: "quantization_excludes_resize_vocab",
    when: (a) => a.model.quantization_bit !== null && a.model.resize_vocab,
    message: "the embeddings of a quantized model cannot be resized (`resize_vocab`)",
    fix: "drop `resize_vocab` or `quantization_bit`",
  },
  {
    name: "quantization_excludes_new_adapter",
    when: (a) =>
      a.model.quantization_bit !== null && a.finetuning.create_new_adapter && a.model.adapter_name_or_path !== null,
    message: "`create_new_adapter` cannot stack a new adapter on a quantized model",
    fix: "drop `create_new_adapter` to keep training the loaded adapter",
  },
  {
    name: "quantization_single_adapter",
    when: (a) => a.model.quantization_bit !== null && (a.model.adapter_name_or_path?.length ?? 0) > 1,
    message: "a quantized model accepts a single adapter",
    fix: "merge the adapters into the model first (`lmf export`), then load one",
  },
  {
    name: "export_needs_export_dir",
    when: (a) => a.command === "export" && !a.model.export_dir,
    message: "`lmf export` needs `export_dir`",
    fix: "set `export_dir` to the folder to write the model to",
  },
  {
    name: "export_merge_before_quantizing",
    when: (a) => a.command === "export" && a.model.export_quantization_bit !== null && a.model.adapter_name_or_path !== null,
    message: "adapters cannot be merged and quantized in one export",
    fix: "export the merged model first, then quantize that export without `adapter_name_or_path`",
  },
  {
    name: "export_no_merge_into_quantized",
    when: (a) => a.command === "export" && a.model.quantization_bit !== null && a.model.adapter_name_or_path !== null,
    message: "adapters cannot be merged into a quantized model (`quantization_bit`)",
    fix: "drop `quantization_bit` when merging",
  },
  {
    name: "native_backend_for_train_and_eval",
    when: (a) => (a.command === "train" || a.command === "eval") && !["huggingface", "native"].includes(a.model.infer_backend),
    message: (a) => `\`infer_backend: ${a.model.infer_backend}\` is only for \`lmf chat\` and \`lmf api\``,
    fix: "drop `infer_backend` (or set it to huggingface)",
  },
];

const dataRules: Rule[] = [
  {
    name: "val_size_needs_dataset",
    when: (a) => a.data.val_size > EPSILON && a.data.dataset === null,
    message: "`val_size` splits the training data, but no `dataset` is given",
    fix: "set `dataset`, or drop `val_size`",
  },
  {
    name: "val_size_excludes_eval_dataset",
    when: (a) => a.data.val_size > EPSILON && a.data.eval_dataset !== null,
    message: "`val_size` and `eval_dataset` both define the evaluation data",
    fix: "keep one of them",
  },
  {
    name: "val_size_count_is_integer",
    when: (a) => a.data.val_size >= 1 && !Number.isInteger(a.data.val_size),
    message: "`val_size` of 1 or more is a count of examples and must be an integer",
    fix: "give a fraction in [0, 1) or a whole number of examples",
  },
  {
    name: "interleave_probs_need_interleaving",
    when: (a) => a.data.interleave_probs !== null && a.data.mix_strategy === "concat",
    message: "`interleave_probs` only applies to interleaved mixing",
    fix: "set `mix_strategy` to interleave_under, interleave_over or interleave_once, or drop `interleave_probs`",
  },
  {
    name: "interleave_probs_per_dataset",
    when: (a) =>
      a.data.interleave_probs !== null &&
      (a.data.interleave_probs.length !== (a.data.dataset?.length ?? 0) ||
        (a.data.eval_dataset !== null && a.data.interleave_probs.length !== a.data.eval_dataset.length)),
    message: "`interleave_probs` needs one probability per dataset (and per eval dataset when given)",
    fix: "give as many probabilities as datasets",
  },
  {
    name: "streaming_integer_val_size",
    when: (a) => a.data.streaming && a.data.val_size > EPSILON && a.data.val_size < 1,
    message: "with `streaming` the dataset size is unknown, so `val_size` must be a count of examples",
    fix: "give `val_size` as an integer (e.g. 1000)",
  },
  {
    name: "streaming_excludes_max_samples",
    when: (a) => a.data.streaming && a.data.max_samples !== null,
    message: "`max_samples` cannot truncate a streamed dataset",
    fix: "drop `max_samples` (use `max_steps` to bound training) or turn `streaming` off",
  },
  {
    name: "mask_history_excludes_train_on_prompt",
    when: (a) => a.data.mask_history && a.data.train_on_prompt,
    message: "`mask_history` (loss on the last turn only) contradicts `train_on_prompt` (loss on prompts too)",
    fix: "keep one of them",
  },
  {
    name: "reserved_label_len_below_cutoff",
    when: (a) => a.data.reserved_label_len !== null && a.data.reserved_label_len >= a.data.cutoff_len,
    message: (a) => `\`reserved_label_len\` (${a.data.reserved_label_len}) must be smaller than \`cutoff_len\` (${a.data.cutoff_len})`,
    fix: "lower `reserved_label_len` or raise `cutoff_len`",
  },
];

const finetuningRules: Rule[] = [
  {
    name: "ppo_needs_reward_model",
    when: (a) => isPpo(a) && !a.finetuning.reward_model,
    message: "PPO training needs `reward_model`",
    fix: "set `reward_model` (a model folder, a LoRA adapter, or an API URL with `reward_model_type: api`)",
  },
  {
    name: "ppo_lora_reward_needs_lora",
    when: (a) => isPpo(a) && a.finetuning.reward_model_type === "lora" && a.finetuning.finetuning_type !== "lora",
    message: "a LoRA reward model (`reward_model_type: lora`) only works with LoRA training",
    fix: "set `reward_model_type: full`, or `finetuning_type: lora`",
  },
  {
    name: "ppo_api_reward_needs_url",
    when: (a) => isPpo(a) && a.finetuning.reward_model_type === "api" && !/^https?:\/\//.test(a.finetuning.reward_model ?? ""),
    message: "`reward_model_type: api` needs `reward_model` to be the API's full URL",
    fix: "set `reward_model: http://host:port/...`",
  },
  {
    name: "dpo_label_smoothing_sigmoid_only",
    when: (a) => a.finetuning.pref_loss !== "sigmoid" && a.finetuning.dpo_label_smoothing > EPSILON,
    message: "`dpo_label_smoothing` only applies to `pref_loss: sigmoid`",
    fix: "set `pref_loss: sigmoid`, or drop `dpo_label_smoothing`",
  },
  {
    name: "llama_pro_needs_freeze_or_lora",
    when: (a) => a.finetuning.use_llama_pro && !["freeze", "lora"].includes(a.finetuning.finetuning_type),
    message: "`use_llama_pro` trains the expanded blocks only, so it needs `finetuning_type` freeze or lora",
    fix: "set `finetuning_type: freeze` or `lora`",
  },
  {
    name: "lora_excludes_galore_apollo_badam",
    when: (a) => a.finetuning.finetuning_type === "lora" && optimizersSet(a).length > 0,
    message: (a) => `LoRA cannot be combined with \`${optimizersSet(a).join("`, `")}\``,
    fix: "use `finetuning_type: full` (or freeze) with GaLore, APOLLO or BAdam",
  },
  {
    name: "one_of_galore_apollo_badam",
    when: (a) => optimizersSet(a).length > 1,
    message: (a) => `\`${optimizersSet(a).join("`, `")}\` cannot be used together`,
    fix: "keep one of GaLore, APOLLO and BAdam",
  },
  {
    name: "lora_only_options",
    when: (a) => a.finetuning.finetuning_type !== "lora" && loraOptionsSet(a).length > 0,
    message: (a) => `\`${loraOptionsSet(a).join("`, `")}\` only applies to LoRA training`,
    fix: "set `finetuning_type: lora`, or drop these options",
  },
  {
    name: "pissa_stage",
    when: (a) => a.finetuning.pissa_init && (["ppo", "kto"].includes(a.finetuning.stage) || usesRefModel(a)),
    message: "`pissa_init` cannot be used with PPO, KTO or a DPO reference model",
    fix: "drop `pissa_init`, or use `pref_loss: orpo` or `simpo` (no reference model)",
  },
];

const trainRules: Rule[] = [
  {
    name: "sft_only_predict_with_generate",
    when: (a) => !!training(a)?.predict_with_generate && a.finetuning.stage !== "sft",
    message: "`predict_with_generate` is only for `stage: sft`",
    fix: "drop it, or set `stage: sft`",
  },
  {
    name: "sft_only_neat_packing",
    when: (a) => a.command === "train" && a.data.neat_packing && a.finetuning.stage !== "sft",
    message: "`neat_packing` is only for `stage: sft`",
    fix: "use `packing` instead, or set `stage: sft`",
  },
  {
    name: "sft_only_prompt_masking",
    when: (a) => a.command === "train" && (a.data.train_on_prompt || a.data.mask_history) && a.finetuning.stage !== "sft",
    message: "`train_on_prompt` and `mask_history` are only for `stage: sft`",
    fix: "drop them, or set `stage: sft`",
  },
  {
    name: "sft_predict_needs_generate",
    when: (a) => !!training(a)?.do_predict && a.finetuning.stage === "sft" && !training(a)!.predict_with_generate,
    message: "`do_predict` saves generated predictions, which needs `predict_with_generate`",
    fix: "set `predict_with_generate: true`",
  },
  {
    name: "predict_with_generate_not_while_training",
    when: (a) => !!training(a)?.do_train && training(a)!.predict_with_generate,
    message: "`predict_with_generate` cannot be used while training (`do_train`)",
    fix: "train first, then run a separate prediction config with `do_predict` and `predict_with_generate`",
  },
  {
    name: "predict_with_generate_excludes_compute_accuracy",
    when: (a) => !!training(a)?.predict_with_generate && a.finetuning.compute_accuracy,
    message: "`predict_with_generate` and `compute_accuracy` cannot be used together",
    fix: "keep one of them",
  },
  {
    name: "rm_ppo_exclude_load_best",
    when: (a) => !!training(a)?.load_best_model_at_end && ["rm", "ppo"].includes(a.finetuning.stage),
    message: "the rm and ppo stages do not support `load_best_model_at_end`",
    fix: "drop `load_best_model_at_end`",
  },
  {
    name: "ppo_needs_do_train",
    when: (a) => training(a) !== null && isPpo(a) && !training(a)!.do_train,
    message: "PPO only trains; it cannot evaluate or predict",
    fix: "set `do_train: true`; evaluate the result with `stage: sft`",
  },
  {
    name: "ppo_excludes_shift_attn",
    when: (a) => training(a) !== null && isPpo(a) && a.model.shift_attn,
    message: "PPO cannot use shifted short attention (`shift_attn`)",
    fix: "drop `shift_attn`",
  },
  {
    name: "ppo_report_to",
    when: (a) => training(a) !== null && isPpo(a) && training(a)!.report_to.some((name) => !ppoLoggers.has(name)),
    message: "PPO only reports to wandb, tensorboard or trackio",
    fix: "set `report_to` to one of wandb, tensorboard, trackio or none",
  },
  {
    name: "ppo_cannot_resume",
    when: (a) => !!training(a)?.resume_from_checkpoint && isPpo(a),
    message: "PPO cannot resume from a checkpoint (LLaMA-Factory's PPO trainer cannot either)",
    fix: "drop `resume_from_checkpoint`; to go on from a saved adapter, set `adapter_name_or_path` to it",
  },
  {
    name: "ppo_no_eval_data",
    when: (a) => training(a) !== null && isPpo(a) && (a.data.eval_dataset !== null || a.data.val_size > 0),
    message: "PPO has no evaluation set (LLaMA-Factory's PPOTrainer does not support one)",
    fix: "drop `eval_dataset` and `val_size`; evaluate the result with `stage: sft`",
  },
  {
    name: "full_rm_ppo_cannot_resume",
    when: (a) =>
      !!training(a)?.resume_from_checkpoint &&
      ["rm", "ppo"].includes(a.finetuning.stage) &&
      ["full", "freeze"].includes(a.finetuning.finetuning_type),
    message: "rm and ppo with full or freeze fine-tuning cannot resume from a checkpoint",
    fix: "drop `resume_from_checkpoint` to start again, or train with LoRA",
  },
  {
    name: "streaming_needs_max_steps",
    when: (a) => training(a)?.max_steps === -1 && a.data.streaming,
    message: "a streamed dataset has no known length, so epochs cannot be counted",
    fix: "set `max_steps`",
  },
  {
    name: "train_needs_dataset",
    when: (a) => !!training(a)?.do_train && a.data.dataset === null,
    message: "`do_train` needs `dataset`",
    fix: "set `dataset` to names from dataset_info.json or to file paths",
  },
  {
    name: "eval_needs_eval_data",
    when: (a) => {
      const t = training(a);
      return !!t && (t.do_eval || t.do_predict || t.predict_with_generate) && a.data.eval_dataset === null && a.data.val_size < EPSILON;
    },
    message: "evaluation or prediction needs evaluation data",
    fix: "set `eval_dataset`, or `val_size` to split some off the training data",
  },
  {
    name: "quantized_training_no_device_map",
    when: (a) => !!training(a)?.do_train && a.model.quantization_device_map === "auto",
    message: "`quantization_device_map: auto` cannot be used in training",
    fix: "drop `quantization_device_map`",
  },
  {
    name: "one_mixed_precision",
    when: (a) => !!training(a)?.fp16 && (training(a)!.bf16 || a.finetuning.pure_bf16),
    message: "`fp16` cannot be combined with `bf16` or `pure_bf16`",
    fix: "keep one precision",
  },
  {
    name: "load_best_needs_matching_strategies",
    when: (a) => {
      const t = training(a);
      return !!t?.load_best_model_at_end && t.save_strategy !== "best" && (t.eval_strategy === "no" || t.eval_strategy !== t.save_strategy);
    },
    message: "`load_best_model_at_end` needs evaluation, and `save_strategy` equal to `eval_strategy`",
    fix: "set `eval_strategy` and `save_strategy` to the same value (steps or epoch)",
  },
  {
    name: "trackio_needs_project",
    when: (a) => !!training(a)?.report_to.includes("trackio") && !training(a)!.project,
    message: "reporting to trackio needs `project`",
    fix: "set `project`",
  },
];

const evalRules: Rule[] = [
  {
    name: "eval_needs_task",
    when: (a) => a.command === "eval" && !a.evaluation?.task,
    message: "`lmf eval` needs `task`",
    fix: "set `task` as name_split, e.g. mmlu_test",
  },
  {
    name: "eval_save_dir_exists",
    when: (a) => a.command === "eval" && !!a.evaluation?.save_dir && existsSync(a.evaluation.save_dir),
    message: (a) => `\`save_dir\` ${a.evaluation!.save_dir} already exists`,
    fix: "choose a new `save_dir` so earlier results are not overwritten",
  },
];

export const rules: readonly Rule[] = [...modelRules, ...dataRules, ...finetuningRules, ...trainRules, ...evalRules];

/** The first rule the arguments break, or null. */
export function firstBrokenRule(args: RuleArgs): Rule | null {
  return rules.find((rule) => rule.when(args)) ?? null;
}

export function ruleMessage(rule: Rule, args: RuleArgs): string {
  return typeof rule.message === "function" ? rule.message(args) : rule.message;
}
