// The trainer: per-step losses against a PyTorch reference loop, exact resume after a stop,
// the files a run leaves, checkpoint rotation, and no tensor leaks.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel, loadWeights, saveModel } from "../../src/model/loader.ts";
import type { CausalLM } from "../../src/model/registry.ts";
import { listCheckpoints } from "../../src/train/checkpoint.ts";
import { type CollatedBatch, type TrainerOptions, type TrainingExample, batchLoss, evaluate, shuffledOrder, train } from "../../src/train/trainer.ts";
import { collateSupervised } from "../../src/data/processors/collator.ts";
import { languageModeling } from "../../src/train/stages/language_modeling.ts";
import { liveTensors, manualSeed, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;

/** Examples of varied length; half of them mask a prompt prefix with -100 as SFT does. */
function examples(count: number): TrainingExample[] {
  const rows: TrainingExample[] = [];
  for (let i = 0; i < count; i++) {
    const length = 5 + ((i * 7) % 6);
    const ids = Array.from({ length }, (_, t) => 3 + ((i * 13 + t * 5) % 90));
    const promptLength = i % 2 ? 2 + (i % 3) : 0;
    rows.push({ input_ids: ids, attention_mask: ids.map(() => 1), labels: ids.map((id, t) => (t < promptLength ? -100 : id)) });
  }
  return rows;
}

/** Right padding to the longest row, labels padded with -100. */
function collate(rows: TrainingExample[]): CollatedBatch {
  const T = Math.max(...rows.map((r) => r.input_ids.length));
  const pad = (row: number[], value: number) => [...row, ...Array(T - row.length).fill(value)];
  return {
    input_ids: rows.map((r) => pad(r.input_ids, 0)),
    attention_mask: rows.map((r) => pad(r.attention_mask, 0)),
    labels: rows.map((r) => pad(r.labels, -100)),
  };
}

function options(outputDir: string, overrides: Partial<TrainerOptions> = {}): TrainerOptions {
  return {
    outputDir,
    batchSize: 2,
    gradientAccumulationSteps: 2,
    learningRate: 5e-3,
    weightDecay: 0.1,
    adamBeta1: 0.9,
    adamBeta2: 0.999,
    adamEpsilon: 1e-8,
    maxGradNorm: 1.0,
    numTrainEpochs: 1,
    maxSteps: 10,
    lrSchedulerType: "linear",
    warmupSteps: 2,
    warmupRatio: 0,
    loggingSteps: 1,
    saveStrategy: "no",
    saveSteps: 500,
    saveTotalLimit: null,
    saveOnlyModel: false,
    evalStrategy: "no",
    evalSteps: null,
    dataSeed: 42,
    gradientCheckpointing: true,
    resumeFrom: null,
    print: () => {},
    ...overrides,
  };
}

function parts(model: CausalLM, data: TrainingExample[]) {
  return {
    model,
    train: data,
    collate,
    stage: languageModeling,
    saveModel: (folder: string) => saveModel(model, folder),
    loadModel: (folder: string) => loadWeights(model, folder, "float32"),
  };
}

const tmp = () => mkdtempSync(join(tmpdir(), "lmf-train-"));

for (const optim of ["adamw_torch", "sgd"]) {
  test(`10 steps of losses match a PyTorch reference loop (fp32, accumulation, clipping, optim ${optim}, warmup)`, { skip: !hasTorch && "python3-torch not installed" }, () => {
    const folder = makeTinyModel({ model_type: "qwen2", tie_word_embeddings: true, use_sliding_window: false });
    const data = examples(40);
    const model = loadModel(folder);
    const result = train(parts(model, data), options(tmp(), { optim }));
    model.dispose();

    // The same micro-batches in the same order, for the reference.
    const order = shuffledOrder(data.length, 42);
    const steps = Array.from({ length: 10 }, (_, s) =>
      [0, 1].map((m) => collate(order.slice((s * 2 + m) * 2, (s * 2 + m) * 2 + 2).map((i) => data[i]!))),
    );
    const out = execFileSync("/usr/bin/python3", ["tests/reference/train_reference.py"], {
      input: JSON.stringify({ folder, steps, optim, lr: 5e-3, weight_decay: 0.1, betas: [0.9, 0.999], eps: 1e-8, max_grad_norm: 1.0, warmup: 2, total: 10 }),
      maxBuffer: 1 << 26,
    });
    const reference: number[] = JSON.parse(out.toString()).losses;
    assert.equal(result.stepLosses.length, 10);
    result.stepLosses.forEach((loss, i) => {
      assert.ok(Math.abs(loss - reference[i]!) <= 1e-5 * Math.abs(reference[i]!), `step ${i + 1}: ${loss} vs ${reference[i]}`);
    });
    assert.ok(result.stepLosses[9]! < result.stepLosses[0]!, "the loss falls");
  });
}

/** The reference loop's per-step losses for `steps` micro-batch groups (tests/reference/train_reference.py). */
function referenceLosses(folder: string, steps: CollatedBatch[][], extra: Record<string, unknown> = {}): number[] {
  const out = execFileSync("/usr/bin/python3", ["tests/reference/train_reference.py"], {
    input: JSON.stringify({ folder, steps, lr: 5e-3, weight_decay: 0.1, betas: [0.9, 0.999], eps: 1e-8, max_grad_norm: 1.0, warmup: 2, total: 10, ...extra }),
    maxBuffer: 1 << 26,
  });
  return JSON.parse(out.toString()).losses;
}

// bf16 tolerance: torch.testing.assert_close's default for bfloat16 (rtol 1.6e-2, atol 1e-5), per
// step. (Both sides issue the same ATen ops under the same autocast, and the losses measured
// bit-identical here; the tolerance is what a different op order in bfloat16 may cost.)
const BF16_RTOL = 1.6e-2;
const BF16_ATOL = 1e-5;

for (const gradientCheckpointing of [true, false]) {
  test(`bf16 autocast: 6 steps of losses match PyTorch's torch.autocast("cpu", bfloat16) loop within bf16 tolerance (gradient checkpointing ${gradientCheckpointing ? "on" : "off"})`, { skip: !hasTorch && "python3-torch not installed" }, () => {
    const folder = makeTinyModel({ model_type: "qwen2", tie_word_embeddings: true, use_sliding_window: false });
    const data = examples(24);
    const run = (autocast: "bfloat16" | null) => {
      const model = loadModel(folder);
      const result = train(parts(model, data), options(tmp(), { maxSteps: 6, gradientCheckpointing, autocast }));
      // HF's mixed precision keeps float32 master weights (and so float32 gradients and states).
      assert.ok(model.parameters().every((p) => p.dtype === "float32"));
      model.dispose();
      return result.stepLosses;
    };
    const mixed = run("bfloat16");
    const order = shuffledOrder(data.length, 42);
    const steps = Array.from({ length: 6 }, (_, s) => [0, 1].map((m) => collate(order.slice((s * 2 + m) * 2, (s * 2 + m) * 2 + 2).map((i) => data[i]!))));
    const reference = referenceLosses(folder, steps, { autocast: "bfloat16", total: 6 });
    const referenceFp32 = referenceLosses(folder, steps, { total: 6 });
    mixed.forEach((loss, i) => {
      const tolerance = BF16_ATOL + BF16_RTOL * Math.abs(reference[i]!);
      assert.ok(Math.abs(loss - reference[i]!) <= tolerance, `step ${i + 1}: ${loss} vs PyTorch autocast ${reference[i]}`);
    });
    // The comparison can tell bf16 from fp32: the autocast run is closer to PyTorch's autocast
    // losses than to its float32 ones at every step, and differs from our own float32 run.
    const fp32 = run(null);
    mixed.forEach((loss, i) => {
      assert.ok(Math.abs(loss - reference[i]!) < Math.abs(loss - referenceFp32[i]!), `step ${i + 1}: ${loss} is nearer fp32 ${referenceFp32[i]} than autocast ${reference[i]}`);
    });
    assert.notDeepEqual(mixed, fp32);
  });
}

test("a run stopped after a checkpoint resumes exactly: same losses, same weights", () => {
  const folder = makeTinyModel();
  const data = examples(24); // 12 micro-batches = 6 steps per epoch: resume crosses an epoch
  const straightDir = tmp();
  manualSeed(0);
  const straight = loadModel(folder);
  const full = train(parts(straight, data), options(straightDir, { maxSteps: 9, saveStrategy: "steps", saveSteps: 4 }));

  const resumedDir = tmp();
  manualSeed(0);
  const first = loadModel(folder);
  const partial = train(parts(first, data), options(resumedDir, { maxSteps: 9, saveStrategy: "steps", saveSteps: 4, stopAfterSteps: 6 }));
  first.dispose();
  assert.deepEqual(partial.stepLosses, full.stepLosses.slice(0, 6));
  assert.deepEqual(listCheckpoints(resumedDir).map((p) => p.split("-").pop()), ["4"]);

  const second = loadModel(folder); // fresh weights: the checkpoint must restore everything
  const resumed = train(parts(second, data), options(resumedDir, { maxSteps: 9, saveStrategy: "steps", saveSteps: 4, resumeFrom: join(resumedDir, "checkpoint-4") }));
  assert.deepEqual(resumed.stepLosses, full.stepLosses.slice(4));
  const a = straight.stateDict();
  const b = second.stateDict();
  for (const name of Object.keys(a)) assert.ok(a[name]!.equal(b[name]!), `${name} differs after resume`);
  straight.dispose();
  second.dispose();
});

test("a run leaves LLaMA-Factory's files, rotates checkpoints and leaks no tensors", () => {
  const folder = makeTinyModel();
  const model = loadModel(folder);
  const outputDir = tmp();
  const before = liveTensors();
  train(parts(model, examples(16)), options(outputDir, { maxSteps: 6, loggingSteps: 2, saveStrategy: "steps", saveSteps: 2, saveTotalLimit: 2, gradientCheckpointing: false }));
  assert.equal(liveTensors(), before);
  const lines = readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 3);
  for (const key of ["current_steps", "total_steps", "loss", "lr", "epoch", "percentage", "elapsed_time", "remaining_time", "throughput", "total_tokens"]) {
    assert.ok(key in lines[0], `trainer_log.jsonl lacks ${key}`);
  }
  assert.deepEqual(lines.map((l) => l.current_steps), [2, 4, 6]);
  assert.equal(lines[2].percentage, 100);
  assert.deepEqual(readdirSync(outputDir).filter((n) => n.startsWith("checkpoint-")).sort(), ["checkpoint-4", "checkpoint-6"]);
  for (const file of ["model.safetensors", "config.json", "trainer_state.json", "train_results.json", "all_results.json"]) {
    assert.ok(existsSync(join(outputDir, file)), file);
  }
  for (const file of ["optimizer.safetensors", "optimizer.json", "scheduler.json", "rng_state.safetensors", "model.safetensors"]) {
    assert.ok(existsSync(join(outputDir, "checkpoint-6", file)), `checkpoint-6/${file}`);
  }
  const state = JSON.parse(readFileSync(join(outputDir, "trainer_state.json"), "utf8"));
  assert.equal(state.global_step, 6);
  assert.equal(state.log_history.length, 3);
  const results = JSON.parse(readFileSync(join(outputDir, "train_results.json"), "utf8"));
  for (const key of ["epoch", "train_loss", "train_runtime", "train_samples_per_second", "train_steps_per_second"]) assert.ok(key in results, key);
  model.dispose();
});

test("k micro-batches of gradient accumulation equal one batch k times larger", () => {
  const folder = makeTinyModel();
  const data = examples(8);
  const run = (batchSize: number, accumulation: number) => {
    const model = loadModel(folder);
    train(parts(model, data), options(tmp(), { batchSize, gradientAccumulationSteps: accumulation, maxSteps: 2, maxGradNorm: 0, gradientCheckpointing: false }));
    return model;
  };
  const big = run(4, 1);
  const accumulated = run(2, 2);
  const a = big.stateDict();
  const b = accumulated.stateDict();
  for (const name of Object.keys(a)) assert.ok(a[name]!.allclose(b[name]!, 1e-5, 1e-6), `${name} differs`);
  big.dispose();
  accumulated.dispose();
});

test("a checkpoint write killed half way leaves the previous checkpoint complete and resumable", () => {
  const folder = makeTinyModel();
  const data = examples(16);
  const outputDir = tmp();
  const model = loadModel(folder);
  let saves = 0;
  const crashing = {
    ...parts(model, data),
    saveModel: (dir: string) => {
      saves += 1;
      saveModel(model, dir);
      if (saves === 2) throw new Error("killed while writing the second checkpoint");
    },
  };
  assert.throws(() => train(crashing, options(outputDir, { maxSteps: 6, saveStrategy: "steps", saveSteps: 2 })), /killed while writing/);
  model.dispose();
  assert.deepEqual(listCheckpoints(outputDir).map((p) => p.split("/").pop()), ["checkpoint-2"]);
  const fresh = loadModel(folder);
  const resumed = train(parts(fresh, data), options(outputDir, { maxSteps: 6, saveStrategy: "steps", saveSteps: 2, resumeFrom: listCheckpoints(outputDir)[0]! }));
  assert.equal(resumed.globalStep, 6);
  assert.equal(resumed.stepLosses.length, 4);
  fresh.dispose();
});

test("a neat-packed row trains and evaluates as its examples alone: the training path passes position_ids", () => {
  const folder = makeTinyModel();
  const model = loadModel(folder);
  // Two examples, their first token a masked prompt, packed into one row (neat packing numbers them 1, 2).
  const a = [5, 9, 14, 22];
  const b = [7, 31, 8, 40, 12];
  const masked = (ids: number[]) => ids.map((id, t) => (t === 0 ? -100 : id));
  const packed = {
    input_ids: [[...a, ...b]],
    attention_mask: [[...a.map(() => 1), ...b.map(() => 2)]],
    position_ids: [[...a.keys(), ...b.keys()]],
    labels: [[...masked(a), ...masked(b)]],
  };
  // Independently: each example alone through the model, token log-probabilities summed by hand.
  const alone = (ids: number[]) =>
    noGrad(() =>
      tidy(() => {
        const logProbs = model.forward(tensor([ids])).logSoftmax(-1).toArray() as number[][][];
        let sum = 0;
        for (let t = 1; t < ids.length; t++) sum -= logProbs[0]![t - 1]![ids[t]!]!;
        return sum;
      }),
    );
  const expected = (alone(a) + alone(b)) / (a.length - 1 + b.length - 1);
  const stage = languageModeling;
  const denominator = stage.lossDenominator([packed]);
  assert.equal(denominator, a.length - 1 + b.length - 1);
  model.eval(); // no dropout in the tiny model either way; eval keeps the comparison exact
  for (const gradientCheckpointing of [false, true]) {
    const trained = batchLoss(model, packed, stage, { device: "cpu", denominator, backward: true, gradientCheckpointing });
    assert.ok(Math.abs(trained - expected) < 1e-5, `training path (checkpointing ${gradientCheckpointing}): ${trained} vs ${expected}`);
    model.zeroGrad();
  }
  const evaluated = evaluate(model, [{ input_ids: packed.input_ids[0]!, attention_mask: packed.attention_mask[0]!, position_ids: packed.position_ids[0]!, labels: packed.labels[0]! }], { collate: (rows) => collateSupervised(rows, { padTokenId: 0 }), stage }, 1);
  assert.ok(Math.abs(evaluated.loss - expected) < 1e-5, `evaluation path: ${evaluated.loss} vs ${expected}`);
  model.dispose();
});
