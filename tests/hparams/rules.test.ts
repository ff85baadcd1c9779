// Every cross-field rule: it fires on a config that breaks it (and its message names the rule),
// and the same config with the suggested fix parses. A rule without a case here fails the suite.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { UserError } from "../../src/errors.ts";
import { type Command, rules } from "../../src/hparams/index.ts";
import { baseConfigs, parseWith } from "./helpers.ts";

const existingDir = mkdtempSync(join(tmpdir(), "lmf-rules-"));
const ppo = { stage: "ppo", reward_model: "saves/rm" };
const predictOnly = { do_train: false, do_predict: true, predict_with_generate: true, eval_dataset: "alpaca_eval" };
const streaming = { streaming: true, max_steps: 100 };

interface Case {
  rule: string;
  command: Command;
  bad: Record<string, unknown>;
  good: Record<string, unknown>;
}

const cases: Case[] = [
  { rule: "model_name_or_path_required", command: "train", bad: { model_name_or_path: null }, good: {} },
  {
    rule: "split_special_tokens_needs_slow_tokenizer",
    command: "chat",
    bad: { split_special_tokens: true },
    good: { split_special_tokens: true, use_fast_tokenizer: false },
  },
  {
    rule: "export_quantization_needs_dataset",
    command: "export",
    bad: { export_quantization_bit: 4 },
    good: { export_quantization_bit: 4, export_quantization_dataset: "data/c4_demo.jsonl" },
  },
  {
    rule: "processor_pixel_bounds",
    command: "train",
    bad: { image_max_pixels: 100, image_min_pixels: 1000 },
    good: { image_max_pixels: 1000, image_min_pixels: 100 },
  },
  { rule: "adapter_needs_lora", command: "chat", bad: { adapter_name_or_path: "saves/a", finetuning_type: "full" }, good: { adapter_name_or_path: "saves/a" } },
  {
    rule: "quantization_method_is_on_the_fly",
    command: "train",
    bad: { quantization_bit: 4, quantization_method: "gptq" },
    good: { quantization_bit: 4, quantization_method: "bnb" },
  },
  { rule: "quantization_needs_lora", command: "train", bad: { quantization_bit: 4, finetuning_type: "full" }, good: { quantization_bit: 4 } },
  { rule: "quantization_excludes_pissa_init", command: "train", bad: { quantization_bit: 4, pissa_init: true }, good: { quantization_bit: 4 } },
  { rule: "quantization_excludes_resize_vocab", command: "train", bad: { quantization_bit: 8, resize_vocab: true }, good: { resize_vocab: true } },
  {
    rule: "quantization_excludes_new_adapter",
    command: "train",
    bad: { quantization_bit: 4, adapter_name_or_path: "saves/a", create_new_adapter: true },
    good: { quantization_bit: 4, adapter_name_or_path: "saves/a" },
  },
  {
    rule: "quantization_single_adapter",
    command: "chat",
    bad: { quantization_bit: 4, adapter_name_or_path: "saves/a,saves/b" },
    good: { adapter_name_or_path: "saves/a,saves/b" },
  },
  { rule: "export_needs_export_dir", command: "export", bad: { export_dir: null }, good: {} },
  {
    rule: "export_merge_before_quantizing",
    command: "export",
    bad: { adapter_name_or_path: "saves/a", export_quantization_bit: 4, export_quantization_dataset: "c4.jsonl" },
    good: { export_quantization_bit: 4, export_quantization_dataset: "c4.jsonl" },
  },
  {
    rule: "export_no_merge_into_quantized",
    command: "export",
    bad: { adapter_name_or_path: "saves/a", quantization_bit: 4 },
    good: { adapter_name_or_path: "saves/a" },
  },
  { rule: "native_backend_for_train_and_eval", command: "train", bad: { infer_backend: "vllm" }, good: { infer_backend: "native" } },
  { rule: "val_size_needs_dataset", command: "chat", bad: { val_size: 0.1 }, good: { val_size: 0.1, dataset: "alpaca_en_demo" } },
  { rule: "val_size_excludes_eval_dataset", command: "train", bad: { val_size: 0.1, eval_dataset: "e" }, good: { eval_dataset: "e" } },
  { rule: "val_size_count_is_integer", command: "train", bad: { val_size: 10.5 }, good: { val_size: 10 } },
  {
    rule: "interleave_probs_need_interleaving",
    command: "train",
    bad: { dataset: "a,b", interleave_probs: "0.5,0.5" },
    good: { dataset: "a,b", interleave_probs: "0.5,0.5", mix_strategy: "interleave_under" },
  },
  {
    rule: "interleave_probs_per_dataset",
    command: "train",
    bad: { dataset: "a,b", mix_strategy: "interleave_over", interleave_probs: [1.0] },
    good: { dataset: "a,b", mix_strategy: "interleave_over", interleave_probs: [0.3, 0.7] },
  },
  { rule: "streaming_integer_val_size", command: "train", bad: { ...streaming, val_size: 0.1 }, good: { ...streaming, val_size: 100 } },
  { rule: "streaming_excludes_max_samples", command: "train", bad: { ...streaming, max_samples: 10 }, good: streaming },
  {
    rule: "mask_history_excludes_train_on_prompt",
    command: "train",
    bad: { mask_history: true, train_on_prompt: true },
    good: { mask_history: true },
  },
  {
    rule: "reserved_label_len_below_cutoff",
    command: "train",
    bad: { cutoff_len: 512, reserved_label_len: 512 },
    good: { cutoff_len: 512, reserved_label_len: 64 },
  },
  { rule: "ppo_needs_reward_model", command: "train", bad: { stage: "ppo" }, good: ppo },
  {
    rule: "ppo_lora_reward_needs_lora",
    command: "train",
    bad: { ...ppo, finetuning_type: "full" },
    good: { ...ppo, finetuning_type: "full", reward_model_type: "full" },
  },
  {
    rule: "ppo_api_reward_needs_url",
    command: "train",
    bad: { ...ppo, reward_model_type: "api" },
    good: { ...ppo, reward_model_type: "api", reward_model: "http://localhost:8000/v1/score" },
  },
  {
    rule: "dpo_label_smoothing_sigmoid_only",
    command: "train",
    bad: { stage: "dpo", pref_loss: "hinge", dpo_label_smoothing: 0.1 },
    good: { stage: "dpo", dpo_label_smoothing: 0.1 },
  },
  {
    rule: "llama_pro_needs_freeze_or_lora",
    command: "train",
    bad: { use_llama_pro: true, finetuning_type: "full" },
    good: { use_llama_pro: true, finetuning_type: "freeze" },
  },
  { rule: "lora_excludes_galore_apollo_badam", command: "train", bad: { use_galore: true }, good: { use_galore: true, finetuning_type: "full" } },
  {
    rule: "one_of_galore_apollo_badam",
    command: "train",
    bad: { finetuning_type: "full", use_galore: true, use_badam: true },
    good: { finetuning_type: "full", use_badam: true },
  },
  { rule: "lora_only_options", command: "train", bad: { finetuning_type: "freeze", use_dora: true }, good: { use_dora: true } },
  {
    rule: "pissa_stage",
    command: "train",
    bad: { stage: "dpo", pissa_init: true },
    good: { stage: "dpo", pref_loss: "simpo", pissa_init: true },
  },
  { rule: "sft_only_predict_with_generate", command: "train", bad: { ...predictOnly, stage: "pt" }, good: predictOnly },
  { rule: "sft_only_neat_packing", command: "train", bad: { stage: "pt", neat_packing: true }, good: { stage: "pt", packing: true } },
  { rule: "sft_only_prompt_masking", command: "train", bad: { stage: "pt", train_on_prompt: true }, good: { train_on_prompt: true } },
  {
    rule: "sft_predict_needs_generate",
    command: "train",
    bad: { ...predictOnly, predict_with_generate: false },
    good: predictOnly,
  },
  {
    rule: "predict_with_generate_not_while_training",
    command: "train",
    bad: { ...predictOnly, do_train: true },
    good: predictOnly,
  },
  {
    rule: "predict_with_generate_excludes_compute_accuracy",
    command: "train",
    bad: { ...predictOnly, compute_accuracy: true },
    good: predictOnly,
  },
  {
    rule: "rm_ppo_exclude_load_best",
    command: "train",
    bad: { stage: "rm", load_best_model_at_end: true, eval_strategy: "steps", save_strategy: "steps", val_size: 0.1 },
    good: { stage: "rm", eval_strategy: "steps", val_size: 0.1 },
  },
  { rule: "ppo_needs_do_train", command: "train", bad: { ...ppo, do_train: false }, good: ppo },
  { rule: "ppo_excludes_shift_attn", command: "train", bad: { ...ppo, shift_attn: true }, good: { shift_attn: true } },
  { rule: "ppo_report_to", command: "train", bad: { ...ppo, report_to: "mlflow" }, good: { ...ppo, report_to: "wandb" } },
  { rule: "ppo_cannot_resume", command: "train", bad: { ...ppo, resume_from_checkpoint: "saves/ppo/checkpoint-10" }, good: ppo },
  { rule: "ppo_no_eval_data", command: "train", bad: { ...ppo, val_size: 0.1 }, good: ppo },
  {
    rule: "full_rm_ppo_cannot_resume",
    command: "train",
    bad: { stage: "rm", finetuning_type: "full", resume_from_checkpoint: "saves/rm/checkpoint-10" },
    good: { stage: "rm", resume_from_checkpoint: "saves/rm/checkpoint-10" },
  },
  { rule: "streaming_needs_max_steps", command: "train", bad: { streaming: true }, good: streaming },
  { rule: "train_needs_dataset", command: "train", bad: { dataset: null }, good: {} },
  { rule: "eval_needs_eval_data", command: "train", bad: { do_eval: true }, good: { do_eval: true, val_size: 0.1 } },
  {
    rule: "quantized_training_no_device_map",
    command: "train",
    bad: { quantization_bit: 4, quantization_device_map: "auto" },
    good: { quantization_bit: 4 },
  },
  { rule: "one_mixed_precision", command: "train", bad: { fp16: true, bf16: true }, good: { bf16: true } },
  {
    rule: "load_best_needs_matching_strategies",
    command: "train",
    bad: { load_best_model_at_end: true, val_size: 0.1, eval_strategy: "steps", save_strategy: "epoch" },
    good: { load_best_model_at_end: true, val_size: 0.1, eval_strategy: "steps", save_strategy: "steps" },
  },
  { rule: "trackio_needs_project", command: "train", bad: { report_to: "trackio" }, good: { report_to: "trackio", project: "p" } },
  { rule: "eval_needs_task", command: "eval", bad: { task: null }, good: {} },
  { rule: "eval_save_dir_exists", command: "eval", bad: { save_dir: existingDir }, good: { save_dir: join(existingDir, "new") } },
];

describe("cross-field rules", () => {
  test("every rule in the table has a case, and names are unique", () => {
    const names = rules.map((rule) => rule.name);
    assert.equal(new Set(names).size, names.length);
    assert.deepEqual(cases.map((c) => c.rule).sort(), [...names].sort());
  });

  test("the base configs break no rule", () => {
    for (const command of ["train", "chat", "api", "export", "eval"] as const) {
      assert.doesNotThrow(() => parseWith(command, baseConfigs[command], { allowUnsupported: true }), command);
    }
  });

  for (const c of cases) {
    test(c.rule, () => {
      const rule = rules.find((candidate) => candidate.name === c.rule)!;
      assert.ok(rule.fix.length > 0);
      assert.throws(
        () => parseWith(c.command, { ...baseConfigs[c.command], ...c.bad }, { allowUnsupported: true }),
        (error: unknown) => {
          assert.ok(error instanceof UserError, String(error));
          assert.equal(error.where, `rule ${c.rule}`, error.message);
          assert.ok(error.fix && error.fix.length > 0);
          return true;
        },
      );
      assert.doesNotThrow(() => parseWith(c.command, { ...baseConfigs[c.command], ...c.good }, { allowUnsupported: true }));
    });
  }
});
