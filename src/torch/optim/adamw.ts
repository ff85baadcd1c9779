// AdamW as torch.optim.AdamW (torch 1.13, single-tensor path): decoupled weight decay applied to
// the parameter first, bias-corrected moments, eps added outside the sqrt of the corrected second
// moment. `decayParameterGroups` splits parameters as the HF Trainer does (no decay for biases
// and norm weights).
import { zerosLike } from "../creation.ts";
import { Tensor } from "../tensor.ts";
import { Optimizer, type ParamGroup, type ParamGroupInput, type ParamState, type ParamsInput } from "./optimizer.ts";

export interface AdamWHyperParameters {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  amsgrad: boolean;
  maximize: boolean;
}

export class AdamW extends Optimizer<AdamWHyperParameters> {
  constructor(params: ParamsInput<AdamWHyperParameters>, options: Partial<AdamWHyperParameters> = {}) {
    super(params, {
      lr: options.lr ?? 1e-3,
      betas: options.betas ?? [0.9, 0.999],
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 1e-2,
      amsgrad: options.amsgrad ?? false,
      maximize: options.maximize ?? false,
    });
  }

  protected validate(group: ParamGroup<AdamWHyperParameters>): void {
    const [beta1, beta2] = group.betas;
    if (!(group.lr >= 0)) throw new Error(`AdamW: invalid learning rate ${group.lr}`);
    if (!(group.eps >= 0)) throw new Error(`AdamW: invalid epsilon ${group.eps}`);
    if (!(beta1 >= 0 && beta1 < 1)) throw new Error(`AdamW: invalid beta parameter at index 0: ${beta1}`);
    if (!(beta2 >= 0 && beta2 < 1)) throw new Error(`AdamW: invalid beta parameter at index 1: ${beta2}`);
    if (!(group.weightDecay >= 0)) throw new Error(`AdamW: invalid weight_decay value ${group.weightDecay}`);
  }

  protected update(param: Tensor, gradient: Tensor, group: ParamGroup<AdamWHyperParameters>, state: ParamState): void {
    const { lr, eps, weightDecay, amsgrad } = group;
    const [beta1, beta2] = group.betas;
    const grad = group.maximize ? gradient.neg() : gradient;
    const expAvg = state.tensors.exp_avg ?? this.setState(state, "exp_avg", zerosLike(param));
    const expAvgSq = state.tensors.exp_avg_sq ?? this.setState(state, "exp_avg_sq", zerosLike(param));
    const maxExpAvgSq = amsgrad ? (state.tensors.max_exp_avg_sq ?? this.setState(state, "max_exp_avg_sq", zerosLike(param))) : null;
    const step = (state.step ?? 0) + 1;
    state.step = step;

    // Decoupled weight decay: shrink the parameter before the Adam update.
    param.mul_(1 - lr * weightDecay);
    expAvg.mul_(beta1).add_(grad, 1 - beta1);
    expAvgSq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);

    const biasCorrection1 = 1 - beta1 ** step;
    const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** step);
    const stepSize = lr / biasCorrection1;
    let secondMoment = expAvgSq;
    if (maxExpAvgSq) {
      maxExpAvgSq.copy_(maxExpAvgSq.maximum(expAvgSq));
      secondMoment = maxExpAvgSq;
    }
    const denom = secondMoment.sqrt().div(biasCorrection2Sqrt).add_(eps);
    param.addcdiv_(expAvg, denom, -stepSize);
  }
}

// transformers' Trainer.get_decay_parameter_names: these name patterns (on the lower-cased dotted
// name) mark biases and LayerNorm/RMSNorm weights, which get no weight decay.
const NO_DECAY_PATTERNS = [/bias/, /layernorm/, /rmsnorm/, /(?:^|\.)norm(?:$|\.)/, /_norm(?:$|\.)/];

/** True for parameters the HF Trainer exempts from weight decay (biases, norm weights). */
export function isNoDecayParameter(name: string): boolean {
  const lower = name.toLowerCase();
  return NO_DECAY_PATTERNS.some((pattern) => pattern.test(lower));
}

/**
 * The HF Trainer's two AdamW groups over the trainable parameters: [decayed, not decayed]. Both are
 * always present (possibly empty), so the state dict's parameter indices are stable.
 */
export function decayParameterGroups(
  namedParams: Iterable<[string, Tensor]>,
  weightDecay: number,
): ParamGroupInput<AdamWHyperParameters>[] {
  const decay: Tensor[] = [];
  const noDecay: Tensor[] = [];
  for (const [name, tensor] of namedParams) {
    if (!tensor.requiresGrad) continue;
    (isNoDecayParameter(name) ? noDecay : decay).push(tensor);
  }
  return [
    { params: decay, weightDecay },
    { params: noDecay, weightDecay: 0 },
  ];
}
