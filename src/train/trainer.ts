// The one training loop, after Hugging Face's Trainer as LLaMA-Factory drives it: seeded shuffled
// (or sequential) batches, gradient accumulation with the loss averaged over every trained token of
// the accumulated batch, clipping, the optimizer and LR schedule, gradient checkpointing, and
// DefaultFlowCallback's logging / evaluation / checkpoint decisions with best-model tracking,
// early stopping and exact resume. Each step runs in `tidy`. Under data parallelism (a
// DataParallel of W ranks, src/train/distributed/) each rank reads its shard of every global batch,
// the loss is normalised by the tokens of the whole global batch, gradients are summed over the
// ranks once per step, and only rank 0 writes; one process is W = 1 on the same path.
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import type { CausalLM } from "../model/causal_lm.ts";
import { checkpointedBackward } from "../model/patches/checkpointing.ts";
import {
  type AutocastSpec,
  type DType,
  type LambdaLR,
  type Tensor,
  autocastDeviceOf,
  autocastIf,
  clipGradNorm,
  getRngState,
  getScheduler,
  noGrad,
  seededRandom,
  shuffled,
  tensor,
  tidy,
  warmupSteps,
} from "../torch/index.ts";
import {
  CHECKPOINT_PREFIX,
  type DataPosition,
  type TrainerStateJson,
  listCheckpoints,
  loadTrainingState,
  readTrainerState,
  rotateCheckpoints,
  saveCheckpoint,
} from "./checkpoint.ts";
import { type DataParallel, SINGLE_PROCESS } from "./distributed/data_parallel.ts";
import { RunLog, type RunReporter, saveMetrics } from "./logging.ts";
import { activateNeftune } from "./neftune.ts";
import { createOptimizer } from "./optimizer.ts";
import { plotLoss } from "./plot.ts";
import type { ProgressBar } from "../terminal/progress.ts";
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
  /** LoRA+ (loraplus_lr_ratio, loraplus_lr_embedding): LLaMA-Factory's parameter groups. */
  loraplus?: { ratio: number; embeddingLr: number } | null;
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
  /** logging_strategy: every loggingSteps steps (default), at each epoch's end, or never. */
  loggingStrategy?: "no" | "steps" | "epoch";
  /** Below 1: a fraction of all steps (HF rounds it up). */
  loggingSteps: number;
  loggingFirstStep?: boolean;
  /** `best`: a checkpoint whenever an evaluation finds a new best metric. */
  saveStrategy: "no" | "steps" | "epoch" | "best";
  /** Below 1: a fraction of all steps. */
  saveSteps: number;
  saveTotalLimit: number | null;
  saveOnlyModel: boolean;
  evalStrategy: "no" | "steps" | "epoch";
  /** Below 1: a fraction of all steps. */
  evalSteps: number | null;
  /** No evaluation before this many steps (eval_strategy steps) or epochs (epoch). */
  evalDelay?: number;
  evalOnStart?: boolean;
  /** Evaluation records the stage's prediction metrics (compute_accuracy's eval_accuracy). */
  predictionMetrics?: boolean;
  loadBestModelAtEnd?: boolean;
  /** The metric that ranks evaluations (`eval_` is prefixed when missing); null: none tracked. */
  metricForBestModel?: string | null;
  greaterIsBetter?: boolean | null;
  /** early_stopping_steps: stop after this many evaluations without a better metric. */
  earlyStoppingPatience?: number | null;
  /** Count the input tokens (padding included, as HF) into the logs and trainer_state.json. */
  includeNumInputTokensSeen?: boolean;
  /** The effective tokens of one pass over the training rows: effective_tokens_per_sec in the train results. */
  effectiveTokens?: number | null;
  dataSeed: number;
  /** false: the rows in their order (disable_shuffling, a sequential sampler). */
  shuffle?: boolean;
  /** dataloader_drop_last: the last incomplete batch of an epoch (and of an evaluation) is dropped. */
  dropLast?: boolean;
  gradientCheckpointing: boolean;
  /**
   * bf16 as HF's Trainer: the forward passes of training and evaluation run under autocast to this
   * dtype (float32 trainable weights, gradients and optimizer states); null or unset for none.
   */
  autocast?: DType | null;
  /** NEFTune noise on the input embeddings during training. */
  neftuneNoiseAlpha?: number | null;
  /** Where batches go: the model's device ("cpu", "cuda", "cuda:N"). */
  device?: string;
  /** plot_loss: write training_loss.png (and training_eval_loss.png) at the end. */
  plotLoss?: boolean;
  /** A checkpoint folder to resume from exactly. */
  resumeFrom: string | null;
  /** Stop after this many optimizer steps in this process (tests simulate a kill with it). */
  stopAfterSteps?: number;
  print?: (line: string) => void;
  /** Where notices go (WARNING level); `print` by default. */
  warn?: (line: string) => void;
  /** disable_tqdm: each log is printed as HF's PrinterCallback prints it, without the progress line. */
  disableTqdm?: boolean;
  /** On a terminal: the progress bar redrawn after each optimizer step (`print` should go through its `line`). */
  progressBar?: ProgressBar | null;
  /** report_to: trackers that get each logged step's scalars; closed when training ends. */
  reporters?: readonly RunReporter[];
  /** This process's part in data parallelism (one process when absent). */
  parallel?: DataParallel;
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
  /** The means so far over every rank's records, with what the stage derives from them (names prefixed), and a fresh start. */
  take(prefix = "", parallel: DataParallel = SINGLE_PROCESS): Record<string, number> {
    const merged = new Map<string, [number, number]>();
    for (const entries of parallel.allGatherJson([...this.sums])) {
      for (const [name, [sum, count]] of entries) {
        const [total, counted] = merged.get(name) ?? [0, 0];
        merged.set(name, [total + sum, counted + count]);
      }
    }
    this.sums.clear();
    const means = Object.fromEntries([...merged].filter(([, [, count]]) => count > 0).map(([name, [sum, count]]) => [name, sum / count]));
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
  /** bf16: the forward passes run under autocast (torch.autocast), backward outside it. */
  autocast?: AutocastSpec | null;
  record?: (name: string, value: number, weight?: number) => void;
  /** Evaluation: the stage also records its prediction metrics (compute_accuracy). */
  predictionMetrics?: boolean;
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
    const lossOf = (hidden: Tensor) => stage.loss({ model, hidden, batch, labels, denominator: options.denominator, record, predictionMetrics: options.predictionMetrics });
    const amp = <T>(fn: () => T): T => autocastIf(options.autocast, fn);
    if (!options.backward) return noGrad(() => amp(() => lossOf(model.hiddenStates(ids, forward))).item());
    if (options.gradientCheckpointing) return checkpointedBackward(model, ids, lossOf, { ...forward, autocast: options.autocast });
    // Whatever the loss made on the way (logits, their float copy) is freed before backward,
    // which runs outside autocast (its ops follow the dtypes the forward chose).
    const loss = tidy(() => amp(() => lossOf(model.hiddenStates(ids, forward))));
    loss.backward();
    return loss.item();
  });
}

function tokensIn(batch: CollatedBatch): number {
  return batch.attention_mask.reduce((sum, row) => sum + row.reduce((a, b) => a + b, 0), 0);
}

/** HF's TrainerState.compute_steps: an interval below 1 is that fraction of all steps, rounded up. */
export function absoluteSteps(interval: number, totalSteps: number): number {
  return interval > 0 && interval < 1 ? Math.ceil(totalSteps * interval) : interval;
}

/** What the HF Trainer's callbacks ask of a step or an epoch's end. */
interface Control {
  log: boolean;
  evaluate: boolean;
  save: boolean;
}

/** HF's `<metric_for_best_model>` key in the evaluation metrics: `eval_` prefixed unless given. */
function metricKey(metric: string): string {
  return metric.startsWith("eval_") ? metric : `eval_${metric}`;
}

export function train<Batch extends CollatedBatch>(parts: TrainerParts<Batch>, options: TrainerOptions): TrainResult {
  const { model } = parts;
  const device = options.device ?? "cpu";
  const parallel = options.parallel ?? SINGLE_PROCESS;
  const amp: AutocastSpec | null = options.autocast ? { device: autocastDeviceOf(device), dtype: options.autocast } : null;
  const warn = options.warn ?? options.print ?? ((line: string) => process.stderr.write(line + "\n"));
  const accumulation = Math.max(1, options.gradientAccumulationSteps);
  const dropLast = options.dropLast ?? false;
  // The batches this rank reads per epoch (accelerate's sharded data loader's length).
  const batchesPerEpoch = parallel.trainBatchCount(parts.train.length, options.batchSize, dropLast);
  if (batchesPerEpoch === 0) {
    throw new UserError(`dataloader_drop_last leaves no batch: ${parts.train.length} training examples are fewer than one batch of ${options.batchSize}`, "dataloader_drop_last", "set dataloader_drop_last: false or a smaller per_device_train_batch_size");
  }
  const stepsPerEpoch = Math.max(1, Math.ceil(batchesPerEpoch / accumulation));
  const totalSteps = options.maxSteps > 0 ? options.maxSteps : Math.ceil(options.numTrainEpochs * stepsPerEpoch);
  const numEpochs = Math.ceil(totalSteps / stepsPerEpoch);
  const loggingStrategy = options.loggingStrategy ?? "steps";
  const loggingSteps = absoluteSteps(options.loggingSteps, totalSteps);
  const saveSteps = absoluteSteps(options.saveSteps, totalSteps);
  const evalSteps = options.evalSteps === null ? null : absoluteSteps(options.evalSteps, totalSteps);
  const evalDelay = options.evalDelay ?? 0;
  const metric = options.metricForBestModel ? metricKey(options.metricForBestModel) : null;
  const greaterIsBetter = options.greaterIsBetter ?? (metric !== null && !metric.endsWith("loss"));
  const patience = options.earlyStoppingPatience ?? null;

  // Only rank 0 writes and prints; the other ranks keep the same bookkeeping quietly.
  if (parallel.isMain) mkdirSync(options.outputDir, { recursive: true });
  const log = parallel.isMain
    ? new RunLog(options.outputDir, options.print, options.resumeFrom !== null, options.reporters, { progress: !options.disableTqdm, bar: options.progressBar })
    : new RunLog(options.outputDir, () => {}, true, [], { progress: true, writes: false });
  const trainable = [...model.namedParameters({ trainableOnly: true }), ...(parts.extraParameters ?? [])];
  // DDP's construction: rank 0's trainable weights everywhere (random initialisations included).
  parallel.broadcastParameters(trainable.map(([, parameter]) => parameter));
  parallel.prepareGradients(trainable);
  const optimizer = createOptimizer(trainable, options, (line) => log.info(line));
  const scheduler: LambdaLR = getScheduler(options.lrSchedulerType, optimizer, {
    numWarmupSteps: warmupSteps(totalSteps, { warmupSteps: options.warmupSteps, warmupRatio: options.warmupRatio }),
    numTrainingSteps: totalSteps,
    schedulerSpecificKwargs: options.lrSchedulerKwargs,
  });
  // Removed again in `finally`, as the HF Trainer deactivates NEFTune when train() ends.
  const deactivateNeftune = options.neftuneNoiseAlpha ? activateNeftune(model, options.neftuneNoiseAlpha) : null;

  try {
    let globalStep = 0;
    let position: DataPosition = { epoch: 0, microBatch: 0 };
    let totalTokens = 0;
    let inputTokensSeen = 0;
    let logHistory: Record<string, number>[] = [];
    let best: { metric: number | null; globalStep: number | null; checkpoint: string | null } = { metric: null, globalStep: null, checkpoint: null };
    let patienceCounter = 0;
    if (options.resumeFrom) {
      const saved = readTrainerState(options.resumeFrom);
      parts.loadModel(options.resumeFrom);
      loadTrainingState(options.resumeFrom, optimizer, scheduler, { rank: parallel.rank, worldSize: parallel.worldSize, warn });
      globalStep = saved.global_step;
      position = saved.lmf_data_position;
      totalTokens = saved.lmf_total_tokens;
      inputTokensSeen = saved.num_input_tokens_seen ?? 0;
      logHistory = saved.log_history;
      best = { metric: saved.best_metric ?? null, globalStep: saved.best_global_step ?? null, checkpoint: saved.best_model_checkpoint ?? null };
      patienceCounter = saved.stateful_callbacks?.EarlyStoppingCallback?.attributes.early_stopping_patience_counter ?? 0;
      if ((saved.lmf_world_size ?? 1) !== parallel.worldSize) {
        warn(`${options.resumeFrom} was written by a run of ${saved.lmf_world_size ?? 1} process(es), this run has ${parallel.worldSize}: it continues from step ${globalStep}, but the rest of the epoch is dealt to the ranks differently than in an uninterrupted run`);
      }
      log.info(`resuming from ${options.resumeFrom} at step ${globalStep}`);
    }

    const epochAt = (epoch: number, microBatch: number) => epoch + microBatch / batchesPerEpoch;
    const trainerState = (): TrainerStateJson => ({
      global_step: globalStep,
      max_steps: totalSteps,
      num_train_epochs: numEpochs,
      epoch: epochAt(position.epoch, position.microBatch),
      logging_steps: loggingSteps,
      save_steps: saveSteps,
      eval_steps: evalSteps,
      train_batch_size: options.batchSize,
      lmf_world_size: parallel.worldSize,
      num_input_tokens_seen: inputTokensSeen,
      total_flos: 0,
      log_history: logHistory,
      best_metric: best.metric,
      best_global_step: best.globalStep,
      best_model_checkpoint: best.checkpoint,
      is_local_process_zero: true,
      is_world_process_zero: true,
      stateful_callbacks:
        patience !== null
          ? { EarlyStoppingCallback: { args: { early_stopping_patience: patience, early_stopping_threshold: 0 }, attributes: { early_stopping_patience_counter: patienceCounter } } }
          : {},
      lmf_data_position: position,
      lmf_total_tokens: totalTokens,
    });
    // HF's Trainer.log: every record gets the epoch, the tokens seen when counted, and the step.
    const record = (values: Record<string, number>, withSpeed = false): Record<string, number> => {
      const entry: Record<string, number> = { ...values, epoch: Math.round(epochAt(position.epoch, position.microBatch) * 100) / 100 };
      if (options.includeNumInputTokensSeen) {
        entry.num_input_tokens_seen = inputTokensSeen;
        if (withSpeed) {
          const runtime = log.elapsed();
          entry.train_runtime = Math.round(runtime * 1e4) / 1e4;
          entry.train_tokens_per_second = Math.round((inputTokensSeen / runtime) * 1e3) / 1e3;
        }
      }
      logHistory.push({ ...entry, step: globalStep });
      return entry;
    };
    const checkpoint = () => {
      // Every rank's RNG state goes into the checkpoint (HF's rng_state_<rank>), written by rank 0.
      const rngStates = options.saveOnlyModel ? [] : parallel.gatherRngStates(getRngState());
      try {
        if (!parallel.isMain) return;
        // HF's _save_checkpoint: the best checkpoint is named once its folder exists (steps/epoch), or is
        // the one being written (save_strategy best saves exactly at a new best).
        const name = join(options.outputDir, `${CHECKPOINT_PREFIX}${globalStep}`);
        if (options.saveStrategy === "best") best.checkpoint = name;
        else if (best.globalStep !== null && (best.globalStep === globalStep || existsSync(join(options.outputDir, `${CHECKPOINT_PREFIX}${best.globalStep}`)))) {
          best.checkpoint = join(options.outputDir, `${CHECKPOINT_PREFIX}${best.globalStep}`);
        }
        saveCheckpoint(options.outputDir, { saveModel: parts.saveModel, optimizer, scheduler, state: trainerState(), rngStates }, options.saveOnlyModel);
        rotateCheckpoints(options.outputDir, options.saveTotalLimit, best.checkpoint);
      } finally {
        for (const state of rngStates) state.dispose();
        parallel.barrier(`waiting for rank 0 to save checkpoint-${globalStep}`);
      }
    };
    let stopEarly = false;
    /** One evaluation (HF's _evaluate): logged, checked by early stopping, then ranked; true at a new best. */
    const evaluateNow = (rank: boolean): boolean => {
      if (!parts.eval?.length) return false;
      const result = evaluate(model, parts.eval, parts, options.evalBatchSize ?? options.batchSize, device, { dropLast, predictionMetrics: options.predictionMetrics, parallel, autocast: amp });
      const metrics: Record<string, number> = { eval_loss: result.loss, ...result.metrics };
      const entry = record(metrics);
      log.step({ step: globalStep, totalSteps, epoch: entry.epoch!, evalLoss: result.loss, metrics: result.metrics, tokensPerSecond: 0, totalTokens, stepsThisRun: stepsThisRun || 1, logs: entry });
      if (metric === null) return false;
      const value = metrics[metric];
      const better = (candidate: number) => best.metric === null || (greaterIsBetter ? candidate > best.metric : candidate < best.metric);
      // transformers' EarlyStoppingCallback.on_evaluate runs before the best metric is updated.
      if (patience !== null) {
        if (value === undefined) warn(`early stopping needs ${metric}, which the evaluation does not report, so early stopping is disabled`);
        else {
          patienceCounter = better(value) ? 0 : patienceCounter + 1;
          if (patienceCounter >= patience) {
            stopEarly = true;
            log.info(`early stopping: ${metric} has not improved for ${patience} evaluation(s)`);
          }
        }
      }
      if (!rank) return false;
      if (value === undefined) {
        throw new UserError(`metric_for_best_model ${metric} is not among the evaluation metrics (${Object.keys(metrics).join(", ")})`, "metric_for_best_model", "name one of the evaluation metrics, e.g. loss");
      }
      if (!better(value)) return false;
      best.metric = value;
      if (options.saveStrategy === "steps" || options.saveStrategy === "epoch") best.globalStep = globalStep;
      return true;
    };

    const processes = parallel.worldSize > 1 ? ` x ${parallel.worldSize} processes = ${options.batchSize * accumulation * parallel.worldSize} per step` : "";
    log.info(
      `training: ${parts.train.length} examples, ${numEpochs} epoch(s), ${totalSteps} steps ` +
        `(batch ${options.batchSize} x accumulation ${accumulation}${processes}), ${model.numParameters({ trainableOnly: true })} trainable parameters`,
    );
    model.train();
    const stepLosses: number[] = [];
    let stepsThisRun = 0;
    let lossSinceLog = 0;
    const metricsSinceLog = new MetricMeans(parts.stage.deriveMetrics);
    let stepsSinceLog = 0;
    let tokensSinceLog = 0;
    let timeAtLastLog = log.elapsed();
    let lastLoggedStep = globalStep;
    let gradNorm: number | undefined;
    let killed = false;
    let stop = false;

    /** HF's _maybe_log_save_evaluate: the training loss since the last log, an evaluation, a checkpoint. */
    const maybeLogSaveEvaluate = (control: Control) => {
      if (control.log && globalStep > lastLoggedStep) {
        const now = log.elapsed();
        totalTokens += tokensSinceLog;
        const loss = lossSinceLog / stepsSinceLog;
        const lr = scheduler.getLastLr()[0]!;
        const stageMetrics = metricsSinceLog.take("", parallel);
        const entry = record({ loss: Math.round(loss * 1e4) / 1e4, ...(gradNorm !== undefined && { grad_norm: gradNorm }), ...stageMetrics, learning_rate: lr }, true);
        log.step({ step: globalStep, totalSteps, epoch: epochAt(position.epoch, position.microBatch), loss, lr, gradNorm, metrics: stageMetrics, tokensPerSecond: tokensSinceLog / Math.max(now - timeAtLastLog, 1e-9), totalTokens, stepsThisRun, logs: entry });
        lossSinceLog = 0;
        stepsSinceLog = 0;
        tokensSinceLog = 0;
        timeAtLastLog = now;
        lastLoggedStep = globalStep;
      }
      let save = control.save;
      if (control.evaluate) {
        const newBest = evaluateNow(true);
        if (options.saveStrategy === "best") save = newBest;
      }
      if (save) checkpoint();
    };

    if (options.evalOnStart) evaluateNow(false);

    for (let epoch = position.epoch; epoch < numEpochs && globalStep < totalSteps && !stop; epoch++) {
      const inOrder = parts.inStreamOrder || options.shuffle === false;
      const order = inOrder ? [...parts.train.keys()] : shuffledOrder(parts.train.length, options.dataSeed + epoch);
      const epochBatches = parallel.trainBatches(order, options.batchSize, dropLast);
      let microBatch = epoch === position.epoch ? position.microBatch : 0;
      while (microBatch < batchesPerEpoch && globalStep < totalSteps && !stop) {
        const group: Batch[] = [];
        for (let k = microBatch; k < Math.min(microBatch + accumulation, batchesPerEpoch); k++) {
          group.push(parts.collate(epochBatches[k]!.map((i) => parts.train[i]!)));
        }
        // transformers' num_items_in_batch, gathered over the ranks (average_tokens_across_devices):
        // each rank's summed loss over the global count, so that the ranks' gradients sum to the
        // global batch's (DDP averages the ranks' losses scaled by the world size: the same).
        const [denominator] = parallel.sum([parts.stage.lossDenominator(group)]);
        let stepLoss = 0;
        let stepTokens = 0;
        let stepInputTokens = 0;
        for (const batch of group) {
          stepLoss += batchLoss(model, batch, parts.stage, { device, denominator: denominator!, backward: true, gradientCheckpointing: options.gradientCheckpointing, autocast: amp, record: metricsSinceLog.record });
          stepTokens += tokensIn(batch);
          // HF counts input_ids.numel(): padding included.
          stepInputTokens += batch.input_ids.reduce((sum, row) => sum + row.length, 0);
        }
        // One all-reduce per optimizer step, after the last micro-batch (no_sync before it).
        parallel.reduceGradients();
        [stepLoss, stepTokens, stepInputTokens] = parallel.sum([stepLoss, stepTokens, stepInputTokens]) as [number, number, number];
        tokensSinceLog += stepTokens;
        inputTokensSeen += stepInputTokens;
        // HF logs the total norm before clipping, of the last step before each log.
        gradNorm = options.maxGradNorm > 0 ? clipGradNorm(optimizer.paramGroups.flatMap((g) => g.params), options.maxGradNorm) : undefined;
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
        tokensSinceLog += stepTokens;

        // DefaultFlowCallback.on_step_end.
        const control: Control = {
          log: (globalStep === 1 && !!options.loggingFirstStep) || (loggingStrategy === "steps" && globalStep % loggingSteps === 0),
          evaluate: options.evalStrategy === "steps" && evalSteps !== null && globalStep % evalSteps === 0 && evalDelay <= globalStep,
          save: options.saveStrategy === "steps" && saveSteps > 0 && globalStep % saveSteps === 0,
        };
        if (globalStep >= totalSteps) {
          stop = true;
          if (options.saveStrategy === "steps") control.save = true; // HF saves the last step too
        }
        maybeLogSaveEvaluate(control);
        log.tick({ step: globalStep, totalSteps, epoch: epochAt(position.epoch, position.microBatch), tokens: stepTokens });
        if (stopEarly) stop = true;
        if (options.stopAfterSteps !== undefined && stepsThisRun >= options.stopAfterSteps) {
          killed = true;
          break;
        }
      }
      if (killed) break;
      // DefaultFlowCallback.on_epoch_end, also for the last epoch when max_steps ends it early.
      maybeLogSaveEvaluate({
        log: loggingStrategy === "epoch",
        evaluate: options.evalStrategy === "epoch" && evalDelay <= epochAt(position.epoch, position.microBatch),
        save: options.saveStrategy === "epoch",
      });
      if (stopEarly) stop = true;
    }

    totalTokens += tokensSinceLog;
    if (!killed && options.loadBestModelAtEnd) {
      // Rank 0 tracks the checkpoints; the others get the best weights from it.
      const loadBest = parallel.isMain && best.checkpoint !== null && existsSync(best.checkpoint);
      if (loadBest) {
        log.info(`Loading best model from ${best.checkpoint} (score: ${best.metric}).`);
        parts.loadModel(best.checkpoint!);
      }
      if (parallel.sum([loadBest ? 1 : 0])[0]) parallel.broadcastParameters(trainable.map(([, parameter]) => parameter));
    }
    const trainLoss = logHistory.filter((r) => r.loss !== undefined).reduce((s, r, _, all) => s + r.loss! / all.length, 0);
    const runtime = log.elapsed();
    const metrics: Record<string, number> = {
      epoch: epochAt(position.epoch, position.microBatch),
      total_flos: 0,
      train_loss: stepLosses.length ? stepLosses.reduce((a, b) => a + b, 0) / stepLosses.length : trainLoss,
      train_runtime: Math.round(runtime * 1e4) / 1e4,
      train_samples_per_second: Math.round(((stepsThisRun * accumulation * options.batchSize * parallel.worldSize) / runtime) * 1e3) / 1e3,
      train_steps_per_second: Math.round((stepsThisRun / runtime) * 1e3) / 1e3,
    };
    // HF's final Trainer.log(metrics) adds the tokens seen to the train results.
    if (options.includeNumInputTokensSeen) metrics.num_input_tokens_seen = inputTokensSeen;
    // LLaMA-Factory's calculate_tps: the rows' tokens x epochs / runtime, per process.
    if (options.effectiveTokens !== undefined && options.effectiveTokens !== null) {
      metrics.effective_tokens_per_sec = (options.effectiveTokens * metrics.epoch!) / metrics.train_runtime! / parallel.worldSize;
    }
    if (!killed && parallel.isMain) {
      // HF: with save_total_limit 1, only the best checkpoint is kept at the end.
      if (options.saveTotalLimit === 1 && best.checkpoint !== null) {
        for (const folder of listCheckpoints(options.outputDir)) if (folder !== best.checkpoint) rmSync(folder, { recursive: true, force: true });
      }
      parts.saveModel(options.outputDir);
      writeFileSync(join(options.outputDir, "trainer_state.json"), JSON.stringify(trainerState(), null, 2) + "\n");
      saveMetrics(options.outputDir, "train", metrics);
      if (options.plotLoss) for (const file of plotLoss(options.outputDir, logHistory, parts.stage.plotKeys)) log.info(`wrote ${file}`);
    }
    if (!killed) parallel.barrier("waiting for rank 0 to save the model");
    return { globalStep, trainLoss: metrics.train_loss!, stepLosses, logHistory, metrics };
  } finally {
    // Also when a step throws: the optimizer's state tensors are freed, the embedding restored, the trackers' files closed.
    deactivateNeftune?.();
    optimizer.dispose();
    log.close();
  }
}

export interface EvaluateOptions {
  /** dataloader_drop_last: the last incomplete batch is left out. */
  dropLast?: boolean;
  /** The stage's prediction metrics too (compute_accuracy's eval_accuracy). */
  predictionMetrics?: boolean;
  /** Each rank evaluates its shard; the sums are gathered, so every rank gets the whole set's result. */
  parallel?: DataParallel;
  /** bf16: the forward passes under autocast, as in training. */
  autocast?: AutocastSpec | null;
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
  options: EvaluateOptions = {},
): { loss: number; metrics: Record<string, number> } {
  const parallel = options.parallel ?? SINGLE_PROCESS;
  const shard = parallel.evaluationBatches(rows.length, batchSize, options.dropLast ?? false);
  const [batchTotal] = parallel.sum([shard.length]);
  if (batchTotal === 0) {
    throw new UserError(`dataloader_drop_last leaves no evaluation batch: ${rows.length} examples are fewer than one batch of ${batchSize}`, "dataloader_drop_last", "set dataloader_drop_last: false or a smaller per_device_eval_batch_size");
  }
  const wasTraining = model.training;
  model.eval();
  const metrics = new MetricMeans(parts.stage.deriveMetrics);
  const batches: Batch[] = [];
  let localLossSum = 0;
  try {
    for (const indices of shard) {
      const batch = parts.collate(indices.map((i) => rows[i]!));
      localLossSum += batchLoss(model, batch, parts.stage, { device, denominator: 1, backward: false, record: metrics.record, predictionMetrics: options.predictionMetrics, autocast: options.autocast });
      batches.push(batch);
    }
  } finally {
    model.train(wasTraining);
  }
  const [lossSum, denominator] = parallel.sum([localLossSum, parts.stage.lossDenominator(batches)]);
  return { loss: lossSum! / Math.max(denominator!, 1), metrics: metrics.take("eval_", parallel) };
}
