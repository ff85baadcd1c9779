// `lmf data inspect`: --json is exactly what the trainer receives; the text view marks trained tokens.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
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
