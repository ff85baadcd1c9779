// Learning-rate schedulers with transformers' `get_scheduler` names and formulas
// (transformers/optimization.py), run as torch.optim.lr_scheduler.LambdaLR: each group's lr is its
// initial lr times lambda(step); construction applies lambda(0), and each `step()` (called after
// `optimizer.step()`) advances by one.
import type { BaseHyperParameters, Optimizer } from "./optimizer.ts";

export type LrLambda = (step: number) => number;

/** JSON-able scheduler state (torch's LambdaLR state_dict without the lambdas). */
export interface SchedulerState {
  last_epoch: number;
  base_lrs: number[];
  last_lr: number[];
}

/** torch.optim.lr_scheduler.LambdaLR: lr = initial_lr * lambda(lastEpoch), per group. */
export class LambdaLR {
  readonly optimizer: Optimizer<BaseHyperParameters>;
  readonly lrLambda: LrLambda;
  baseLrs: number[];
  lastEpoch = 0;
  #lastLr: number[] = [];

  constructor(optimizer: Optimizer<BaseHyperParameters>, lrLambda: LrLambda) {
    this.optimizer = optimizer;
    this.lrLambda = lrLambda;
    for (const group of optimizer.paramGroups) group.initialLr ??= group.lr;
    this.baseLrs = optimizer.paramGroups.map((group) => group.initialLr!);
    this.#apply();
  }

  /** Advances one step and writes the new lr into every group. */
  step(): void {
    this.lastEpoch += 1;
    this.#apply();
  }

  /** The lr of each group as last set. */
  getLastLr(): number[] {
    return [...this.#lastLr];
  }

  /** The multiplier at any step, without changing state. */
  factorAt(step: number): number {
    return this.lrLambda(step);
  }

  stateDict(): SchedulerState {
    return { last_epoch: this.lastEpoch, base_lrs: [...this.baseLrs], last_lr: this.getLastLr() };
  }

  /** Restores the step (and base lrs) and writes the matching lr into every group. */
  loadStateDict(state: SchedulerState): void {
    if (state.base_lrs.length !== this.optimizer.paramGroups.length) {
      throw new Error(
        `LambdaLR.loadStateDict: the state has ${state.base_lrs.length} base lrs, the optimizer has ${this.optimizer.paramGroups.length} groups`,
      );
    }
    this.lastEpoch = state.last_epoch;
    this.baseLrs = [...state.base_lrs];
    this.optimizer.paramGroups.forEach((group, i) => (group.initialLr = this.baseLrs[i]));
    this.#apply();
  }

  #apply(): void {
    const factor = this.lrLambda(this.lastEpoch);
    this.#lastLr = this.baseLrs.map((base) => base * factor);
    this.optimizer.paramGroups.forEach((group, i) => (group.lr = this.#lastLr[i]!));
  }
}

// --- the lambdas, one per HF schedule -----------------------------------------------------------

function warmupFactor(step: number, warmup: number): number {
  return step / Math.max(1, warmup);
}

export const scheduleLambdas = {
  constant: (): LrLambda => () => 1,

  constantWithWarmup: (warmup: number): LrLambda => (step) => (step < warmup ? step / Math.max(1, warmup) : 1),

  linear: (warmup: number, total: number): LrLambda => (step) =>
    step < warmup ? warmupFactor(step, warmup) : Math.max(0, (total - step) / Math.max(1, total - warmup)),

  cosine: (warmup: number, total: number, numCycles = 0.5): LrLambda => (step) => {
    if (step < warmup) return warmupFactor(step, warmup);
    const progress = (step - warmup) / Math.max(1, total - warmup);
    return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress)));
  },

  cosineWithRestarts: (warmup: number, total: number, numCycles = 1): LrLambda => (step) => {
    if (step < warmup) return warmupFactor(step, warmup);
    const progress = (step - warmup) / Math.max(1, total - warmup);
    if (progress >= 1) return 0;
    return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((numCycles * progress) % 1))));
  },

  /** `lrInit` is the optimizer's default lr: the schedule ends at lrEnd in absolute terms. */
  polynomial: (warmup: number, total: number, lrInit: number, lrEnd = 1e-7, power = 1): LrLambda => {
    if (!(lrInit > lrEnd)) throw new Error(`lr_end (${lrEnd}) must be smaller than initial lr (${lrInit})`);
    return (step) => {
      if (step < warmup) return warmupFactor(step, warmup);
      if (step > total) return lrEnd / lrInit;
      const pctRemaining = 1 - (step - warmup) / (total - warmup);
      return ((lrInit - lrEnd) * pctRemaining ** power + lrEnd) / lrInit;
    };
  },

  inverseSqrt: (warmup: number, timescale?: number): LrLambda => {
    const scale = timescale ?? (warmup || 10_000);
    return (step) => {
      if (step < warmup) return warmupFactor(step, warmup);
      const shift = scale - warmup;
      return 1 / Math.sqrt((step + shift) / scale);
    };
  },

  cosineWithMinLr: (warmup: number, total: number, minLrRate: number, numCycles = 0.5): LrLambda => (step) => {
    if (step < warmup) return warmupFactor(step, warmup);
    const progress = (step - warmup) / Math.max(1, total - warmup);
    const factor = 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress));
    return Math.max(0, factor * (1 - minLrRate) + minLrRate);
  },

  warmupStableDecay: (options: {
    warmup: number;
    stable: number;
    decay: number;
    warmupType?: WsdShape;
    decayType?: WsdShape;
    minLrRatio?: number;
    numCycles?: number;
  }): LrLambda => {
    const { warmup, stable, decay } = options;
    const warmupType = options.warmupType ?? "linear";
    const decayType = options.decayType ?? "cosine";
    const minLrRatio = options.minLrRatio ?? 0;
    const numCycles = options.numCycles ?? 0.5;
    for (const [what, type] of [["warmup", warmupType], ["decay", decayType]] as const) {
      if (!WSD_SHAPES.includes(type)) throw new Error(`Unknown ${what} type: ${type}, expected 'linear', 'cosine' or '1-sqrt'`);
    }
    return (step) => {
      if (step < warmup) {
        const progress = step / Math.max(1, warmup);
        const factor =
          warmupType === "linear" ? progress : warmupType === "cosine" ? 0.5 * (1 - Math.cos(Math.PI * progress)) : 1 - Math.sqrt(1 - progress);
        return Math.max(0, factor * (1 - minLrRatio) + minLrRatio);
      }
      if (step < warmup + stable) return 1;
      if (step < warmup + stable + decay) {
        const progress = (step - warmup - stable) / Math.max(1, decay);
        const factor =
          decayType === "linear" ? 1 - progress : decayType === "cosine" ? 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress)) : 1 - Math.sqrt(progress);
        return Math.max(0, factor * (1 - minLrRatio) + minLrRatio);
      }
      return minLrRatio;
    };
  },
};

type WsdShape = "linear" | "cosine" | "1-sqrt";
const WSD_SHAPES: readonly string[] = ["linear", "cosine", "1-sqrt"];

// --- get_scheduler -----------------------------------------------------------------------------

export const SCHEDULER_NAMES = [
  "linear",
  "cosine",
  "cosine_with_restarts",
  "polynomial",
  "constant",
  "constant_with_warmup",
  "inverse_sqrt",
  "cosine_with_min_lr",
  "warmup_stable_decay",
] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

/** The keys of LLaMA-Factory's `lr_scheduler_kwargs` (HF's scheduler_specific_kwargs), verbatim. */
export interface SchedulerKwargs {
  num_cycles?: number;
  lr_end?: number;
  power?: number;
  timescale?: number;
  min_lr?: number;
  min_lr_rate?: number;
  num_decay_steps?: number;
  num_stable_steps?: number;
  warmup_type?: WsdShape;
  decay_type?: WsdShape;
  min_lr_ratio?: number;
}

const ALLOWED_KWARGS: Record<SchedulerName, (keyof SchedulerKwargs)[]> = {
  linear: [],
  cosine: ["num_cycles"],
  cosine_with_restarts: ["num_cycles"],
  polynomial: ["lr_end", "power"],
  constant: [],
  constant_with_warmup: [],
  inverse_sqrt: ["timescale"],
  cosine_with_min_lr: ["num_cycles", "min_lr", "min_lr_rate"],
  warmup_stable_decay: ["num_decay_steps", "num_stable_steps", "warmup_type", "decay_type", "min_lr_ratio", "num_cycles"],
};

export interface GetSchedulerOptions {
  numWarmupSteps?: number;
  numTrainingSteps?: number;
  schedulerSpecificKwargs?: SchedulerKwargs;
}

/** transformers.get_scheduler: the named schedule as a LambdaLR over `optimizer`. */
export function getScheduler(name: string, optimizer: Optimizer<BaseHyperParameters>, options: GetSchedulerOptions = {}): LambdaLR {
  if (!(SCHEDULER_NAMES as readonly string[]).includes(name)) {
    throw new Error(`unknown lr_scheduler_type "${name}"; known: ${SCHEDULER_NAMES.join(", ")}`);
  }
  const schedulerName = name as SchedulerName;
  const kwargs = options.schedulerSpecificKwargs ?? {};
  const unknown = Object.keys(kwargs).filter((key) => !ALLOWED_KWARGS[schedulerName].includes(key as keyof SchedulerKwargs));
  if (unknown.length) {
    const allowed = ALLOWED_KWARGS[schedulerName];
    throw new Error(
      `lr_scheduler_kwargs ${unknown.map((k) => `"${k}"`).join(", ")} not accepted by "${name}"` +
        (allowed.length ? ` (it takes ${allowed.join(", ")})` : " (it takes none)"),
    );
  }
  if (schedulerName === "constant") return new LambdaLR(optimizer, scheduleLambdas.constant());

  const warmup = options.numWarmupSteps;
  if (warmup === undefined) throw new Error(`${name} requires \`num_warmup_steps\`, please provide that argument.`);
  if (schedulerName === "constant_with_warmup") return new LambdaLR(optimizer, scheduleLambdas.constantWithWarmup(warmup));
  if (schedulerName === "inverse_sqrt") return new LambdaLR(optimizer, scheduleLambdas.inverseSqrt(warmup, kwargs.timescale));

  const total = options.numTrainingSteps;
  if (schedulerName === "warmup_stable_decay") {
    if (kwargs.num_decay_steps === undefined) throw new Error("warmup_stable_decay requires `num_decay_steps` in lr_scheduler_kwargs.");
    if (total === undefined && kwargs.num_stable_steps === undefined) {
      throw new Error("Either num_training_steps or num_stable_steps must be specified.");
    }
    return new LambdaLR(
      optimizer,
      scheduleLambdas.warmupStableDecay({
        warmup,
        decay: kwargs.num_decay_steps,
        stable: kwargs.num_stable_steps ?? total! - warmup - kwargs.num_decay_steps,
        warmupType: kwargs.warmup_type,
        decayType: kwargs.decay_type,
        minLrRatio: kwargs.min_lr_ratio,
        numCycles: kwargs.num_cycles,
      }),
    );
  }
  if (total === undefined) throw new Error(`${name} requires \`num_training_steps\`, please provide that argument.`);
  switch (schedulerName) {
    case "linear":
      return new LambdaLR(optimizer, scheduleLambdas.linear(warmup, total));
    case "cosine":
      return new LambdaLR(optimizer, scheduleLambdas.cosine(warmup, total, kwargs.num_cycles));
    case "cosine_with_restarts":
      return new LambdaLR(optimizer, scheduleLambdas.cosineWithRestarts(warmup, total, kwargs.num_cycles));
    case "polynomial":
      return new LambdaLR(optimizer, scheduleLambdas.polynomial(warmup, total, optimizer.defaults.lr, kwargs.lr_end, kwargs.power));
    case "cosine_with_min_lr": {
      if (kwargs.min_lr !== undefined && kwargs.min_lr_rate !== undefined) throw new Error("Only one of min_lr or min_lr_rate should be set");
      if (kwargs.min_lr === undefined && kwargs.min_lr_rate === undefined) {
        throw new Error("One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`");
      }
      const minLrRate = kwargs.min_lr_rate ?? kwargs.min_lr! / optimizer.defaults.lr;
      return new LambdaLR(optimizer, scheduleLambdas.cosineWithMinLr(warmup, total, minLrRate, kwargs.num_cycles));
    }
  }
}

/**
 * HF TrainingArguments.get_warmup_steps: `warmup_steps` when positive, else
 * ceil(warmup_ratio * total). A `warmup_steps` below 1 is read as a ratio, as newer HF does.
 */
export function warmupSteps(totalSteps: number, options: { warmupSteps?: number; warmupRatio?: number }): number {
  const steps = options.warmupSteps ?? 0;
  if (steps >= 1) return Math.floor(steps);
  const ratio = steps > 0 ? steps : (options.warmupRatio ?? 0);
  return Math.ceil(totalSteps * ratio);
}
