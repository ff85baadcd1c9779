// `lmf train` end to end on tiny models: pt and sft, every finetuning_type, alpaca and sharegpt
// data, prediction with metrics, and bad configs refused before any model is loaded.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../src/errors.ts";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { applyFinetuning } from "../../src/model/adapters/index.ts";
import { loadLoraAdapter, restoreLoraWeights } from "../../src/model/adapters/lora.ts";
import { loadModel } from "../../src/model/loader.ts";
import { manualSeed, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { runTrain } from "../../src/train/workflow.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";


/** A tiny model whose tokenizer is the demo's byte-level BPE (vocabulary 579). */
function tinyModelWithTokenizer(): string {
  const folder = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null });
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
    writeFileSync(join(folder, file), readFileSync(join("examples/demo/tiny-llama", file)));
  }
  return folder;
}

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "lmf-wf-data-"));
  const alpaca = Array.from({ length: 12 }, (_, i) => ({ instruction: `Count to ${i % 4 + 1}.`, input: "", output: ["one", "one two", "one two three", "one two three four"][i % 4] }));
  const sharegpt = Array.from({ length: 8 }, (_, i) => ({
    conversations: [
      { from: "human", value: `Who is number ${i}?` },
      { from: "gpt", value: `Number ${i} is Mira.` },
      { from: "human", value: "And the fox?" },
      { from: "gpt", value: "The fox is red." },
    ],
  }));
  const text = Array.from({ length: 40 }, (_, i) => ({ text: `In the morning, Mira went to the forest with a fox number ${i}.` }));
  writeFileSync(join(dir, "alpaca.json"), JSON.stringify(alpaca));
  writeFileSync(join(dir, "chats.json"), JSON.stringify(sharegpt));
  writeFileSync(join(dir, "text.jsonl"), text.map((r) => JSON.stringify(r)).join("\n"));
  writeFileSync(
    join(dir, "dataset_info.json"),
    JSON.stringify({
      alpaca: { file_name: "alpaca.json" },
      chats: { file_name: "chats.json", formatting: "sharegpt" },
      text: { file_name: "text.jsonl", columns: { prompt: "text" } },
    }),
  );
  return dir;
}

const DATA = dataDir();
const MODEL = tinyModelWithTokenizer();


async function train(overrides: Record<string, unknown>): Promise<{ outputDir: string; losses: number[] }> {
  const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-wf-")), "out");
  const args = parseTrainArgs(
    {
      model_name_or_path: MODEL,
      do_train: true,
      dataset_dir: DATA,
      cutoff_len: 64,
      output_dir: outputDir,
      per_device_train_batch_size: 4,
      learning_rate: 1e-2,
      max_steps: 12,
      logging_steps: 1,
      save_strategy: "no",
      lr_scheduler_type: "constant",
      ...overrides,
    },
    { onWarning: () => {} },
  );
  await runTrain(args, { print: () => {} });
  const losses = readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line).loss as number);
  return { outputDir, losses };
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

for (const finetuning_type of ["full", "freeze", "lora"]) {
  test(`pt with finetuning_type ${finetuning_type}: the loss falls and the trained weights are saved`, async () => {
    const extra = finetuning_type === "freeze" ? { freeze_trainable_layers: 1 } : {};
    const { outputDir, losses } = await train({ stage: "pt", dataset: "text", finetuning_type, ...extra });
    assert.equal(losses.length, 12);
    assert.ok(mean(losses.slice(-3)) < mean(losses.slice(0, 3)), `losses ${losses.map((l) => l.toFixed(3)).join(" ")}`);
    const weights = finetuning_type === "lora" ? "adapter_model.safetensors" : "model.safetensors";
    assert.ok(existsSync(join(outputDir, weights)), weights);
    assert.ok(existsSync(join(outputDir, "tokenizer.json")));
  });
}

test("sft on an alpaca and a sharegpt dataset together, with LoRA, then predict with generation metrics", async () => {
  const { outputDir, losses } = await train({ stage: "sft", dataset: "alpaca,chats", template: "chatml", finetuning_type: "lora", lora_rank: 8, val_size: 4, do_eval: true });
  assert.ok(mean(losses.slice(-3)) < mean(losses.slice(0, 3)), `losses ${losses.join(" ")}`);
  const evalResults = JSON.parse(readFileSync(join(outputDir, "eval_results.json"), "utf8"));
  assert.ok(evalResults.eval_loss > 0 && Math.abs(evalResults.perplexity - Math.exp(evalResults.eval_loss)) < 1e-9);

  const predictDir = join(mkdtempSync(join(tmpdir(), "lmf-wf-")), "predict");
  const args = parseTrainArgs(
    {
      model_name_or_path: MODEL,
      adapter_name_or_path: outputDir,
      stage: "sft",
      finetuning_type: "lora",
      do_predict: true,
      predict_with_generate: true,
      dataset_dir: DATA,
      eval_dataset: "alpaca",
      max_samples: 3,
      template: "chatml",
      cutoff_len: 64,
      max_new_tokens: 8,
      output_dir: predictDir,
    },
    { onWarning: () => {} },
  );
  await runTrain(args, { print: () => {} });
  const predictions = readFileSync(join(predictDir, "generated_predictions.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(predictions.length, 3);
  assert.deepEqual(Object.keys(predictions[0]), ["prompt", "predict", "label"]);
  assert.match(predictions[0].prompt, /<\|im_start\|>user\nCount to/);
  const metrics = JSON.parse(readFileSync(join(predictDir, "predict_results.json"), "utf8"));
  for (const key of ["predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l"]) assert.equal(typeof metrics[key], "number", key);
});

test("bad configs fail with one clear error before any model is loaded", async () => {
  const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-wf-")), "out");
  const base = { model_name_or_path: MODEL, do_train: true, dataset_dir: DATA, output_dir: outputDir, stage: "sft", template: "chatml" };
  await assert.rejects(runTrain(parseTrainArgs({ ...base, dataset: "missing_set" }, { onWarning: () => {} }), { print: () => {} }), /missing_set/);
  await assert.rejects(runTrain(parseTrainArgs({ ...base, dataset: "alpaca", template: "chatmll" }, { onWarning: () => {} }), { print: () => {} }), /unknown template "chatmll"/);
  // LLaMA-Factory refuses a folder that holds a finished model and no checkpoint to resume from.
  mkdirSync(outputDir, { recursive: true });
  writeFileSync(join(outputDir, "notes.txt"), "keep me");
  writeFileSync(join(outputDir, "model.safetensors"), "someone's model");
  await assert.rejects(runTrain(parseTrainArgs({ ...base, dataset: "alpaca" }, { onWarning: () => {} }), { print: () => {} }), /already exists and is not empty/);
  assert.equal(readFileSync(join(outputDir, "notes.txt"), "utf8"), "keep me");
});

test("sft with neat packing trains on packed rows (positions restart, no attention across examples)", async () => {
  const { losses } = await train({ stage: "sft", dataset: "alpaca,chats", template: "chatml", finetuning_type: "full", neat_packing: true, per_device_train_batch_size: 1, learning_rate: 3e-3 });
  assert.ok(mean(losses.slice(-3)) < mean(losses.slice(0, 3)), `losses ${losses.map((l) => l.toFixed(3)).join(" ")}`);
});

test("preprocessing on 2 worker threads equals 1, and tokenized_path caches the rows until an argument changes", async () => {
  const { prepareTrainingData } = await import("../../src/train/workflow.ts");
  const cache = join(mkdtempSync(join(tmpdir(), "lmf-wf-cache-")), "tokenized");
  const base = { model_name_or_path: MODEL, do_train: true, dataset_dir: DATA, dataset: "alpaca,chats", stage: "sft", template: "chatml", cutoff_len: 64, preprocessing_batch_size: 5, output_dir: join(cache, "..", "out") };
  const lines: string[] = [];
  const one = await prepareTrainingData(parseTrainArgs({ ...base, preprocessing_num_workers: 1 }, { onWarning: () => {} }), () => {});
  const two = await prepareTrainingData(parseTrainArgs({ ...base, preprocessing_num_workers: 2 }, { onWarning: () => {} }), () => {});
  assert.deepEqual(two.train, one.train);
  assert.equal(one.train.length, 20);
  const cached = parseTrainArgs({ ...base, tokenized_path: cache }, { onWarning: () => {} });
  await prepareTrainingData(cached, (line) => lines.push(line));
  const again = await prepareTrainingData(cached, (line) => lines.push(line));
  assert.deepEqual(again.train, one.train);
  assert.ok(lines.some((line) => /loaded 20 tokenized rows/.test(line)), lines.join("\n"));
  const changed = await prepareTrainingData(parseTrainArgs({ ...base, tokenized_path: cache, cutoff_len: 16 }, { onWarning: () => {} }), (line) => lines.push(line));
  assert.ok(lines.some((line) => /rebuilding it/.test(line)), lines.join("\n"));
  assert.ok(changed.train.every((row) => row.input_ids.length <= 16));
});

test("pissa_init with pissa_convert: the loss falls, pissa_init/ pissa_backup/ pissa_converted/ are written, the converted adapter reproduces the run on the original model", async () => {
  const { outputDir, losses } = await train({ stage: "pt", dataset: "text", finetuning_type: "lora", lora_rank: 4, pissa_init: true, pissa_iter: 2, pissa_convert: true });
  assert.ok(mean(losses.slice(-3)) < mean(losses.slice(0, 3)), `losses ${losses.map((l) => l.toFixed(3)).join(" ")}`);
  for (const name of ["pissa_init", "pissa_backup", "pissa_converted"]) assert.ok(existsSync(join(outputDir, name, "adapter_model.safetensors")), name);
  const config = (name: string) => JSON.parse(readFileSync(join(outputDir, name, "adapter_config.json"), "utf8"));
  assert.equal(config(".").init_lora_weights, "pissa_niter_2");
  assert.deepEqual([config("pissa_init").init_lora_weights, config("pissa_converted").init_lora_weights, config("pissa_converted").r], [true, true, 8]);
  // The converted adapter over the original weights, and the backup over the residual the run
  // trained on (PiSSA re-initialised from the same seed), give the same logits.
  const ids = tensor([[5, 17, 42, 8, 11, 3]]);
  const logitsWith = (adapter: string, pissa: boolean) => {
    const model = loadModel(MODEL);
    if (pissa) {
      manualSeed(42); // the run's seed: the same fast-SVD draws, so the same residual
      applyFinetuning(model, { finetuningType: "lora", loraRank: 4, loraTarget: ["all"], pissaInit: true, pissaIter: 2 });
      restoreLoraWeights(model, adapter);
    } else {
      loadLoraAdapter(model, adapter);
    }
    const values = tidy(() => noGrad(() => model.eval().forward(ids).toFlatArray()));
    model.dispose();
    return values;
  };
  const converted = logitsWith(join(outputDir, "pissa_converted"), false);
  const backup = logitsWith(join(outputDir, "pissa_backup"), true);
  const worst = converted.reduce((max, value, i) => Math.max(max, Math.abs(value - backup[i]!)), 0);
  assert.ok(worst < 1e-4, `converted vs trained: ${worst}`);
});

test("streaming: training takes max_steps x batch examples from the shuffled stream, restarting it when it runs out, deterministically", async () => {
  const run = async (maxSteps: number) => {
    const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-wf-")), "out");
    const lines: string[] = [];
    const args = parseTrainArgs(
      {
        model_name_or_path: MODEL,
        do_train: true,
        stage: "sft",
        dataset: "alpaca",
        template: "chatml",
        dataset_dir: DATA,
        streaming: true,
        buffer_size: 8,
        cutoff_len: 64,
        finetuning_type: "lora",
        output_dir: outputDir,
        per_device_train_batch_size: 4,
        learning_rate: 1e-2,
        max_steps: maxSteps,
        logging_steps: 1,
        save_strategy: "no",
        lr_scheduler_type: "constant",
      },
      { onWarning: () => {} },
    );
    await runTrain(args, { print: (line) => lines.push(line) });
    const losses = readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8").trim().split("\n").map((line) => JSON.parse(line).loss as number);
    return { lines, losses };
  };
  const short = await run(2);
  assert.ok(short.lines.some((line) => /streaming: 8 training examples taken from the stream/.test(line)), short.lines.join("\n"));
  assert.equal(short.losses.length, 2);
  // 8 steps x 4 = 32 examples from a 12-row dataset: the stream restarts twice, reshuffled each time.
  const long = await run(8);
  assert.ok(long.lines.some((line) => /streaming: 32 training examples/.test(line)), long.lines.join("\n"));
  assert.equal(long.losses.length, 8);
  assert.ok(mean(long.losses.slice(-3)) < mean(long.losses.slice(0, 3)), `losses ${long.losses.map((l) => l.toFixed(3)).join(" ")}`);
  // The same stream, the same order: the first steps of both runs are identical.
  assert.deepEqual(long.losses.slice(0, 2), short.losses);
});

test("a bad dataset row stops lmf train with the file, row and fix; skip_bad_rows: true trains on the rest and reports the skipped rows", async () => {
  const dir = mkdtempSync(join(tmpdir(), "lmf-wf-bad-"));
  const rows = Array.from({ length: 8 }, (_, i) => ({ instruction: `Count to ${(i % 4) + 1}.`, input: "", output: i === 5 ? "" : "one two" }));
  writeFileSync(join(dir, "rows.json"), JSON.stringify(rows));
  writeFileSync(join(dir, "dataset_info.json"), JSON.stringify({ rows: { file_name: "rows.json" } }));
  const config = (extra: Record<string, unknown>) =>
    parseTrainArgs(
      {
        model_name_or_path: MODEL,
        do_train: true,
        stage: "sft",
        template: "chatml",
        dataset: "rows",
        dataset_dir: dir,
        cutoff_len: 64,
        finetuning_type: "lora",
        output_dir: join(mkdtempSync(join(tmpdir(), "lmf-wf-")), "out"),
        per_device_train_batch_size: 2,
        max_steps: 2,
        save_strategy: "no",
        ...extra,
      },
      { onWarning: () => {} },
    );
  await assert.rejects(runTrain(config({}), { print: () => {} }), (error: unknown) => {
    const { what, where, fix } = error as UserError;
    return error instanceof UserError && /rows\.json row 6/.test(`${where}`) && /empty response/.test(what) && /skip_bad_rows: true/.test(`${fix}`);
  });
  const lines: string[] = [];
  await runTrain(config({ skip_bad_rows: true }), { print: (line) => lines.push(line) });
  assert.ok(lines.some((line) => /skipped 1 bad row/.test(line)), lines.join("\n"));
  assert.ok(lines.some((line) => /7 examples/.test(line)), lines.join("\n"));
});
