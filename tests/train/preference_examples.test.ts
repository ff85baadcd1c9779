// LLaMA-Factory's examples/train_lora/{qwen3,llama3}_lora_{dpo,kto,reward}.yaml run unchanged but for the
// model (a tiny one with the demo tokenizer) and output_dir, on the demo datasets in data/, and leave
// LLaMA-Factory's files and metrics behind.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { runTrain } from "../../src/train/workflow.ts";
import { tinyModelWithDemoTokenizer } from "../fixtures/preference_data.ts";

const MODEL = tinyModelWithDemoTokenizer();

const expectations = {
  dpo: { files: ["adapter_model.safetensors", "training_loss.png", "training_rewards_accuracies.png"], metrics: ["rewards/accuracies", "rewards/margins", "logps/chosen", "logits/rejected"] },
  kto: { files: ["adapter_model.safetensors", "training_loss.png", "training_rewards_chosen.png"], metrics: ["rewards/chosen", "rewards/rejected", "rewards/margins", "kl"] },
  reward: { files: ["adapter_model.safetensors", "value_head.safetensors", "training_loss.png"], metrics: [] },
};

for (const [name, expected] of Object.entries(expectations).flatMap(([stage, files]) => ["qwen3", "llama3"].map((family) => [`${family}_lora_${stage}`, files] as const))) {
  test(`examples/train_lora/${name}.yaml trains`, async () => {
    const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-example-")), "out");
    // The tiny tokenizer lacks the templates' special tokens (resize_vocab grows the embeddings for them),
    // and a tiny dataset runs fewer steps than the examples' logging_steps.
    const args = parseTrainArgs([`examples/train_lora/${name}.yaml`, `model_name_or_path=${MODEL}`, `output_dir=${outputDir}`, "resize_vocab=true", "logging_steps=1"], { onWarning: () => {} });
    await runTrain(args, { print: () => {} });
    for (const file of ["trainer_log.jsonl", "trainer_state.json", "train_results.json", ...expected.files]) assert.ok(existsSync(join(outputDir, file)), file);
    const history = JSON.parse(readFileSync(join(outputDir, "trainer_state.json"), "utf8")).log_history as Record<string, number>[];
    // 4 (dpo, reward) or 6 (kto) examples, batch 1 x accumulation 8, 3 epochs: 3 steps, each logged.
    const logged = history.filter((record) => record.loss !== undefined);
    assert.deepEqual(logged.map((record) => record.step), [1, 2, 3]);
    for (const key of expected.metrics) assert.equal(typeof logged[0]![key], "number", key);
  });
}
