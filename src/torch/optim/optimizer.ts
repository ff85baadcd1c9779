// The optimizer base, after torch.optim.Optimizer: parameter groups with their own hyper-parameters
// (schedulers write each group's `lr`), per-parameter state kept out of every `tidy`, `step()` run
// inside `tidy` and `noGrad`, and a state dict laid out as torch's (state by parameter index,
// param_groups with snake_case keys) split into tensors plus JSON-able metadata for safetensors.
import { noGrad } from "../autograd.ts";
import { keep, tidy } from "../scope.ts";
import { Tensor } from "../tensor.ts";
import { zeroGradients } from "../nn/module.ts";

export interface BaseHyperParameters {
  lr: number;
}

export type ParamGroup<H extends BaseHyperParameters> = H & {
  params: Tensor[];
  /** The lr a scheduler multiplies (torch's `initial_lr`), set when a scheduler is attached. */
  initialLr?: number;
};

export type ParamGroupInput<H extends BaseHyperParameters> = Partial<H> & { params: Iterable<Tensor> };
export type ParamsInput<H extends BaseHyperParameters> = Iterable<Tensor> | ParamGroupInput<H>[];

/** One parameter's state: the step count (where the algorithm keeps one) and named tensors. */
export interface ParamState {
  step?: number;
  tensors: Record<string, Tensor>;
}

export type JsonValue = number | string | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export interface OptimizerStateMeta {
  /** Per parameter index (across groups, in order): the non-tensor state. */
  state: Record<string, { step?: number }>;
  /** Each group's hyper-parameters in torch's snake_case names, and its parameter indices. */
  param_groups: ({ params: number[] } & Record<string, JsonValue>)[];
}

/** `tensors` holds `state.<index>.<name>` (e.g. `state.0.exp_avg`); `meta` is plain JSON. */
export interface OptimizerStateDict {
  tensors: Record<string, Tensor>;
  meta: OptimizerStateMeta;
}

export abstract class Optimizer<H extends BaseHyperParameters> {
  readonly defaults: H;
  readonly paramGroups: ParamGroup<H>[] = [];
  protected readonly state = new Map<Tensor, ParamState>();

  constructor(params: ParamsInput<H>, defaults: H) {
    this.defaults = defaults;
    const list = [...(params as Iterable<Tensor | ParamGroupInput<H>>)];
    if (list.length === 0) throw new Error(`${this.constructor.name}: got an empty parameter list`);
    const groups = list[0] instanceof Tensor ? [{ params: list as Tensor[] } as unknown as ParamGroupInput<H>] : (list as ParamGroupInput<H>[]);
    for (const group of groups) this.addParamGroup(group);
  }

  /** Adds a group; hyper-parameters it leaves out come from the defaults. */
  addParamGroup(input: ParamGroupInput<H>): void {
    const params = [...input.params];
    const taken = new Set(this.paramGroups.flatMap((group) => group.params));
    for (const tensor of params) {
      if (!(tensor instanceof Tensor)) throw new Error(`${this.constructor.name}: a parameter group holds a ${typeof tensor}, not a Tensor`);
      if (taken.has(tensor)) throw new Error(`${this.constructor.name}: some parameters appear in more than one parameter group`);
      taken.add(tensor);
    }
    const group = { ...this.defaults, ...input, params } as ParamGroup<H>;
    this.validate(group);
    this.paramGroups.push(group);
  }

  /** Checks a group's hyper-parameters; throws a clear error for a bad value. */
  protected abstract validate(group: ParamGroup<H>): void;

  /** Updates one parameter from its gradient (called inside `tidy` and `noGrad`). */
  protected abstract update(param: Tensor, grad: Tensor, group: ParamGroup<H>, state: ParamState): void;

  /** One optimisation step over every parameter that has a gradient. */
  step(): void {
    tidy(() =>
      noGrad(() => {
        for (const group of this.paramGroups) {
          for (const param of group.params) {
            const grad = param.grad;
            if (!grad) continue;
            let state = this.state.get(param);
            if (!state) {
              state = { tensors: {} };
              this.state.set(param, state);
            }
            // One scope per parameter: its temporaries are freed before the next, as in PyTorch.
            const paramState = state;
            tidy(() => this.update(param, grad, group, paramState));
          }
        }
      }),
    );
  }

  /** Registers a state tensor: kept out of every `tidy` until the optimizer is disposed. */
  protected setState(state: ParamState, name: string, tensor: Tensor): Tensor {
    const previous = state.tensors[name];
    state.tensors[name] = keep(tensor);
    if (previous && previous !== tensor) previous.dispose();
    return tensor;
  }

  /** Drops (default, as torch 2) or zeroes the gradients of every parameter in every group. */
  zeroGrad(setToNone = true): void {
    tidy(() => zeroGradients(this.paramGroups.flatMap((group) => group.params), setToNone));
  }

  /** The state as torch lays it out: tensors are the optimizer's own (don't dispose them). */
  stateDict(): OptimizerStateDict {
    const tensors: Record<string, Tensor> = {};
    const meta: OptimizerStateMeta = { state: {}, param_groups: [] };
    let index = 0;
    for (const group of this.paramGroups) {
      const indices: number[] = [];
      for (const param of group.params) {
        const state = this.state.get(param);
        if (state) {
          meta.state[String(index)] = state.step === undefined ? {} : { step: state.step };
          for (const [name, tensor] of Object.entries(state.tensors)) tensors[`state.${index}.${name}`] = tensor;
        }
        indices.push(index++);
      }
      const hyper: Record<string, JsonValue> = {};
      for (const [key, value] of Object.entries(group)) {
        if (key !== "params" && value !== undefined) hyper[snakeCase(key)] = value as JsonValue;
      }
      meta.param_groups.push({ ...hyper, params: indices });
    }
    return { tensors, meta };
  }

  /**
   * Restores a state dict: group hyper-parameters (lr included) and per-parameter state, copied
   * into new tensors of each parameter's dtype and device (the caller keeps ownership of `tensors`).
   */
  loadStateDict(dict: OptimizerStateDict): void {
    const { tensors, meta } = dict;
    if (meta.param_groups.length !== this.paramGroups.length) {
      throw new Error(
        `${this.constructor.name}.loadStateDict: the state dict has ${meta.param_groups.length} parameter groups, the optimizer has ${this.paramGroups.length}`,
      );
    }
    const byIndex: Tensor[] = [];
    meta.param_groups.forEach((saved, g) => {
      const group = this.paramGroups[g]!;
      if (saved.params.length !== group.params.length) {
        throw new Error(
          `${this.constructor.name}.loadStateDict: parameter group ${g} has ${saved.params.length} parameters in the state dict and ${group.params.length} in the optimizer`,
        );
      }
      saved.params.forEach((index, i) => (byIndex[index] = group.params[i]!));
    });
    const grouped = new Map<number, Record<string, Tensor>>();
    for (const [key, tensor] of Object.entries(tensors)) {
      const match = /^state\.(\d+)\.(.+)$/.exec(key);
      if (!match) throw new Error(`${this.constructor.name}.loadStateDict: unexpected tensor key "${key}" (expected state.<index>.<name>)`);
      const index = Number(match[1]);
      if (!byIndex[index]) throw new Error(`${this.constructor.name}.loadStateDict: "${key}" names parameter ${index}, which no group holds`);
      grouped.set(index, { ...grouped.get(index), [match[2]!]: tensor });
    }
    for (const [index, tensorsOfParam] of grouped) {
      const param = byIndex[index]!;
      for (const [name, tensor] of Object.entries(tensorsOfParam)) {
        if (!sameShape(tensor.shape, param.shape)) {
          throw new Error(
            `${this.constructor.name}.loadStateDict: "state.${index}.${name}" has shape [${tensor.shape.join(", ")}], parameter ${index} has [${param.shape.join(", ")}]`,
          );
        }
      }
    }
    this.disposeState();
    meta.param_groups.forEach((saved, g) => {
      const group = this.paramGroups[g]! as unknown as Record<string, unknown>;
      for (const [key, value] of Object.entries(saved)) if (key !== "params") group[camelCase(key)] = value;
    });
    const indices = new Set([...grouped.keys(), ...Object.keys(meta.state).map(Number)]);
    for (const index of indices) {
      const param = byIndex[index];
      if (!param) continue;
      const state: ParamState = { tensors: {} };
      const step = meta.state[String(index)]?.step;
      if (step !== undefined) state.step = step;
      for (const [name, tensor] of Object.entries(grouped.get(index) ?? {})) {
        state.tensors[name] = keep(
          tidy(() => noGrad(() => tensor.to(param.dtype).to(param.device).clone())),
        );
      }
      this.state.set(param, state);
    }
  }

  /** Frees every state tensor (the optimizer starts afresh on the next step). */
  disposeState(): void {
    for (const state of this.state.values()) for (const tensor of Object.values(state.tensors)) tensor.dispose();
    this.state.clear();
  }

  dispose(): void {
    this.disposeState();
  }
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((size, i) => size === b[i]);
}

function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

function camelCase(name: string): string {
  return name.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase());
}
