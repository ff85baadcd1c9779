// `lmf train` arguments end to end on a tiny model: evaluation-only runs, template tokens beyond
// the vocabulary, compute_accuracy / prediction_loss_only, effective tokens per second, log_level
// and disable_tqdm, adapter_folder, the prediction generation settings, and the HF argument checks
// that refuse a run before anything is written.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { loadModel } from "../../src/model/loader.ts";
import { noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { predictionSettings } from "../../src/train/stages/sft.ts";
import { prepareTrainingData, runTrain } from "../../src/train/workflow.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

function tinyModelWithTokenizer(): string {
  const folder = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null });
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(folder, file), readFileSync(join("examples/demo/tiny-llama", file)));
  return folder;
}

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "lmf-wfa-data-"));
  const alpaca = Array.from({ length: 12 }, (_, i) => ({ instruction: `Count to ${(i % 4) + 1}.`, input: "", output: ["one", "one two", "one two three", "one two three four"][i % 4] }));
  const text = Array.from({ length: 24 }, (_, i) => ({ text: `In the morning, Mira went to the forest with a fox number ${i}.` }));
  const marked = [{ instruction: "Say stop.", input: "", output: "stop <|end_of_text|>" }, ...alpaca.slice(0, 3)];
  writeFileSync(join(dir, "alpaca.json"), JSON.stringify(alpaca));
  writeFileSync(join(dir, "marked.json"), JSON.stringify(marked));
  writeFileSync(join(dir, "text.jsonl"), text.map((r) => JSON.stringify(r)).join("\n"));
  writeFileSync(
    join(dir, "dataset_info.json"),
    JSON.stringify({ alpaca: { file_name: "alpaca.json" }, marked: { file_name: "marked.json" }, text: { file_name: "text.jsonl", columns: { prompt: "text" } } }),
  );
  return dir;
}

const DATA = dataDir();
const MODEL = tinyModelWithTokenizer();
const newDir = () => join(mkdtempSync(join(tmpdir(), "lmf-wfa-")), "out", "nested");
const json = (path: string) => JSON.parse(readFileSync(path, "utf8"));

function args(overrides: Record<string, unknown>, warnings: string[] = []) {
  return parseTrainArgs(
    {
      model_name_or_path: MODEL,
      dataset_dir: DATA,
      cutoff_len: 64,
      output_dir: newDir(),
      per_device_train_batch_size: 4,
      per_device_eval_batch_size: 4,
      learning_rate: 1e-2,
      max_steps: 2,
      logging_steps: 1,
      save_strategy: "no",
      lr_scheduler_type: "constant",
      ...overrides,
    },
    { onWarning: (line) => warnings.push(line) },
  );
}

async function run(overrides: Record<string, unknown>): Promise<{ outputDir: string; lines: string[] }> {
  const a = args(overrides);
  const lines: string[] = [];
  await runTrain(a, { print: (line) => lines.push(line) });
  return { outputDir: a.training.output_dir, lines };
}

test("an evaluation-only run (pt, do_eval) into an output_dir that does not exist writes eval_results.json", async () => {
  const { outputDir } = await run({ stage: "pt", do_train: false, do_eval: true, eval_dataset: "text", finetuning_type: "full" });
  const results = json(join(outputDir, "eval_results.json"));
  assert.ok(results.eval_loss > 0 && Math.abs(results.perplexity - Math.exp(results.eval_loss)) < 1e-9);
});

test("template stop words the tokenizer lacks: one notice naming them and the size resize_vocab would give; the model keeps its vocabulary", async () => {
  const base = { stage: "sft", do_train: true, dataset: "alpaca", template: "falcon_h1", finetuning_type: "full" };
  const { outputDir, lines } = await run(base);
  const notices = lines.filter((line) => line.includes("<|end_of_text|>"));
  assert.equal(notices.length, 1, lines.join("\n"));
  assert.match(notices[0]!, /<\|end_of_text\|> \(id 579\).*579 embedding rows.*resize_vocab: true to grow the vocabulary to 640/);
  assert.equal(json(join(outputDir, "config.json")).vocab_size, 579);
  const saved = loadModel(outputDir);
  assert.equal(saved.inputEmbeddings().weight.shape[0], 579);
  saved.dispose();

  const resized = await run({ ...base, resize_vocab: true });
  assert.ok(resized.lines.some((line) => /resized the vocabulary to 640/.test(line)), resized.lines.join("\n"));
  assert.equal(json(join(resized.outputDir, "config.json")).vocab_size, 640);

  // A row that holds such a token cannot train on 579 rows: one clear error, before anything is written.
  const a = args({ ...base, dataset: "marked" });
  await assert.rejects(runTrain(a, { print: () => {} }), /holds the token <\|end_of_text\|> \(id 579\), beyond the model's 579 embedding rows/);
  assert.ok(!existsSync(a.training.output_dir));
});

test("compute_accuracy reports eval_accuracy as LLaMA-Factory's ComputeAccuracy (the mean of per-example token accuracies); prediction_loss_only turns it off", async () => {
  const base = { stage: "sft", do_train: true, do_eval: true, dataset: "alpaca", template: "chatml", finetuning_type: "full", val_size: 4, eval_strategy: "steps", eval_steps: 1 };
  const a = args({ ...base, compute_accuracy: true });
  await runTrain(a, { print: () => {} });
  const results = json(join(a.training.output_dir, "eval_results.json"));
  // Independently: each evaluation example alone through the trained model, argmax at t-1 against label t.
  const { eval: rows } = await prepareTrainingData(a, () => {});
  const model = loadModel(a.training.output_dir);
  const accuracies = rows.map((row) =>
    noGrad(() =>
      tidy(() => {
        const predicted = model.forward(tensor([row.input_ids])).argmax(-1).toArray() as number[][];
        let counted = 0;
        let correct = 0;
        for (let t = 1; t < row.labels.length; t++) {
          if (row.labels[t] === -100) continue;
          counted++;
          if (predicted[0]![t - 1] === row.labels[t]) correct++;
        }
        return correct / counted;
      }),
    ),
  );
  model.dispose();
  const expected = accuracies.reduce((x, y) => x + y, 0) / accuracies.length;
  assert.ok(Math.abs(results.eval_accuracy - expected) < 1e-9, `${results.eval_accuracy} vs ${expected}`);
  const history = json(join(a.training.output_dir, "trainer_state.json")).log_history as Record<string, number>[];
  assert.ok(history.some((r) => typeof r.eval_accuracy === "number"), "evaluations during training log eval_accuracy");

  const lossOnly = await run({ ...base, compute_accuracy: true, prediction_loss_only: true });
  assert.equal(json(join(lossOnly.outputDir, "eval_results.json")).eval_accuracy, undefined);
  const plain = await run(base);
  assert.equal(json(join(plain.outputDir, "eval_results.json")).eval_accuracy, undefined);
});

test("include_effective_tokens_per_second: effective_tokens_per_sec = the training rows' tokens x epochs / train_runtime", async () => {
  const a = args({ stage: "sft", do_train: true, dataset: "alpaca", template: "chatml", include_effective_tokens_per_second: true });
  await runTrain(a, { print: () => {} });
  const results = json(join(a.training.output_dir, "train_results.json"));
  const { train: rows } = await prepareTrainingData(a, () => {});
  const tokens = rows.reduce((sum, row) => sum + row.input_ids.length, 0);
  assert.ok(Math.abs(results.effective_tokens_per_sec - (tokens * results.epoch) / results.train_runtime) < 1e-9 * results.effective_tokens_per_sec);
  const without = await run({ stage: "sft", do_train: true, dataset: "alpaca", template: "chatml" });
  assert.equal(json(join(without.outputDir, "train_results.json")).effective_tokens_per_sec, undefined);
});

test("log_level warning keeps notices and drops information; error prints nothing; disable_tqdm prints each log as a dict, the log file still written", async () => {
  const base = { stage: "sft", do_train: true, dataset: "alpaca", template: "falcon_h1", finetuning_type: "lora" };
  const info = await run(base);
  assert.ok(info.lines.some((line) => /^\[1\/2\]/.test(line)) && info.lines.some((line) => /^training:/.test(line)));
  const warning = await run({ ...base, log_level: "warning" });
  assert.deepEqual(warning.lines.filter((line) => /^\[\d+\/2\]|^training:/.test(line)), []);
  assert.equal(warning.lines.filter((line) => line.includes("<|end_of_text|>")).length, 1, "the notice is a warning");
  const error = await run({ ...base, log_level: "error" });
  assert.deepEqual(error.lines, []);

  const quiet = await run({ ...base, disable_tqdm: true });
  assert.ok(!quiet.lines.some((line) => /ETA|^\[\d+\/2\]/.test(line)), quiet.lines.join("\n"));
  const dicts = quiet.lines.filter((line) => line.startsWith("{'loss': "));
  assert.equal(dicts.length, 2);
  assert.match(dicts[0]!, /'learning_rate': 0\.01, 'epoch': [\d.]+}$/);
  assert.equal(readFileSync(join(quiet.outputDir, "trainer_log.jsonl"), "utf8").trim().split("\n").length, 2);
});

test("adapter_folder: adapters are read from that subfolder of each adapter_name_or_path", async () => {
  const trained = await run({ stage: "pt", do_train: true, dataset: "text", finetuning_type: "lora" });
  const parent = mkdtempSync(join(tmpdir(), "lmf-wfa-adapter-"));
  mkdirSync(join(parent, "sub"));
  for (const file of ["adapter_config.json", "adapter_model.safetensors"]) copyFileSync(join(trained.outputDir, file), join(parent, "sub", file));
  const evalWith = async (extra: Record<string, unknown>) => {
    const { outputDir } = await run({ stage: "pt", do_train: false, do_eval: true, eval_dataset: "text", finetuning_type: "lora", ...extra });
    return json(join(outputDir, "eval_results.json")).eval_loss as number;
  };
  const direct = await evalWith({ adapter_name_or_path: trained.outputDir });
  const viaFolder = await evalWith({ adapter_name_or_path: parent, adapter_folder: "sub" });
  assert.equal(viaFolder, direct);
  await assert.rejects(evalWith({ adapter_name_or_path: parent }));
});

test("prediction generates with the generating arguments, as LLaMA-Factory: eval_num_beams and generation_max_length are shadowed, with a notice", () => {
  const warnings: string[] = [];
  const a = args({ stage: "sft", do_predict: true, predict_with_generate: true, eval_dataset: "alpaca", template: "chatml", eval_num_beams: 4, generation_max_length: 20, max_new_tokens: 8 }, warnings);
  const settings = predictionSettings(a);
  assert.equal(settings.numBeams, 1);
  assert.equal(settings.maxNewTokens, 8);
  assert.ok(warnings.some((line) => /eval_num_beams: 4` has no effect.*num_beams/.test(line)), warnings.join("\n"));
  assert.ok(warnings.some((line) => /generation_max_length: 20` has no effect.*max_new_tokens/.test(line)), warnings.join("\n"));
  const beams = predictionSettings(args({ stage: "sft", do_predict: true, predict_with_generate: true, eval_dataset: "alpaca", num_beams: 3, max_new_tokens: 0, max_length: 40 }));
  assert.deepEqual([beams.numBeams, beams.maxLength], [3, 40]);
});

test("HF's argument checks refuse a run before anything is written", async () => {
  const base = { stage: "sft", do_train: true, dataset: "alpaca", template: "chatml" };
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ logging_steps: 2.5 }, /logging_steps.*whole number/],
    [{ save_strategy: "steps", save_steps: 1.5 }, /save_steps.*whole number/],
    [{ val_size: 4, eval_strategy: "steps", eval_steps: 3, save_strategy: "steps", save_steps: 4, load_best_model_at_end: true }, /multiple of eval_steps/],
    [{ val_size: 4, eval_strategy: "steps", eval_steps: 0.2, save_strategy: "steps", save_steps: 4, load_best_model_at_end: true }, /multiple of eval_steps/],
    [{ eval_strategy: "steps" }, /eval_strategy steps needs evaluation data/],
    [{ early_stopping_steps: 2, val_size: 4, eval_strategy: "steps" }, /early_stopping_steps needs `metric_for_best_model`/],
    [{ early_stopping_steps: 2, metric_for_best_model: "loss" }, /early_stopping_steps needs evaluations/],
    [{ save_strategy: "best", val_size: 4, eval_strategy: "steps" }, /save_strategy best needs `metric_for_best_model`/],
  ];
  for (const [extra, message] of cases) {
    const a = args({ ...base, ...extra });
    await assert.rejects(runTrain(a, { print: () => {} }), message, JSON.stringify(extra));
    assert.ok(!existsSync(a.training.output_dir), `nothing written for ${JSON.stringify(extra)}`);
  }
});
