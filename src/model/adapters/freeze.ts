// Freeze (partial-parameter) tuning as LLaMA-Factory's model/adapter.py `_setup_freeze_tuning`:
// pick trainable layer ids (last n, first n, or LLaMA Pro's expanded ones), trainable modules
// inside those layers, and extra non-layer modules; a parameter trains iff its name has
// `.{id}.{module}` at its layer number or contains an extra module name. The layer number is a
// name's first `.N.`: LLaMA-Factory matches `.{id}.` anywhere, which in a mixture of experts also
// picks expert {id} of every layer (`layers.0.mlp.experts.1.`); for dense models both agree.
import { UserError } from "../../errors.ts";
import type { Module } from "../../torch/index.ts";

export interface FreezeOptions {
  /** freeze_trainable_layers: n > 0 the last n layers, n < 0 the first |n| (with LLaMA Pro: the number of expanded layers). */
  trainableLayers: number;
  /** freeze_trainable_modules: `["all"]` or names inside a layer (`mlp`, `self_attn`, ...). */
  trainableModules?: string[];
  /** freeze_extra_modules: modules outside the layers (`embed_tokens`, `norm`, `lm_head`). */
  extraModules?: string[] | null;
  /** use_llama_pro: train only the expanded layers, every `num_layers / trainableLayers`-th one. */
  useLlamaPro?: boolean;
}

/** LLaMA-Factory's trainable layer ids for freeze tuning and LLaMA Pro. */
export function trainableLayerIds(numLayers: number, trainableLayers: number, useLlamaPro = false): number[] {
  if (useLlamaPro) {
    if (trainableLayers <= 0 || numLayers % trainableLayers !== 0) {
      throw new UserError(
        `\`num_layers\` ${numLayers} should be divisible by \`num_layer_trainable\` ${trainableLayers}`,
        "freeze_trainable_layers",
        "with use_llama_pro, set freeze_trainable_layers to the number of expanded layers (the llama-pro expand command prints it)",
      );
    }
    const stride = numLayers / trainableLayers;
    return Array.from({ length: trainableLayers }, (_, index) => (index + 1) * stride - 1);
  }
  if (trainableLayers > 0) {
    const first = Math.max(0, numLayers - trainableLayers);
    return Array.from({ length: numLayers - first }, (_, index) => first + index);
  }
  return Array.from({ length: Math.min(-trainableLayers, numLayers) }, (_, index) => index);
}

/** A parameter name's layer number (its first `.N.`) and what follows it. */
function afterLayerNumber(name: string): { layer: number; rest: string } | null {
  const match = /\.(\d+)\./.exec(name);
  return match ? { layer: Number(match[1]), rest: name.slice(match.index + match[0].length) } : null;
}

/** Module names inside a layer (from `.0.`/`.1.` parameter names) and outside the layers. */
export function freezeModuleChoices(model: Module): { hidden: string[]; nonHidden: string[] } {
  const hidden = new Set<string>();
  const nonHidden = new Set<string>();
  for (const [name] of model.namedParameters()) {
    // The module right after the layer number (LLaMA-Factory probes ".0.", then ".1." for MoD models).
    const inLayer = afterLayerNumber(name);
    if (inLayer && (inLayer.layer === 0 || inLayer.layer === 1)) hidden.add(inLayer.rest.split(".")[0]!);
    if (!/\.\d+\./.test(name)) {
      const parts = name.split(".");
      nonHidden.add(parts[parts.length - 2]!);
    }
  }
  return { hidden: [...hidden], nonHidden: [...nonHidden] };
}

function numLayersOf(model: Module): number {
  const config = (model as unknown as { config?: { num_hidden_layers?: number } }).config;
  const numLayers = config?.num_hidden_layers;
  if (!numLayers) throw new UserError("the model does not support freeze tuning (its config has no num_hidden_layers)", "finetuning_type");
  return numLayers;
}

/**
 * Freezes every parameter except the chosen layers' modules and the extra modules. Returns the
 * trainable parameter names.
 */
export function applyFreeze(model: Module, options: FreezeOptions): string[] {
  const numLayers = numLayersOf(model);
  const layerIds = trainableLayerIds(numLayers, options.trainableLayers, options.useLlamaPro);
  const { hidden, nonHidden } = freezeModuleChoices(model);
  const modules = options.trainableModules ?? ["all"];
  for (const moduleName of modules) {
    if (moduleName !== "all" && !hidden.includes(moduleName)) {
      throw new UserError(`Module ${moduleName} is not found`, "freeze_trainable_modules", `choose from: all, ${hidden.join(", ")}`);
    }
  }
  const extras = options.extraModules ?? [];
  for (const moduleName of extras) {
    if (!nonHidden.includes(moduleName)) {
      throw new UserError(`Module ${moduleName} is not found`, "freeze_extra_modules", `choose from: ${nonHidden.join(", ")}`);
    }
  }
  const inTrainableLayer = (name: string) => {
    const inLayer = afterLayerNumber(name);
    return inLayer !== null && layerIds.includes(inLayer.layer) && modules.some((module) => module === "all" || inLayer.rest.startsWith(module));
  };
  const trainable: string[] = [];
  for (const [name, parameter] of model.namedParameters()) {
    const train = inTrainableLayer(name) || extras.some((module) => name.includes(module));
    parameter.requiresGrad_(train);
    if (train) trainable.push(name);
  }
  return trainable;
}
