// LoRA adapters as PEFT saves and loads them (peft/utils/save_and_load.py): `adapter_config.json`
// and `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight`, so PEFT,
// vLLM and LLaMA-Factory load ours and ours load theirs; PiSSA's converted adapter.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../../errors.ts";
import { type Tensor, Module, cat, noGrad, openSafetensors, saveSafetensors, tidy } from "../../torch/index.ts";
import { type LoraAdapterConfig, appliedLoraConfig, applyLora, loraLayers, recordLoraConfig, unwrapLora, mergeLora, additionalModuleNames } from "./lora.ts";
import { LoraLinear } from "./lora_layer.ts";

export const ADAPTER_CONFIG_NAME = "adapter_config.json";
export const ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors";
/** PEFT's `PeftModel` wraps the model as `base_model.model`; saved keys carry this prefix. */
export const PEFT_PREFIX = "base_model.model.";

/**
 * The adapter's tensors under PEFT's saved names: `base_model.model.<name>.lora_A.weight`,
 * `.lora_B.weight`, `.lora_magnitude_vector` (DoRA), and the modules_to_save modules' parameters
 * as `base_model.model.<name>.<param>`. The values are the model's own tensors (don't dispose).
 */
export function loraStateDict(model: Module, modulesToSave: string[] | null = appliedLoraConfig(model)?.modules_to_save ?? null): Record<string, Tensor> {
  const state: Record<string, Tensor> = {};
  for (const [name, layer] of loraLayers(model)) {
    state[`${PEFT_PREFIX}${name}.lora_A.weight`] = layer.lora_A.weight;
    state[`${PEFT_PREFIX}${name}.lora_B.weight`] = layer.lora_B.weight;
    if (layer.lora_magnitude_vector) state[`${PEFT_PREFIX}${name}.lora_magnitude_vector`] = layer.lora_magnitude_vector;
  }
  if (modulesToSave?.length) {
    for (const name of additionalModuleNames(model, modulesToSave)) {
      for (const [param, tensor] of model.getSubmodule(name).namedParameters()) state[`${PEFT_PREFIX}${name}.${param}`] = tensor;
    }
  }
  return state;
}

export interface SaveLoraOptions {
  /** Recorded as base_model_name_or_path (PEFT and LLaMA-Factory use it to find the base model). */
  baseModelNameOrPath?: string | null;
}

/** Writes a PEFT adapter folder: adapter_config.json and adapter_model.safetensors. */
export function saveLoraAdapter(model: Module, folder: string, config?: LoraAdapterConfig | null, options: SaveLoraOptions = {}): void {
  const applied = config ?? appliedLoraConfig(model);
  if (!applied) throw new Error("saveLoraAdapter: the model carries no LoRA adapter (call applyLora or loadLoraAdapter first)");
  if (!loraLayers(model).length) throw new Error("saveLoraAdapter: the model has no LoraLinear layers (was it merged?)");
  writeAdapter(folder, { ...applied, base_model_name_or_path: options.baseModelNameOrPath ?? applied.base_model_name_or_path }, loraStateDict(model, applied.modules_to_save));
}

/**
 * Copies an adapter folder's weights into the LoRA layers the model already carries (resuming from
 * a checkpoint, where the layers were set up by the run's own arguments).
 */
export function restoreLoraWeights(model: Module, folder: string): void {
  const targets = loraStateDict(model);
  const reader = openSafetensors(join(folder, ADAPTER_WEIGHTS_NAME));
  try {
    noGrad(() => {
      for (const [name, target] of Object.entries(targets)) {
        if (!reader.has(name)) throw new UserError(`the checkpoint lacks ${name}`, folder, "resume with the same LoRA settings the run started with");
        tidy(() => target.copy_(reader.get(name, { dtype: target.dtype })));
      }
    });
  } finally {
    reader.close();
  }
}

/**
 * PEFT's save_pretrained(path_initial_model_for_weight_conversion=...), which LLaMA-Factory's
 * pissa_convert calls: the trained PiSSA adapter (A, B over the residual base W − s·B₀·A₀) as an
 * ordinary LoRA adapter of rank 2r over the original W, with A' = [A; A₀] and B' = [B, −B₀], so
 * s·B'·A' = s·B·A − s·B₀·A₀; alpha doubles with r (× √2 under rsLoRA), keeping s.
 * `initialFolder` holds the adapter as it was initialised (A₀, B₀).
 */
export function savePissaConverted(model: Module, folder: string, initialFolder: string, options: SaveLoraOptions = {}): void {
  const applied = appliedLoraConfig(model);
  if (!applied || !String(applied.init_lora_weights).startsWith("pissa")) {
    throw new Error("savePissaConverted: the model carries no PiSSA adapter (applyLora with pissaInit)");
  }
  if (applied.use_dora) throw new UserError("pissa_convert cannot convert a DoRA adapter", "pissa_convert", "set use_dora: false or pissa_convert: false");
  const reader = openSafetensors(join(initialFolder, ADAPTER_WEIGHTS_NAME));
  const doubled = (pattern: Record<string, number>) => Object.fromEntries(Object.entries(pattern).map(([key, value]) => [key, 2 * value]));
  const config: LoraAdapterConfig = {
    ...applied,
    base_model_name_or_path: options.baseModelNameOrPath ?? applied.base_model_name_or_path,
    init_lora_weights: true,
    r: 2 * applied.r,
    lora_alpha: applied.use_rslora ? applied.lora_alpha * Math.SQRT2 : 2 * applied.lora_alpha,
    rank_pattern: doubled(applied.rank_pattern),
    alpha_pattern: doubled(applied.alpha_pattern),
  };
  try {
    tidy(() => {
      const state: Record<string, Tensor> = {};
      for (const [key, tensor] of Object.entries(loraStateDict(model, applied.modules_to_save))) {
        if (key.endsWith(".lora_A.weight")) state[key] = cat([tensor, reader.get(key, { dtype: tensor.dtype })], 0);
        else if (key.endsWith(".lora_B.weight")) state[key] = cat([tensor, reader.get(key, { dtype: tensor.dtype }).neg()], 1);
        else state[key] = tensor;
      }
      writeAdapter(folder, config, state);
    });
  } finally {
    reader.close();
  }
}

function writeAdapter(folder: string, config: LoraAdapterConfig, state: Record<string, Tensor>): void {
  mkdirSync(folder, { recursive: true });
  // Contiguous copies: saving reads raw bytes, and a tensor could be a view.
  tidy(() => {
    const contiguous = Object.entries(state).map(([key, tensor]) => [key, tensor.detach().contiguous()] as [string, Tensor]);
    saveSafetensors(join(folder, ADAPTER_WEIGHTS_NAME), contiguous, { format: "pt" });
  });
  // PEFT's save_pretrained always records inference_mode: true.
  writeFileSync(join(folder, ADAPTER_CONFIG_NAME), JSON.stringify({ ...config, inference_mode: true }, null, 2) + "\n");
}

/** Reads and checks a PEFT adapter_config.json. */
export function readLoraConfig(folder: string): LoraAdapterConfig {
  const path = join(folder, ADAPTER_CONFIG_NAME);
  if (!existsSync(path)) {
    throw new UserError(`no ${ADAPTER_CONFIG_NAME} found`, folder, "point adapter_name_or_path at a folder saved by PEFT, LLaMA-Factory or lmfactory");
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch (error) {
    throw new UserError(`invalid JSON: ${(error as Error).message}`, path, "fix or re-save the adapter config");
  }
  if (raw.peft_type !== "LORA") {
    throw new UserError(`peft_type "${String(raw.peft_type)}" is not supported`, path, "only LoRA adapters (peft_type: LORA) can be loaded");
  }
  if (raw.fan_in_fan_out === true) throw new UserError("fan_in_fan_out adapters (GPT-2 Conv1D) are not supported", path);
  if (raw.layers_to_transform != null) throw new UserError("layers_to_transform is not supported yet", path, "re-save the adapter without layers_to_transform");
  if (typeof raw.init_lora_weights === "string" && raw.init_lora_weights !== "pissa") {
    // PEFT re-runs the initialisation on the base weights before loading: only the full-SVD PiSSA
    // is reproducible; a fast-SVD one depends on the random draws of the run that made it.
    const pissa = raw.init_lora_weights.startsWith("pissa_niter_");
    throw new UserError(
      `init_lora_weights "${raw.init_lora_weights}" adapters cannot be loaded${pissa ? ": the fast-SVD residual they need cannot be reproduced" : " (OLoRA/LoftQ are not supported)"}`,
      path,
      pissa ? "load the converted adapter instead (train with pissa_convert: true and use <output_dir>/pissa_converted)" : "convert it to a plain LoRA adapter first",
    );
  }
  if (raw.bias !== undefined && raw.bias !== "none") {
    throw new UserError(`bias "${String(raw.bias)}" is not supported`, path, "only adapters saved with bias: none can be loaded");
  }
  // PEFT fills a missing target_modules from its per-architecture table: q_proj, v_proj for Llama.
  const targetModules = (raw.target_modules as string[] | string | null | undefined) ?? ["q_proj", "v_proj"];
  const r = Number(raw.r ?? 8);
  return {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: (raw.base_model_name_or_path as string | null) ?? null,
    r,
    lora_alpha: Number(raw.lora_alpha ?? 8),
    lora_dropout: Number(raw.lora_dropout ?? 0),
    target_modules: targetModules,
    bias: "none",
    use_rslora: Boolean(raw.use_rslora),
    use_dora: Boolean(raw.use_dora),
    modules_to_save: (raw.modules_to_save as string[] | null) ?? null,
    fan_in_fan_out: false,
    init_lora_weights: raw.init_lora_weights === "pissa" ? "pissa" : true,
    inference_mode: Boolean(raw.inference_mode ?? true),
    rank_pattern: (raw.rank_pattern as Record<string, number> | null) ?? {},
    alpha_pattern: (raw.alpha_pattern as Record<string, number> | null) ?? {},
    layers_to_transform: null,
    layers_pattern: null,
    revision: null,
  };
}

/**
 * Applies the adapter saved in `folder` (PEFT format) to `model` and copies its weights in.
 * `trainable` resumes training it; otherwise it is frozen. Several adapters are stacked as
 * LLaMA-Factory does: merge the earlier one (mergeLora) before loading the next.
 */
export function loadLoraAdapter(model: Module, folder: string, options: { trainable?: boolean } = {}): LoraAdapterConfig {
  const config = readLoraConfig(folder);
  const weightsPath = join(folder, ADAPTER_WEIGHTS_NAME);
  if (!existsSync(weightsPath)) {
    throw new UserError(`no ${ADAPTER_WEIGHTS_NAME} found`, folder, "adapter_model.bin is not supported: re-save the adapter with safe_serialization=True");
  }
  if (loraLayers(model).length) {
    throw new UserError(
      "the model already carries a LoRA adapter",
      "adapter_name_or_path",
      "merge it first (mergeLora), as LLaMA-Factory merges all but the last adapter",
    );
  }
  const reader = openSafetensors(weightsPath);
  try {
    applyLora(model, {
      targets: config.target_modules,
      rank: config.r,
      alpha: config.lora_alpha,
      dropout: config.lora_dropout,
      useRslora: config.use_rslora,
      useDora: config.use_dora,
      additionalTarget: config.modules_to_save,
      rankPattern: config.rank_pattern,
      alphaPattern: config.alpha_pattern,
      // A PiSSA adapter's base is the residual W − s·B₀·A₀, recomputed as PEFT does on load.
      pissaInit: config.init_lora_weights === "pissa",
      pissaIter: -1,
      trainable: options.trainable ?? false,
    });
    recordLoraConfig(model, config);
    const targets = loraStateDict(model, config.modules_to_save);
    // Keys may carry PEFT's adapter name (`lora_A.default.weight`), as some savers leave it.
    const canonical = new Map(reader.names().map((key) => [key.replace(/\.default(?=\.weight$|$)/, ""), key]));
    const missing = Object.keys(targets).filter((key) => !canonical.has(key));
    const unexpected = [...canonical.keys()].filter((key) => !(key in targets));
    if (missing.length || unexpected.length) {
      throw new UserError(
        `the adapter does not fit the model: ${missing.length} missing key(s) (${missing.slice(0, 3).join(", ")}), ${unexpected.length} unexpected key(s) (${unexpected.slice(0, 3).join(", ")})`,
        weightsPath,
        "check that the adapter was trained on this base model (base_model_name_or_path)",
      );
    }
    noGrad(() => {
      for (const [key, fileKey] of canonical) {
        tidy(() => {
          const target = targets[key]!;
          const value = reader.get(fileKey);
          if (value.shape.join(",") !== target.shape.join(",")) {
            throw new UserError(`${key} has shape [${value.shape}] in the adapter but [${target.shape}] in the model`, weightsPath, "the adapter belongs to another base model");
          }
          target.copy_(value.dtype === target.dtype ? value : value.to(target.dtype));
        });
      }
    });
    return config;
  } catch (error) {
    if (loraLayers(model).length) unwrapLora(model);
    throw error;
  } finally {
    reader.close();
  }
}
