// The Module base class, after torch.nn.Module: parameters, buffers and children are found by
// walking the module's own properties, so property names are the HF checkpoint names
// (`this.self_attn.q_proj` -> `self_attn.q_proj.weight`; an array of modules `layers` gives
// `layers.0`, `layers.1`, ...; a plain object of modules gives `name.key`). Properties whose names
// start with `_` are private state and never walked.
import { type DType, type Device, SCALAR_TYPE, isFloating } from "../dtype.ts";
import { noGrad } from "../autograd.ts";
import { keep, tidy } from "../scope.ts";
import { Tensor } from "../tensor.ts";

/** A parameter is a kept tensor flagged trainable through `requiresGrad`. */
export type Parameter = Tensor;

/** Marks `tensor` as a parameter: kept out of every `tidy`, and trainable unless told otherwise. */
export function parameter(tensor: Tensor, requiresGrad = true): Parameter {
  keep(tensor);
  if (tensor.requiresGrad !== requiresGrad) tensor.requiresGrad_(requiresGrad);
  return tensor;
}

export type StateDict = Record<string, Tensor>;

export interface LoadStateDictOptions {
  /** Missing or unexpected keys are an error (default true); otherwise they are returned. */
  strict?: boolean;
  /** Copy a tensor of another dtype with a cast instead of failing (default false). */
  allowDtypeCast?: boolean;
}

export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

/** Where a registered tensor lives, so `to()` can swap it for a converted one. */
interface TensorSlot {
  name: string;
  owner: Module;
  property: string;
  tensor: Tensor;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype;
}

export class Module {
  training = true;
  readonly #bufferNames = new Set<string>();
  readonly #nonPersistentBuffers = new Set<string>();

  /** Registers a buffer: a state tensor that is not a parameter (saved unless non-persistent). */
  registerBuffer(name: string, tensor: Tensor | null, persistent = true): void {
    if (tensor) {
      keep(tensor);
      if (tensor.requiresGrad) tensor.requiresGrad_(false);
    }
    (this as unknown as Record<string, unknown>)[name] = tensor;
    this.#bufferNames.add(name);
    if (persistent) this.#nonPersistentBuffers.delete(name);
    else this.#nonPersistentBuffers.add(name);
  }

  // --- traversal --------------------------------------------------------------------------

  /** Direct children, in property order: `[name, module]` with array indices and object keys joined by dots. */
  namedChildren(): [string, Module][] {
    const children: [string, Module][] = [];
    for (const [property, value] of Object.entries(this)) {
      if (property.startsWith("_")) continue;
      if (value instanceof Module) {
        children.push([property, value]);
      } else if (Array.isArray(value)) {
        value.forEach((item, index) => {
          if (item instanceof Module) children.push([`${property}.${index}`, item]);
        });
      } else if (isPlainObject(value)) {
        for (const [key, item] of Object.entries(value)) {
          if (item instanceof Module) children.push([`${property}.${key}`, item]);
        }
      }
    }
    return children;
  }

  /** This module (named `prefix`) and every descendant, each module once. */
  namedModules(prefix = "", seen = new Set<Module>()): [string, Module][] {
    if (seen.has(this)) return [];
    seen.add(this);
    const modules: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.namedChildren()) {
      modules.push(...child.namedModules(prefix ? `${prefix}.${name}` : name, seen));
    }
    return modules;
  }

  modules(): Module[] {
    return this.namedModules().map(([, module]) => module);
  }

  /** Tensor properties of this module alone: parameters (not buffers) or buffers. */
  #ownTensors(kind: "parameters" | "buffers" | "persistent"): [string, Tensor][] {
    const tensors: [string, Tensor][] = [];
    for (const [property, value] of Object.entries(this)) {
      if (property.startsWith("_") || !(value instanceof Tensor)) continue;
      const isBuffer = this.#bufferNames.has(property);
      if (kind === "parameters" && isBuffer) continue;
      if (kind === "buffers" && !isBuffer) continue;
      if (kind === "persistent" && this.#nonPersistentBuffers.has(property)) continue;
      tensors.push([property, value]);
    }
    return tensors;
  }

  #slots(kind: "parameters" | "buffers" | "persistent"): TensorSlot[] {
    const slots: TensorSlot[] = [];
    for (const [prefix, module] of this.namedModules()) {
      for (const [property, tensor] of module.#ownTensors(kind)) {
        slots.push({ name: prefix ? `${prefix}.${property}` : property, owner: module, property, tensor });
      }
    }
    return slots;
  }

  /**
   * Parameters in HF dotted names (`model.layers.0.mlp.down_proj.weight`). A tensor shared by two
   * modules (tied embeddings) is listed once, under its first name, as torch does.
   */
  namedParameters(options: { trainableOnly?: boolean } = {}): [string, Parameter][] {
    const seen = new Set<Tensor>();
    const named: [string, Parameter][] = [];
    for (const { name, tensor } of this.#slots("parameters")) {
      if (seen.has(tensor)) continue;
      seen.add(tensor);
      if (options.trainableOnly && !tensor.requiresGrad) continue;
      named.push([name, tensor]);
    }
    return named;
  }

  parameters(options: { trainableOnly?: boolean } = {}): Parameter[] {
    return this.namedParameters(options).map(([, tensor]) => tensor);
  }

  namedBuffers(): [string, Tensor][] {
    const seen = new Set<Tensor>();
    return this.#slots("buffers")
      .filter(({ tensor }) => !seen.has(tensor) && seen.add(tensor))
      .map(({ name, tensor }) => [name, tensor]);
  }

  buffers(): Tensor[] {
    return this.namedBuffers().map(([, tensor]) => tensor);
  }

  /** The module at a dotted path (`model.layers.0.self_attn`); "" is this module. */
  getSubmodule(name: string): Module {
    if (name === "") return this;
    let current: unknown = this;
    const walked: string[] = [];
    for (const part of name.split(".")) {
      const container = current as Record<string, unknown> | unknown[];
      current = Array.isArray(container) ? container[Number(part)] : (container as Record<string, unknown>)[part];
      walked.push(part);
      if (current === undefined || current === null) {
        throw new Error(`getSubmodule: ${this.constructor.name} has no submodule "${walked.join(".")}" (looking for "${name}")`);
      }
    }
    if (!(current instanceof Module)) {
      throw new Error(`getSubmodule: "${name}" is a ${describe(current)}, not a Module`);
    }
    return current;
  }

  /** Replaces the child at a dotted path (adapter surgery); returns the module it replaced. */
  setSubmodule(name: string, module: Module): Module {
    const parts = name.split(".");
    const last = parts.pop()!;
    let parent: unknown = this;
    for (const part of parts) {
      const container = parent as Record<string, unknown> | unknown[];
      parent = Array.isArray(container) ? container[Number(part)] : (container as Record<string, unknown>)[part];
      if (parent === undefined || parent === null) {
        throw new Error(`setSubmodule: ${this.constructor.name} has no submodule "${parts.join(".")}" (setting "${name}")`);
      }
    }
    const holder = parent as Record<string, unknown>;
    const previous = Array.isArray(parent) ? parent[Number(last)] : holder[last];
    if (!(previous instanceof Module)) {
      throw new Error(`setSubmodule: "${name}" is a ${describe(previous)}, not a Module; only modules can be swapped`);
    }
    if (Array.isArray(parent)) parent[Number(last)] = module;
    else holder[last] = module;
    return previous;
  }

  // --- state ------------------------------------------------------------------------------

  /**
   * Parameters and persistent buffers by dotted name, every name of a shared tensor included
   * (torch's state_dict). The values are the module's own tensors, not copies: don't dispose them.
   */
  stateDict(): StateDict {
    const dict: StateDict = {};
    for (const { name, tensor } of this.#slots("persistent")) dict[name] = tensor;
    return dict;
  }

  /**
   * Copies `dict` into this module's tensors in place (so optimizers holding them stay valid), under
   * noGrad. Shape and dtype mismatches are always errors; missing and unexpected keys are errors
   * when `strict` (the default). All problems are reported together, as torch does.
   */
  loadStateDict(dict: StateDict | Map<string, Tensor>, options: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = options.strict ?? true;
    const source = dict instanceof Map ? dict : new Map(Object.entries(dict));
    const own = this.stateDict();
    const missingKeys = Object.keys(own).filter((key) => !source.has(key));
    const unexpectedKeys = [...source.keys()].filter((key) => !(key in own));
    const problems: string[] = [];
    if (strict && missingKeys.length) problems.push(`Missing key(s): ${missingKeys.map((k) => `"${k}"`).join(", ")}.`);
    if (strict && unexpectedKeys.length) problems.push(`Unexpected key(s): ${unexpectedKeys.map((k) => `"${k}"`).join(", ")}.`);
    const copies: [Tensor, Tensor][] = [];
    for (const [key, target] of Object.entries(own)) {
      const value = source.get(key);
      if (!value) continue;
      if (value.isDisposed) {
        problems.push(`the tensor for "${key}" was disposed.`);
      } else if (!sameShape(value.shape, target.shape)) {
        problems.push(
          `size mismatch for "${key}": copying a tensor of shape [${value.shape.join(", ")}], the shape in the module is [${target.shape.join(", ")}].`,
        );
      } else if (value.dtype !== target.dtype && !options.allowDtypeCast) {
        problems.push(`dtype mismatch for "${key}": the tensor is ${value.dtype}, the module's is ${target.dtype} (pass allowDtypeCast to cast).`);
      } else {
        copies.push([target, value]);
      }
    }
    if (problems.length) {
      throw new Error(`Error(s) in loading state dict for ${this.constructor.name}:\n\t${problems.join("\n\t")}`);
    }
    noGrad(() => {
      for (const [target, value] of copies) target.copy_(value);
    });
    return { missingKeys, unexpectedKeys };
  }

  // --- modes and conversion ---------------------------------------------------------------

  /** Sets `training` on this module and every descendant (dropout reads it). */
  train(mode = true): this {
    for (const module of this.modules()) module.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /**
   * Converts every parameter and buffer to a dtype or device in place: each property gets a new
   * kept tensor (the old one is disposed), keeping `requiresGrad`; shared tensors stay shared.
   * Build optimizers after this, as in PyTorch. Only floating tensors change dtype.
   */
  to(target: DType | Device | string, options: { trainableOnly?: boolean } = {}): this {
    const isDtype = target in SCALAR_TYPE;
    const converted = new Map<Tensor, Tensor>();
    // trainableOnly: LLaMA-Factory's cast_trainable_params_to_fp32 (frozen weights and buffers stay).
    const slots = options.trainableOnly
      ? this.#slots("parameters").filter((slot) => slot.tensor.requiresGrad)
      : [...this.#slots("parameters"), ...this.#slots("buffers")];
    noGrad(() => {
      for (const slot of slots) {
        const old = slot.tensor;
        let replacement = converted.get(old);
        if (!replacement) {
          const unchanged = isDtype ? old.dtype === target || !isFloating(old.dtype) : old.device === normalizeDevice(target);
          if (unchanged) {
            replacement = old;
          } else {
            const trainable = old.requiresGrad;
            replacement = keep(old.to(target));
            if (trainable) replacement.requiresGrad_(true);
          }
          converted.set(old, replacement);
        }
        (slot.owner as unknown as Record<string, unknown>)[slot.property] = replacement;
      }
    });
    for (const [old, replacement] of converted) if (old !== replacement) old.dispose();
    return this;
  }

  /** Sets `requiresGrad` on every parameter (freezing with `false`). */
  requiresGrad_(requiresGrad = true): this {
    for (const tensor of this.parameters()) tensor.requiresGrad_(requiresGrad);
    return this;
  }

  /** Drops every parameter's gradient (`setToNone`, the default as in torch 2) or zeroes it. */
  zeroGrad(setToNone = true): void {
    zeroGradients(this.parameters(), setToNone);
  }

  numParameters(options: { trainableOnly?: boolean } = {}): number {
    return this.parameters(options).reduce((total, tensor) => total + tensor.numel, 0);
  }

  /** Frees every parameter and buffer; the module is unusable afterwards. */
  dispose(): void {
    for (const { tensor } of [...this.#slots("parameters"), ...this.#slots("buffers")]) tensor.dispose();
  }
}

/** Drops (or zeroes) the gradients of `parameters`; shared by Module and the optimizers. */
export function zeroGradients(parameters: Iterable<Tensor>, setToNone = true): void {
  for (const tensor of parameters) {
    if (setToNone) {
      tensor.grad = null;
    } else {
      tidy(() =>
        noGrad(() => {
          tensor.grad?.zero_();
        }),
      );
    }
  }
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((size, i) => size === b[i]);
}

function normalizeDevice(device: string): string {
  return device === "cuda" ? "cuda:0" : device;
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (value instanceof Tensor) return "Tensor";
  return typeof value === "object" ? (value.constructor?.name ?? "object") : typeof value;
}
