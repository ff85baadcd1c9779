// LoRA+ (loraplus_lr_ratio, loraplus_lr_embedding) as LLaMA-Factory's _create_loraplus_optimizer
// groups the parameters, and NEFTune (neftune_noise_alpha) as transformers' post-forward hook adds
// its noise: checked on the optimizer's groups, on AdamW's closed-form first step, and on the
// embedding output's noise bound.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { applyFinetuning } from "../../src/model/adapters/index.ts";
import { loadModel } from "../../src/model/loader.ts";
import { noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { activateNeftune } from "../../src/train/neftune.ts";
import { createOptimizer } from "../../src/train/optimizer.ts";
import { type CollatedBatch, type TrainingExample, train } from "../../src/train/trainer.ts";
import { languageModeling } from "../../src/train/stages/language_modeling.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const FOLDER = makeTinyModel();
const adam = { learningRate: 1e-3, weightDecay: 0.1, adamBeta1: 0.9, adamBeta2: 0.999, adamEpsilon: 1e-8 };

function loraModel() {
  const model = loadModel(FOLDER);
  applyFinetuning(model, { finetuningType: "lora", loraRank: 4, loraTarget: ["all"], additionalTarget: ["norm"] });
  return model;
}

test("loraplus_lr_ratio and loraplus_lr_embedding build LLaMA-Factory's four LoRA+ groups", () => {
  const model = loraModel();
  const named = model.namedParameters({ trainableOnly: true });
  const optimizer = createOptimizer(named, { ...adam, loraplus: { ratio: 16, embeddingLr: 3e-6 } });
  const groups = optimizer.paramGroups as unknown as { params: unknown[]; lr: number; weightDecay: number }[];
  assert.deepEqual(groups.map((g) => [g.lr, g.weightDecay]), [[1e-3, 0.1], [1e-3 * 16, 0.1], [1e-3 * 16, 0], [3e-6, 0.1]]);
  const where = (name: string) => groups.findIndex((g) => g.params.includes(named.find(([n]) => n === name)![1]));
  for (const [name] of named) {
    if (name.includes("lora_A")) assert.equal(where(name), 0, name);
    else if (name.includes("lora_B")) assert.equal(where(name), 1, name);
  }
  assert.equal(where("model.norm.weight"), 2, "a trainable 1-D norm weight: lr x ratio without decay");
  assert.equal(groups[3]!.params.length, 0, "no LoRA on embeddings here, so the embedding group is empty");
  optimizer.dispose();
  const plain = createOptimizer(named, adam);
  assert.deepEqual(plain.paramGroups.map((g) => g.lr), [1e-3, 1e-3]);
  plain.dispose();
  model.dispose();
});

function rows(): TrainingExample[] {
  return Array.from({ length: 4 }, (_, i) => {
    const ids = Array.from({ length: 8 }, (_, t) => 3 + ((i * 11 + t * 7) % 90));
    return { input_ids: ids, attention_mask: ids.map(() => 1), labels: ids };
  });
}
const collate = (batch: TrainingExample[]): CollatedBatch => ({
  input_ids: batch.map((r) => r.input_ids),
  attention_mask: batch.map((r) => r.attention_mask),
  labels: batch.map((r) => r.labels),
});

function oneStep(extra: Record<string, unknown>) {
  const model = loraModel();
  train(
    { model, train: rows(), collate, stage: languageModeling, saveModel: () => {}, loadModel: () => {} },
    {
      outputDir: join(mkdtempSync(join(tmpdir(), "lmf-opt-")), "out"),
      batchSize: 4, gradientAccumulationSteps: 1, ...adam, weightDecay: 0, maxGradNorm: 0, numTrainEpochs: 1, maxSteps: 1,
      lrSchedulerType: "constant", warmupSteps: 0, warmupRatio: 0, loggingSteps: 1, saveStrategy: "no", saveSteps: 500,
      saveTotalLimit: null, saveOnlyModel: true, evalStrategy: "no", evalSteps: null, dataSeed: 42, gradientCheckpointing: false,
      resumeFrom: null, print: () => {}, ...extra,
    },
  );
  const largestB = Math.max(...model.namedParameters({ trainableOnly: true }).filter(([n]) => n.includes("lora_B")).map(([, p]) => tidy(() => p.abs().max().item())));
  model.dispose();
  return largestB;
}

test("LoRA+ changes the run: AdamW's first step moves the zero-initialised B matrices by lr x ratio", () => {
  // Adam's first update is lr * g / (|g| + eps) per element: the largest |B| after one step is the group's lr.
  const plain = oneStep({});
  const loraplus = oneStep({ loraplus: { ratio: 16, embeddingLr: 1e-6 } });
  assert.ok(Math.abs(plain - 1e-3) < 1e-6, `without LoRA+: ${plain}`);
  assert.ok(Math.abs(loraplus - 16e-3) < 1e-5, `with LoRA+: ${loraplus}`);
});

test("neftune_noise_alpha: uniform noise within alpha / sqrt(T * C) on the embedding output in training only, removed afterwards", () => {
  const model = loadModel(FOLDER);
  const ids = tensor([[5, 9, 14, 22, 31, 40, 7, 8, 12, 3]]); // T = 10
  const embed = () => noGrad(() => tidy(() => model.inputEmbeddings().forward(ids).toFlatArray()));
  const clean = embed();
  const alpha = 5;
  const bound = alpha / Math.sqrt(10 * model.config.hidden_size);
  const deactivate = activateNeftune(model, alpha);
  model.train();
  const noisy = embed();
  const deltas = noisy.map((value, i) => Math.abs(value - clean[i]!));
  assert.ok(Math.max(...deltas) <= bound * (1 + 1e-5), `noise ${Math.max(...deltas)} above ${bound}`);
  assert.ok(Math.max(...deltas) > 0.9 * bound, "the noise spans the bound");
  model.eval();
  assert.deepEqual(embed(), clean, "no noise in evaluation");
  model.train();
  deactivate();
  assert.deepEqual(embed(), clean, "no noise once deactivated");
  model.dispose();

  // In a run: the losses differ from the same run without noise, and the embedding is restored after.
  const losses = (alphaValue: number | null) => {
    const m = loadModel(FOLDER);
    const result = train(
      { model: m, train: rows(), collate, stage: languageModeling, saveModel: () => {}, loadModel: () => {} },
      {
        outputDir: join(mkdtempSync(join(tmpdir(), "lmf-neft-")), "out"),
        batchSize: 2, gradientAccumulationSteps: 1, ...adam, maxGradNorm: 1, numTrainEpochs: 1, maxSteps: 2, lrSchedulerType: "constant",
        warmupSteps: 0, warmupRatio: 0, loggingSteps: 1, saveStrategy: "no", saveSteps: 500, saveTotalLimit: null, saveOnlyModel: true,
        evalStrategy: "no", evalSteps: null, dataSeed: 42, gradientCheckpointing: true, resumeFrom: null, print: () => {}, neftuneNoiseAlpha: alphaValue,
      },
    );
    assert.ok(!Object.prototype.hasOwnProperty.call(m.inputEmbeddings(), "forward"), "the hook is removed when train() ends");
    m.dispose();
    return result.stepLosses;
  };
  const without = losses(null);
  const withNoise = losses(alpha);
  assert.ok(Math.abs(without[0]! - withNoise[0]!) > 1e-6, `${without[0]} vs ${withNoise[0]}`);
});
