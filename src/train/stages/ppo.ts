// Stage ppo, LLaMA-Factory's run_ppo with CustomPPOTrainer over TRL 0.9.6's PPOTrainer: prompts
// from SFT-format data (the unsupervised processor), responses sampled by the policy with the
// generating arguments, scored by the reward model (reward_model.ts), then TRL's step: old and
// reference log-probs and values, per-token KL rewards, GAE, `ppo_epochs` passes of shuffled
// mini-batches with the clipped losses (ppo_math.ts), the adaptive KL update. PPO has its own loop
// (`StageRun.train`); it reuses the optimizer, the scheduler, RunLog and the model saving of the rest.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { collateSupervised } from "../../data/processors/collator.ts";
import { processorSpec } from "../../data/processors/factories.ts";
import type { SupervisedRow } from "../../data/types.ts";
import { UserError } from "../../errors.ts";
import { appliedLoraConfig, withAdaptersDisabled } from "../../model/adapters/index.ts";
import type { CausalLM } from "../../model/causal_lm.ts";
import { generationSettingsFromArgs } from "../../model/from_args.ts";
import { generate } from "../../model/generation.ts";
import { ValueHead, loadValueHead, saveValueHead } from "../../model/value_head.ts";
import {
  type AutocastSpec,
  type BaseHyperParameters,
  type Optimizer,
  type Tensor,
  autocastDeviceOf,
  autocastIf,
  cat,
  clipGradNorm,
  disableDropout,
  getScheduler,
  noGrad,
  seededRandom,
  shuffled,
  tensor,
  tidy,
  warmupSteps,
} from "../../torch/index.ts";
import { type TrainerStateJson, rotateCheckpoints, saveCheckpoint } from "../checkpoint.ts";
import { RunLog } from "../logging.ts";
import { createOptimizer } from "../optimizer.ts";
import { trainerOptionsFromArgs } from "../options.ts";
import { plotLoss } from "../plot.ts";
import { EventFileWriter, defaultLoggingDir } from "../tensorboard.ts";
import { absoluteSteps, shuffledOrder } from "../trainer.ts";
import { AdaptiveKLController, RunningMoments, computeAdvantages, computeRewards, maskedMean, normalizeScores, ppoLoss } from "./ppo_math.ts";
import { loadFrozen } from "./reference.ts";
import { type RewardModel, createRewardModel, rightPadded } from "./reward_model.ts";
import type { AttachContext, OwnLoopParts, Stage, StageRun } from "./stage.ts";

/** TRL 0.9.6's PPOConfig, with what LLaMA-Factory sets from its arguments. */
export interface PpoConfig {
  miniBatchSize: number;
  gradientAccumulationSteps: number;
  /** miniBatchSize × gradientAccumulationSteps × ppo_buffer_size. */
  batchSize: number;
  ppoEpochs: number;
  maxGradNorm: number | null;
  initKlCoef: number;
  target: number;
  horizon: number;
  gamma: number;
  lam: number;
  cliprange: number;
  cliprangeValue: number;
  vfCoef: number;
  ratioThreshold: number;
  scoreNorm: boolean;
  whitenRewards: boolean;
}

/** The defaults TRL 0.9.6 gives and LLaMA-Factory leaves. */
export const TRL_DEFAULTS = { initKlCoef: 0.2, horizon: 10000, gamma: 1, lam: 0.95, cliprange: 0.2, cliprangeValue: 0.2, vfCoef: 0.1, ratioThreshold: 10 } as const;

/** What a PPO step works on: the policy and its value head, the reference, the optimizer. */
export interface PpoParts {
  model: CausalLM;
  vHead: ValueHead;
  /** Runs `fn` with the reference model (the policy with its adapters disabled, or a frozen model). */
  withReference<T>(fn: (model: CausalLM) => T): T;
  optimizer: Optimizer<BaseHyperParameters>;
  /** The parameters clipped to max_grad_norm. */
  clipped: Tensor[];
  device: string;
  amp: AutocastSpec | null;
  padTokenId: number;
  /** Draws the mini-batch permutations (numpy's permutation in TRL). */
  random: () => number;
}

interface Forward {
  /** [b, L−1] log-prob of each next token. */
  logprobs: Tensor;
  /** [b, L−1] values (absent for the reference). */
  values: Tensor | null;
  /** [b, L−1, V] float32 logits (when asked). */
  logits: Tensor | null;
}

/** TRL's batched_forward_pass on one chunk: logits and values at positions 0..L−2, the log-prob of each next token. */
function forwardRows(model: CausalLM, head: ValueHead | null, batch: { input_ids: number[][]; attention_mask: number[][] }, device: string, amp: AutocastSpec | null, withLogits: boolean): Forward {
  return tidy(() => {
    const ids = tensor(batch.input_ids, { device });
    const L = batch.input_ids[0]!.length;
    const padded = batch.attention_mask.some((row) => row.includes(0));
    const hidden = autocastIf(amp, () => model.hiddenStates(ids, { attentionMask: padded ? tensor(batch.attention_mask, { device }) : null }));
    const logits = autocastIf(amp, () => model.logits(hidden)).to("float32").narrow(1, 0, L - 1); // [b, L−1, V]
    const next = ids.narrow(1, 1, L - 1).unsqueeze(2); // [b, L−1, 1]
    const logprobs = logits.logSoftmax(-1).gather(2, next).squeeze(2);
    const values = head ? head.forward(hidden).to("float32").narrow(1, 0, L - 1) : null;
    return { logprobs, values, logits: withLogits ? logits : null };
  });
}

/** The response positions of each row of [B, L−1]: from the query's last token to the response's second-to-last token predicting. */
export function responseMask(queries: number[][], responses: number[][], width: number): number[][] {
  return queries.map((query, i) => {
    const start = query.length - 1;
    const end = start + responses[i]!.length;
    return Array.from({ length: width - 1 }, (_, t) => (t >= start && t < end ? 1 : 0));
  });
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
const std = (values: number[]) => {
  const m = mean(values);
  return Math.sqrt(values.reduce((a, b) => a + (b - m) ** 2, 0) / (values.length - 1));
};

/** TRL's PPOTrainer.step state: the KL controller and the running score moments. */
export class PpoStepper {
  readonly kl: AdaptiveKLController;
  readonly moments = new RunningMoments();

  constructor(
    readonly parts: PpoParts,
    readonly config: PpoConfig,
  ) {
    this.kl = new AdaptiveKLController(config.initKlCoef, config.target, config.horizon);
  }

  /** One PPO step on a batch of rollouts (queries, responses without padding) and their scores; returns TRL's statistics. */
  step(queries: number[][], responses: number[][], rawScores: number[]): Record<string, number> {
    const { parts, config } = this;
    const { model, vHead, device, amp } = parts;
    const B = queries.length;
    if (B !== config.batchSize) throw new Error(`ppo step: ${B} rollouts for a batch of ${config.batchSize}`);
    const scores = config.scoreNorm ? normalizeScores(rawScores, this.moments) : rawScores.map(Math.fround);
    const batch = rightPadded(queries, responses, parts.padTokenId);
    const L = batch.input_ids[0]!.length;
    const maskRows = responseMask(queries, responses, L);
    const klCoef = this.kl.value;
    const chunks = (fn: (rows: { input_ids: number[][]; attention_mask: number[][] }) => Forward) => {
      const outputs: Forward[] = [];
      for (let start = 0; start < B; start += config.miniBatchSize) {
        const end = Math.min(start + config.miniBatchSize, B);
        outputs.push(fn({ input_ids: batch.input_ids.slice(start, end), attention_mask: batch.attention_mask.slice(start, end) }));
      }
      return outputs;
    };
    // The rollout's old log-probs, values and reference log-probs, without autograd, in training mode as TRL runs them.
    const rollout = noGrad(() =>
      tidy(() => {
        const rowsOf = (chunks: Tensor[]) => (chunks.length === 1 ? chunks[0]! : cat(chunks, 0));
        const policy = chunks((rows) => forwardRows(model, vHead, rows, device, amp, false));
        const reference = this.parts.withReference((ref) => chunks((rows) => forwardRows(ref, null, rows, device, amp, false)));
        const logprobs = rowsOf(policy.map((f) => f.logprobs));
        const values = rowsOf(policy.map((f) => f.values!));
        const refLogprobs = rowsOf(reference.map((f) => f.logprobs));
        const mask = tensor(maskRows, { dtype: "float32", device });
        const scoreTensor = tensor(scores, { dtype: "float32", device });
        const rewards = computeRewards(scoreTensor, logprobs, refLogprobs, maskRows, klCoef);
        const advantages = computeAdvantages(values, rewards.rewards, mask, { gamma: config.gamma, lam: config.lam, whitenRewards: config.whitenRewards });
        const klList = rewards.kls.mul(mask).sum(-1); // [B]
        const stats = {
          "objective/kl": klList.mean().item(),
          "objective/kl_coef": klCoef,
          "objective/entropy": logprobs.neg().mul(mask).sum(-1).mean().item(),
          "ppo/mean_non_score_reward": maskedMean(rewards.nonScoreRewards, mask).item(),
          "ppo/mean_scores": mean(scores),
          "ppo/std_scores": B > 1 ? std(scores) : NaN,
        };
        return { logprobs, values: advantages.values, advantages: advantages.advantages, returns: advantages.returns, mask, stats };
      }),
    );
    const minibatchStats: Record<string, number>[] = [];
    try {
      const backwardBatch = config.miniBatchSize * config.gradientAccumulationSteps;
      for (let epoch = 0; epoch < config.ppoEpochs; epoch++) {
        const order = shuffled(Array.from({ length: B }, (_, i) => i), parts.random);
        for (let start = 0; start < B; start += backwardBatch) {
          const backwardIndices = order.slice(start, start + backwardBatch);
          for (let m = 0; m < backwardIndices.length; m += config.miniBatchSize) {
            const indices = backwardIndices.slice(m, m + config.miniBatchSize);
            tidy(() => {
              const index = tensor(indices, { dtype: "int64", device });
              const pick = (t: Tensor) => t.indexSelect(0, index);
              const rows = { input_ids: indices.map((i) => batch.input_ids[i]!), attention_mask: indices.map((i) => batch.attention_mask[i]!) };
              const current = forwardRows(model, vHead, rows, device, amp, true);
              const { loss, stats } = ppoLoss(
                {
                  oldLogprobs: pick(rollout.logprobs),
                  values: pick(rollout.values),
                  logits: current.logits!,
                  vpreds: current.values!,
                  logprobs: current.logprobs,
                  mask: pick(rollout.mask),
                  advantages: pick(rollout.advantages),
                  returns: pick(rollout.returns),
                },
                config,
              );
              // accelerate's backward divides by the accumulation steps.
              loss.div(config.gradientAccumulationSteps).backward();
              minibatchStats.push(stats);
            });
          }
          if (config.maxGradNorm !== null && config.maxGradNorm > 0) clipGradNorm(parts.clipped, config.maxGradNorm);
          parts.optimizer.step();
          parts.optimizer.zeroGrad();
        }
      }
    } finally {
      for (const t of [rollout.logprobs, rollout.values, rollout.advantages, rollout.returns, rollout.mask]) t.dispose();
    }
    const stats: Record<string, number> = { ...rollout.stats };
    for (const name of Object.keys(minibatchStats[0] ?? {})) stats[`ppo/${name}`] = mean(minibatchStats.map((s) => s[name]!));
    stats["ppo/val/var_explained"] = 1 - stats["ppo/val/error"]! / stats["ppo/returns/var"]!;
    const queryLengths = queries.map((q) => q.length);
    const responseLengths = responses.map((r) => r.length);
    Object.assign(stats, {
      "tokens/queries_len_mean": mean(queryLengths),
      "tokens/queries_len_std": B > 1 ? std(queryLengths) : NaN,
      "tokens/responses_len_mean": mean(responseLengths),
      "tokens/responses_len_std": B > 1 ? std(responseLengths) : NaN,
    });
    this.kl.update(stats["objective/kl"]!, config.batchSize);
    return stats;
  }
}

/** The policy's value head: from the last adapter or the model folder when one is saved there (LLaMA-Factory's load_model), else TRL's fresh head. */
function policyValueHead(context: AttachContext): ValueHead {
  const { loaded, args, device, print } = context;
  const head = new ValueHead(loaded.model.config.hidden_size).to(device);
  const source = args.model.adapter_name_or_path?.at(-1) ?? loaded.modelFolder;
  if (loadValueHead({ v_head: head }, source)) print(`value head loaded from ${source}`);
  return head;
}

/** The reference, as LLaMA-Factory's create_ref_model for PPO: ref_model, else LoRA's adapters disabled, else a frozen copy of the base. */
function ppoReference(context: AttachContext): { withReference<T>(fn: (model: CausalLM) => T): T; dispose(): void } {
  const { args, loaded, print } = context;
  const policy = loaded.model;
  const { finetuning } = args;
  if (!finetuning.ref_model && finetuning.finetuning_type === "lora") {
    if (appliedLoraConfig(policy)?.modules_to_save?.length) {
      throw new UserError(
        "the adapter-disabled reference model cannot undo additional_target modules, which train in place",
        "additional_target",
        "set ref_model to the base model folder (a frozen copy is loaded), or drop additional_target",
      );
    }
    print("reference model: the trained model with its LoRA adapters disabled");
    return { withReference: (fn) => withAdaptersDisabled(policy, () => fn(policy)), dispose: () => {} };
  }
  const folder = finetuning.ref_model ?? null;
  const bits = folder ? finetuning.ref_model_quantization_bit : null;
  print(folder ? `reference model: ${folder} (frozen${bits !== null ? `, quantized to ${bits} bits` : ""})` : `reference model: a frozen copy of ${args.model.model_name_or_path}`);
  // ref_model_quantization_bit applies to ref_model only (LLaMA-Factory's copyfrom); the base copy keeps the run's quantization.
  const model = loadFrozen(context, folder, folder ? finetuning.ref_model_adapters : null, folder ? bits : undefined);
  disableDropout(model);
  return { withReference: (fn) => fn(model), dispose: () => model.dispose() };
}

function attach(context: AttachContext): StageRun {
  const { args, loaded, device } = context;
  const { training, finetuning } = args;
  const model = loaded.model;
  const { tokenizer, template } = loaded;
  const padTokenId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
  const amp: AutocastSpec | null = training.bf16 ? { device: autocastDeviceOf(device), dtype: "bfloat16" } : null;
  const vHead = policyValueHead(context);
  let reference: ReturnType<typeof ppoReference> | null = null;
  let reward: RewardModel | null = null;
  try {
    reference = ppoReference(context);
    reward = createRewardModel(context, model, tokenizer, padTokenId, amp);
  } catch (error) {
    reference?.dispose();
    vHead.dispose();
    throw error;
  }
  const ref = reference;
  const rewardModel = reward;

  const train = async (parts: OwnLoopParts): Promise<void> => {
    const options = trainerOptionsFromArgs(args, { device, resumeFrom: null, print: context.print, warn: parts.warn, reporters: [], effectiveTokens: null, computesAccuracy: false, progressBar: parts.progressBar });
    const mini = training.per_device_train_batch_size;
    const accumulation = training.gradient_accumulation_steps;
    const batchSize = mini * accumulation * finetuning.ppo_buffer_size;
    const rows = parts.rows;
    if (rows.length < batchSize) {
      throw new UserError(
        `PPO needs at least one batch of ${batchSize} prompts (per_device_train_batch_size ${mini} × gradient_accumulation_steps ${accumulation} × ppo_buffer_size ${finetuning.ppo_buffer_size}); the dataset has ${rows.length}`,
        "ppo_buffer_size",
        "use more prompts, or a smaller batch",
      );
    }
    // LLaMA-Factory's ppo_train and create_scheduler: the dataloader drops the last incomplete batch.
    const stepsInEpoch = Math.floor(rows.length / batchSize);
    const maxSteps = training.max_steps > 0 ? training.max_steps : Math.ceil(training.num_train_epochs * stepsInEpoch);
    // The logged epoch is step / steps_in_epoch, which LLaMA-Factory sets to max_steps when max_steps is given.
    const epochLength = training.max_steps > 0 ? training.max_steps : stepsInEpoch;
    const schedulerSteps = training.max_steps > 0 ? training.max_steps : training.num_train_epochs * Math.ceil(rows.length / batchSize);
    const trainable: [string, Tensor][] = [...model.namedParameters({ trainableOnly: true }), ...vHead.namedParameters().map(([name, value]): [string, Tensor] => [`v_head.${name}`, value])];
    const log = new RunLog(training.output_dir, context.print, false, [], { progress: !options.disableTqdm, bar: parts.progressBar });
    const optimizer = createOptimizer(trainable, options, (line) => log.info(line));
    const scheduler = getScheduler(options.lrSchedulerType, optimizer, {
      numWarmupSteps: warmupSteps(schedulerSteps, { warmupSteps: options.warmupSteps, warmupRatio: options.warmupRatio }),
      numTrainingSteps: schedulerSteps,
      schedulerSpecificKwargs: options.lrSchedulerKwargs,
    });
    const wantsTensorBoard = finetuning.ppo_logger === "tensorboard" || training.report_to.some((name) => name === "tensorboard" || name === "all");
    const board = wantsTensorBoard ? new EventFileWriter(join(training.logging_dir ?? defaultLoggingDir(training.output_dir), "trl")) : null;
    const stepper = new PpoStepper(
      { model, vHead, withReference: ref.withReference, optimizer, clipped: trainable.map(([, t]) => t), device, amp, padTokenId, random: seededRandom(training.seed) },
      {
        ...TRL_DEFAULTS,
        miniBatchSize: mini,
        gradientAccumulationSteps: accumulation,
        batchSize,
        ppoEpochs: finetuning.ppo_epochs,
        maxGradNorm: training.max_grad_norm,
        target: finetuning.ppo_target,
        scoreNorm: finetuning.ppo_score_norm,
        whitenRewards: finetuning.ppo_whiten_rewards,
      },
    );
    const settings = { ...generationSettingsFromArgs(args.generating), eosTokenId: template.getStopTokenIds(tokenizer), padTokenId };
    const logHistory: Record<string, number>[] = [];
    let lossSum = 0;
    let rewardSum = 0;
    let counted = 0;
    // The rollouts' tokens (prompt and answer), for the tokens/s of the log line and the bar.
    let totalTokens = 0;
    let tokensSinceLog = 0;
    let timeAtLastLog = log.elapsed();
    log.info(
      `PPO: ${rows.length} prompts, ${maxSteps} steps of ${batchSize} rollouts (mini-batch ${mini} × accumulation ${accumulation} × ppo_buffer_size ${finetuning.ppo_buffer_size}), ${finetuning.ppo_epochs} ppo_epochs, ${trainable.reduce((n, [, t]) => n + t.shape.reduce((a, b) => a * b, 1), 0)} trainable parameters`,
    );
    /** HF's TrainerState as LLaMA-Factory's save_state writes it for PPO. */
    const trainerState = (globalStep: number): TrainerStateJson => ({
      global_step: globalStep,
      max_steps: maxSteps,
      num_train_epochs: training.num_train_epochs,
      epoch: globalStep / epochLength,
      logging_steps: training.logging_steps,
      save_steps: training.save_steps,
      eval_steps: null,
      train_batch_size: mini,
      total_flos: 0,
      log_history: logHistory,
      best_metric: null,
      best_model_checkpoint: null,
      is_local_process_zero: true,
      is_world_process_zero: true,
      // Where the prompts stand (PPO does not resume from it): the epoch and the mini-batches taken in it.
      lmf_data_position: { epoch: Math.floor(globalStep / stepsInEpoch), microBatch: (globalStep % stepsInEpoch) * (batchSize / mini) },
      lmf_total_tokens: 0,
    });
    // A fraction below 1 is that share of all steps, as the trainer reads logging_steps and save_steps.
    const loggingSteps = absoluteSteps(options.loggingSteps, maxSteps);
    const saveSteps = absoluteSteps(options.saveSteps, maxSteps);
    let order: number[] = [];
    try {
      for (let step = 0; step < maxSteps; step++) {
        const epoch = Math.floor(step / stepsInEpoch);
        if (step % stepsInEpoch === 0) order = shuffledOrder(rows.length, options.dataSeed + epoch);
        const start = (step % stepsInEpoch) * batchSize;
        const prompts = order.slice(start, start + batchSize).map((i) => rows[i]!.input_ids);
        // Rollouts: generation and scores in evaluation mode, mini-batch by mini-batch.
        model.eval();
        vHead.eval();
        const queries: number[][] = [];
        const responses: number[][] = [];
        const scores: number[] = [];
        for (let m = 0; m < batchSize; m += mini) {
          const miniPrompts = prompts.slice(m, m + mini);
          const { sequences } = generate(model, miniPrompts, settings);
          const miniResponses = sequences.map((sequence) => (sequence.length ? sequence : [padTokenId]));
          queries.push(...miniPrompts);
          responses.push(...miniResponses);
          scores.push(...(await rewardModel.scores(miniPrompts, miniResponses)).map(Math.fround));
        }
        model.train();
        vHead.train();
        const stats = stepper.step(queries, responses, scores);
        const lr = scheduler.getLastLr()[0]!;
        stats["ppo/learning_rate"] = lr;
        stats["env/reward_mean"] = mean(scores);
        stats["env/reward_std"] = scores.length > 1 ? std(scores) : NaN;
        scheduler.step();
        lossSum += stats["ppo/loss/total"]! * scores.length;
        rewardSum += mean(scores) * scores.length;
        counted += scores.length;
        const globalStep = step + 1;
        const stepTokens = queries.reduce((n, query, i) => n + query.length + responses[i]!.length, 0);
        totalTokens += stepTokens;
        tokensSinceLog += stepTokens;
        // TRL's log_stats: the step counter moves before each TensorBoard log, so the first step logs at 1.
        if (board) for (const [name, value] of Object.entries(stats)) if (Number.isFinite(value)) board.addScalar(name, value, globalStep);
        if (loggingSteps > 0 && globalStep % loggingSteps === 0) {
          const entry = { loss: Math.round((lossSum / counted) * 1e4) / 1e4, reward: Math.round((rewardSum / counted) * 1e4) / 1e4, learning_rate: lr, epoch: Math.round((step / epochLength) * 100) / 100 };
          logHistory.push({ ...entry, step });
          const now = log.elapsed();
          log.step({ step: globalStep, totalSteps: maxSteps, epoch: entry.epoch, loss: entry.loss, lr, metrics: { reward: entry.reward }, tokensPerSecond: tokensSinceLog / Math.max(now - timeAtLastLog, 1e-9), totalTokens, stepsThisRun: globalStep, logs: entry });
          lossSum = rewardSum = counted = tokensSinceLog = 0;
          timeAtLastLog = now;
        }
        log.tick({ step: globalStep, totalSteps: maxSteps, epoch: globalStep / epochLength, tokens: stepTokens });
        // LLaMA-Factory saves the weights every save_steps (its loop reads no save_strategy); written
        // atomically as every checkpoint here, and rotated by save_total_limit.
        if (saveSteps > 0 && globalStep % saveSteps === 0) {
          saveCheckpoint(training.output_dir, { saveModel: parts.saveModel, optimizer, scheduler, state: trainerState(globalStep) }, true);
          rotateCheckpoints(training.output_dir, training.save_total_limit);
        }
      }
      parts.saveModel(training.output_dir);
      writeFileSync(join(training.output_dir, "trainer_state.json"), JSON.stringify(trainerState(maxSteps), null, 2) + "\n");
      if (finetuning.plot_loss) for (const file of plotLoss(training.output_dir, logHistory, ["loss", "reward"])) log.info(`wrote ${file}`);
    } finally {
      board?.close();
      optimizer.dispose();
      log.close();
    }
  };

  return {
    loss: () => {
      throw new Error("stage ppo trains in its own loop");
    },
    train,
    save: (folder) => saveValueHead({ v_head: vHead }, folder),
    dispose: () => {
      rewardModel.dispose();
      ref.dispose();
      vHead.dispose();
    },
  };
}

export const ppo: Stage = {
  name: "ppo",
  processor: (options) => processorSpec("makeUnsupervisedProcessor", options),
  // Prompts are left-padded for generation (LLaMA-Factory sets padding_side left for PPO).
  collate: (rows, options) => collateSupervised(rows as unknown as SupervisedRow[], { ...options, paddingSide: "left" }),
  lossDenominator: (batches) => batches.reduce((sum, batch) => sum + batch.input_ids.length, 0),
  attach,
  plotKeys: ["loss", "reward"],
};

