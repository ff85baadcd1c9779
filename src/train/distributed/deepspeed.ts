// `deepspeed: <config.json>`: LLaMA-Factory's full-SFT examples name a ZeRO config. ZeRO stages and
// offloading change where parameters, gradients and optimizer states live, not the results, so the
// run is the same data-parallel training (one notice says nothing is sharded). What the config says
// about the training itself is checked as HF's HfTrainerDeepSpeedConfig.trainer_config_process does:
// "auto" takes the training argument, any other value must equal it; what would change the results
// and cannot be matched (DeepSpeed's own optimizer or LR schedule, low-precision gradient
// communication, elasticity, ...) is refused with what to change.
import { existsSync, readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { UserError } from "../../errors.ts";

/** The training values the config is compared with (HF's names for them in the messages). */
export interface DeepSpeedTrainingValues {
  perDeviceTrainBatchSize: number;
  gradientAccumulationSteps: number;
  worldSize: number;
  maxGradNorm: number;
  learningRate: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
  weightDecay: number;
  optim: string;
  bf16: boolean;
  fp16: boolean;
}

type Config = Record<string, unknown>;

/** Keys that only place memory, overlap communication, or log: they cannot change the results. */
const PLACEMENT_KEYS = new Set([
  "zero_optimization", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "comms_config", "comms_logger",
  "monitor_config", "tensorboard", "wandb", "csv_monitor", "wall_clock_breakdown", "steps_per_print", "dump_state",
  "memory_breakdown", "activation_checkpointing", "aio", "flops_profiler", "checkpoint", "timers", "nebula", "compile",
  "tensor_parallel", "autotuning", "gradient_predivide_factor", "prescale_gradients", "disable_allgather",
]);
/** Keys compared with the training arguments (or checked for what they enable). */
const CHECKED_KEYS = new Set([
  "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping", "fp16", "bf16",
  "amp", "optimizer", "scheduler", "communication_data_type", "data_types", "sequence_parallel_size",
]);
/** Features that change what is trained, and lmfactory does not build. */
const RESULT_CHANGING_FEATURES: Record<string, string> = {
  elasticity: "elastic training changes the batch size with the number of workers",
  progressive_layer_drop: "progressive layer drop skips layers in training",
  curriculum_learning: "curriculum learning changes the data each step sees",
  data_efficiency: "data efficiency sampling and routing change the data each step sees",
  compression_training: "compression training quantizes or prunes weights during training",
  sparse_attention: "sparse attention changes the attention the model computes",
  quantize_training: "quantized training changes the weights' precision",
  eigenvalue: "eigenvalue-guided updates change the optimizer's steps",
  pipeline: "pipeline parallelism is not available through the HF Trainer either",
};

/** The config from a path, a JSON string or a dict, as HF's TrainingArguments reads `deepspeed`. */
export function readDeepSpeedConfig(value: string | Record<string, unknown>): Config {
  if (typeof value !== "string") return value;
  const text = value.trim();
  if (text.startsWith("{")) {
    try {
      return JSON.parse(text) as Config;
    } catch (error) {
      throw new UserError(`the DeepSpeed config is not valid JSON: ${(error as Error).message}`, "deepspeed", "give the path of a DeepSpeed JSON file, or a JSON object");
    }
  }
  if (!existsSync(text)) throw new UserError(`DeepSpeed config ${text} does not exist`, "deepspeed", "give the path of a DeepSpeed JSON file (e.g. examples/deepspeed/ds_z3_config.json)");
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(text, "utf8"));
  } catch (error) {
    throw new UserError(`${text} is not valid JSON: ${(error as Error).message}`, "deepspeed", "give the path of a DeepSpeed JSON file");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new UserError(`${text} does not hold a JSON object`, "deepspeed");
  return parsed as Config;
}

/** A nested value by dotted key ("optimizer.params.lr"), or undefined. */
function at(config: Config, key: string): unknown {
  return key.split(".").reduce<unknown>((node, part) => (node && typeof node === "object" ? (node as Config)[part] : undefined), config);
}

function enabled(config: Config, key: string): boolean {
  const value = at(config, key);
  return value === true || value === "true";
}

/**
 * Checks the config against the training and returns the one notice to print. Throws a UserError
 * listing every value that disagrees (as HF does), or naming the first feature that changes results.
 */
export function checkDeepSpeedConfig(config: Config, values: DeepSpeedTrainingValues): string {
  for (const key of Object.keys(config)) {
    if (key.startsWith("_") || PLACEMENT_KEYS.has(key) || CHECKED_KEYS.has(key)) continue;
    const reason = RESULT_CHANGING_FEATURES[key];
    if (reason && (at(config, `${key}.enabled`) === false || at(config, `${key}.enabled`) === "false")) continue;
    throw new UserError(
      reason ? `DeepSpeed's \`${key}\` changes the results (${reason}), and lmfactory does not build it` : `lmfactory does not know DeepSpeed's \`${key}\`, so it cannot tell whether it changes the results`,
      "deepspeed",
      `remove \`${key}\` from the DeepSpeed config`,
    );
  }
  refuseResultChanges(config, values);
  const mismatches = compare(config, values);
  if (mismatches.length > 0) {
    throw new UserError(
      `the DeepSpeed config disagrees with the training arguments:\n${mismatches.join("\n")}`,
      "deepspeed",
      "set these DeepSpeed config values to \"auto\" (HF's advice), or change the training arguments",
    );
  }
  const stage = at(config, "zero_optimization.stage") ?? 0;
  if (![0, 1, 2, 3].includes(stage as number)) throw new UserError(`ZeRO stage ${JSON.stringify(stage)} does not exist`, "deepspeed", "zero_optimization.stage is 0, 1, 2 or 3");
  const offload = ["offload_optimizer", "offload_param"].filter((key) => at(config, `zero_optimization.${key}.device`) && at(config, `zero_optimization.${key}.device`) !== "none");
  const tensorParallel = Number(at(config, "tensor_parallel.autotp_size") ?? 1);
  const placement = [`ZeRO stage ${stage}`, ...offload, ...(tensorParallel > 1 ? [`autotp_size ${tensorParallel}`] : [])].join(", ");
  const precision = values.bf16 ? "; with bf16 the trainable weights and optimizer states stay float32 under bfloat16 autocast, as without DeepSpeed (ZeRO's bf16 keeps an fp32 master copy too)" : "";
  return (
    `deepspeed (${placement}): lmfactory runs the same data-parallel training without DeepSpeed; parameters, gradients and optimizer states are not sharded or offloaded, ` +
    `so every process holds them whole (memory, not results, differs)${precision}`
  );
}

/** HF's fill_match list: the config value, when not "auto", must equal the training argument. */
function compare(config: Config, values: DeepSpeedTrainingValues): string[] {
  const checks: [string, unknown, string][] = [
    ["train_micro_batch_size_per_gpu", values.perDeviceTrainBatchSize, "per_device_train_batch_size"],
    ["gradient_accumulation_steps", values.gradientAccumulationSteps, "gradient_accumulation_steps"],
    ["train_batch_size", values.worldSize * values.perDeviceTrainBatchSize * values.gradientAccumulationSteps, "train_batch_size (calculated: world size x per_device_train_batch_size x gradient_accumulation_steps)"],
    ["gradient_clipping", values.maxGradNorm, "max_grad_norm"],
    ["optimizer.params.lr", values.learningRate, "learning_rate"],
    ["optimizer.params.betas", [values.adamBeta1, values.adamBeta2], "adam_beta1+adam_beta2"],
    ["optimizer.params.eps", values.adamEpsilon, "adam_epsilon"],
    ["optimizer.params.weight_decay", values.weightDecay, "weight_decay"],
    ["fp16.enabled", values.fp16, "fp16"],
    ["bf16.enabled", values.bf16, "bf16"],
  ];
  const mismatches: string[] = [];
  for (const [key, expected, name] of checks) {
    const value = at(config, key);
    if (value === undefined || value === null || value === "auto") continue;
    if (!isDeepStrictEqual(value, expected)) mismatches.push(`- ds ${key}=${JSON.stringify(value)} vs hf ${name}=${JSON.stringify(expected)}`);
  }
  return mismatches;
}

function refuseResultChanges(config: Config, values: DeepSpeedTrainingValues): void {
  const refuse = (what: string, fix: string) => {
    throw new UserError(what, "deepspeed", fix);
  };
  const optimizer = at(config, "optimizer") as Config | undefined;
  if (optimizer) {
    const type = String(optimizer.type ?? "").toLowerCase();
    const adamW = type === "adamw" || (type === "adam" && at(config, "optimizer.params.adam_w_mode") !== false);
    if (!adamW) refuse(`DeepSpeed's ${String(optimizer.type)} optimizer replaces \`optim\`, and lmfactory does not build it`, "remove the optimizer block so that `optim` applies");
    if (!["adamw_torch", "adamw_torch_fused"].includes(values.optim)) {
      refuse(`the DeepSpeed config trains with AdamW while \`optim\` is ${values.optim}`, "remove the optimizer block, or set optim: adamw_torch");
    }
  }
  const scheduler = at(config, "scheduler") as Config | undefined;
  if (scheduler) {
    refuse(`DeepSpeed's ${String(scheduler.type)} schedule replaces lr_scheduler_type, and lmfactory does not build DeepSpeed's schedules`, "remove the scheduler block so that lr_scheduler_type applies");
  }
  if (enabled(config, "amp.enabled")) refuse("DeepSpeed's apex AMP (amp.enabled) is not available", "remove the amp block; use bf16 (or fp16 on CUDA)");
  for (const key of ["communication_data_type", "data_types.grad_accum_dtype"]) {
    const dtype = at(config, key);
    if (dtype !== undefined && dtype !== null && !["fp32", "float32", "float"].includes(String(dtype).toLowerCase())) {
      refuse(`${key} ${JSON.stringify(dtype)} sums gradients in lower precision, which changes the results`, `remove ${key} (gradients are summed in float32)`);
    }
  }
  const sequenceParallel = Number(at(config, "sequence_parallel_size") ?? 1);
  if (sequenceParallel > 1) refuse(`sequence_parallel_size ${sequenceParallel} (Ulysses sequence parallelism) is not built`, "remove sequence_parallel_size");
}
