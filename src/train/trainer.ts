// The one training loop, after Hugging Face's Trainer as LLaMA-Factory drives it: seeded shuffled
// batches, gradient accumulation with the loss averaged over every trained token of the
// accumulated batch, clipping, AdamW with HF's no-decay groups, the named LR schedule, gradient
// checkpointing, logging, evaluation, checkpoints and exact resume. Each step runs in `tidy`.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import type { CausalLM } from "../model/causal_lm.ts";
import { checkpointedBackward } from "../model/patches/checkpointing.ts";
import {
  AdamW,
  type BaseHyperParameters,
  type LambdaLR,
  type Optimizer,
  SGD,
  type Tensor,
  clipGradNorm,
  decayParameterGroups,
  getScheduler,
  noGrad,
  seededRandom,
  shuffled,
  tensor,
  tidy,
  warmupSteps,
} from "../torch/index.ts";
import {
  type DataPosition,
  type TrainerStateJson,
  loadTrainingState,
  readTrainerState,
  rotateCheckpoints,
  saveCheckpoint,
} from "./checkpoint.ts";
import { RunLog, type RunReporter, saveMetrics } from "./logging.ts";
import { plotLoss } from "./plot.ts";
import type { CollatedBatch, StageLoss, TrainingExample } from "./stages/stage.ts";

export type { CollatedBatch, StageLoss, TrainingExample } from "./stages/stage.ts";

export interface TrainerOptions {
  outputDir: string;
  batchSize: number;
  evalBatchSize?: number;
  gradientAccumulationSteps: number;
  learningRate: number;
  weightDecay: number;
  /** The HF optimizer name: adamw_torch (default), adamw_torch_fused, adamw_hf or sgd. */
  optim?: string;
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
  maxGradNorm: number;
  numTrainEpochs: number;
  /** > 0 overrides numTrainEpochs. */
  maxSteps: number;
  lrSchedulerType: string;
  lrSchedulerKwargs?: Record<string, number>;
  warmupSteps: number;
  warmupRatio: number;
  loggingSteps: number;
  saveStrategy: "no" | "steps" | "epoch";
  saveSteps: number;
  saveTotalLimit: number | null;
  saveOnlyModel: boolean;
  evalStrategy: "no" | "steps" | "epoch";
  evalSteps: number | null;
  dataSeed: number;
  gradientCheckpointing: boolean;
  /** Where batches go: the model's device ("cpu", "cuda", "cuda:N"). */
  device?: string;
  /** plot_loss: write training_loss.png (and training_eval_loss.png) at the end. */
  plotLoss?: boolean;
  /** A checkpoint folder to resume from exactly. */
  resumeFrom: string | null;
  /** Stop after this many optimizer steps in this process (tests simulate a kill with it). */
  stopAfterSteps?: number;
  print?: (line: string) => void;
  /** report_to: trackers that get each logged step's scalars; closed when training ends. */
  reporters?: readonly RunReporter[];
}

export interface TrainerParts<Batch extends CollatedBatch = CollatedBatch> {
  model: CausalLM;
  train: TrainingExample[];
  eval?: TrainingExample[] | null;
  collate: (rows: TrainingExample[]) => Batch;
  stage: StageLoss<Batch>;
  /** Trainable parameters outside the model (a stage's value head), optimized with the model's. */
  extraParameters?: [string, Tensor][];
  /** Writes the trained weights (the full model or the adapter) into a folder. */
  saveModel: (folder: string) => void;
  /** Loads the weights a checkpoint holds back into the model (for resume). */
  loadModel: (checkpoint: string) => void;
  /**
   * The rows came from a stream (`streaming: true`), already shuffled through its buffer: train
   * them in that order, as the HF Trainer does with an IterableDataset (no sampler).
   */
  inStreamOrder?: boolean;
}

export interface TrainResult {
  globalStep: number;
  trainLoss: number;
  /** The loss of every optimizer step run by this process, in order. */
  stepLosses: number[];
  logHistory: Record<string, number>[];
  metrics: Record<string, number>;
}

/** A seeded permutation of 0..n-1 (Fisher-Yates over mulberry32), the epoch's data order. */
export function shuffledOrder(n: number, seed: number): number[] {
  return shuffled(Array.from({ length: n }, (_, i) => i), seededRandom(seed));
}

/** The mask as a tensor, or null when nothing is padded (then the fused causal kernel applies). */
function maskOrNull(attentionMask: number[][], device: string): Tensor | null {
  return attentionMask.every((row) => row.every((v) => v === 1)) ? null : tensor(attentionMask, { device });
}

/** Metrics a stage records per batch, averaged (by the weights given) over the batches they came from. */
class MetricMeans {
  private readonly sums = new Map<string, [number, number]>();
  constructor(private readonly derive?: (means: Record<string, number>) => Record<string, number>) {}
  readonly record = (name: string, value: number, weight = 1): void => {
    const [sum, count] = this.sums.get(name) ?? [0, 0];
    this.sums.set(name, [sum + value * weight, count + weight]);
  };
  /** The means so far with what the stage derives from them (names prefixed), and a fresh start. */
  take(prefix = ""): Record<string, number> {
    const means = Object.fromEntries([...this.sums].filter(([, [, count]]) => count > 0).map(([name, [sum, count]]) => [name, sum / count]));
    this.sums.clear();
    const all = { ...means, ...this.derive?.(means) };
    return Object.fromEntries(Object.entries(all).map(([name, value]) => [prefix + name, value]));
  }
}

export interface BatchPassOptions {
  device: string;
  /** What the summed loss is divided by (the stage's lossDenominator over the accumulated group). */
  denominator: number;
  /** Training: backpropagate (gradients accumulate in `.grad`); otherwise no graph is built. */
  backward: boolean;
  gradientCheckpointing?: boolean;
  record?: (name: string, value: number, weight?: number) => void;
}

/**
 * The one batch -> forward -> loss path, for training (plain or gradient-checkpointed) and
 * evaluation: every field of the batch the model reads (ids, padding or neat-packing mask,
 * positions) reaches it here, and the stage turns the last hidden states into its loss.
 * Returns the loss value.
 */
export function batchLoss<Batch extends CollatedBatch>(model: CausalLM, batch: Batch, stage: StageLoss<Batch>, options: BatchPassOptions): number {
  const { device } = options;
  return tidy(() => {
    const ids = tensor(batch.input_ids, { device });
    const forward = {
      attentionMask: maskOrNull(batch.attention_mask, device),
      positionIds: batch.position_ids ? tensor(batch.position_ids, { device }) : null,
    };
    const labels = tensor(batch.labels, { device });
    const record = options.record ?? (() => {});
    const lossOf = (hidden: Tensor) => stage.loss({ model, hidden, batch, labels, denominator: options.denominator, record });
    if (!options.backward) return noGrad(() => lossOf(model.hiddenStates(ids, forward)).item());
    if (options.gradientCheckpointing) return checkpointedBackward(model, ids, lossOf, forward);
    // Whatever the loss made on the way (logits, their float copy) is freed before backward.
    const loss = tidy(() => lossOf(model.hiddenStates(ids, forward)));
    loss.backward();
    return loss.item();
  });
}

function tokensIn(batch: CollatedBatch): number {
  return batch.attention_mask.reduce((sum, row) => sum + row.reduce((a, b) => a + b, 0), 0);
}

/**
 * The HF Trainer's optimizer for `optim` over its no-decay groups: torch AdamW for the adamw_*
 * names (fused or HF's own: the same update), plain SGD (lr only, momentum 0) for `sgd`.
 */
function createOptimizer(trainable: [string, Tensor][], options: TrainerOptions): Optimizer<BaseHyperParameters> {
  const groups = decayParameterGroups(trainable, options.weightDecay);
  switch (options.optim ?? "adamw_torch") {
    case "adamw_torch":
    case "adamw_torch_fused":
    case "adamw_hf":
      return new AdamW(groups, {
        lr: options.learningRate,
        betas: [options.adamBeta1, options.adamBeta2],
        eps: options.adamEpsilon,
        weightDecay: options.weightDecay,
      });
    case "sgd":
      return new SGD(groups, { lr: options.learningRate });
    default:
      throw new UserError(`optim ${options.optim} is not built yet`, "optim", "use adamw_torch or sgd");
  }
}

export function train<Batch extends CollatedBatch>(parts: TrainerParts<Batch>, options: TrainerOptions): TrainResult {
  const { model } = parts;
  const device = options.device ?? "cpu";
  mkdirSync(options.outputDir, { recursive: true });
  const log = new RunLog(options.outputDir, options.print, options.resumeFrom !== null, options.reporters);
  const accumulation = Math.max(1, options.gradientAccumulationSteps);
  const batchesPerEpoch = Math.ceil(parts.train.length / options.batchSize);
  const stepsPerEpoch = Math.max(1, Math.ceil(batchesPerEpoch / accumulation));
  const totalSteps = options.maxSteps > 0 ? options.maxSteps : Math.ceil(options.numTrainEpochs * stepsPerEpoch);
  const numEpochs = Math.ceil(totalSteps / stepsPerEpoch);

  const optimizer = createOptimizer([...model.namedParameters({ trainableOnly: true }), ...(parts.extraParameters ?? [])], options);
  const scheduler: LambdaLR = getScheduler(options.lrSchedulerType, optimizer, {
    numWarmupSteps: warmupSteps(totalSteps, { warmupSteps: options.warmupSteps, warmupRatio: options.warmupRatio }),
    numTrainingSteps: totalSteps,
    schedulerSpecificKwargs: options.lrSchedulerKwargs,
  });

  try {
    let globalStep = 0;
    let position: DataPosition = { epoch: 0, microBatch: 0 };
    let totalTokens = 0;
    let logHistory: Record<string, number>[] = [];
    if (options.resumeFrom) {
      const saved = readTrainerState(options.resumeFrom);
      parts.loadModel(options.resumeFrom);
      loadTrainingState(options.resumeFrom, optimizer, scheduler);
      globalStep = saved.global_step;
      position = saved.lmf_data_position;
      totalTokens = saved.lmf_total_tokens;
      logHistory = saved.log_history;
      log.info(`resuming from ${options.resumeFrom} at step ${globalStep}`);
    }

    const epochAt = (epoch: number, microBatch: number) => epoch + microBatch / batchesPerEpoch;
    const trainerState = (): TrainerStateJson => ({
      global_step: globalStep,
      max_steps: totalSteps,
      num_train_epochs: numEpochs,
      epoch: epochAt(position.epoch, position.microBatch),
      logging_steps: options.loggingSteps,
      save_steps: options.saveSteps,
      eval_steps: options.evalSteps,
      train_batch_size: options.batchSize,
      total_flos: 0,
      log_history: logHistory,
      best_metric: null,
      best_model_checkpoint: null,
      is_local_process_zero: true,
      is_world_process_zero: true,
      lmf_data_position: position,
      lmf_total_tokens: totalTokens,
    });
    const checkpoint = () => {
      saveCheckpoint(options.outputDir, { saveModel: parts.saveModel, optimizer, scheduler, state: trainerState() }, options.saveOnlyModel);
      rotateCheckpoints(options.outputDir, options.saveTotalLimit);
    };
    const evaluateNow = (): number | undefined => {
      if (!parts.eval?.length) return undefined;
      const { loss: evalLoss, metrics: evalMetrics } = evaluate(model, parts.eval, parts, options.evalBatchSize ?? options.batchSize, device);
      const record = { eval_loss: evalLoss, ...evalMetrics, epoch: epochAt(position.epoch, position.microBatch), step: globalStep };
      logHistory.push(record);
      log.step({ step: globalStep, totalSteps, epoch: record.epoch, evalLoss, metrics: evalMetrics, tokensPerSecond: 0, totalTokens, stepsThisRun: stepsThisRun || 1 });
      return evalLoss;
    };

    log.info(
      `training: ${parts.train.length} examples, ${numEpochs} epoch(s), ${totalSteps} steps ` +
        `(batch ${options.batchSize} x accumulation ${accumulation}), ${model.numParameters({ trainableOnly: true })} trainable parameters`,
    );
    model.train();
    const stepLosses: number[] = [];
    let stepsThisRun = 0;
    let lossSinceLog = 0;
    const metricsSinceLog = new MetricMeans(parts.stage.deriveMetrics);
    let stepsSinceLog = 0;
    let tokensSinceLog = 0;
    let timeAtLastLog = log.elapsed();
    let stopped = false;

    for (let epoch = position.epoch; epoch < numEpochs && globalStep < totalSteps && !stopped; epoch++) {
      const order = parts.inStreamOrder ? [...parts.train.keys()] : shuffledOrder(parts.train.length, options.dataSeed + epoch);
      let microBatch = epoch === position.epoch ? position.microBatch : 0;
      while (microBatch < batchesPerEpoch && globalStep < totalSteps) {
        const group: Batch[] = [];
        for (let k = microBatch; k < Math.min(microBatch + accumulation, batchesPerEpoch); k++) {
          const rows = order.slice(k * options.batchSize, (k + 1) * options.batchSize).map((i) => parts.train[i]!);
          group.push(parts.collate(rows));
        }
        const denominator = parts.stage.lossDenominator(group);
        let stepLoss = 0;
        for (const batch of group) {
          stepLoss += batchLoss(model, batch, parts.stage, { device, denominator, backward: true, gradientCheckpointing: options.gradientCheckpointing, record: metricsSinceLog.record });
          tokensSinceLog += tokensIn(batch);
        }
        // HF logs the total norm before clipping, of the last step before each log.
        const gradNorm = options.maxGradNorm > 0 ? clipGradNorm(optimizer.paramGroups.flatMap((g) => g.params), options.maxGradNorm) : undefined;
        optimizer.step();
        scheduler.step();
        optimizer.zeroGrad();

        globalStep += 1;
        stepsThisRun += 1;
        microBatch += group.length;
        position = microBatch >= batchesPerEpoch ? { epoch: epoch + 1, microBatch: 0 } : { epoch, microBatch };
        stepLosses.push(stepLoss);
        lossSinceLog += stepLoss;
        stepsSinceLog += 1;

        if (globalStep % options.loggingSteps === 0 || globalStep === totalSteps) {
          const now = log.elapsed();
          totalTokens += tokensSinceLog;
          const loss = lossSinceLog / stepsSinceLog;
          const lr = scheduler.getLastLr()[0]!;
          const epochNow = epochAt(epoch, microBatch);
          const stageMetrics = metricsSinceLog.take();
          logHistory.push({
            loss: Math.round(loss * 1e4) / 1e4,
            ...(gradNorm !== undefined && { grad_norm: gradNorm }),
            ...stageMetrics,
            learning_rate: lr,
            epoch: Math.round(epochNow * 100) / 100,
            step: globalStep,
          });
          log.step({ step: globalStep, totalSteps, epoch: epochNow, loss, lr, gradNorm, metrics: stageMetrics, tokensPerSecond: tokensSinceLog / Math.max(now - timeAtLastLog, 1e-9), totalTokens, stepsThisRun });
          lossSinceLog = 0;
          stepsSinceLog = 0;
          tokensSinceLog = 0;
          timeAtLastLog = now;
        }
        if (options.evalStrategy === "steps" && options.evalSteps && globalStep % options.evalSteps === 0) evaluateNow();
        if (options.saveStrategy === "steps" && globalStep % options.saveSteps === 0) checkpoint();
        if (options.stopAfterSteps !== undefined && stepsThisRun >= options.stopAfterSteps) {
          stopped = true;
          break;
        }
      }
      if (!stopped && position.microBatch === 0) {
        if (options.evalStrategy === "epoch") evaluateNow();
        if (options.saveStrategy === "epoch") checkpoint();
      }
    }

    totalTokens += tokensSinceLog;
    const trainLoss = logHistory.filter((r) => r.loss !== undefined).reduce((s, r, _, all) => s + r.loss! / all.length, 0);
    const runtime = log.elapsed();
    const metrics: Record<string, number> = {
      epoch: epochAt(position.epoch, position.microBatch),
      total_flos: 0,
      train_loss: stepLosses.length ? stepLosses.reduce((a, b) => a + b, 0) / stepLosses.length : trainLoss,
      train_runtime: Math.round(runtime * 1e4) / 1e4,
      train_samples_per_second: Math.round(((stepsThisRun * accumulation * options.batchSize) / runtime) * 1e3) / 1e3,
      train_steps_per_second: Math.round((stepsThisRun / runtime) * 1e3) / 1e3,
    };
    if (!stopped) {
      parts.saveModel(options.outputDir);
      writeFileSync(join(options.outputDir, "trainer_state.json"), JSON.stringify(trainerState(), null, 2) + "\n");
      saveMetrics(options.outputDir, "train", metrics);
      if (options.plotLoss) for (const file of plotLoss(options.outputDir, logHistory, parts.stage.plotKeys)) log.info(`wrote ${file}`);
    }
    return { globalStep, trainLoss: metrics.train_loss!, stepLosses, logHistory, metrics };
  } finally {
    // Also when a step throws: the optimizer's state tensors are freed and the trackers' files closed either way.
    optimizer.dispose();
    log.close();
  }
}

/**
 * The evaluation loss over a set, batch by batch without gradients, through the same path as
 * training: the summed losses divided by the stage's denominator over every batch (the mean token
 * loss for a causal LM), and the means of the metrics the stage records.
 */
export function evaluate<Batch extends CollatedBatch>(
  model: CausalLM,
  rows: TrainingExample[],
  parts: Pick<TrainerParts<Batch>, "collate" | "stage">,
  batchSize: number,
  device = "cpu",
): { loss: number; metrics: Record<string, number> } {
  const wasTraining = model.training;
  model.eval();
  const metrics = new MetricMeans(parts.stage.deriveMetrics);
  const batches: Batch[] = [];
  let lossSum = 0;
  try {
    for (let start = 0; start < rows.length; start += batchSize) {
      const batch = parts.collate(rows.slice(start, start + batchSize));
      lossSum += batchLoss(model, batch, parts.stage, { device, denominator: 1, backward: false, record: metrics.record });
      batches.push(batch);
    }
  } finally {
    model.train(wasTraining);
  }
  return { loss: lossSum / Math.max(parts.stage.lossDenominator(batches), 1), metrics: metrics.take("eval_") };
}
