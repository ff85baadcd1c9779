// The training arguments as the trainer's flat options, checked first as HF's
// TrainingArguments.__post_init__ and LLaMA-Factory's parser check them (whole-number intervals,
// matching save and evaluation steps for load_best_model_at_end, EarlyStoppingCallback's needs),
// so a bad combination fails before anything is written. Also where `log_level` and
// `disable_tqdm` decide what `lmf train` prints.
import { UserError } from "../errors.ts";
import type { TrainArgs } from "../hparams/index.ts";
import type { DataParallel } from "./distributed/data_parallel.ts";
import type { ProgressBar } from "../terminal/progress.ts";
import type { RunReporter } from "./logging.ts";
import type { TrainerOptions } from "./trainer.ts";

const EPSILON = 1e-6;

/** HF: an interval above 1 is a step count and must be whole; below 1 it is a fraction of all steps. */
function checkInterval(name: string, value: number | null): void {
  if (value !== null && value > 1 && !Number.isInteger(value)) {
    throw new UserError(`\`${name}\` must be a whole number of steps when above 1, got ${value}`, name, "give a whole number of steps, or a fraction below 1 of all steps");
  }
}

/** eval_steps as HF resolves it for eval_strategy steps: logging_steps when unset or 0. */
export function resolvedEvalSteps(args: TrainArgs): number | null {
  const { training } = args;
  return training.eval_steps ? training.eval_steps : training.logging_steps > 0 ? training.logging_steps : null;
}

/** metric_for_best_model as HF defaults it: `loss` when the best model is tracked and none is named. */
export function metricForBestModel(args: TrainArgs): string | null {
  const { training } = args;
  if (training.metric_for_best_model) return training.metric_for_best_model;
  return training.load_best_model_at_end ? "loss" : null;
}

/** Throws one UserError for the first combination HF's TrainingArguments or LLaMA-Factory would refuse. */
export function checkTrainingArgs(args: TrainArgs): void {
  const { training, finetuning, data } = args;
  if (training.logging_strategy === "steps" && training.logging_steps === 0) {
    throw new UserError("logging_strategy steps needs a non-zero `logging_steps`", "logging_steps", "set logging_steps, or logging_strategy: no");
  }
  const evalSteps = training.eval_strategy === "steps" ? resolvedEvalSteps(args) : null;
  if (training.eval_strategy === "steps" && evalSteps === null) {
    throw new UserError("eval_strategy steps needs a non-zero `eval_steps` or `logging_steps`", "eval_steps", "set eval_steps");
  }
  if (training.logging_strategy === "steps") checkInterval("logging_steps", training.logging_steps);
  if (training.eval_strategy === "steps") checkInterval("eval_steps", evalSteps);
  if (training.save_strategy === "steps") checkInterval("save_steps", training.save_steps);
  if (training.do_train && training.eval_strategy !== "no" && data.eval_dataset === null && data.val_size < EPSILON) {
    // HF turns do_eval on for any eval_strategy; LLaMA-Factory then asks for evaluation data.
    throw new UserError(`eval_strategy ${training.eval_strategy} needs evaluation data`, "eval_strategy", "set eval_dataset, or val_size to split some off the training data");
  }
  if (training.load_best_model_at_end && training.save_strategy === "steps" && training.eval_strategy === "steps" && evalSteps !== null) {
    const save = training.save_steps;
    // HF: both whole step counts, or both fractions (compared at 1e6 resolution).
    const multiple = save >= 1 && evalSteps >= 1 ? save % evalSteps === 0 : save < 1 && evalSteps < 1 && Math.round(save * 1e6) % Math.round(evalSteps * 1e6) === 0;
    if (!multiple) {
      throw new UserError(
        `load_best_model_at_end needs save_steps (${save}) to be a multiple of eval_steps (${evalSteps}), both step counts or both fractions`,
        "save_steps",
        "make save_steps a multiple of eval_steps, so that every checkpoint has an evaluation",
      );
    }
  }
  if (training.save_strategy === "best" && !metricForBestModel(args)) {
    throw new UserError("save_strategy best needs `metric_for_best_model`", "save_strategy", "set metric_for_best_model (e.g. loss), or load_best_model_at_end: true");
  }
  if (finetuning.early_stopping_steps !== null && training.do_train) {
    // transformers' EarlyStoppingCallback asserts both at the start of training.
    if (!metricForBestModel(args)) {
      throw new UserError("early_stopping_steps needs `metric_for_best_model`", "early_stopping_steps", "set metric_for_best_model (e.g. loss) or load_best_model_at_end: true");
    }
    if (training.eval_strategy === "no") {
      throw new UserError("early_stopping_steps needs evaluations during training", "early_stopping_steps", "set eval_strategy to steps or epoch");
    }
  }
  if (training.do_predict && training.predict_with_generate && training.prediction_loss_only) {
    throw new UserError(
      "`prediction_loss_only` leaves `predict_with_generate` nothing to generate (HF's predict returns no predictions)",
      "prediction_loss_only",
      "set prediction_loss_only: false to generate predictions, or predict_with_generate: false",
    );
  }
}

const QUIET_LEVELS = ["warning", "error", "critical"];

/**
 * What `lmf train` prints at `log_level`: lmfactory's progress and information lines are INFO
 * (shown for passive, debug and info), its notices are WARNING; errors are always reported.
 */
export function logChannels(args: TrainArgs, print: (line: string) => void): { info: (line: string) => void; warn: (line: string) => void } {
  const level = args.training.log_level;
  const silent = () => {};
  return {
    info: QUIET_LEVELS.includes(level) ? silent : print,
    warn: level === "error" || level === "critical" ? silent : print,
  };
}

/** disable_tqdm unset is false, as HF decides it while the transformers logger is at its default level. */
export function progressDisabled(args: TrainArgs): boolean {
  return args.training.disable_tqdm ?? false;
}

/**
 * HF's TrainingArguments.to_json_string for TensorBoard's `args` text: every training argument,
 * run_name defaulting to output_dir (HF's rule), keys ending in `_token` masked as HF masks them.
 */
export function trainingArgsJson(args: TrainArgs): string {
  const values: Record<string, unknown> = { ...args.training, run_name: args.training.run_name ?? args.training.output_dir };
  for (const name of Object.keys(values)) if (name.endsWith("_token") && values[name] !== null) values[name] = `<${name.toUpperCase()}>`;
  return JSON.stringify(values, null, 2);
}

export interface RunParts {
  device: string;
  resumeFrom: string | null;
  print: (line: string) => void;
  warn: (line: string) => void;
  reporters: readonly RunReporter[];
  /** The tokens include_effective_tokens_per_second counts in the training rows (null when off). */
  effectiveTokens: number | null;
  /** Whether the stage records prediction metrics (compute_accuracy). */
  computesAccuracy: boolean;
  /** This process's part in data parallelism. */
  parallel?: DataParallel;
  /** The terminal's progress bar (null when output is piped or disable_tqdm is set). */
  progressBar?: ProgressBar | null;
}

/** The trainer's options for these arguments. */
export function trainerOptionsFromArgs(args: TrainArgs, run: RunParts): TrainerOptions {
  const { training, finetuning, model } = args;
  const metric = metricForBestModel(args);
  return {
    outputDir: training.output_dir,
    batchSize: training.per_device_train_batch_size,
    evalBatchSize: training.per_device_eval_batch_size,
    gradientAccumulationSteps: training.gradient_accumulation_steps,
    learningRate: training.learning_rate,
    weightDecay: training.weight_decay,
    optim: training.optim,
    loraplus: finetuning.loraplus_lr_ratio !== null ? { ratio: finetuning.loraplus_lr_ratio, embeddingLr: finetuning.loraplus_lr_embedding } : null,
    adamBeta1: training.adam_beta1,
    adamBeta2: training.adam_beta2,
    adamEpsilon: training.adam_epsilon,
    maxGradNorm: training.max_grad_norm,
    numTrainEpochs: training.num_train_epochs,
    maxSteps: training.max_steps,
    lrSchedulerType: training.lr_scheduler_type,
    lrSchedulerKwargs: (training.lr_scheduler_kwargs ?? undefined) as Record<string, number> | undefined,
    warmupSteps: training.warmup_steps,
    warmupRatio: training.warmup_ratio,
    loggingStrategy: training.logging_strategy as "no" | "steps" | "epoch",
    loggingSteps: training.logging_steps,
    loggingFirstStep: training.logging_first_step,
    saveStrategy: training.save_strategy as "no" | "steps" | "epoch" | "best",
    saveSteps: training.save_steps,
    saveTotalLimit: training.save_total_limit,
    saveOnlyModel: training.save_only_model,
    evalStrategy: training.eval_strategy as "no" | "steps" | "epoch",
    evalSteps: resolvedEvalSteps(args),
    evalDelay: training.eval_delay,
    evalOnStart: training.eval_on_start,
    predictionMetrics: finetuning.compute_accuracy && run.computesAccuracy && !training.prediction_loss_only,
    loadBestModelAtEnd: training.load_best_model_at_end,
    metricForBestModel: metric,
    greaterIsBetter: training.greater_is_better ?? (metric !== null ? !metric.endsWith("loss") : null),
    earlyStoppingPatience: finetuning.early_stopping_steps,
    includeNumInputTokensSeen: training.include_num_input_tokens_seen,
    effectiveTokens: run.effectiveTokens,
    dataSeed: training.data_seed ?? training.seed,
    shuffle: !finetuning.disable_shuffling,
    dropLast: training.dataloader_drop_last,
    gradientCheckpointing: !model.disable_gradient_checkpointing,
    // bf16 as HF's Trainer (accelerate's mixed_precision): autocast over float32 master weights.
    autocast: training.bf16 ? "bfloat16" : null,
    neftuneNoiseAlpha: training.neftune_noise_alpha,
    plotLoss: finetuning.plot_loss,
    device: run.device,
    resumeFrom: run.resumeFrom,
    print: run.print,
    warn: run.warn,
    disableTqdm: progressDisabled(args),
    progressBar: run.progressBar,
    reporters: run.reporters,
    parallel: run.parallel,
  };
}
