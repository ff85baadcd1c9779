// The parse functions' results: LLaMA-Factory defaults, derived values, tier refusals, toDict,
// saveJson/loadJson round trips, help contents (every field) and the JSON Schema export.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { UserError } from "../../src/errors.ts";
import { SCHEDULER_NAMES } from "../../src/torch/optim/schedulers.ts";
import { commandHelp, allFieldsHelp, fieldHelp } from "../../src/hparams/help.ts";
import {
  type Command,
  allGroups,
  commandGroups,
  groupByKey,
  loadJson,
  parseTrainArgs,
  saveJson,
  toDict,
  unsupportedSettings,
} from "../../src/hparams/index.ts";
import { toJsonSchema } from "../../src/hparams/jsonschema.ts";
import { baseConfigs, parseWith } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "lmf-index-"));
const commands: Command[] = ["train", "chat", "api", "export", "eval"];

describe("declarations", () => {
  test("LLaMA-Factory defaults", () => {
    const { args } = parseWith("train", baseConfigs.train);
    const expected: [string, string, unknown][] = [
      ["model", "use_fast_tokenizer", true],
      ["model", "flash_attn", "auto"],
      ["model", "infer_backend", "huggingface"],
      ["model", "export_size", 5],
      ["data", "dataset_dir", "data"],
      ["data", "buffer_size", 16384],
      ["data", "mix_strategy", "concat"],
      ["data", "enable_thinking", true],
      ["training", "per_device_train_batch_size", 8],
      ["training", "learning_rate", 5e-5],
      ["training", "max_grad_norm", 1.0],
      ["training", "lr_scheduler_type", "linear"],
      ["training", "logging_steps", 500],
      ["training", "optim", "adamw_torch"],
      ["training", "report_to", ["none"]],
      ["finetuning", "stage", "sft"],
      ["finetuning", "finetuning_type", "lora"],
      ["finetuning", "lora_rank", 8],
      ["finetuning", "lora_target", ["all"]],
      ["finetuning", "freeze_trainable_layers", 2],
      ["finetuning", "pref_beta", 0.1],
      ["finetuning", "ppo_target", 6.0],
      ["generating", "temperature", 0.95],
      ["generating", "top_p", 0.7],
      ["generating", "max_new_tokens", 1024],
    ];
    for (const [group, name, value] of expected) {
      assert.deepEqual((args as Record<string, Record<string, unknown>>)[group]![name], value, `${group}.${name}`);
    }
  });

  test("every field has help text, and no key is declared twice within a command (except seed)", () => {
    for (const group of allGroups) {
      for (const [name, spec] of Object.entries(group.fields)) assert.ok(spec.help.length > 5, `${group.name}.${name}`);
    }
    for (const command of commands) {
      const names = commandGroups[command].flatMap((key) => Object.keys(groupByKey(key).fields));
      assert.equal(names.length, new Set(names).size, command);
    }
  });

  test("every field of PARAMETERS.md's tables is declared", () => {
    const required = [
      "model_name_or_path", "adapter_folder", "add_tokens", "new_special_tokens_config", "init_special_tokens", "rope_scaling",
      "shift_attn", "use_unsloth_gc", "enable_liger_kernel", "use_reentrant_gc", "upcast_lmhead_output", "om_hub_token",
      "quantization_device_map", "export_quantization_nsamples", "export_hub_model_id", "image_max_pixels", "vllm_maxlen",
      "media_dir", "neat_packing", "tool_format", "default_system", "preserve_thinking", "tokenized_path",
      "data_shared_file_system", "reserved_label_len", "split", "lora_bf16_mode", "ppo_logger", "export_quantization_maxlen",
      "overwrite_output_dir", "lr_scheduler_kwargs", "save_total_limit", "load_best_model_at_end", "data_seed",
      "generation_num_beams", "ddp_timeout", "include_num_input_tokens_seen", "early_stopping_steps",
      "include_effective_tokens_per_second", "use_dft_loss", "use_eaft_loss", "use_asft_loss", "use_adam_mini", "use_muon",
      "freeze_extra_modules", "pissa_convert", "loraplus_lr_embedding", "pref_bco_weight", "ld_alpha", "ppo_whiten_rewards",
      "reward_model_adapters", "skip_special_tokens", "length_penalty", "task_dir", "n_shot", "download_mode",
    ];
    const declared = new Set(allGroups.flatMap((group) => Object.keys(group.fields)));
    for (const name of required) assert.ok(declared.has(name), name);
  });
});

describe("derived values", () => {
  test("train derives packing, cutoff, generation length, compute dtype", () => {
    const sft = parseTrainArgs({ ...baseConfigs.train, packing: true, cutoff_len: 1024, bf16: true }, { onWarning: () => {} });
    assert.equal(sft.data.cutoff_len, 1023);
    assert.equal(sft.training.generation_max_length, 1023);
    assert.equal(sft.model.compute_dtype, "bfloat16");
    assert.equal(sft.model.model_max_length, 1023);
    assert.equal(sft.training.remove_unused_columns, false);
    const neat = parseTrainArgs({ ...baseConfigs.train, neat_packing: true }, { onWarning: () => {} });
    assert.equal(neat.data.packing, true);
    assert.equal(neat.model.block_diag_attn, true);
    const pt = parseTrainArgs({ ...baseConfigs.train, stage: "pt", cutoff_len: 512 }, { onWarning: () => {} });
    assert.equal(pt.data.packing, true, "packing is on by default for pt");
    assert.equal(pt.data.cutoff_len, 512, "LLaMA-Factory keeps the pt block size at cutoff_len");
    const plain = parseTrainArgs(baseConfigs.train, { onWarning: () => {} });
    assert.equal(plain.data.packing, false);
    assert.equal(plain.model.compute_dtype, "float32");
    assert.equal(parseTrainArgs({ ...baseConfigs.train, eval_num_beams: 4 }).training.generation_num_beams, 4);
  });

  test("export on the CPU gets a CPU device map", () => {
    const { args } = parseWith("export", baseConfigs.export, { allowUnsupported: true });
    assert.equal(args.model!.device_map, "cpu");
    assert.equal(parseWith("chat", baseConfigs.chat).args.model!.device_map, "auto");
  });
});

describe("tiers", () => {
  test("features not built yet are refused with 'not yet supported'", () => {
    assert.throws(() => parseWith("train", { ...baseConfigs.train, use_unsloth: true }), (error: unknown) => {
      assert.ok(error instanceof UserError);
      assert.match(error.message, /not yet supported by lmfactory: `use_unsloth: true`/);
      return true;
    });
    assert.throws(() => parseWith("train", { ...baseConfigs.train, stage: "dpo", use_galore: true }), /`use_galore: true`/);
    assert.throws(() => parseWith("train", { ...baseConfigs.train, stage: "ppo", reward_model: "saves/rm", ppo_logger: "wandb" }), /`ppo_logger: wandb`/);
    for (const stage of ["rm", "dpo", "kto"]) assert.doesNotThrow(() => parseWith("train", { ...baseConfigs.train, stage, pref_loss: "ipo", ld_alpha: 0.5, ref_model: "models/ref" }), stage);
    assert.throws(() => parseWith("train", { ...baseConfigs.train, optim: "paged_adamw_8bit" }), /`optim: paged_adamw_8bit`/);
    assert.throws(() => parseWith("train", { ...baseConfigs.train, lr_scheduler_type: "reduce_lr_on_plateau" }), /`lr_scheduler_type: reduce_lr_on_plateau`/);
  });

  test("every lr_scheduler_type the scheduler module builds is accepted", () => {
    for (const name of SCHEDULER_NAMES) {
      assert.doesNotThrow(() => parseWith("train", { ...baseConfigs.train, lr_scheduler_type: name }), name);
    }
  });

  test("out-of-scope features are refused as such; their defaults pass", () => {
    assert.throws(() => parseWith("train", { ...baseConfigs.train, fsdp: "full_shard auto_wrap" }), /out of scope for lmfactory: `fsdp: full_shard auto_wrap`/);
    assert.throws(() => parseWith("train", { ...baseConfigs.train, finetuning_type: "oft" }), /out of scope.*`finetuning_type: oft`/);
    assert.doesNotThrow(() => parseWith("train", { ...baseConfigs.train, freeze_vision_tower: true, report_to: "none", pref_beta: 0.1 }));
  });

  test("later and out fields with non-default defaults pass when a config leaves them unset or gives the default", () => {
    for (const command of commands) {
      const unsupported = commandGroups[command].flatMap((key) =>
        Object.entries(groupByKey(key).fields).filter(([, spec]) => (spec.tier === "later" || spec.tier === "out") && !spec.derived && spec.default !== null),
      );
      assert.ok(unsupported.length > 0, command);
      const defaults = Object.fromEntries(unsupported.map(([name, spec]) => [name, spec.default]));
      const unset = parseWith(command, baseConfigs[command], { allowUnsupported: true }).args;
      const given = parseWith(command, { ...baseConfigs[command], ...defaults }, { allowUnsupported: true }).args;
      assert.deepEqual(unsupportedSettings(command, unset as never).map((setting) => setting.name), [], command);
      assert.deepEqual(unsupportedSettings(command, given as never).map((setting) => setting.name), [], command);
    }
  });

  test("fsdp in HF's list or string form is refused as out of scope; empty means off", () => {
    // examples/extras/fp8/llama3_fp8_fsdp_sft.yaml in LLaMA-Factory, in both of its forms.
    for (const fsdp of [["full_shard", "auto_wrap"], "full_shard auto_wrap"]) {
      assert.throws(() => parseWith("train", { ...baseConfigs.train, fsdp }), /out of scope for lmfactory: `fsdp: full_shard/);
    }
    assert.throws(() => parseWith("train", { ...baseConfigs.train, fsdp_transformer_layer_cls_to_wrap: "LlamaDecoderLayer" }), /out of scope/);
    assert.equal(parseWith("train", { ...baseConfigs.train, fsdp: "" }).args.training!.fsdp, null);
    assert.equal(parseWith("train", { ...baseConfigs.train, fsdp: [] }).args.training!.fsdp, null);
  });

  test("unsupportedSettings lists them without throwing; chat skips training-only ones", () => {
    const { args } = parseWith("train", { ...baseConfigs.train, stage: "ppo", reward_model: "saves/rm", ppo_logger: "wandb", use_unsloth: true }, { allowUnsupported: true });
    const found = unsupportedSettings("train", args as never).map((setting) => `${setting.name}:${setting.tier}`);
    assert.deepEqual(found, ["use_unsloth:later", "ppo_logger:later"]);
    const chat = parseWith("chat", { ...baseConfigs.chat, stage: "ppo", reward_model: "saves/rm" });
    assert.equal(chat.args.finetuning!.stage, "ppo");
  });
});

describe("no-effect fields", () => {
  const noopFields = allGroups.flatMap((group) => Object.entries(group.fields).filter(([, spec]) => spec.tier === "noop"));

  test("a field is noop exactly when it says why it has no effect", () => {
    for (const group of allGroups) {
      for (const [name, spec] of Object.entries(group.fields)) {
        assert.equal(spec.tier === "noop", typeof spec.noEffect === "string" && spec.noEffect.length > 10, `${group.name}.${name}`);
      }
    }
    assert.ok(noopFields.length >= 10);
  });

  test("a non-default value gets one notice with the reason; the default gets none", () => {
    const given = { trust_remote_code: true, dataloader_num_workers: 4, ddp_timeout: 180000000, tf32: true, hf_hub_token: "hf_x" };
    const { notices } = parseWith("train", { ...baseConfigs.train, ...given });
    assert.deepEqual(notices, [
      "`hf_hub_token: hf_x` has no effect in lmfactory: models load from local folders or the local Hugging Face cache; nothing is downloaded",
      "`trust_remote_code: true` has no effect in lmfactory: no Python code is ever run: architectures are built in and picked by config.json's model_type",
      "`tf32: true` has no effect in lmfactory: the engine cannot switch TF32: CPU runs have none, and CUDA runs keep libtorch's default (TF32 off for matmuls)",
      "`dataloader_num_workers: 4` has no effect in lmfactory: the data is tokenized before training (see preprocessing_num_workers) and batches are collated in-process",
    ]);
    const trainFields = commandGroups.train.flatMap((key) => Object.entries(groupByKey(key).fields));
    const defaults = Object.fromEntries(trainFields.filter(([, spec]) => spec.tier === "noop").map(([name, spec]) => [name, spec.default]));
    assert.deepEqual(parseWith("train", { ...baseConfigs.train, ...defaults }).notices, []);
    // dataloader_num_workers must never be refused: LLaMA-Factory's own examples set it.
    assert.doesNotThrow(() => parseWith("train", { ...baseConfigs.train, dataloader_num_workers: 16 }));
  });

  test("a noop field's unsupported values are still refused (infer_backend)", () => {
    assert.match(parseWith("chat", { ...baseConfigs.chat, infer_backend: "native" }).notices.join(), /`infer_backend: native` has no effect in lmfactory: lmfactory has one engine/);
    assert.throws(() => parseWith("chat", { ...baseConfigs.chat, infer_backend: "vllm" }), /out of scope for lmfactory: `infer_backend: vllm`/);
    assert.throws(() => parseWith("chat", { ...baseConfigs.chat, infer_backend: "llamacpp" }), /not yet supported by lmfactory: `infer_backend: llamacpp`/);
  });

  test("help shows each noop field's reason, in the listing and for the key", () => {
    const listing = allFieldsHelp();
    for (const [name, spec] of noopFields) {
      assert.ok(listing.includes(`[no effect in lmfactory: ${spec.noEffect}]`), name);
      const one = fieldHelp(name);
      assert.ok(one.includes(`[no effect in lmfactory: ${spec.noEffect}]`), name);
      assert.match(one, /tier: {5}.*noop \(accepted, no effect in lmfactory\)/, name);
    }
    assert.match(fieldHelp("infer_backend"), /tier: {5}later for llamacpp; out for vllm, sglang; noop \(accepted, no effect in lmfactory\) for any other value/);
  });
});

describe("toDict, saveJson, loadJson", () => {
  test("GeneratingArguments drops max_length when max_new_tokens > 0, else max_new_tokens", () => {
    const withNew = toDict(parseWith("chat", { ...baseConfigs.chat, max_new_tokens: 256 }).args).generating!;
    assert.equal(withNew.max_new_tokens, 256);
    assert.equal("max_length" in withNew, false);
    const withoutNew = toDict(parseWith("chat", { ...baseConfigs.chat, max_new_tokens: 0, max_length: 512 }).args).generating!;
    assert.equal(withoutNew.max_length, 512);
    assert.equal("max_new_tokens" in withoutNew, false);
  });

  test("toDict masks hub tokens and API keys", () => {
    const dict = toDict(parseWith("chat", { ...baseConfigs.chat, hf_hub_token: "hf_secret" }).args);
    assert.equal(dict.model!.hf_hub_token, "<HF_HUB_TOKEN>");
    assert.equal(dict.model!.ms_hub_token, null);
    assert.equal(JSON.stringify(dict).includes("hf_secret"), false);
  });

  test("saveJson then loadJson gives back the same arguments, without secrets", () => {
    const { args } = parseWith("train", {
      ...baseConfigs.train,
      lora_target: "q_proj,v_proj",
      lr_scheduler_kwargs: { num_cycles: 2 },
      max_new_tokens: 0,
      max_length: 300,
      packing: true,
    });
    const path = join(dir, "args.json");
    saveJson(path, args);
    assert.deepEqual(loadJson(path), args);
    const secret = parseWith("chat", { ...baseConfigs.chat, hf_hub_token: "hf_secret" }).args;
    saveJson(path, secret);
    assert.equal(readFileSync(path, "utf8").includes("hf_secret"), false);
    assert.equal(loadJson(path).model!.hf_hub_token, null);
  });

  test("loadJson refuses unknown groups and keys with a suggestion", () => {
    const path = join(dir, "bad.json");
    saveJson(path, { model: { ...parseWith("chat", baseConfigs.chat).args.model!, bogus: 1 } as never });
    assert.throws(() => loadJson(path), /unknown key `model.bogus`/);
  });
});

describe("help and schema", () => {
  test("each command's help shows every field of its groups with type and default", () => {
    for (const command of commands) {
      const help = commandHelp(command);
      for (const key of commandGroups[command]) {
        const group = groupByKey(key);
        assert.ok(help.includes(group.name), `${command}: ${group.name}`);
        for (const name of Object.keys(group.fields)) assert.match(help, new RegExp(`\\n    ${name}  `), `${command}: ${name}`);
      }
    }
    const train = commandHelp("train");
    assert.match(train, /lora_rank {2}int {2}\(default: 8\)/);
    assert.match(train, /finetuning_type {2}enum\{lora, freeze, full, oft\} {2}\(default: lora\)/);
    assert.match(train, /use_galore {2}bool {2}\(default: false\)\n.*\[not yet supported\]/);
    assert.match(train, /ppo_logger .*\n.*\[not yet supported: wandb\]/);
    assert.ok(allFieldsHelp().includes("EvaluationArguments"));
  });

  test("help for one field, found by name or old name; an unknown one suggests", () => {
    assert.match(fieldHelp("lora_rank"), /lora_rank {2}\(FinetuningArguments\)[\s\S]*default: {2}8/);
    assert.match(fieldHelp("dpo_beta"), /pref_beta[\s\S]*old names: dpo_beta/);
    assert.throws(() => fieldHelp("lora_rnak"), /did you mean `lora_rank`/);
    // A field whose values differ in support says which values work.
    assert.match(fieldHelp("report_to"), /\[supported: none, tensorboard, all; other values not yet\]/);
    assert.match(fieldHelp("report_to"), /tier: {5}now for none, tensorboard, all; later for any other value/);
    assert.match(fieldHelp("ppo_logger"), /tier: {5}later for wandb; now for any other value/);
  });

  test("the JSON Schema lists every settable key with its type", () => {
    const schema = toJsonSchema("train") as { properties: Record<string, Record<string, unknown>> };
    assert.deepEqual(schema.properties.lora_rank, { type: "integer", description: schema.properties.lora_rank!.description, default: 8, minimum: 1 });
    assert.ok(schema.properties.dpo_beta);
    assert.equal(schema.properties.compute_dtype, undefined);
    assert.ok((schema.properties.stage!.enum as string[]).includes("dpo"));
    assert.equal(schema.properties.dataloader_num_workers!["x-tier"], "noop");
    assert.match(String(schema.properties.dataloader_num_workers!["x-no-effect"]), /collated in-process/);
  });
});
