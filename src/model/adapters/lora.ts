// LoRA and DoRA as PEFT implements them (peft/tuners/lora/layer.py, model.py, save_and_load.py):
// `LoraLinear` wraps a built `Linear` (or a quantized linear layer, as PEFT wraps bnb's Linear4bit
// for QLoRA) as `base_layer` with `lora_A` [r, in] and `lora_B` [out, r], so state keys are PEFT's
// (`<name>.lora_A.weight`); adapters save and load as PEFT folders (`adapter_config.json`,
// `adapter_model.safetensors`). Target selection follows LLaMA-Factory's `model/adapter.py` and
// `find_all_linear_modules`.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../../errors.ts";
import { cannotMergeError } from "../quantization/index.ts";
import { type QuantizedLinear, isQuantizedLinear } from "../quantization/quantized_linear.ts";
import {
  type DType,
  type Parameter,
  type Tensor,
  Dropout,
  Linear,
  Module,
  cat,
  linear,
  noGrad,
  openSafetensors,
  parameter,
  saveSafetensors,
  svd,
  svdLowrank,
  tidy,
} from "../../torch/index.ts";

export const ADAPTER_CONFIG_NAME = "adapter_config.json";
export const ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors";
/** PEFT's `PeftModel` wraps the model as `base_model.model`; saved keys carry this prefix. */
export const PEFT_PREFIX = "base_model.model.";

export interface LoraLayerOptions {
  rank: number;
  /** Defaults to 2 x rank, as LLaMA-Factory does. */
  alpha?: number;
  dropout?: number;
  useRslora?: boolean;
  useDora?: boolean;
  /** dtype of the LoRA weights; the base layer's by default (PEFT moves them to it). */
  dtype?: DType;
}

/** What LoRA wraps: a Linear, or a quantized linear layer (QLoRA). */
export type LoraBaseLayer = Linear | QuantizedLinear;

/** Whether LoRA can wrap `module`. */
export function isLoraBase(module: unknown): module is LoraBaseLayer {
  return module instanceof Linear || isQuantizedLinear(module);
}

/** A Linear plus a low-rank update: y = base(x) + scaling · B(A(dropout(x))). */
export class LoraLinear extends Module {
  base_layer: LoraBaseLayer;
  lora_A: Linear;
  lora_B: Linear;
  lora_dropout: Dropout;
  /** DoRA's per-output-row magnitude [out], saved by PEFT as `<name>.lora_magnitude_vector`. */
  lora_magnitude_vector: Parameter | null = null;
  readonly loraRank: number;
  readonly loraAlpha: number;
  readonly scaling: number;
  readonly useRslora: boolean;
  readonly useDora: boolean;

  constructor(baseLayer: LoraBaseLayer, options: LoraLayerOptions) {
    super();
    const loraRank = options.rank;
    if (!Number.isInteger(loraRank) || loraRank <= 0) {
      throw new UserError(`lora_rank must be a positive integer, got ${loraRank}`, "lora_rank", "set lora_rank: 8 (or another positive integer)");
    }
    this.loraRank = loraRank;
    this.loraAlpha = options.alpha ?? 2 * loraRank;
    this.useRslora = options.useRslora ?? false;
    this.useDora = options.useDora ?? false;
    // PEFT: rsLoRA keeps the update's scale stable across ranks with alpha / sqrt(r).
    this.scaling = this.useRslora ? this.loraAlpha / Math.sqrt(loraRank) : this.loraAlpha / loraRank;
    this.base_layer = baseLayer;
    const layer = { bias: false, dtype: options.dtype ?? this.baseDtype, device: this.baseDevice };
    // PEFT's init_lora_weights=True: A ~ kaiming_uniform(a=sqrt(5)), which is nn.Linear's default
    // U(-1/sqrt(in), 1/sqrt(in)); B = 0 so the wrapped layer starts as the base layer.
    this.lora_A = new Linear(baseLayer.inFeatures, loraRank, layer);
    this.lora_B = new Linear(loraRank, baseLayer.outFeatures, { ...layer, init: "empty" });
    noGrad(() => {
      this.lora_B.weight.zero_();
    });
    this.lora_dropout = new Dropout(options.dropout ?? 0);
    if (this.useDora) {
      // PEFT's DoraLinearLayer.update_layer: the magnitude starts as the row norms of W + scaling·B·A.
      this.lora_magnitude_vector = parameter(noGrad(() => tidy(() => this.weightNorm(this.loraWeight()).to(layer.dtype))));
    }
  }

  get inFeatures(): number {
    return this.base_layer.inFeatures;
  }

  get outFeatures(): number {
    return this.base_layer.outFeatures;
  }

  /** The base weight's dtype (a quantized layer's compute dtype). */
  get baseDtype(): DType {
    const base = this.base_layer;
    return isQuantizedLinear(base) ? base.computeDtype : base.weight.dtype;
  }

  get baseDevice(): string {
    const base = this.base_layer;
    return isQuantizedLinear(base) ? base.device : base.weight.device;
  }

  /** The base weight [out, in]; a quantized one dequantized afresh (call inside a tidy). */
  private baseWeight(): Tensor {
    const base = this.base_layer;
    return isQuantizedLinear(base) ? base.dequantizeWeight() : base.weight;
  }

  /** B · A [out, in], unscaled, in the base weight's dtype. */
  private loraWeight(): Tensor {
    return this.lora_B.weight.matmul(this.lora_A.weight).to(this.baseDtype);
  }

  /** ‖W + scaling · loraWeight‖ over each output row [out] (PEFT's get_weight_norm; dequantized W for QLoRA). */
  private weightNorm(loraWeight: Tensor, scaling = this.scaling): Tensor {
    const weight = this.baseWeight();
    return weight.add(loraWeight.mul(scaling)).norm(2, 1).to(weight.dtype);
  }

  /** scaling · B · A [out, in]: what merging adds to the base weight (before DoRA's rescale). */
  deltaWeight(): Tensor {
    return tidy(() => this.loraWeight().mul(this.scaling));
  }

  /**
   * PEFT's pissa_init: the adapter starts as the top `rank` singular directions of the base weight
   * W = U S Vh (A = √(S/s)·Vh, B = U·√(S/s), s = scaling) and the base keeps the residual
   * W − s·B·A, so the layer computes what it did. `niter` null takes the full SVD (PEFT's
   * "pissa"); a number takes torch.svd_lowrank with that many subspace iterations ("pissa_niter_N").
   */
  initPissa(niter: number | null): void {
    const rank = this.loraRank;
    const base = this.base_layer;
    if (isQuantizedLinear(base)) {
      throw new UserError("PiSSA cannot initialise an adapter on a quantized model", "pissa_init", "run PiSSA on the full-precision model (LLaMA-Factory: scripts/pissa_init.py), then train with quantization_bit");
    }
    const weight = base.weight;
    if (rank > Math.min(weight.shape[0]!, weight.shape[1]!)) {
      throw new UserError(
        `pissa_init: lora_rank ${rank} exceeds the smaller side of a [${weight.shape}] weight`,
        "lora_rank",
        `set lora_rank to at most ${Math.min(weight.shape[0]!, weight.shape[1]!)}`,
      );
    }
    noGrad(() =>
      tidy(() => {
        const W = weight.to("float32");
        let [Ur, Sr, Vhr]: Tensor[] = [];
        if (niter === null) {
          const { U, S, Vh } = svd(W);
          [Ur, Sr, Vhr] = [U.narrow(1, 0, rank), S.narrow(0, 0, rank), Vh.narrow(0, 0, rank)];
        } else {
          const { U, S, V } = svdLowrank(W, rank, niter);
          [Ur, Sr, Vhr] = [U, S, V.t()];
        }
        const root = Sr!.div(this.scaling).sqrt(); // [r]
        const loraA = root.view(rank, 1).mul(Vhr!); // diag(√S) · Vh  [r, in]
        const loraB = Ur!.mul(root.view(1, rank)); // U · diag(√S)  [out, r]
        this.lora_A.weight.copy_(loraA.to(this.lora_A.weight.dtype));
        this.lora_B.weight.copy_(loraB.to(this.lora_B.weight.dtype));
        weight.copy_(W.sub(loraB.mul(this.scaling).matmul(loraA)).to(weight.dtype));
      }),
    );
  }

  /** x [..., in] -> [..., out] */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const result = this.base_layer.forward(x);
      const resultDtype = result.dtype;
      const loraDtype = this.lora_A.weight.dtype;
      const loraInput = x.dtype === loraDtype ? x : x.to(loraDtype);
      if (!this.lora_magnitude_vector) {
        const update = this.lora_B.forward(this.lora_A.forward(this.lora_dropout.forward(loraInput)));
        return result.add(update.mul(this.scaling)).to(resultDtype);
      }
      return result.add(this.doraUpdate(loraInput, result)).to(resultDtype);
    });
  }

  /**
   * PEFT's DoraLinearLayer.forward: (m/‖W + sBA‖ - 1) · xWᵀ + m/‖W + sBA‖ · s · B(A(x)), the norm
   * detached (DoRA paper §4.3). With dropout active the base term is recomputed on the dropped
   * input, as PEFT does.
   */
  private doraUpdate(loraInput: Tensor, baseResult: Tensor): Tensor {
    const dropoutActive = this.lora_dropout.p > 0 && this.lora_dropout.training;
    const dropped = dropoutActive ? this.lora_dropout.forward(loraInput) : loraInput;
    const base = this.base_layer;
    let baseNoBias: Tensor; // [..., out]
    if (dropoutActive && isQuantizedLinear(base)) baseNoBias = base.bias ? base.forward(dropped).sub(base.bias) : base.forward(dropped);
    else if (dropoutActive) baseNoBias = linear(dropped, (base as Linear).weight);
    else baseNoBias = base.bias ? baseResult.sub(base.bias) : baseResult;
    const weightNorm = this.weightNorm(this.loraWeight().detach()).detach(); // [out]
    const magnitudeScale = this.lora_magnitude_vector!.div(weightNorm); // [out], broadcast on the last dim
    const loraResult = this.lora_B.forward(this.lora_A.forward(dropped)); // [..., out]
    return magnitudeScale.sub(1).mul(baseNoBias).add(magnitudeScale.mul(loraResult).mul(this.scaling));
  }

  /**
   * A plain Linear with the update folded in: W + s·B·A (DoRA: (m/‖W + s·B·A‖)·(W + s·B·A)); bias
   * kept. A quantized base is refused, as LLaMA-Factory refuses merging into a quantized model.
   */
  merge(): Linear {
    const base = this.base_layer;
    if (isQuantizedLinear(base)) throw cannotMergeError(base.quantizationMethod, "a LoRA adapter");
    const merged = new Linear(base.inFeatures, base.outFeatures, {
      bias: base.bias !== null,
      dtype: base.weight.dtype,
      device: base.weight.device,
      init: "empty",
    });
    noGrad(() =>
      tidy(() => {
        const updated = base.weight.add(this.loraWeight().mul(this.scaling)); // [out, in]
        if (this.lora_magnitude_vector) {
          const norm = this.weightNorm(this.loraWeight(), this.scaling); // [out]
          merged.weight.copy_(updated.mul(this.lora_magnitude_vector.div(norm).view(-1, 1)));
        } else {
          merged.weight.copy_(updated);
        }
        if (base.bias) merged.bias!.copy_(base.bias);
      }),
    );
    merged.weight.requiresGrad_(base.weight.requiresGrad);
    merged.bias?.requiresGrad_(base.bias!.requiresGrad);
    return merged;
  }
}

// --- target selection ---------------------------------------------------------------------------

/** Heads LLaMA-Factory's find_all_linear_modules never targets (output layers of various families). */
const OUTPUT_HEADS = new Set(["lm_head", "output_layer", "output"]);

/**
 * LLaMA-Factory's find_all_linear_modules: the last name component of every Linear in the model,
 * output heads excepted (tiny Llama: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).
 */
export function findAllLinearModules(model: Module): string[] {
  const names = new Set<string>();
  for (const [name, module] of model.namedModules()) {
    if (!isLoraBase(module)) continue;
    const last = name.split(".").pop()!;
    if (OUTPUT_HEADS.has(last)) continue;
    names.add(last);
  }
  return [...names];
}

/**
 * PEFT's check_target_module_exists: a list entry matches a module named exactly so or ending in
 * ".entry"; a single string is a regular expression that must match the whole name.
 */
export function matchesTarget(moduleName: string, targets: string[] | string): boolean {
  if (typeof targets === "string") return new RegExp(`^(?:${targets})$`).test(moduleName);
  return targets.some((target) => moduleName === target || moduleName.endsWith(`.${target}`));
}

/** PEFT's rank_pattern / alpha_pattern lookup: a key matches a module name's dotted tail. */
function patternValue(pattern: Record<string, number> | undefined, moduleName: string): number | undefined {
  for (const [key, value] of Object.entries(pattern ?? {})) {
    if (new RegExp(`^(?:.*\\.)?(?:${key})$`).test(moduleName)) return value;
  }
  return undefined;
}

function linearNames(model: Module): string[] {
  return model
    .namedModules()
    .filter(([, module]) => isLoraBase(module))
    .map(([name]) => name);
}

// --- applying -----------------------------------------------------------------------------------

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

/** Every LoraLinear in the model with its full name. */
export function loraLayers(model: Module): [string, LoraLinear][] {
  return model.namedModules().filter((entry): entry is [string, LoraLinear] => entry[1] instanceof LoraLinear);
}

/** Full names of the modules `additionalTarget` names (suffix match, as PEFT's modules_to_save). */
function additionalModuleNames(model: Module, additionalTarget: string[]): string[] {
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

// --- saving and loading -------------------------------------------------------------------------

/**
 * The adapter's tensors under PEFT's saved names: `base_model.model.<name>.lora_A.weight`,
 * `.lora_B.weight`, `.lora_magnitude_vector` (DoRA), and the modules_to_save modules' parameters
 * as `base_model.model.<name>.<param>`. The values are the model's own tensors (don't dispose).
 */
export function loraStateDict(model: Module, modulesToSave: string[] | null = appliedConfigs.get(model)?.modules_to_save ?? null): Record<string, Tensor> {
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
  const applied = config ?? appliedConfigs.get(model);
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
  const applied = appliedConfigs.get(model);
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
    appliedConfigs.set(model, config);
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

/** Puts the base layers back (dropping the LoRA weights), after a failed load. */
function unwrapLora(model: Module): void {
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

/** The adapter config recorded on a model by applyLora / loadLoraAdapter, if any. */
export function appliedLoraConfig(model: Module): LoraAdapterConfig | undefined {
  return appliedConfigs.get(model);
}
