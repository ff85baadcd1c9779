// How `lmf train` takes part in data parallelism: one process, or the worker the torchrun
// variables describe, joined to its process group with ddp_timeout and the
// ddp_find_unused_parameters LLaMA-Factory and the HF Trainer would use. Gloo on CPU; NCCL, what
// PyTorch uses on CUDA, is not built into lmfactory's engine, so a CUDA run is refused here.
import { UserError } from "../../errors.ts";
import type { TrainArgs } from "../../hparams/index.ts";
import { type DataParallel, ProcessGroupParallel, SINGLE_PROCESS } from "./data_parallel.ts";
import { checkDeepSpeedConfig, readDeepSpeedConfig } from "./deepspeed.ts";
import { workerEnvironment } from "./environment.ts";

/**
 * ddp_find_unused_parameters as it ends up: LLaMA-Factory sets false for LoRA when unset; the HF
 * Trainer then uses `not gradient_checkpointing` for its models.
 */
export function findUnusedParameters(args: TrainArgs): boolean {
  const { training, finetuning, model } = args;
  if (training.ddp_find_unused_parameters !== null) return training.ddp_find_unused_parameters;
  if (finetuning.finetuning_type === "lora") return false;
  return model.disable_gradient_checkpointing;
}

/** The c10d back-end for a device: Gloo on CPU; NCCL (CUDA) is the seam left for a CUDA build. */
export function backendFor(device: string): "gloo" {
  if (device.startsWith("cuda")) {
    throw new UserError(
      "distributed training on CUDA needs NCCL, which lmfactory's engine is not built with (it has c10d with Gloo only, and NCCL cannot be built or tested here)",
      "distributed training",
      "set use_cpu: true to train the workers on the CPU over Gloo, or train in one process",
    );
  }
  return "gloo";
}

export interface StartedParallel {
  parallel: DataParallel;
  /** Leaves the process group (a no-op for one process). */
  finish(): void;
}

/**
 * Joins the process group when this process is a worker (WORLD_SIZE > 1), and checks `deepspeed`
 * against the run; `notice` gets the DeepSpeed notice (rank 0 prints it).
 */
export function startDataParallel(args: TrainArgs, device: string, notice: (line: string) => void): StartedParallel {
  const worker = workerEnvironment();
  const worldSize = worker?.worldSize ?? 1;
  const { training } = args;
  const deepspeed = training.deepspeed !== null ? readDeepSpeedConfig(training.deepspeed) : null;
  const deepspeedNotice = deepspeed
    ? checkDeepSpeedConfig(deepspeed, {
        perDeviceTrainBatchSize: training.per_device_train_batch_size,
        gradientAccumulationSteps: training.gradient_accumulation_steps,
        worldSize,
        maxGradNorm: training.max_grad_norm,
        learningRate: training.learning_rate,
        adamBeta1: training.adam_beta1,
        adamBeta2: training.adam_beta2,
        adamEpsilon: training.adam_epsilon,
        weightDecay: training.weight_decay,
        optim: training.optim,
        bf16: training.bf16,
        fp16: training.fp16,
      })
    : null;
  if (!worker || worker.worldSize === 1) {
    if (deepspeedNotice) notice(deepspeedNotice);
    return { parallel: SINGLE_PROCESS, finish: () => {} };
  }
  backendFor(device);
  const parallel = new ProcessGroupParallel(worker, { timeoutSeconds: training.ddp_timeout, findUnusedParameters: findUnusedParameters(args) });
  if (deepspeedNotice && parallel.isMain) notice(deepspeedNotice);
  return { parallel, finish: () => parallel.destroy() };
}
