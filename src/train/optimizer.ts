// The optimizer a run trains with: the HF Trainer's `create_optimizer` (torch AdamW or SGD for the
// `optim` name, over its decay / no-decay groups), or LLaMA-Factory's LoRA+ groups
// (`_create_loraplus_optimizer` in train/trainer_utils.py) when `loraplus_lr_ratio` is set.
import { UserError } from "../errors.ts";
import {
  AdamW,
  type BaseHyperParameters,
  type BuiltOptimizerName,
  OPTIMIZER_FOR_NAME,
  type Optimizer,
  SGD,
  type Tensor,
  decayParameterGroups,
  isNoDecayParameter,
} from "../torch/index.ts";

export interface OptimizerOptions {
  /** The HF optimizer name: adamw_torch (default), adamw_torch_fused, adamw_hf or sgd. */
  optim?: string;
  learningRate: number;
  weightDecay: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEpsilon: number;
  /** LoRA+: B matrices (and 1-D parameters) at learningRate x ratio, LoRA embedding B at embeddingLr. */
  loraplus?: { ratio: number; embeddingLr: number } | null;
}

export interface ParamGroupSpec {
  params: Tensor[];
  lr: number;
  weightDecay: number;
}

/**
 * LLaMA-Factory's four LoRA+ groups, in its order: everything else (the A matrices) at the base lr
 * with decay; `lora_B` and every other 1-D parameter at lr x ratio, split into decayed and not
 * decayed by HF's no-decay names; `lora_embedding_B` at `loraplus_lr_embedding` with decay.
 */
export function loraplusParamGroups(trainable: [string, Tensor][], options: OptimizerOptions & { loraplus: { ratio: number; embeddingLr: number } }): ParamGroupSpec[] {
  const { learningRate, weightDecay } = options;
  const loraplusLr = learningRate * options.loraplus.ratio;
  const groups = {
    loraA: [] as Tensor[],
    loraB: [] as Tensor[],
    loraBNoDecay: [] as Tensor[],
    embedding: [] as Tensor[],
  };
  for (const [name, param] of trainable) {
    if (!param.requiresGrad) continue;
    if (name.includes("lora_embedding_B")) groups.embedding.push(param);
    else if (name.includes("lora_B") || param.ndim === 1) (isNoDecayParameter(name) ? groups.loraBNoDecay : groups.loraB).push(param);
    else groups.loraA.push(param);
  }
  return [
    { params: groups.loraA, lr: learningRate, weightDecay },
    { params: groups.loraB, lr: loraplusLr, weightDecay },
    { params: groups.loraBNoDecay, lr: loraplusLr, weightDecay: 0 },
    { params: groups.embedding, lr: options.loraplus.embeddingLr, weightDecay },
  ];
}

/**
 * The HF Trainer's optimizer for `optim` over its parameter groups: torch AdamW for the adamw_*
 * names (fused or HF's own: the same update), plain SGD (lr only, momentum 0) for `sgd`.
 */
export function createOptimizer(trainable: [string, Tensor][], options: OptimizerOptions, print: (line: string) => void = () => {}): Optimizer<BaseHyperParameters> {
  const groups = options.loraplus
    ? loraplusParamGroups(trainable, { ...options, loraplus: options.loraplus })
    : decayParameterGroups(trainable, options.weightDecay).map((group) => ({ ...group, lr: options.learningRate }));
  if (options.loraplus) print(`Using LoRA+ optimizer with loraplus lr ratio ${options.loraplus.ratio.toFixed(2)}.`);
  const name = options.optim ?? "adamw_torch";
  switch (OPTIMIZER_FOR_NAME[name as BuiltOptimizerName]) {
    case "adamw":
      return new AdamW(groups, {
        lr: options.learningRate,
        betas: [options.adamBeta1, options.adamBeta2],
        eps: options.adamEpsilon,
        weightDecay: options.weightDecay,
      });
    case "sgd":
      // HF passes SGD the lr only; each group's weight_decay still applies (torch SGD's L2 form).
      return new SGD(groups, { lr: options.learningRate });
    default:
      throw new UserError(`optim ${name} is not built yet`, "optim", `use one of: ${Object.keys(OPTIMIZER_FOR_NAME).join(", ")}`);
  }
}
