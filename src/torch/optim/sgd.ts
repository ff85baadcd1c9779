// SGD as torch.optim.SGD (torch 1.13, single-tensor path): L2 weight decay added to the gradient,
// momentum buffers started from the first gradient, dampening, and Nesterov momentum.
import { Tensor } from "../tensor.ts";
import { Optimizer, type ParamGroup, type ParamState, type ParamsInput } from "./optimizer.ts";

export interface SGDHyperParameters {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  maximize: boolean;
}

export class SGD extends Optimizer<SGDHyperParameters> {
  constructor(params: ParamsInput<SGDHyperParameters>, options: Partial<SGDHyperParameters> = {}) {
    super(params, {
      lr: options.lr ?? 1e-3,
      momentum: options.momentum ?? 0,
      dampening: options.dampening ?? 0,
      weightDecay: options.weightDecay ?? 0,
      nesterov: options.nesterov ?? false,
      maximize: options.maximize ?? false,
    });
  }

  protected validate(group: ParamGroup<SGDHyperParameters>): void {
    if (!(group.lr >= 0)) throw new Error(`SGD: invalid learning rate ${group.lr}`);
    if (!(group.momentum >= 0)) throw new Error(`SGD: invalid momentum value ${group.momentum}`);
    if (!(group.weightDecay >= 0)) throw new Error(`SGD: invalid weight_decay value ${group.weightDecay}`);
    if (group.nesterov && (group.momentum <= 0 || group.dampening !== 0)) {
      throw new Error("SGD: Nesterov momentum requires a momentum and zero dampening");
    }
  }

  protected update(param: Tensor, gradient: Tensor, group: ParamGroup<SGDHyperParameters>, state: ParamState): void {
    const { lr, momentum, dampening, weightDecay, nesterov } = group;
    let direction = group.maximize ? gradient.neg() : gradient;
    if (weightDecay !== 0) direction = direction.add(param, weightDecay);
    if (momentum !== 0) {
      let buffer = state.tensors.momentum_buffer;
      if (!buffer) {
        buffer = this.setState(state, "momentum_buffer", direction.clone().detach());
      } else {
        buffer.mul_(momentum).add_(direction, 1 - dampening);
      }
      direction = nesterov ? direction.add(buffer, momentum) : buffer;
    }
    param.add_(direction, -lr);
  }
}
