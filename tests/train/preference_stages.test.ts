// `lmf train` with stages rm, dpo and kto on a tiny model and a learnable preference (correct sums
// chosen over wrong ones): closed forms at initialisation (policy = reference), every pref_loss,
// full / freeze / lora, the reference-model choices, learning, the reward model's files, scores and
// held-out accuracy, evaluation without training, and the metrics in LLaMA-Factory's names.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { expandCheckpoint } from "../../src/model/adapters/llama_pro.ts";
import { modelOptionsFromArgs, tokenizerOptionsFromArgs } from "../../src/model/from_args.ts";
import { loadPretrained } from "../../src/model/pretrained.ts";
import { liveTensors, openSafetensors } from "../../src/torch/index.ts";
import { prepareTrainingData } from "../../src/train/workflow.ts";
import { attachStage, stageFor, unreadSettings } from "../../src/train/stages/index.ts";
import { batchLoss } from "../../src/train/trainer.ts";
import { runTrain } from "../../src/train/workflow.ts";
import { arithmeticPreferenceData, tinyModelWithDemoTokenizer } from "../fixtures/preference_data.ts";

const DATA = arithmeticPreferenceData();
const MODEL = tinyModelWithDemoTokenizer();

interface Run {
  outputDir: string;
  history: Record<string, number>[];
  lines: string[];
}

async function train(overrides: Record<string, unknown>): Promise<Run> {
  const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-pref-")), "out");
  const lines: string[] = [];
  const args = parseTrainArgs(
    {
      model_name_or_path: MODEL,
      do_train: true,
      dataset_dir: DATA,
      dataset: overrides.stage === "kto" ? "arith_kto" : "arith_pairs",
      template: "chatml",
      cutoff_len: 32,
      output_dir: outputDir,
      per_device_train_batch_size: 4,
      learning_rate: 1e-2,
      max_steps: 1,
      logging_steps: 1,
      save_strategy: "no",
      lr_scheduler_type: "constant",
      finetuning_type: "lora",
      ...overrides,
    },
    { onWarning: () => {} },
  );
  await runTrain(args, { print: (line) => lines.push(line) });
  const statePath = join(args.training.output_dir, "trainer_state.json");
  const history = existsSync(statePath) ? (JSON.parse(readFileSync(statePath, "utf8")).log_history as Record<string, number>[]) : [];
  return { outputDir: args.training.output_dir, history, lines };
}

const REWARD_KEYS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"];
const DPO_KEYS = [...REWARD_KEYS, "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"];

test("dpo at initialisation, policy = reference (LoRA B = 0, a frozen copy for full and freeze): sigmoid ln 2, hinge 1, ipo (1/(2β))², kto_pair 1/2, BCO mixed", async () => {
  const beta = 0.25;
  const cases = [
    { pref_loss: "sigmoid", finetuning_type: "lora", expected: Math.log(2) },
    { pref_loss: "sigmoid", finetuning_type: "full", expected: Math.log(2) },
    { pref_loss: "sigmoid", finetuning_type: "freeze", freeze_trainable_layers: 1, expected: Math.log(2) },
    { pref_loss: "hinge", finetuning_type: "lora", expected: 1 },
    { pref_loss: "ipo", finetuning_type: "lora", expected: (1 / (2 * beta)) ** 2 },
    { pref_loss: "kto_pair", finetuning_type: "lora", expected: 0.5 },
    // BCO at init: rewards 0, so the baseline δ is 0 and bco = −2·logσ(0); mixed (ln 2 + w·2 ln 2)/(1 + w).
    { pref_loss: "sigmoid", finetuning_type: "lora", pref_bco_weight: 0.5, expected: (Math.log(2) + 0.5 * 2 * Math.log(2)) / 1.5 },
  ];
  for (const { expected, ...settings } of cases) {
    const { history, lines } = await train({ stage: "dpo", pref_beta: beta, ...settings });
    const first = history[0]!;
    const what = JSON.stringify(settings);
    assert.ok(Math.abs(first.loss! - expected) < 1e-4, `${what}: loss ${first.loss} vs ${expected}`);
    for (const key of DPO_KEYS) assert.equal(typeof first[key], "number", `${what}: ${key}`);
    for (const key of REWARD_KEYS) assert.equal(first[key], 0, `${what}: ${key}`);
    const kind = settings.finetuning_type === "lora" ? /LoRA adapters disabled/ : /a frozen copy of/;
    assert.ok(lines.some((line) => kind.test(line)), `${what}: ${lines.join("\n")}`);
  }
});

test("dpo on a LLaMA Pro expansion (freeze and lora train the added blocks): ln 2 at initialisation, then it moves", async () => {
  const expanded = join(mkdtempSync(join(tmpdir(), "lmf-pref-pro-")), "pro");
  const { freezeTrainableLayers } = expandCheckpoint(MODEL, expanded, { numExpandedLayers: 2 });
  for (const finetuning_type of ["freeze", "lora"]) {
    const { history } = await train({ stage: "dpo", model_name_or_path: expanded, finetuning_type, use_llama_pro: true, freeze_trainable_layers: freezeTrainableLayers, max_steps: 3 });
    assert.ok(Math.abs(history[0]!.loss! - Math.log(2)) < 1e-4, `${finetuning_type}: ${history[0]!.loss}`);
    assert.notEqual(history[2]!["rewards/margins"], 0, finetuning_type);
  }
});

test("pref_ftx, dpo_label_smoothing, ld_alpha and the KTO weights each change the loss as LLaMA-Factory computes it", async () => {
  // At init the DPO term is ln 2; pref_ftx adds ftx · mean(−chosen average log-prob), which ORPO logs as sft_loss on the same batch.
  const sft = (await train({ stage: "dpo", pref_loss: "orpo" })).history[0]!.sft_loss!;
  const ftx = (await train({ stage: "dpo", pref_ftx: 0.5 })).history[0]!.loss!;
  assert.ok(Math.abs(ftx - (Math.log(2) + 0.5 * sft)) < 2e-4, `${ftx} vs ln 2 + 0.5 · ${sft}`);
  // Label smoothing changes nothing at z = 0, and the second step once the policy has moved.
  const smoothed = async (eps: number) => (await train({ stage: "dpo", max_steps: 2, dpo_label_smoothing: eps })).history.map((r) => r.loss!);
  const [plain, robust] = [await smoothed(0), await smoothed(0.3)];
  assert.equal(plain[0], robust[0]);
  assert.notEqual(plain[1], robust[1]);
  // ld_alpha weighs the policy's answer tails only: with answers of unequal length, rewards move off 0 at init.
  const ld = (await train({ stage: "dpo", ld_alpha: 0.5, per_device_train_batch_size: 25 })).history[0]!;
  assert.notEqual(ld["rewards/margins"], 0);
  // KTO at init: every loss is w/2, so the batch of all 25 desirable and 25 undesirable answers gives (25·2 + 25·1) / (2·50).
  const weighted = (await train({ stage: "kto", kto_chosen_weight: 2, kto_rejected_weight: 1, per_device_train_batch_size: 50 })).history[0]!;
  assert.ok(Math.abs(weighted.loss! - 0.75) < 1e-4, `${weighted.loss}`);
});

test("orpo and simpo train without a reference and log their metrics; rewards are β · average log-probs", async () => {
  const orpo = await train({ stage: "dpo", pref_loss: "orpo", pref_beta: 0.1 });
  const first = orpo.history[0]!;
  for (const key of [...DPO_KEYS, "sft_loss", "odds_ratio_loss"]) assert.equal(typeof first[key], "number", key);
  assert.ok(!orpo.lines.some((line) => line.startsWith("reference model")));
  // ORPO's sft term is the chosen answers' average negative log-prob: rewards/chosen = −β · sft_loss.
  assert.ok(Math.abs(first["rewards/chosen"]! + 0.1 * first.sft_loss!) < 1e-6);
  assert.ok(Math.abs(first.loss! - (first.sft_loss! + 0.1 * first.odds_ratio_loss!)) < 1e-4);
  const simpo = await train({ stage: "dpo", pref_loss: "simpo", pref_beta: 2, simpo_gamma: 0.5, per_device_train_batch_size: 1 });
  const s = simpo.history[0]!;
  // One pair: −logσ(margin − γ) with the logged margin β(c − r).
  assert.ok(Math.abs(s.loss! - Math.log1p(Math.exp(-(s["rewards/margins"]! - 0.5)))) < 1e-3, `${s.loss} ${s["rewards/margins"]}`);
});

test("dpo learns the preference: rewards/accuracies and margins rise (trainer_log, TensorBoard, plot)", async () => {
  const { outputDir, history } = await train({
    stage: "dpo",
    max_steps: 30,
    logging_steps: 5,
    plot_loss: true,
    report_to: "tensorboard",
    disable_gradient_checkpointing: true,
    ld_alpha: 0.8,
    pref_ftx: 0.1,
  });
  const [first, last] = [history[0]!, history[history.length - 1]!];
  assert.ok(last["rewards/accuracies"]! > first["rewards/accuracies"]! && last["rewards/accuracies"]! >= 0.75, JSON.stringify(history));
  assert.ok(last["rewards/margins"]! > first["rewards/margins"]! && last["rewards/margins"]! > 0.3, JSON.stringify(history));
  const log = readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8").trim().split("\n").map((line) => JSON.parse(line));
  assert.equal(log[log.length - 1].accuracy, last["rewards/accuracies"], "LogCallback's accuracy is rewards/accuracies");
  for (const png of ["training_loss.png", "training_rewards_accuracies.png"]) assert.ok(existsSync(join(outputDir, png)), png);
  const runs = join(outputDir, "runs");
  const events = readdirSync(runs).flatMap((dir) => readdirSync(join(runs, dir)).map((file) => readFileSync(join(runs, dir, file))));
  for (const tag of ["train/rewards/accuracies", "train/logps/chosen", "train/loss"]) assert.ok(events.some((bytes) => bytes.includes(tag)), tag);
});

test("gradient checkpointing gives the same dpo losses as the plain path", async () => {
  const losses = async (disable: boolean) => (await train({ stage: "dpo", max_steps: 3, disable_gradient_checkpointing: disable, pref_loss: "ipo" })).history.map((r) => r.loss).filter((l) => l !== undefined);
  assert.deepEqual(await losses(false), await losses(true));
});

test("kto at initialisation: kl 0, rewards 0, loss w/2; then it learns the tags", async () => {
  const init = await train({ stage: "kto", kto_chosen_weight: 1, kto_rejected_weight: 1, pref_beta: 0.2 });
  const first = init.history[0]!;
  assert.ok(Math.abs(first.loss! - 0.5) < 1e-4, `${first.loss}`);
  assert.equal(first.kl, 0);
  for (const key of ["rewards/chosen", "rewards/rejected", "rewards/margins"]) assert.equal(first[key], 0, key);
  for (const key of ["logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"]) assert.equal(typeof first[key], "number", key);

  const learnt = await train({ stage: "kto", max_steps: 30, logging_steps: 10, kto_rejected_weight: 1.5, pref_ftx: 0.1, plot_loss: true });
  const [a, b] = [learnt.history[0]!, learnt.history[learnt.history.length - 1]!];
  assert.ok(b["rewards/margins"]! > a["rewards/margins"]! && b["rewards/margins"]! > 0, JSON.stringify(learnt.history));
  assert.ok(existsSync(join(learnt.outputDir, "training_rewards_chosen.png")));
});

test("ref_model, ref_model_adapters and ref_model_quantization_bit choose the reference: the base gives ln 2 at init, an adapter on it or its 4-bit copy does not", async () => {
  // A LoRA adapter that has moved away from the base: one short dpo run.
  const adapter = (await train({ stage: "dpo", max_steps: 5 })).outputDir;
  const onBase = await train({ stage: "dpo", finetuning_type: "full", ref_model: MODEL });
  assert.ok(onBase.lines.some((line) => line.startsWith(`reference model: ${MODEL}`)));
  assert.equal(onBase.history[0]!["rewards/margins"], 0);
  const onAdapter = await train({ stage: "dpo", finetuning_type: "full", ref_model: MODEL, ref_model_adapters: adapter });
  assert.notEqual(onAdapter.history[0]!["rewards/margins"], 0);
  assert.ok(Math.abs(onAdapter.history[0]!.loss! - Math.log(2)) > 1e-3);
  // ref_model_quantization_bit: the same base as reference, quantized to 4 bits, no longer equals the policy at init.
  const quantized = await train({ stage: "dpo", finetuning_type: "full", ref_model: MODEL, ref_model_quantization_bit: 4 });
  assert.ok(quantized.lines.some((line) => line.startsWith(`reference model: ${MODEL} (frozen, quantized to 4 bits)`)), quantized.lines.join("\n"));
  assert.notEqual(quantized.history[0]!["rewards/margins"], 0);
});

test("dpo evaluation without training uses the policy as its reference and reports no rewards", async () => {
  const { outputDir } = await train({ stage: "dpo", do_train: false, do_eval: true, eval_dataset: "arith_pairs", dataset: null, max_samples: 8 });
  const results = JSON.parse(readFileSync(join(outputDir, "eval_results.json"), "utf8"));
  assert.ok(Math.abs(results.eval_loss - Math.log(2)) < 1e-6, `${results.eval_loss}`);
  assert.equal(typeof results["eval_logps/chosen"], "number");
  assert.ok(!Object.keys(results).some((key) => key.includes("rewards")), Object.keys(results).join());
});

test("rm: value head files in the output and every checkpoint, held-out accuracy, predictions, resume", async () => {
  const run = await train({
    stage: "rm",
    max_steps: 40,
    logging_steps: 10,
    val_size: 5,
    eval_strategy: "steps",
    eval_steps: 20,
    save_strategy: "steps",
    save_steps: 20,
    do_eval: true,
    do_predict: true,
    plot_loss: true,
  });
  const { outputDir } = run;
  for (const folder of [outputDir, join(outputDir, "checkpoint-20"), join(outputDir, "checkpoint-40")]) {
    const reader = openSafetensors(join(folder, "value_head.safetensors"));
    try {
      assert.deepEqual(reader.names().sort(), ["v_head.summary.bias", "v_head.summary.weight"]);
      assert.deepEqual(reader.get("v_head.summary.weight").shape, [1, 32]);
      assert.deepEqual(reader.get("v_head.summary.bias").shape, [1]);
    } finally {
      reader.close();
    }
    assert.ok(existsSync(join(folder, "adapter_model.safetensors")), folder);
  }
  const evalResults = JSON.parse(readFileSync(join(outputDir, "eval_results.json"), "utf8"));
  assert.ok(evalResults.eval_accuracy >= 0.8, `held-out accuracy ${evalResults.eval_accuracy}`);
  assert.ok(run.history.some((record) => typeof record.eval_accuracy === "number"));
  assert.ok(!run.history.some((record) => "accuracy" in record), "accuracy is an evaluation metric, as LLaMA-Factory's");
  const predictions = readFileSync(join(outputDir, "generated_predictions.jsonl"), "utf8").split("\n").map((line) => JSON.parse(line));
  assert.equal(predictions.length, 5);
  for (const row of predictions) assert.deepEqual(Object.keys(row), ["chosen", "rejected"]);
  const predicted = JSON.parse(readFileSync(join(outputDir, "predict_results.json"), "utf8"));
  assert.equal(predicted.predict_accuracy, predictions.filter((row) => row.chosen > row.rejected).length / 5);
  for (const png of ["training_loss.png", "training_eval_loss.png", "training_eval_accuracy.png"]) assert.ok(existsSync(join(outputDir, png)), png);

  // Resuming from checkpoint-20 restores the head: the remaining steps end where the full run did.
  const resumed = await train({ stage: "rm", max_steps: 40, logging_steps: 10, val_size: 5, output_dir: outputDir, resume_from_checkpoint: join(outputDir, "checkpoint-20"), save_strategy: "no" });
  const loss = (history: Record<string, number>[]) => history.filter((r) => r.loss !== undefined && r.step === 40)[0]!.loss;
  assert.equal(loss(resumed.history), loss(run.history));
});

test("settings a stage does not read are named in one notice", () => {
  const args = parseTrainArgs({ model_name_or_path: MODEL, stage: "dpo", pref_loss: "orpo", simpo_gamma: 1, kto_chosen_weight: 2, ref_model: MODEL, dataset: "x", output_dir: "o" }, { onWarning: () => {} });
  assert.deepEqual(unreadSettings("dpo", args.finetuning), ["kto_chosen_weight", "simpo_gamma", "ref_model"]);
  assert.deepEqual(unreadSettings("kto", args.finetuning), ["pref_loss", "simpo_gamma"]);
  assert.deepEqual(unreadSettings("sft", { ...args.finetuning, kto_chosen_weight: 1, ref_model: null }), ["pref_loss", "simpo_gamma"]);
});

test("rm, dpo and kto steps leave no tensors behind (training, checkpointed, evaluation)", async () => {
  for (const [stageName, dataset] of [["rm", "arith_pairs"], ["dpo", "arith_pairs"], ["kto", "arith_kto"]] as const) {
    const args = parseTrainArgs({ model_name_or_path: MODEL, stage: stageName, do_train: true, dataset_dir: DATA, dataset, template: "chatml", output_dir: "unused", finetuning_type: "lora" }, { onWarning: () => {} });
    const data = await prepareTrainingData(args, () => {});
    const loaded = loadPretrained(tokenizerOptionsFromArgs(args), modelOptionsFromArgs(args, { dtype: "float32", device: "cpu", training: true }));
    const stage = stageFor(stageName);
    const collate = (rows: typeof data.train) => stage.collate(rows, { padTokenId: 0, labelPadTokenId: -100, padToMultipleOf: 8 });
    const run = attachStage(stage, { loaded, args, device: "cpu", dtype: "float32", print: () => {}, collate });
    const trainer = { ...stage, loss: run.loss };
    const batch = collate(data.train.slice(0, 4));
    const step = (gradientCheckpointing: boolean, backward = true) => {
      batchLoss(loaded.model, batch, trainer, { device: "cpu", denominator: 4, backward, gradientCheckpointing, record: () => {} });
      loaded.model.zeroGrad();
      for (const [, tensor] of run.parameters ?? []) tensor.grad = null;
    };
    step(false);
    const before = liveTensors();
    for (const checkpointed of [false, true, false]) step(checkpointed);
    step(false, false);
    assert.equal(liveTensors(), before, stageName);
    run.dispose?.();
    loaded.model.dispose();
  }
});
