// The trainer's flow as HF's DefaultFlowCallback and Trainer decide it: which steps log, evaluate
// and save (strategies, first step, fractions, eval_on_start, eval_delay), best-model tracking
// (load_best_model_at_end, metric_for_best_model, greater_is_better, save_strategy best), early
// stopping, tokens seen, sequential sampling and drop_last, each checked against an independent
// reading of the run (its evaluation history, the rows' order, the collated shapes).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel, loadWeights, saveModel } from "../../src/model/loader.ts";
import type { CausalLM } from "../../src/model/registry.ts";
import { type CollatedBatch, type TrainerOptions, type TrainingExample, evaluate, shuffledOrder, train } from "../../src/train/trainer.ts";
import { languageModeling } from "../../src/train/stages/language_modeling.ts";
import { openSafetensors } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

function examples(count: number, offset = 0): TrainingExample[] {
  return Array.from({ length: count }, (_, j) => {
    const i = j + offset;
    const length = 5 + ((i * 7) % 6);
    const ids = Array.from({ length }, (_, t) => 3 + ((i * 13 + t * 5) % 90));
    return { input_ids: ids, attention_mask: ids.map(() => 1), labels: ids.map((id, t) => (t < i % 3 ? -100 : id)) };
  });
}

function collate(rows: TrainingExample[]): CollatedBatch {
  const T = Math.max(...rows.map((r) => r.input_ids.length));
  const pad = (row: number[], value: number) => [...row, ...Array(T - row.length).fill(value)];
  return { input_ids: rows.map((r) => pad(r.input_ids, 0)), attention_mask: rows.map((r) => pad(r.attention_mask, 0)), labels: rows.map((r) => pad(r.labels, -100)) };
}

function options(outputDir: string, overrides: Partial<TrainerOptions> = {}): TrainerOptions {
  return {
    outputDir,
    batchSize: 2,
    gradientAccumulationSteps: 1,
    learningRate: 5e-3,
    weightDecay: 0,
    adamBeta1: 0.9,
    adamBeta2: 0.999,
    adamEpsilon: 1e-8,
    maxGradNorm: 1.0,
    numTrainEpochs: 1,
    maxSteps: 10,
    lrSchedulerType: "constant",
    warmupSteps: 0,
    warmupRatio: 0,
    loggingSteps: 1,
    saveStrategy: "no",
    saveSteps: 500,
    saveTotalLimit: null,
    saveOnlyModel: true,
    evalStrategy: "no",
    evalSteps: null,
    dataSeed: 42,
    gradientCheckpointing: false,
    resumeFrom: null,
    print: () => {},
    ...overrides,
  };
}

const FOLDER = makeTinyModel();
const TRAIN = examples(16);
const EVAL = examples(4, 100);
const tmp = () => mkdtempSync(join(tmpdir(), "lmf-flow-"));

function run(overrides: Partial<TrainerOptions>, data = TRAIN) {
  const model = loadModel(FOLDER);
  const outputDir = tmp();
  const parts = {
    model,
    train: data,
    eval: EVAL,
    collate,
    stage: languageModeling,
    saveModel: (folder: string) => saveModel(model, folder),
    loadModel: (folder: string) => loadWeights(model, folder, "float32"),
  };
  const result = train(parts, options(outputDir, overrides));
  return { model, outputDir, result, state: JSON.parse(readFileSync(join(outputDir, "trainer_state.json"), "utf8")) };
}

const lossSteps = (history: Record<string, number>[]) => history.filter((r) => r.loss !== undefined).map((r) => r.step);
const evalSteps = (history: Record<string, number>[]) => history.filter((r) => r.eval_loss !== undefined).map((r) => r.step);
const checkpoints = (dir: string) => readdirSync(dir).filter((n) => n.startsWith("checkpoint-")).map((n) => Number(n.split("-")[1])).sort((a, b) => a - b);

test("logging_strategy steps / epoch / no and logging_first_step decide which steps log, as DefaultFlowCallback", () => {
  // 16 rows in batches of 2: 8 steps an epoch; max_steps 12 ends the second epoch early.
  const steps = run({ maxSteps: 12, loggingSteps: 5, loggingFirstStep: true });
  assert.deepEqual(lossSteps(steps.result.logHistory), [1, 5, 10]);
  steps.model.dispose();
  const epoch = run({ maxSteps: 12, loggingStrategy: "epoch", loggingSteps: 5 });
  assert.deepEqual(lossSteps(epoch.result.logHistory), [8, 12]);
  // The epoch log averages the steps since the last log.
  const since = epoch.result.stepLosses.slice(8, 12);
  assert.ok(Math.abs(epoch.result.logHistory.at(-1)!.loss! - since.reduce((a, b) => a + b, 0) / 4) < 1e-4);
  epoch.model.dispose();
  const none = run({ maxSteps: 12, loggingStrategy: "no" });
  assert.deepEqual(lossSteps(none.result.logHistory), []);
  none.model.dispose();
});

test("logging_steps, save_steps and eval_steps below 1 are ceil(total x fraction) steps, and the last step is saved", () => {
  const { model, outputDir, result, state } = run({ maxSteps: 10, loggingSteps: 0.5, saveStrategy: "steps", saveSteps: 0.25, evalStrategy: "steps", evalSteps: 0.3 });
  assert.deepEqual([state.logging_steps, state.save_steps, state.eval_steps], [5, 3, 3]);
  assert.deepEqual(lossSteps(result.logHistory), [5, 10]);
  assert.deepEqual(evalSteps(result.logHistory), [3, 6, 9]);
  assert.deepEqual(checkpoints(outputDir), [3, 6, 9, 10]);
  model.dispose();
});

test("eval_on_start evaluates before the first step; eval_delay holds evaluations back (steps, then epochs)", () => {
  const steps = run({ maxSteps: 10, evalStrategy: "steps", evalSteps: 2, evalDelay: 5, evalOnStart: true });
  assert.deepEqual(evalSteps(steps.result.logHistory), [0, 6, 8, 10]);
  steps.model.dispose();
  const epochs = run({ maxSteps: 24, evalStrategy: "epoch", evalDelay: 2 });
  assert.deepEqual(evalSteps(epochs.result.logHistory), [16, 24]);
  epochs.model.dispose();
});

test("include_num_input_tokens_seen: the padded input tokens of every batch, in each log, trainer_state.json and the train results", () => {
  const order = shuffledOrder(TRAIN.length, 42);
  let seen = 0;
  const expected: number[] = [];
  for (let step = 0; step < 6; step++) {
    const batch = collate(order.slice(step * 2, step * 2 + 2).map((i) => TRAIN[i]!));
    seen += batch.input_ids.length * batch.input_ids[0]!.length;
    expected.push(seen);
  }
  const { model, result, state } = run({ maxSteps: 6, includeNumInputTokensSeen: true });
  assert.deepEqual(result.logHistory.map((r) => r.num_input_tokens_seen), expected);
  assert.ok(result.logHistory.every((r) => r.train_tokens_per_second! > 0));
  assert.equal(state.num_input_tokens_seen, seen);
  assert.equal(result.metrics.num_input_tokens_seen, seen);
  model.dispose();
  const off = run({ maxSteps: 2 });
  assert.ok(off.result.logHistory.every((r) => r.num_input_tokens_seen === undefined));
  assert.equal(off.result.metrics.num_input_tokens_seen, undefined);
  off.model.dispose();
});

function tensorsOf(file: string): Record<string, number[]> {
  const reader = openSafetensors(file);
  try {
    return Object.fromEntries(reader.names().map((name) => {
      const tensor = reader.get(name);
      const values = tensor.toFlatArray();
      tensor.dispose();
      return [name, values];
    }));
  } finally {
    reader.close();
  }
}

test("load_best_model_at_end with metric_for_best_model and greater_is_better: best_metric, best_model_checkpoint, and output_dir holds the best weights", () => {
  // greater_is_better on eval_loss picks the worst loss: an early checkpoint, not the last.
  const { model, outputDir, result, state } = run({
    maxSteps: 8,
    learningRate: 2e-2,
    evalStrategy: "steps",
    evalSteps: 2,
    saveStrategy: "steps",
    saveSteps: 2,
    loadBestModelAtEnd: true,
    metricForBestModel: "eval_loss",
    greaterIsBetter: true,
  });
  const evals = result.logHistory.filter((r) => r.eval_loss !== undefined);
  const worst = evals.reduce((a, b) => (b.eval_loss! > a.eval_loss! ? b : a));
  assert.notEqual(worst.step, 8, "the scenario needs a best that is not the last step");
  assert.equal(state.best_metric, worst.eval_loss);
  assert.equal(state.best_global_step, worst.step);
  assert.equal(state.best_model_checkpoint, join(outputDir, `checkpoint-${worst.step}`));
  const final = tensorsOf(join(outputDir, "model.safetensors"));
  assert.deepEqual(final, tensorsOf(join(outputDir, `checkpoint-${worst.step}`, "model.safetensors")));
  assert.notDeepEqual(final, tensorsOf(join(outputDir, "checkpoint-8", "model.safetensors")));
  model.dispose();

  // HF's defaults: metric loss (eval_loss), lower is better.
  const defaults = run({ maxSteps: 8, learningRate: 2e-2, evalStrategy: "steps", evalSteps: 2, saveStrategy: "steps", saveSteps: 2, loadBestModelAtEnd: true, metricForBestModel: "loss" });
  const lowest = defaults.result.logHistory.filter((r) => r.eval_loss !== undefined).reduce((a, b) => (b.eval_loss! < a.eval_loss! ? b : a));
  assert.equal(defaults.state.best_metric, lowest.eval_loss);
  assert.equal(defaults.state.best_model_checkpoint, join(defaults.outputDir, `checkpoint-${lowest.step}`));
  defaults.model.dispose();
});

test("save_strategy best writes a checkpoint exactly at each new best evaluation; save_total_limit never deletes the best", () => {
  const { model, outputDir, result, state } = run({ maxSteps: 8, learningRate: 2e-2, evalStrategy: "steps", evalSteps: 1, saveStrategy: "best", metricForBestModel: "loss", greaterIsBetter: false });
  let best = Infinity;
  const newBests: number[] = [];
  for (const r of result.logHistory.filter((h) => h.eval_loss !== undefined)) {
    if (r.eval_loss! < best) {
      best = r.eval_loss!;
      newBests.push(r.step!);
    }
  }
  assert.deepEqual(checkpoints(outputDir), newBests);
  assert.equal(state.best_model_checkpoint, join(outputDir, `checkpoint-${newBests.at(-1)}`));
  model.dispose();

  const limited = run({ maxSteps: 8, learningRate: 2e-2, evalStrategy: "steps", evalSteps: 2, saveStrategy: "steps", saveSteps: 2, saveTotalLimit: 1, loadBestModelAtEnd: true, metricForBestModel: "eval_loss", greaterIsBetter: true });
  assert.deepEqual(checkpoints(limited.outputDir), [limited.state.best_global_step]);
  limited.model.dispose();
});

test("early_stopping_steps stops after that many evaluations without a better metric (EarlyStoppingCallback)", () => {
  const settings: Partial<TrainerOptions> = { maxSteps: 12, learningRate: 2e-2, evalStrategy: "steps", evalSteps: 1, metricForBestModel: "eval_loss", greaterIsBetter: true };
  const full = run(settings);
  // The rule, applied by hand to the full run's evaluations: patience 2 on "higher is better".
  let bestValue: number | null = null;
  let counter = 0;
  let stopAt: number | null = null;
  for (const r of full.result.logHistory.filter((h) => h.eval_loss !== undefined)) {
    counter = bestValue === null || r.eval_loss! > bestValue ? 0 : counter + 1;
    if (bestValue === null || r.eval_loss! > bestValue) bestValue = r.eval_loss!;
    if (counter >= 2) {
      stopAt = r.step!;
      break;
    }
  }
  full.model.dispose();
  assert.ok(stopAt !== null && stopAt < 12, "the scenario must stop early");
  const stopped = run({ ...settings, earlyStoppingPatience: 2 });
  assert.equal(stopped.result.globalStep, stopAt);
  assert.equal(stopped.state.stateful_callbacks.EarlyStoppingCallback.attributes.early_stopping_patience_counter, 2);
  stopped.model.dispose();
});

test("shuffle false (disable_shuffling) trains the rows in their order: the first step's loss is that of rows 0 and 1", () => {
  const fresh = loadModel(FOLDER);
  const firstTwo = evaluate(fresh, TRAIN.slice(0, 2), { collate, stage: languageModeling }, 2).loss;
  fresh.dispose();
  const ordered = run({ maxSteps: 1, shuffle: false });
  assert.ok(Math.abs(ordered.result.stepLosses[0]! - firstTwo) < 1e-5, `${ordered.result.stepLosses[0]} vs ${firstTwo}`);
  ordered.model.dispose();
  const shuffled = run({ maxSteps: 1 });
  assert.ok(Math.abs(shuffled.result.stepLosses[0]! - firstTwo) > 1e-4, "the default order is shuffled");
  shuffled.model.dispose();
});

test("dataloader_drop_last drops each epoch's last incomplete batch, and the last incomplete evaluation batch", () => {
  const nine = TRAIN.slice(0, 9);
  const kept = run({ maxSteps: -1, numTrainEpochs: 1 }, nine);
  assert.equal(kept.result.globalStep, 5);
  kept.model.dispose();
  const dropped = run({ maxSteps: -1, numTrainEpochs: 1, dropLast: true }, nine);
  assert.equal(dropped.result.globalStep, 4);
  dropped.model.dispose();

  const model: CausalLM = loadModel(FOLDER);
  const five = EVAL.concat(examples(1, 200));
  const withDrop = evaluate(model, five, { collate, stage: languageModeling }, 2, "cpu", { dropLast: true });
  const firstFour = evaluate(model, five.slice(0, 4), { collate, stage: languageModeling }, 2);
  assert.ok(Math.abs(withDrop.loss - firstFour.loss) < 1e-6);
  assert.ok(Math.abs(evaluate(model, five, { collate, stage: languageModeling }, 2).loss - firstFour.loss) > 1e-6);
  model.dispose();
});
