// `lmf data inspect`: --json is exactly what the trainer receives; the text view marks trained tokens.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { prepareTrainingData } from "../../src/train/workflow.ts";

// Inspecting needs only the tokenizer: the demo's model folder has it (the weights come from training).
const TOKENIZER = ["model_name_or_path=examples/demo/tiny-llama"];

test("lmf data inspect --json prints the trainer's rows; the text view marks trained tokens and counts", async () => {
  const json = spawnSync(process.execPath, ["bin/lmf.mjs", "data", "inspect", "examples/demo/sft_lora.yaml", ...TOKENIZER, "--n", "2", "--json"], { encoding: "utf8" });
  assert.equal(json.status, 0, json.stderr);
  const shown = JSON.parse(json.stdout);
  const data = await prepareTrainingData(parseTrainArgs(["examples/demo/sft_lora.yaml", ...TOKENIZER], { onWarning: () => {} }), () => {});
  assert.equal(shown.length, 2);
  assert.deepEqual(shown.map((r: { input_ids: number[] }) => r.input_ids), data.train.slice(0, 2).map((r) => r.input_ids));
  assert.deepEqual(shown.map((r: { labels: number[] }) => r.labels), data.train.slice(0, 2).map((r) => r.labels));
  assert.equal(shown[0].text, "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\nI am Pico, a tiny assistant trained with lmfactory.<|im_end|>\n");

  const text = spawnSync(process.execPath, ["bin/lmf.mjs", "data", "inspect", "examples/demo/sft_lora.yaml", ...TOKENIZER, "--n", "1"], { encoding: "utf8" });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /"Who":\d+ " are":\d+/);
  assert.match(text.stdout, /\[" Pico":\d+\]/);
  assert.match(text.stdout, /--- 13 examples, \d+ tokens, \d+ trained tokens, 0 at cutoff_len \(truncated or packed\), 0 dropped ---/);
});

test("lmf data inspect on dpo and kto configs shows chosen and rejected, or the tag, answer and KL row", async () => {
  const overrides = [...TOKENIZER, "template=chatml"];
  const dpoConfig = ["examples/train_lora/qwen3_lora_dpo.yaml", ...overrides];
  const json = spawnSync(process.execPath, ["bin/lmf.mjs", "data", "inspect", ...dpoConfig, "--n", "2", "--json"], { encoding: "utf8" });
  assert.equal(json.status, 0, json.stderr);
  const shown = JSON.parse(json.stdout);
  const rows = (await prepareTrainingData(parseTrainArgs(dpoConfig, { onWarning: () => {} }), () => {})).train as unknown as Record<string, number[]>[];
  assert.deepEqual(shown.map((r: { chosen: { input_ids: number[] } }) => r.chosen.input_ids), rows.slice(0, 2).map((r) => r.chosen_input_ids));
  assert.deepEqual(shown.map((r: { rejected: { labels: number[] } }) => r.rejected.labels), rows.slice(0, 2).map((r) => r.rejected_labels));
  assert.match(shown[0].rejected.text, /assistant\nPython cannot reverse strings\.<\|im_end\|>/);
  const text = spawnSync(process.execPath, ["bin/lmf.mjs", "data", "inspect", ...dpoConfig, "--n", "1"], { encoding: "utf8" });
  assert.match(text.stdout, /--- example 0 chosen \(\d+ tokens, \d+ trained\) ---[\s\S]*--- example 0 rejected /);

  const kto = spawnSync(process.execPath, ["bin/lmf.mjs", "data", "inspect", "examples/train_lora/qwen3_lora_kto.yaml", ...overrides, "--n", "2", "--json"], { encoding: "utf8" });
  assert.equal(kto.status, 0, kto.stderr);
  const tagged = JSON.parse(kto.stdout);
  assert.deepEqual(tagged.map((r: { kto_tag: boolean }) => r.kto_tag), [true, false]);
  // The KL row of example 1 answers its prompt with example 0's answer (LLaMA-Factory's rotation).
  assert.match(tagged[1].kl.text, /assistant\n12 \+ 30 = 42\.<\|im_end\|>/);
  const ktoText = spawnSync(process.execPath, ["bin/lmf.mjs", "data", "inspect", "examples/train_lora/qwen3_lora_kto.yaml", ...overrides, "--n", "2"], { encoding: "utf8" });
  assert.match(ktoText.stdout, /--- example 0 desirable [\s\S]*--- example 0 kl [\s\S]*--- example 1 undesirable /);
});

test("lmf data inspect on a ppo config shows each prompt and the dataset's answer, neither trained on", () => {
  const ppo = ["examples/demo/sft_lora.yaml", ...TOKENIZER, "stage=ppo", "reward_model=http://127.0.0.1:9/score", "reward_model_type=api", "additional_target=null"];
  const text = spawnSync(process.execPath, ["bin/lmf.mjs", "data", "inspect", ...ppo, "--n", "1"], { encoding: "utf8" });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /--- example 0 prompt \(15 tokens, 0 trained\) ---\n<\|im_start\|>user\nWho are you\?<\|im_end\|>\n<\|im_start\|>assistant\n\n/);
  assert.match(text.stdout, /--- example 0 dataset answer \(not trained on: PPO answers with the policy\) \(\d+ tokens, 0 trained\) ---\nI am Pico/);
  assert.match(text.stdout, /--- 13 examples, \d+ tokens, 0 trained tokens, /);
});

test("the web board's tokenized preview of a ppo config shows the prompts, nothing marked trained", async () => {
  const { tokenizedPage } = await import("../../src/webui/preview.ts");
  const settings = { model_name_or_path: resolve("examples/demo/tiny-llama"), stage: "ppo", reward_model: "http://127.0.0.1:9/score", reward_model_type: "api", dataset_dir: resolve("examples/demo"), template: "chatml", output_dir: resolve("saves/unused") };
  const page = await tokenizedPage(settings, "demo_identity", 0, 2);
  assert.equal(page.examples.length, 2);
  assert.deepEqual(page.examples[0]!.map((strip) => [strip.part, strip.trainedCount]), [["input_ids", 0]]);
  assert.equal(page.examples[0]![0]!.text, "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n");
});
