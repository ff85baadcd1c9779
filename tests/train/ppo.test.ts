// `lmf train` with stage ppo from LLaMA-Factory-style YAML on a tiny model, with each reward model
// type: `api` against a small HTTP server started here (what it receives, what the run logs and
// saves), `full` (a separate model folder with its value head) and `lora` (an adapter trained by
// stage rm, swapped onto the policy's base). With greedy rollouts on a policy whose LoRA starts at
// B = 0, the first step's logged reward is checked against the reward model scored independently.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { type Server, createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { stringify } from "yaml";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { modelOptionsFromArgs, tokenizerOptionsFromArgs } from "../../src/model/from_args.ts";
import { generate } from "../../src/model/generation.ts";
import { loadPretrained } from "../../src/model/pretrained.ts";
import { CausalLMWithValueHead, ValueHead, loadValueHead } from "../../src/model/value_head.ts";
import { type Tensor, liveTensors, manualSeed, noGrad, saveSafetensors, seededRandom, shuffled, tensor, tidy } from "../../src/torch/index.ts";
import { withAdaptersDisabled } from "../../src/model/adapters/index.ts";
import { createOptimizer } from "../../src/train/optimizer.ts";
import { type PpoConfig, PpoStepper, TRL_DEFAULTS } from "../../src/train/stages/ppo.ts";
import { unreadSettings } from "../../src/train/stages/index.ts";
import { prepareTrainingData, runTrain } from "../../src/train/workflow.ts";
import { arithmeticPreferenceData, tinyModelWithDemoTokenizer } from "../fixtures/preference_data.ts";
import { readEventFile } from "../fixtures/tensorboard_reader.ts";
import { alpacaDataDir } from "../fixtures/tiny_run.ts";
import { assertClose, hasTorch } from "../torch/torch-reference.ts";

const MODEL = tinyModelWithDemoTokenizer();
const DATA = alpacaDataDir();
const temp = (name: string) => mkdtempSync(join(tmpdir(), `lmf-ppo-${name}-`));

/** The base of every PPO config here: 4 prompts a step (2 × accumulation 2), short sampled answers. */
const BASE = {
  model_name_or_path: MODEL,
  stage: "ppo",
  do_train: true,
  finetuning_type: "lora",
  lora_target: "all",
  dataset: "alpaca",
  dataset_dir: DATA,
  template: "chatml",
  cutoff_len: 32,
  max_new_tokens: 6,
  per_device_train_batch_size: 2,
  gradient_accumulation_steps: 2,
  learning_rate: 1e-3,
  logging_steps: 1,
  save_steps: 1000,
  lr_scheduler_type: "constant",
  disable_tqdm: true,
};

async function trainFromYaml(config: Record<string, unknown>): Promise<{ outputDir: string; lines: string[] }> {
  const folder = temp("run");
  const outputDir = join(folder, "out");
  const yamlPath = join(folder, "ppo.yaml");
  writeFileSync(yamlPath, stringify({ ...BASE, output_dir: outputDir, ...config }));
  const lines: string[] = [];
  await runTrain(parseTrainArgs([yamlPath], { onWarning: () => {} }), { print: (line) => lines.push(line) });
  return { outputDir, lines };
}

const logOf = (outputDir: string) => readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8").trim().split("\n").map((line) => JSON.parse(line) as Record<string, number>);

let server: Server;
let url = "";
const received: string[][] = [];
before(async () => {
  // Reward: how many times "one" appears in the answer (after the last assistant header).
  server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      const { model, messages } = JSON.parse(body) as { model: string; messages: string[] };
      received.push(messages);
      const scores = messages.map((text) => (text.split("<|im_start|>assistant").at(-1)!.match(/one/g) ?? []).length + (model === "model" ? 0 : -100));
      response.setHeader("Content-Type", "application/json");
      response.end(JSON.stringify({ scores }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/v1/score/evaluation`;
});
after(() => server.close());

test("ppo with an api reward model from YAML: the server gets the decoded rollouts, loss and reward are logged, adapter and value head saved, checkpoints rotated", async () => {
  const loggingDir = join(temp("tb"), "logs");
  const { outputDir } = await trainFromYaml({ reward_model: url, reward_model_type: "api", max_steps: 2, save_steps: 1, save_total_limit: 1, ppo_epochs: 2, ppo_logger: "tensorboard", logging_dir: loggingDir, plot_loss: true });
  // 2 steps × 4 rollouts, one request per mini-batch of 2, each text the prompt then the answer.
  assert.equal(received.length, 4);
  for (const messages of received) {
    assert.equal(messages.length, 2);
    for (const text of messages) assert.match(text, /^<\|im_start\|>user\nCount to \d\.<\|im_end\|>\n<\|im_start\|>assistant\n/);
  }
  const log = logOf(outputDir);
  assert.deepEqual(log.map((r) => r.current_steps), [1, 2]);
  for (const record of log) {
    assert.ok(Number.isFinite(record.loss) && Number.isFinite(record.reward) && record.lr === 1e-3, JSON.stringify(record));
  }
  const state = JSON.parse(readFileSync(join(outputDir, "trainer_state.json"), "utf8"));
  assert.deepEqual(Object.keys(state.log_history[0]).sort(), ["epoch", "learning_rate", "loss", "reward", "step"]);
  // Weights every save_steps, written atomically and rotated by save_total_limit.
  for (const folder of [outputDir, join(outputDir, "checkpoint-2")]) {
    for (const file of ["adapter_model.safetensors", "adapter_config.json", "value_head.safetensors", "trainer_state.json"]) assert.ok(existsSync(join(folder, file)), `${folder}/${file}`);
  }
  assert.ok(!existsSync(join(outputDir, "checkpoint-1")));
  assert.ok(existsSync(join(outputDir, "training_loss.png")) && existsSync(join(outputDir, "training_reward.png")));
  // TRL's statistics under logging_dir/trl, with TRL's names.
  const events = readdirSync(join(loggingDir, "trl")).map((name) => readFileSync(join(loggingDir, "trl", name)).toString("latin1")).join("");
  for (const tag of ["ppo/mean_scores", "objective/kl", "objective/kl_coef", "ppo/policy/clipfrac", "ppo/val/vpred", "ppo/loss/total", "ppo/learning_rate", "env/reward_mean"]) assert.ok(events.includes(tag), tag);
});

/** A reward model trained here by stage rm with LoRA on the arithmetic pairs (adapter + value head). */
let rewardAdapter: string | null = null;
async function trainedRewardAdapter(): Promise<string> {
  if (rewardAdapter) return rewardAdapter;
  const outputDir = join(temp("rm"), "out");
  const args = parseTrainArgs(
    { model_name_or_path: MODEL, stage: "rm", do_train: true, finetuning_type: "lora", lora_target: "all", dataset: "arith_pairs", dataset_dir: arithmeticPreferenceData(), template: "chatml", cutoff_len: 32, per_device_train_batch_size: 4, learning_rate: 1e-2, max_steps: 3, save_strategy: "no", output_dir: outputDir },
    { onWarning: () => {} },
  );
  await runTrain(args, { print: () => {} });
  rewardAdapter = outputDir;
  return outputDir;
}

/** Greedy rollouts over all 4 prompts in one step: the rollouts are the base model's (LoRA B = 0). */
const GREEDY = { do_sample: false, max_samples: 4, max_steps: 1 };

/**
 * The first step's mean reward worked out apart from the stage: each prompt answered greedily by the
 * base model alone, the reward model (`folder` with `adapters` merged, the value head of `headFolder`)
 * run on prompt + answer unpadded, the value at the last token.
 */
async function expectedFirstReward(folder: string, adapters: string[] | null, headFolder: string): Promise<number> {
  const args = parseTrainArgs({ ...BASE, ...GREEDY, output_dir: "unused", reward_model: "unused", reward_model_type: "full" }, { onWarning: () => {} });
  const data = await prepareTrainingData(args, () => {});
  const options = modelOptionsFromArgs(args, { dtype: "float32", device: "cpu", training: false });
  const policy = loadPretrained(tokenizerOptionsFromArgs(args), options);
  const rewardArgs = { ...args, model: { ...args.model, model_name_or_path: folder, adapter_name_or_path: adapters } };
  const reward = loadPretrained(tokenizerOptionsFromArgs(rewardArgs), modelOptionsFromArgs(rewardArgs, { dtype: "float32", device: "cpu", training: false }));
  const scorer = new CausalLMWithValueHead(reward.model);
  assert.ok(loadValueHead(scorer, headFolder));
  scorer.eval();
  try {
    const stop = policy.template.getStopTokenIds(policy.tokenizer);
    const scores = data.train.map((row) => {
      const [answer] = generate(policy.model, [row.input_ids], { maxNewTokens: 6, doSample: false, eosTokenId: stop, padTokenId: policy.tokenizer.padTokenId }).sequences;
      return noGrad(() => tidy(() => scorer.forward(tensor([[...row.input_ids, ...answer!]])).values.select(0, 0).toFlatArray().at(-1)!));
    });
    assert.equal(scores.length, 4);
    return scores.reduce((a, b) => a + b, 0) / scores.length;
  } finally {
    policy.model.dispose();
    scorer.v_head.dispose();
    reward.model.dispose();
  }
}

test("num_train_epochs counts PPO steps as LLaMA-Factory: ⌊prompts / batch⌋ per epoch, the epoch logged as step / steps per epoch", async () => {
  // 10 prompts, batches of 4: 2 steps per epoch (the last 2 prompts dropped), 1.5 epochs = 3 steps.
  const loggingDir = join(temp("epochs-tb"), "logs");
  const { outputDir } = await trainFromYaml({ reward_model: url, reward_model_type: "api", max_samples: 10, num_train_epochs: 1.5, ppo_epochs: 1, report_to: "tensorboard", logging_dir: loggingDir });
  const log = logOf(outputDir);
  assert.deepEqual(log.map((record) => [record.current_steps, record.total_steps, record.epoch]), [[1, 3, 0], [2, 3, 0.5], [3, 3, 1]]);
  // report_to: tensorboard also sends TRL's statistics (LLaMA-Factory's log_with = report_to[0]).
  const [file] = readdirSync(join(loggingDir, "trl"));
  assert.deepEqual([...new Set(readEventFile(join(loggingDir, "trl", file!)).flatMap((event) => event.scalars.filter(([tag]) => tag === "ppo/mean_scores").map(() => event.step)))], [1, 2, 3]);
});

test("ppo with reward_model_type lora: the rm adapter and its value head swapped onto the policy's base score the rollouts", async () => {
  const rm = await trainedRewardAdapter();
  const { outputDir, lines } = await trainFromYaml({ ...GREEDY, reward_model: rm, reward_model_type: "lora" });
  assert.ok(lines.some((line) => line.includes("reward model: the LoRA adapter")));
  assert.ok(lines.some((line) => line.includes("reference model: the trained model with its LoRA adapters disabled")));
  const [first] = logOf(outputDir);
  assert.ok(Math.abs(first!.reward! - (await expectedFirstReward(MODEL, [rm], rm))) < 2e-4, `logged ${first!.reward}`);
  assert.ok(existsSync(join(outputDir, "value_head.safetensors")));
  // A policy adapter on fewer modules than the reward adapter is refused before any rollout.
  await assert.rejects(trainFromYaml({ ...GREEDY, reward_model: rm, reward_model_type: "lora", lora_target: "q_proj" }), /the reward adapter targets \d+ module\(s\) the trained LoRA adapter does not/);
});

test("ppo with reward_model_type full: a separate folder with its value head (8-bit with reward_model_quantization_bit), or the base with reward_model_adapters", async () => {
  // A different tiny model with a value head written beside it.
  const other = tinyModelWithDemoTokenizer(1);
  saveSafetensors(join(other, "value_head.safetensors"), { "v_head.summary.weight": tensor([Array.from({ length: 32 }, (_, i) => Math.sin(i))]), "v_head.summary.bias": tensor([0.25]) });
  const plain = await trainFromYaml({ ...GREEDY, reward_model: other, reward_model_type: "full", finetuning_type: "full" });
  assert.ok(plain.lines.some((line) => line.includes(`reference model: a frozen copy of ${MODEL}`)));
  assert.ok(Math.abs(logOf(plain.outputDir)[0]!.reward! - (await expectedFirstReward(other, null, other))) < 2e-4);
  assert.ok(existsSync(join(plain.outputDir, "model.safetensors")) && existsSync(join(plain.outputDir, "value_head.safetensors")));
  // reward_model_quantization_bit quantizes the reward model while loading: close to the float scores, not equal.
  const quantized = await trainFromYaml({ ...GREEDY, reward_model: other, reward_model_type: "full", finetuning_type: "full", reward_model_quantization_bit: 8 });
  assert.ok(quantized.lines.some((line) => line.includes(`reward model: ${other} (frozen, 8-bit)`)));
  const [floatReward, int8Reward] = [logOf(plain.outputDir)[0]!.reward!, logOf(quantized.outputDir)[0]!.reward!];
  assert.ok(int8Reward !== floatReward && Math.abs(int8Reward - floatReward) < 0.1 * Math.abs(floatReward), `float ${floatReward}, 8-bit ${int8Reward}`);

  const rm = await trainedRewardAdapter();
  const withAdapters = await trainFromYaml({ ...GREEDY, reward_model: MODEL, reward_model_adapters: rm, reward_model_type: "full", ref_model: MODEL });
  assert.ok(withAdapters.lines.some((line) => line.includes(`reference model: ${MODEL} (frozen)`)));
  assert.ok(Math.abs(logOf(withAdapters.outputDir)[0]!.reward! - (await expectedFirstReward(MODEL, [rm], rm))) < 2e-4);
  // Without a value head the reward model is refused, as no score can be read.
  await assert.rejects(trainFromYaml({ ...GREEDY, reward_model: MODEL, reward_model_type: "full" }), /has no value_head.safetensors/);
});

test("ppo_buffer_size, ppo_epochs, ppo_target, ppo_score_norm and ppo_whiten_rewards change the PPO step", async () => {
  const args = parseTrainArgs({ ...BASE, output_dir: "unused", reward_model: url, reward_model_type: "api" }, { onWarning: () => {} });
  const random = seededRandom(3);
  const rollouts = (n: number) => ({
    queries: Array.from({ length: n }, (_, i) => Array.from({ length: 3 + (i % 3) }, () => 10 + Math.floor(random() * 500))),
    responses: Array.from({ length: n }, (_, i) => Array.from({ length: 2 + (i % 4) }, () => 10 + Math.floor(random() * 500))),
    scores: Array.from({ length: n }, () => 3 * random() - 1),
  });
  /** Steps on the same rollouts from a fresh LoRA policy; counts optimizer steps and returns each step's statistics and the KL coefficient. */
  const run = (config: Partial<PpoConfig>, steps = 1) => {
    const loaded = loadPretrained(tokenizerOptionsFromArgs(args), modelOptionsFromArgs(args, { dtype: "float32", device: "cpu", training: true }));
    const vHead = new ValueHead(32, { dropoutProb: 0 });
    const trainable: [string, Tensor][] = [...loaded.model.namedParameters({ trainableOnly: true }), ...vHead.namedParameters()];
    const optimizer = createOptimizer(trainable, { learningRate: 1e-2, weightDecay: 0, adamBeta1: 0.9, adamBeta2: 0.999, adamEpsilon: 1e-8 });
    let optimizerSteps = 0;
    const step = optimizer.step.bind(optimizer);
    optimizer.step = () => (optimizerSteps++, step());
    const full: PpoConfig = { ...TRL_DEFAULTS, miniBatchSize: 2, gradientAccumulationSteps: 2, batchSize: 4, ppoEpochs: 1, maxGradNorm: 1, target: 6, scoreNorm: false, whitenRewards: false, ...config };
    const stepper = new PpoStepper({ model: loaded.model, vHead, withReference: (fn) => withAdaptersDisabled(loaded.model, () => fn(loaded.model)), optimizer, clipped: trainable.map(([, t]) => t), device: "cpu", amp: null, padTokenId: 576, random: seededRandom(0) }, full);
    const { queries, responses, scores } = rollouts(full.batchSize);
    const stats = [stepper.step(queries, responses, scores)];
    // After the first step (which makes the optimizer's state), a step leaves no tensors behind.
    const before = liveTensors();
    while (stats.length < steps) stats.push(stepper.step(queries, responses, scores));
    assert.equal(liveTensors(), before, "a PPO step leaves no tensors behind");
    optimizer.dispose();
    vHead.dispose();
    loaded.model.dispose();
    return { stats, optimizerSteps, klCoef: stepper.kl.value, scores };
  };
  // One optimizer step per backward batch (mini-batch × accumulation) per PPO epoch.
  assert.equal(run({ ppoEpochs: 1 }).optimizerSteps, 1);
  assert.equal(run({ ppoEpochs: 3 }).optimizerSteps, 3);
  assert.equal(run({ ppoEpochs: 2, batchSize: 8 }).optimizerSteps, 4); // ppo_buffer_size 2
  // The KL controller moves toward ppo_target: a tiny target raises the coefficient once the policy has moved.
  for (const target of [6, 1e-6]) {
    const { stats, klCoef } = run({ target }, 2);
    const kl = stats[1]!["objective/kl"]!;
    assert.ok(kl > 0);
    const expected = stats[1]!["objective/kl_coef"]! * (1 + (Math.min(Math.max(kl / target - 1, -0.2), 0.2) * 4) / 10000);
    assert.ok(Math.abs(klCoef - expected) < 1e-12, `target ${target}`);
    assert.ok(target < 1 ? klCoef > 0.2 * (1 - 0.2 * 4 / 10000) : klCoef < 0.2);
  }
  // Scores normalised by the running moments: the first batch's mean is ~0 and its std ~1.
  const raw = run({});
  const normed = run({ scoreNorm: true });
  assert.ok(Math.abs(raw.stats[0]!["ppo/mean_scores"]! - raw.scores.reduce((a, b) => a + b, 0) / 4) < 1e-6);
  assert.ok(Math.abs(normed.stats[0]!["ppo/mean_scores"]!) < 1e-6 && Math.abs(normed.stats[0]!["ppo/std_scores"]! - 1) < 1e-5);
  // Whitened rewards change the returns the value head is trained toward.
  const whitened = run({ whitenRewards: true });
  assert.notEqual(whitened.stats[0]!["ppo/returns/mean"], raw.stats[0]!["ppo/returns/mean"]);
});

test("a whole PPO step on fixed rollouts equals a PyTorch reference step: statistics, KL coefficient and updated weights", { skip: !hasTorch && "python3-torch is not installed" }, async () => {
  // Full fine-tuning (the reference is a frozen copy of the initial weights), two steps with ppo_score_norm and
  // ppo_whiten_rewards, mini-batch 2 × accumulation 2 × ppo_buffer_size 2, ppo_epochs 2.
  const args = parseTrainArgs({ ...BASE, finetuning_type: "full", output_dir: "unused", reward_model: url, reward_model_type: "api" }, { onWarning: () => {} });
  const policy = loadPretrained(tokenizerOptionsFromArgs(args), modelOptionsFromArgs(args, { dtype: "float32", device: "cpu", training: true }));
  const reference = loadPretrained(tokenizerOptionsFromArgs(args), modelOptionsFromArgs(args, { dtype: "float32", device: "cpu", training: false }));
  policy.model.train();
  manualSeed(0); // the value head's initialisation does not depend on the tests run before
  const vHead = new ValueHead(32, { dropoutProb: 0 });
  const trainable: [string, Tensor][] = [...policy.model.namedParameters({ trainableOnly: true }), ...vHead.namedParameters().map(([name, t]): [string, Tensor] => [`v_head.${name}`, t])];
  const vHeadInit = { weight: vHead.summary.weight.toArray(), bias: vHead.summary.bias!.toFlatArray() };
  const optimizer = createOptimizer(trainable, { learningRate: 1e-3, weightDecay: 0, adamBeta1: 0.9, adamBeta2: 0.999, adamEpsilon: 1e-8 });
  const config: PpoConfig = { ...TRL_DEFAULTS, miniBatchSize: 2, gradientAccumulationSteps: 2, batchSize: 8, ppoEpochs: 2, maxGradNorm: 1, target: 6, scoreNorm: true, whitenRewards: true };
  const stepper = new PpoStepper({ model: policy.model, vHead, withReference: (fn) => fn(reference.model), optimizer, clipped: trainable.map(([, t]) => t), device: "cpu", amp: null, padTokenId: 576, random: seededRandom(5) }, config);
  const random = seededRandom(9);
  const orderRandom = seededRandom(5); // the same draws as the stepper's permutations
  const steps = Array.from({ length: 2 }, () => ({
    queries: Array.from({ length: 8 }, (_, i) => Array.from({ length: 2 + (i % 4) }, () => 10 + Math.floor(random() * 560))),
    responses: Array.from({ length: 8 }, (_, i) => Array.from({ length: 1 + ((i * 3) % 5) }, () => 10 + Math.floor(random() * 560))),
    scores: Array.from({ length: 8 }, () => 4 * random() - 1),
    orders: Array.from({ length: 2 }, () => shuffled(Array.from({ length: 8 }, (_, i) => i), orderRandom)),
  }));
  const got = steps.map((step) => ({ stats: stepper.step(step.queries, step.responses, step.scores), klCoef: stepper.kl.value }));
  const expected = JSON.parse(
    execFileSync("/usr/bin/python3", [fileURLToPath(new URL("../reference/ppo_step_reference.py", import.meta.url))], {
      input: JSON.stringify({
        folder: MODEL,
        v_head: vHeadInit,
        pad: 576,
        lr: 1e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        config: { mini: 2, accum: 2, batch: 8, ppo_epochs: 2, max_grad_norm: 1, init_kl: 0.2, target: 6, horizon: 10000, gamma: 1, lam: 0.95, cliprange: 0.2, cliprange_value: 0.2, vf_coef: 0.1, ratio_threshold: 10, score_norm: true, whiten_rewards: true },
        steps,
      }),
      encoding: "utf8",
      maxBuffer: 1 << 28,
    }),
  ) as { stats: Record<string, number>[]; kl_coef: number[]; weights: Record<string, number[]> };
  got.forEach(({ stats, klCoef }, i) => {
    for (const [name, value] of Object.entries(expected.stats[i]!)) assertClose([stats[name]!], [value], 1e-5, 1e-5, `step ${i + 1} ${name}`);
    assertClose([klCoef], [expected.kl_coef[i]!], 1e-9, 1e-12, `step ${i + 1} kl coef`);
  });
  assert.ok(Math.abs(got[1]!.stats["objective/kl"]!) > 1e-4, "the second step's policy differs from the reference");
  for (const [name, value] of trainable) assertClose(value.toFlatArray(), expected.weights[name]!, 1e-5, 1e-5, name);
  optimizer.dispose();
  vHead.dispose();
  policy.model.dispose();
  reference.model.dispose();
});

test("a learnable reward (the letters e in the answer, served by the api type) rises over a short run while the KL stays bounded", async () => {
  const letters = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      const { messages } = JSON.parse(body) as { messages: string[] };
      response.end(JSON.stringify({ scores: messages.map((text) => (text.split("<|im_start|>assistant\n").at(-1)!.match(/e/g) ?? []).length) }));
    });
  });
  await new Promise<void>((resolve) => letters.listen(0, "127.0.0.1", resolve));
  const loggingDir = join(temp("toy-tb"), "logs");
  try {
    const { outputDir } = await trainFromYaml({
      reward_model: `http://127.0.0.1:${(letters.address() as { port: number }).port}/score`,
      reward_model_type: "api",
      max_new_tokens: 8,
      per_device_train_batch_size: 4,
      learning_rate: 5e-3,
      max_steps: 30,
      logging_steps: 10,
      ppo_logger: "tensorboard",
      logging_dir: loggingDir,
      // Plain sampling from the model's distribution.
      top_k: 0,
      top_p: 1.0,
      temperature: 1.0,
    });
    const rewards = logOf(outputDir).map((record) => record.reward!);
    assert.equal(rewards.length, 3);
    assert.ok(rewards[2]! > rewards[0]! + 0.3, `mean reward per 10 steps: ${rewards.join(", ")}`);
    const [file] = readdirSync(join(loggingDir, "trl"));
    const events = readEventFile(join(loggingDir, "trl", file!));
    // TRL's steps count from 1.
    assert.deepEqual([...new Set(events.filter((event) => event.scalars.length).map((event) => event.step))], Array.from({ length: 30 }, (_, i) => i + 1));
    const scalars = events.flatMap((event) => event.scalars);
    const kls = scalars.filter(([tag]) => tag === "objective/kl").map(([, value]) => value);
    const coefs = scalars.filter(([tag]) => tag === "objective/kl_coef").map(([, value]) => value);
    assert.equal(kls.length, 30);
    // The KL to the reference grows as the policy learns, and stays around ppo_target (6) where the adaptive controller holds it.
    assert.ok(kls.every((kl) => Number.isFinite(kl) && kl > -1 && kl < 12), `objective/kl: ${kls.map((kl) => kl.toFixed(3)).join(", ")}`);
    assert.ok(kls.slice(-10).reduce((a, b) => a + b, 0) / 10 > 1, "the policy moved away from the reference");
    // Each step's coefficient follows from the last: × (1 + clip(kl / 6 − 1, ±0.2) · 8 / 10000).
    for (let i = 1; i < 30; i++) {
      const expected = coefs[i - 1]! * (1 + (Math.min(Math.max(kls[i - 1]! / 6 - 1, -0.2), 0.2) * 8) / 10000);
      assert.ok(Math.abs(coefs[i]! - expected) < 1e-7, `kl_coef at step ${i + 1}`);
    }
  } finally {
    letters.close();
  }
});

test("settings PPO does not read are named in one notice; PPO settings outside ppo likewise", () => {
  const args = parseTrainArgs({ ...BASE, output_dir: "unused", reward_model: url, reward_model_type: "api", reward_model_adapters: "saves/rm", pref_beta: 0.3, ref_model: MODEL, ppo_epochs: 2 }, { onWarning: () => {} });
  assert.deepEqual(unreadSettings("ppo", args.finetuning), ["pref_beta", "reward_model_adapters"]);
  assert.deepEqual(unreadSettings("dpo", args.finetuning), ["ppo_epochs", "reward_model", "reward_model_adapters", "reward_model_type"]);
});

test("examples/train_lora/llama3_lora_ppo.yaml trains on the reward adapter of llama3_lora_reward.yaml (tiny model, chatml, 2 short steps)", async () => {
  // The tiny tokenizer lacks Llama 3's special tokens, so both run with chatml; the rest is the examples' own.
  const folder = temp("examples");
  const rewardDir = join(folder, "reward");
  const common = [`model_name_or_path=${MODEL}`, "template=chatml", "logging_steps=1"];
  await runTrain(parseTrainArgs(["examples/train_lora/llama3_lora_reward.yaml", ...common, `output_dir=${rewardDir}`, "num_train_epochs=1"], { onWarning: () => {} }), { print: () => {} });
  const ppoDir = join(folder, "ppo");
  await runTrain(parseTrainArgs(["examples/train_lora/llama3_lora_ppo.yaml", ...common, `reward_model=${rewardDir}`, `output_dir=${ppoDir}`, "max_steps=2", "max_new_tokens=8"], { onWarning: () => {} }), { print: () => {} });
  assert.deepEqual(logOf(ppoDir).map((record) => record.current_steps), [1, 2]);
  for (const file of ["adapter_model.safetensors", "value_head.safetensors", "trainer_state.json", "training_loss.png", "training_reward.png"]) assert.ok(existsSync(join(ppoDir, file)), file);
});
