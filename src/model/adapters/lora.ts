// LoRA as surgery on a built model (PEFT's inject_adapter / merge_and_unload / disable_adapter):
// the chosen Linear children become `LoraLinear`s (lora_layer.ts) with the targets of
// lora_targets.ts; adapters save and load in PEFT's format (peft_format.ts).
import { UserError } from "../../errors.ts";
import { type DType, Linear, Module } from "../../torch/index.ts";
import { type LoraBaseLayer, LoraLinear, type LoraUpdate, isLoraBase } from "./lora_layer.ts";
import { findAllLinearModules, linearNames, matchesTarget, patternValue } from "./lora_targets.ts";

export interface ApplyLoraOptions {
  /** Module name suffixes (`q_proj`, `model.layers.1.mlp.up_proj`), `["all"]`, or a PEFT regex string. */
  targets: string[] | string;
  rank: number;
  alpha?: number;
  dropout?: number;
  useRslora?: boolean;
  useDora?: boolean;
  /** PiSSA initialisation (LLaMA-Factory's pissa_init): the adapter takes W's principal directions. */
  pissaInit?: boolean;
  /** Fast-SVD iterations for PiSSA (pissa_iter, default 16); -1 takes the full SVD. */
  pissaIter?: number;
  /** Modules trained in full and saved with the adapter (PEFT's modules_to_save). */
  additionalTarget?: string[] | null;
  /** Per-module rank / alpha overrides (PEFT's rank_pattern / alpha_pattern, when loading). */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  /** Train the adapter (default); false freezes it, for inference. */
  trainable?: boolean;
  dtype?: DType;
}

/** The PEFT LoraConfig fields we write to adapter_config.json (and read back). */
export interface LoraAdapterConfig {
  peft_type: "LORA";
  task_type: "CAUSAL_LM";
  base_model_name_or_path: string | null;
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[] | string;
  bias: "none";
  use_rslora: boolean;
  use_dora: boolean;
  modules_to_save: string[] | null;
  fan_in_fan_out: false;
  /** true (A random, B zero), or PEFT's "pissa" / "pissa_niter_<n>". */
  init_lora_weights: boolean | string;
  inference_mode: boolean;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  layers_to_transform: null;
  layers_pattern: null;
  revision: null;
}

/** The adapter config of a model after applyLora / loadLoraAdapter, for saving. */
const appliedConfigs = new WeakMap<Module, LoraAdapterConfig>();

/** Records the adapter a model carries (applyLora, or an adapter loaded from a folder). */
export function recordLoraConfig(model: Module, config: LoraAdapterConfig): void {
  appliedConfigs.set(model, config);
}

/** Every LoraLinear in the model with its full name. */
export function loraLayers(model: Module): [string, LoraLinear][] {
  return model.namedModules().filter((entry): entry is [string, LoraLinear] => entry[1] instanceof LoraLinear);
}

/** Full names of the modules `additionalTarget` names (suffix match, as PEFT's modules_to_save). */
export function additionalModuleNames(model: Module, additionalTarget: string[]): string[] {
  const names: string[] = [];
  const all = model.namedModules().map(([name]) => name);
  for (const target of additionalTarget) {
    const matched = all.filter((name) => name !== "" && matchesTarget(name, [target]));
    if (!matched.length) {
      const choices = [...new Set(all.filter(Boolean).map((name) => name.split(".").pop()!))].join(", ");
      throw new UserError(`additional_target "${target}" matches no module of the model`, "additional_target", `choose from: ${choices}`);
    }
    names.push(...matched);
  }
  return [...new Set(names)];
}

/**
 * Wraps every targeted Linear in a LoraLinear (surgery with setSubmodule) and freezes everything
 * but the LoRA weights and the `additionalTarget` modules. Returns the PEFT config of the adapter.
 */
export function applyLora(model: Module, options: ApplyLoraOptions): LoraAdapterConfig {
  if (loraLayers(model).length) {
    throw new UserError(
      "the model already carries a LoRA adapter",
      "adapter_name_or_path",
      "merge it first (mergeLora) or resume it instead of creating a new one",
    );
  }
  const requested = options.targets;
  const isAll = Array.isArray(requested) && requested.length === 1 && requested[0] === "all";
  const targets = isAll ? findAllLinearModules(model) : requested;
  const available = linearNames(model);
  const availableShort = [...new Set(available.map((name) => name.split(".").pop()!))].join(", ");
  if (Array.isArray(targets)) {
    for (const target of targets) {
      if (!model.namedModules().some(([name]) => name !== "" && matchesTarget(name, [target]))) {
        throw new UserError(`lora_target "${target}" matches no module of the model`, "lora_target", `choose from: ${availableShort}, or all`);
      }
    }
  }
  const matched = model.namedModules().filter(([name]) => name !== "" && matchesTarget(name, targets));
  const notLinear = matched.filter(([, module]) => !isLoraBase(module));
  if (notLinear.length) {
    throw new UserError(
      `lora_target matches ${notLinear.map(([name, module]) => `${name} (${module.constructor.name})`).slice(0, 3).join(", ")}, which LoRA cannot wrap: only Linear layers are supported`,
      "lora_target",
      `choose from: ${availableShort}, or all`,
    );
  }
  if (!matched.length) {
    throw new UserError(`lora_target ${JSON.stringify(targets)} matches no Linear layer`, "lora_target", `choose from: ${availableShort}, or all`);
  }
  const modulesToSave = options.additionalTarget?.length ? options.additionalTarget : null;
  const savedNames = modulesToSave ? additionalModuleNames(model, modulesToSave) : [];

  // LLaMA-Factory: pissa_iter -1 is PEFT's "pissa" (full SVD), n is "pissa_niter_n".
  const pissaNiter = options.pissaInit && (options.pissaIter ?? 16) !== -1 ? (options.pissaIter ?? 16) : null;
  model.requiresGrad_(false);
  for (const [name, module] of matched) {
    const layer = new LoraLinear(module as LoraBaseLayer, {
      rank: patternValue(options.rankPattern, name) ?? options.rank,
      alpha: patternValue(options.alphaPattern, name) ?? options.alpha ?? 2 * options.rank,
      dropout: options.dropout,
      useRslora: options.useRslora,
      useDora: options.useDora,
      dtype: options.dtype,
    });
    if (options.pissaInit) layer.initPissa(pissaNiter);
    model.setSubmodule(name, layer);
  }
  const trainable = options.trainable ?? true;
  for (const [, layer] of loraLayers(model)) {
    layer.lora_A.requiresGrad_(trainable);
    layer.lora_B.requiresGrad_(trainable);
    layer.lora_magnitude_vector?.requiresGrad_(trainable);
  }
  for (const name of savedNames) model.getSubmodule(name).requiresGrad_(trainable);

  const config: LoraAdapterConfig = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: null,
    r: options.rank,
    lora_alpha: options.alpha ?? 2 * options.rank,
    lora_dropout: options.dropout ?? 0,
    target_modules: targets,
    bias: "none",
    use_rslora: options.useRslora ?? false,
    use_dora: options.useDora ?? false,
    modules_to_save: modulesToSave,
    fan_in_fan_out: false,
    init_lora_weights: options.pissaInit ? (pissaNiter === null ? "pissa" : `pissa_niter_${pissaNiter}`) : true,
    inference_mode: !trainable,
    rank_pattern: options.rankPattern ?? {},
    alpha_pattern: options.alphaPattern ?? {},
    layers_to_transform: null,
    layers_pattern: null,
    revision: null,
  };
  appliedConfigs.set(model, config);
  return config;
}

/** Puts the base layers back (dropping the LoRA weights), after a failed load. */
export function unwrapLora(model: Module): void {
  for (const [name, layer] of loraLayers(model)) {
    model.setSubmodule(name, layer.base_layer);
    layer.lora_A.dispose();
    layer.lora_B.dispose();
    layer.lora_magnitude_vector?.dispose();
  }
  appliedConfigs.delete(model);
}

/**
 * Replaces every LoraLinear with its merged Linear (PEFT's merge_and_unload) and frees the LoRA
 * weights and the replaced base weights, except those the model still uses (a tied lm_head's
 * weight is also the embedding table).
 */
export function mergeLora(model: Module): void {
  const replaced: LoraLinear[] = [];
  for (const [name, layer] of loraLayers(model)) {
    model.setSubmodule(name, layer.merge());
    replaced.push(layer);
  }
  const stillUsed = new Set(model.parameters());
  for (const layer of replaced) {
    for (const tensor of layer.parameters()) if (!stillUsed.has(tensor)) tensor.dispose();
  }
  appliedConfigs.delete(model);
}

/**
 * Runs `fn` with every LoRA layer computing its base layer alone, as PEFT's `disable_adapter()`
 * context: the base model without a second copy in memory (DPO/KTO's reference). PEFT also swaps
 * modules_to_save back to their originals; lmfactory trains those in place, so a model with them is
 * refused here.
 */
export function withAdaptersDisabled<T>(model: Module, fn: () => T): T {
  if (appliedConfigs.get(model)?.modules_to_save?.length) {
    throw new UserError(
      "the adapter-disabled reference model cannot undo additional_target modules, which train in place",
      "additional_target",
      "set ref_model to the base model folder (a frozen copy is loaded), or drop additional_target",
    );
  }
  const layers = loraLayers(model).map(([, layer]) => layer);
  for (const layer of layers) layer.adapterDisabled = true;
  try {
    return fn();
  } finally {
    for (const layer of layers) layer.adapterDisabled = false;
  }
}

/**
 * Runs `fn` with a second adapter active instead of the model's own (PEFT's set_adapter, as
 * LLaMA-Factory's PPO scores with its "reward" adapter on the policy's base): each LoRA layer named
 * in `updates` computes base + that update, the others their base alone; swapped back afterwards.
 */
export function withAdapterSwapped<T>(model: Module, updates: ReadonlyMap<string, LoraUpdate>, fn: () => T): T {
  const layers = loraLayers(model);
  const names = new Set(layers.map(([name]) => name));
  const outside = [...updates.keys()].filter((name) => !names.has(name));
  if (outside.length) {
    throw new UserError(
      `the second adapter targets ${outside.length} module(s) the trained adapter does not (${outside.slice(0, 3).join(", ")})`,
      "lora_target",
      "train the policy's LoRA on at least the modules the reward adapter targets (e.g. lora_target: all)",
    );
  }
  const restore: (() => void)[] = [];
  try {
    for (const [name, layer] of layers) {
      const update = updates.get(name);
      if (update) {
        const previous = layer.swapAdapter(update);
        restore.push(() => layer.swapAdapter(previous));
      } else {
        layer.adapterDisabled = true;
        restore.push(() => (layer.adapterDisabled = false));
      }
    }
    return fn();
  } finally {
    for (const undo of restore.reverse()) undo();
  }
}

/** The adapter config recorded on a model by applyLora / loadLoraAdapter, if any. */
export function appliedLoraConfig(model: Module): LoraAdapterConfig | undefined {
  return appliedConfigs.get(model);
}
