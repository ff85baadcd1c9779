// LLaMA Pro block expansion, as LLaMA-Factory's scripts/llama_pro.py: after every
// `num_layers / num_expand` layers insert a copy of the layer before it with o_proj and down_proj
// zeroed, so each new block starts as the identity (its residual adds zero) and the model's output
// is unchanged; `find_expanded_modules` (model_utils/misc.py) then names the new blocks' modules.
import { UserError } from "../../errors.ts";
import { noGrad, tidy } from "../../torch/index.ts";
import { loadModel, saveModel } from "../loader.ts";
import { type CausalLM, architectureFor } from "../registry.ts";
import { trainableLayerIds } from "./freeze.ts";

const LAYER_KEY = /^(.*\.layers\.)(\d+)(\..+)$/;
/**
 * The projections whose zeroing makes a copied block add nothing to the residual stream: attention's
 * output, the MLP's down projection (every expert's and the shared expert's too), Mixtral's `w2`.
 */
const ZEROED = [".o_proj.", ".down_proj.", ".w2."];

export interface ExpandOptions {
  numExpandedLayers: number;
}

/**
 * A new model with `numExpandedLayers` identity blocks inserted (config.num_hidden_layers grows
 * by that much); the original model is left as it was (dispose it if no longer needed).
 */
export function expandLayers(model: CausalLM, options: ExpandOptions): CausalLM {
  const numLayers = model.config.num_hidden_layers;
  const numExpand = options.numExpandedLayers;
  if (!Number.isInteger(numExpand) || numExpand <= 0 || numLayers % numExpand !== 0) {
    throw new UserError(
      `\`num_layers\` ${numLayers} should be divisible by \`num_expand\` ${numExpand}`,
      "num_expand",
      `choose a positive divisor of ${numLayers}`,
    );
  }
  const split = numLayers / numExpand;
  // new layer index -> [old layer index, zero o_proj/down_proj]
  const sources: [number, boolean][] = [];
  for (let layer = 0; layer < numLayers; layer++) {
    sources.push([layer, false]);
    if ((layer + 1) % split === 0) sources.push([layer, true]);
  }
  const config = { ...model.config, num_hidden_layers: numLayers + numExpand, ...perLayerSettings(model, sources.map(([source]) => source)) };
  const reference = model.inputEmbeddings().weight;
  const expanded = architectureFor(config).build(config, { dtype: reference.dtype, device: reference.device, init: "empty" });
  const oldState = model.stateDict();
  noGrad(() => {
    for (const [key, target] of Object.entries(expanded.stateDict())) {
      tidy(() => {
        const match = LAYER_KEY.exec(key);
        if (!match) {
          target.copy_(oldState[key]!);
          return;
        }
        const [source, zeroed] = sources[Number(match[2])]!;
        if (zeroed && ZEROED.some((name) => key.includes(name))) target.zero_();
        else target.copy_(oldState[`${match[1]}${source}${match[3]}`]!);
      });
    }
  });
  return expanded;
}

/**
 * The config keys that say what each layer is, rewritten for the expanded order (new layer j is a
 * copy of old layer `sources[j]`), so every layer keeps its kind: Gemma's sliding or global
 * attention (`layer_types`), Qwen-MoE's dense layers (`mlp_only_layers`), DeepSeek-V2's leading
 * dense layers (`first_k_dense_replace`). LLaMA-Factory's script only changes num_hidden_layers,
 * which would shift these kinds onto other layers.
 */
function perLayerSettings(model: CausalLM, sources: number[]): Record<string, unknown> {
  const config = model.config;
  const layers = model.decoderLayers;
  const settings: Record<string, unknown> = {};
  const types = layers.map((layer) => (layer as { layerType?: unknown }).layerType);
  if (types.every((type) => typeof type === "string")) settings.layer_types = sources.map((source) => types[source]);
  const hasExperts = layers.map((layer) => layer.namedParameters().some(([name]) => name.includes(".experts.")));
  if (hasExperts.some(Boolean) && hasExperts.some((sparse) => !sparse)) {
    if (config.model_type === "qwen2_moe" || config.model_type === "qwen3_moe") {
      settings.mlp_only_layers = sources.flatMap((source, index) => (hasExperts[source] ? [] : [index]));
      settings.decoder_sparse_step = 1;
    } else if (config.model_type === "deepseek_v2" && (Number(config.moe_layer_freq ?? 1) === 1)) {
      settings.first_k_dense_replace = sources.filter((source) => !hasExperts[source]).length;
    } else {
      throw new UserError(
        `LLaMA Pro cannot keep this ${String(config.model_type)} model's pattern of dense and sparse layers in the expanded order`,
        "num_expand",
        "expand a model whose layers are all sparse (or all dense), or whose dense layers are listed in mlp_only_layers / first_k_dense_replace",
      );
    }
  }
  return settings;
}

/**
 * `lmf llama-pro expand`: writes the expanded checkpoint (with the tokenizer files) to
 * `outputDir` and returns the settings to train it with.
 */
export function expandCheckpoint(modelFolder: string, outputDir: string, options: ExpandOptions): { numLayers: number; freezeTrainableLayers: number } {
  const model = loadModel(modelFolder);
  try {
    const expanded = expandLayers(model, options);
    saveModel(expanded, outputDir, { copyFrom: modelFolder });
    const numLayers = expanded.config.num_hidden_layers;
    expanded.dispose();
    return { numLayers, freezeTrainableLayers: options.numExpandedLayers };
  } finally {
    model.dispose();
  }
}

/**
 * LLaMA-Factory's find_expanded_modules: full names of the modules matching `targets` (substring)
 * inside the expanded layers (`num_layers / numLayerTrainable` stride), for LoRA with use_llama_pro.
 */
export function expandedModuleNames(model: CausalLM, targets: string[], numLayerTrainable: number): string[] {
  const layerIds = trainableLayerIds(model.config.num_hidden_layers, numLayerTrainable, true);
  const layerMarks = layerIds.map((id) => `.${id}.`);
  return model
    .namedModules()
    .map(([name]) => name)
    .filter((name) => targets.some((target) => name.includes(target)) && layerMarks.some((mark) => name.includes(mark)));
}
