// Parsing: every value type from YAML, JSON, CLI flags and key=value overrides; null/None; unknown
// keys with file line and suggestion; wrong types and choices; old-name aliases; ignored keys.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { UserError } from "../../src/errors.ts";
import { foreignKeys } from "../../src/hparams/foreign_keys.ts";
import { fieldHelp } from "../../src/hparams/help.ts";
import { allGroups } from "../../src/hparams/index.ts";
import { readArgv } from "../../src/hparams/parser.ts";
import { closestName } from "../../src/names.ts";
import { baseConfigs, parseWith } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "lmf-parser-"));
function writeConfig(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const trainYaml = `### model
model_name_or_path: models/tiny

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_target: q_proj,v_proj

### dataset
dataset:
  - identity
  - alpaca_en_demo
template: llama3
cutoff_len: 1024
max_samples: 1000
interleave_probs: null

### train
learning_rate: 1.0e-4
num_train_epochs: 3.0
bf16: true
resume_from_checkpoint: null
lr_scheduler_kwargs: {num_cycles: 2}
output_dir: saves/tiny
`;

function throwsUserError(fn: () => unknown, ...fragments: string[]): UserError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof UserError, `expected a UserError, got ${String(caught)}`);
  for (const fragment of fragments) assert.ok(caught.message.includes(fragment), `"${caught.message}" lacks "${fragment}"`);
  return caught;
}

describe("value types", () => {
  test("a YAML config gives typed values: ints, floats, bools, lists, enums, null, dicts", () => {
    const { args } = parseWith("train", [writeConfig("types.yaml", trainYaml)]);
    assert.equal(args.finetuning!.lora_rank, 16);
    assert.deepEqual(args.finetuning!.lora_target, ["q_proj", "v_proj"]);
    assert.deepEqual(args.data!.dataset, ["identity", "alpaca_en_demo"]);
    assert.equal(args.data!.template, "llama3");
    assert.equal(args.data!.interleave_probs, null);
    assert.equal(args.training!.learning_rate, 1e-4);
    assert.equal(args.training!.num_train_epochs, 3);
    assert.equal(args.training!.bf16, true);
    assert.equal(args.training!.resume_from_checkpoint, null);
    assert.deepEqual(args.training!.lr_scheduler_kwargs, { num_cycles: 2 });
    assert.equal(args.finetuning!.stage, "sft");
  });

  test("strings from the command line are converted to each field's type", () => {
    const { args } = parseWith("train", [
      "--model_name_or_path", "models/tiny",
      "--do_train", "true",
      "--dataset", "a,b",
      "--lora_rank=4",
      "--learning_rate", "5e-6",
      "--bf16",
      "--freeze_trainable_layers", "-2",
      "--preprocessing_num_workers", "None",
      "--lr_scheduler_kwargs", '{"num_cycles": 3}',
      "--interleave_probs", "0.25, 0.75",
      "--mix_strategy", "interleave_under",
      "--use_fast_tokenizer", "no",
    ]);
    assert.equal(args.finetuning!.lora_rank, 4);
    assert.equal(args.training!.learning_rate, 5e-6);
    assert.equal(args.training!.bf16, true);
    assert.equal(args.training!.do_train, true);
    assert.equal(args.finetuning!.freeze_trainable_layers, -2);
    assert.equal(args.data!.preprocessing_num_workers, null);
    assert.deepEqual(args.training!.lr_scheduler_kwargs, { num_cycles: 3 });
    assert.deepEqual(args.data!.interleave_probs, [0.25, 0.75]);
    assert.deepEqual(args.data!.dataset, ["a", "b"]);
    assert.equal(args.model!.use_fast_tokenizer, false);
  });

  test("dashed flag names and --no_<flag> work as in HfArgumentParser", () => {
    const { args } = parseWith("chat", ["--model-name-or-path", "models/tiny", "--no_use_kv_cache"]);
    assert.equal(args.model!.model_name_or_path, "models/tiny");
    assert.equal(args.model!.use_kv_cache, false);
  });

  test("booleans accept true/false/yes/no/1/0 and refuse anything else", () => {
    for (const [text, value] of [["True", true], ["yes", true], ["1", true], ["false", false], ["No", false], ["0", false]] as const) {
      assert.equal(parseWith("chat", { ...baseConfigs.chat, resize_vocab: text }).args.model!.resize_vocab, value, text);
    }
    throwsUserError(() => parseWith("chat", { ...baseConfigs.chat, resize_vocab: "maybe" }), "`resize_vocab` must be true or false", '"maybe"');
  });

  test("wrong types name the field, the value and what is allowed", () => {
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, lora_rank: "eight" }), "`lora_rank` must be an integer", '"eight"', "expected int");
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, lora_rank: 8.5 }), "`lora_rank` must be an integer");
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, learning_rate: "fast" }), "`learning_rate` must be a number");
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, lora_target: { q: 1 } }), "`lora_target` must be a list");
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, template: true }), "`template` must be a string");
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, lora_rank: null }), "`lora_rank` cannot be null", "default is 8");
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, lora_rank: 0 }), "`lora_rank` must be at least 1, got 0");
  });

  test("values outside the choices list what is allowed and the closest choice", () => {
    const error = throwsUserError(
      () => parseWith("train", { ...baseConfigs.train, finetuning_type: "loar" }),
      "`finetuning_type: loar` is not one of its choices",
      "allowed: lora, freeze, full, oft",
      "did you mean `lora`?",
    );
    assert.equal(error.where, "arguments (finetuning_type)");
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, stage: "grpo" }), "`stage: grpo`", "allowed: pt, sft, rm, ppo, dpo, kto");
  });

  test("restricted fields: quantization bits, quantization type, preference loss, reward model type, label smoothing", () => {
    const bad: [string, unknown, string][] = [
      ["quantization_bit", 3, "allowed: 4, 8"],
      ["quantization_type", "int4", "allowed: fp4, nf4"],
      ["ref_model_quantization_bit", 2, "allowed: 4, 8"],
      ["reward_model_quantization_bit", 16, "allowed: 4, 8"],
      ["pref_loss", "dpo", "allowed: sigmoid, hinge, ipo, kto_pair, orpo, simpo"],
      ["reward_model_type", "remote", "allowed: lora, full, api"],
      ["dpo_label_smoothing", 0.7, "at most 0.5"],
    ];
    for (const [key, value, fragment] of bad) {
      throwsUserError(() => parseWith("train", { ...baseConfigs.train, [key]: value }, { allowUnsupported: true }), `\`${key}`, fragment);
    }
    for (const bits of [4, 8]) {
      assert.equal(parseWith("train", { ...baseConfigs.train, quantization_bit: bits }, { allowUnsupported: true }).args.model!.quantization_bit, bits);
    }
  });

  test("lora_alpha defaults to twice lora_rank; an explicit value is kept", () => {
    assert.equal(parseWith("train", { ...baseConfigs.train, lora_rank: 16 }).args.finetuning!.lora_alpha, 32);
    assert.equal(parseWith("train", { ...baseConfigs.train, lora_rank: 16, lora_alpha: 8 }).args.finetuning!.lora_alpha, 8);
  });
});

describe("files and overrides", () => {
  test("key=value and --key value after the file override it", () => {
    const path = writeConfig("base.yaml", trainYaml);
    const { args } = parseWith("train", [path, "lora_rank=32", "template=qwen3", "--learning_rate", "2e-5", "dataset=x,y"]);
    assert.equal(args.finetuning!.lora_rank, 32);
    assert.equal(args.data!.template, "qwen3");
    assert.equal(args.training!.learning_rate, 2e-5);
    assert.deepEqual(args.data!.dataset, ["x", "y"]);
    assert.equal(args.data!.cutoff_len, 1024);
  });

  test("an override can set an optional value back to null", () => {
    const path = writeConfig("null.yaml", trainYaml);
    assert.equal(parseWith("train", [path, "max_samples=None"]).args.data!.max_samples, null);
    assert.equal(parseWith("train", [path, "max_samples=null"]).args.data!.max_samples, null);
  });

  test("a JSON config parses like the YAML one", () => {
    const json = writeConfig(
      "cfg.json",
      JSON.stringify({ ...baseConfigs.train, lora_target: ["q_proj", "v_proj"], learning_rate: 1e-4, bf16: true }, null, 2),
    );
    const { args } = parseWith("train", [json, "lora_rank=4"]);
    assert.deepEqual(args.finetuning!.lora_target, ["q_proj", "v_proj"]);
    assert.equal(args.finetuning!.lora_rank, 4);
    assert.equal(args.training!.bf16, true);
  });

  test("an unknown key names the file, the line and the closest known key", () => {
    const path = writeConfig("typo.yaml", "model_name_or_path: m\n\nlora_rnak: 8\n");
    const error = throwsUserError(() => parseWith("train", [path]), "unknown key `lora_rnak`", "did you mean `lora_rank`?");
    assert.equal(error.where, `${path}:3`);
    const json = writeConfig("typo.json", '{\n  "model_name_or_path": "m",\n  "learnig_rate": 1\n}\n');
    const jsonError = throwsUserError(() => parseWith("train", [json]), "unknown key `learnig_rate`", "did you mean `learning_rate`?");
    assert.equal(jsonError.where, `${json}:3`);
  });

  test("an unknown override names the command line and suggests a key", () => {
    const path = writeConfig("ok.yaml", trainYaml);
    const error = throwsUserError(() => parseWith("train", [path, "cutof_len=10"]), "unknown key `cutof_len`", "did you mean `cutoff_len`?");
    assert.equal(error.where, "command line (cutof_len=10)");
  });

  test("a wrong value in a file names the file and line", () => {
    const path = writeConfig("badvalue.yaml", "model_name_or_path: m\nfinetuning_type: partial\n");
    const error = throwsUserError(() => parseWith("train", [path]), "`finetuning_type: partial`");
    assert.equal(error.where, `${path}:2`);
  });

  test("broken YAML, a missing file and a stray argument are user errors", () => {
    throwsUserError(() => parseWith("train", [writeConfig("broken.yaml", "a: [1, 2\nb: 3\n")]), "invalid YAML");
    throwsUserError(() => parseWith("train", [writeConfig("list.yaml", "- a\n- b\n")]), "must be a mapping");
    throwsUserError(() => parseWith("train", [join(dir, "missing.yaml")]), "config file not found");
    throwsUserError(() => parseWith("train", [writeConfig("x.yaml", trainYaml), "extra"]), "unexpected argument `extra`");
    throwsUserError(() => parseWith("train", [writeConfig("x.yaml", trainYaml), "y.yaml"]), "a second config file");
  });

  test("a duplicated YAML key is an error with its line", () => {
    const error = throwsUserError(() => parseWith("train", [writeConfig("dup.yaml", "lora_rank: 8\nlora_rank: 16\n")]), "invalid YAML");
    assert.match(error.where!, /dup\.yaml:2$/);
  });

  test("readArgv keeps where each value came from", () => {
    const settings = readArgv(["--lora_rank", "8", "template=llama3", "--bf16"]);
    assert.deepEqual(settings.get("lora_rank"), { value: "8", where: "command line (--lora_rank)" });
    assert.deepEqual(settings.get("template"), { value: "llama3", where: "command line (template=llama3)" });
    assert.equal(settings.get("bf16")!.value, true);
    const flagThenOverride = readArgv(["--bf16", "lora_rank=4"]);
    assert.equal(flagThenOverride.get("bf16")!.value, true);
    assert.equal(flagThenOverride.get("lora_rank")!.value, "4");
  });
});

describe("aliases, derived fields and other commands' keys", () => {
  test("old names are accepted with a warning naming the new one", () => {
    const { args, notices } = parseWith(
      "train",
      { ...baseConfigs.train, dpo_beta: 0.1, num_layer_trainable: 4, name_module_trainable: "mlp", sft_packing: false, cache_path: "cache/t", new_special_tokens: "<a>,<b>" },
      { allowUnsupported: true },
    );
    assert.equal(args.finetuning!.pref_beta, 0.1);
    assert.equal(args.finetuning!.freeze_trainable_layers, 4);
    assert.deepEqual(args.finetuning!.freeze_trainable_modules, ["mlp"]);
    assert.equal(args.data!.packing, false);
    assert.equal(args.data!.tokenized_path, "cache/t");
    assert.deepEqual(args.model!.add_special_tokens, ["<a>", "<b>"]);
    assert.ok(notices.some((notice) => notice.includes("`dpo_beta` is an old name; use `pref_beta`")));
    assert.equal(notices.length, 6);
  });

  test("an old name and its new name together are refused", () => {
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, dpo_loss: "sigmoid", pref_loss: "sigmoid" }), "given twice");
  });

  test("derived fields cannot be set", () => {
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, compute_dtype: "float16" }), "`compute_dtype` is set by lmfactory");
  });

  test("chat, api, export and eval ignore training keys with one notice", () => {
    const config = { ...baseConfigs.train, learning_rate: 1e-4, num_train_epochs: 2, temperature: 0.5 };
    for (const command of ["chat", "api", "export"] as const) {
      const { args, notices } = parseWith(command, { ...config, export_dir: "out" }, { allowUnsupported: true });
      assert.equal(notices.length, 1, notices.join("\n"));
      assert.match(notices[0]!, /ignores keys it does not use: do_train, output_dir, learning_rate, num_train_epochs/);
      assert.equal(args.generating!.temperature, 0.5);
      assert.equal("training" in args, false);
    }
    const { notices } = parseWith("eval", { ...config, task: "mmlu_test" });
    assert.equal(notices.length, 1);
    assert.match(notices[0]!, /temperature/);
  });

  test("train refuses evaluation-only keys instead of ignoring them", () => {
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, n_shot: 3 }), "`n_shot` belongs to EvaluationArguments");
  });

  test("a key in two groups (seed) fills both", () => {
    const { args } = parseWith("eval", { ...baseConfigs.eval, seed: 7, batch_size: 2 });
    assert.equal(args.evaluation!.seed, 7);
    assert.equal(args.evaluation!.batch_size, 2);
  });
});

describe("suggestions", () => {
  test("real typos still get a suggestion; distant names do not", () => {
    const names = allGroups.flatMap((group) => Object.keys(group.fields));
    const typos: [string, string][] = [
      ["lora_rnak", "lora_rank"],
      ["learnig_rate", "learning_rate"],
      ["per_device_train_batchsize", "per_device_train_batch_size"],
      ["gradient_accumulation_step", "gradient_accumulation_steps"],
      ["num_train_epoch", "num_train_epochs"],
      ["lr_schedular_type", "lr_scheduler_type"],
      ["model_name_or_pth", "model_name_or_path"],
      ["cutof_len", "cutoff_len"],
    ];
    for (const [typo, name] of typos) assert.equal(closestName(typo, names), name, typo);
    // Before: peft_config -> kt_config, model_class -> ... ; three edits in eleven letters is not a typo.
    assert.equal(closestName("peft_config", ["kt_config", "vllm_config"]), null);
  });

  test("keys of Megatron, LLaMA-Factory v1 and Accelerate configs name where they come from", () => {
    throwsUserError(
      () => parseWith("train", { ...baseConfigs.train, tensor_model_parallel_size: 1 }),
      "`tensor_model_parallel_size` is a Megatron argument",
      "remove it",
    );
    const peft = throwsUserError(() => parseWith("train", { ...baseConfigs.train, peft_config: { name: "lora" } }), "`peft_config` is a LLaMA-Factory v1 argument");
    assert.match(peft.fix!, /finetuning_type with the lora_\* or freeze_\* keys/);
    assert.doesNotMatch(String(peft.fix), /kt_config/);
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, micro_batch_size: 2 }), "LLaMA-Factory v1", "per_device_train_batch_size");
    throwsUserError(() => parseWith("chat", { ...baseConfigs.chat, model_class: "llm" }), "`model_class` is a LLaMA-Factory v1 argument");
    throwsUserError(() => parseWith("train", { ...baseConfigs.train, distributed_type: "FSDP" }), "Accelerate launch-config key");
    assert.throws(() => fieldHelp("pipeline_model_parallel_size"), /is a Megatron argument/);
  });

  test("no key of the foreign-key table is an lmfactory key", () => {
    const names = new Set(allGroups.flatMap((group) => Object.entries(group.fields).flatMap(([name, spec]) => [name, ...(spec.aliases ?? [])])));
    for (const key of Object.keys(foreignKeys)) assert.equal(names.has(key), false, key);
  });
});
