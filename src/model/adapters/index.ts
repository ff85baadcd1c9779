// Fine-tuning setup as LLaMA-Factory's model/adapter.py `init_adapter`: full, freeze (with LLaMA
// Pro) or LoRA (merging earlier adapters, resuming or creating the last; on a quantized model the
// one adapter stays unmerged), then the parameter report of `print_param_status` and `count_parameters`.
import { UserError } from "../../errors.ts";
import type { DType } from "../../torch/index.ts";
import { quantizationMethodOf, quantizedParameterCount } from "../quantization/index.ts";
import type { CausalLM } from "../registry.ts";
import { applyFreeze } from "./freeze.ts";
import { expandedModuleNames } from "./llama_pro.ts";
import { type LoraAdapterConfig, applyLora, mergeLora } from "./lora.ts";
import { findAllLinearModules } from "./lora_targets.ts";
import { loadLoraAdapter } from "./peft_format.ts";

export * from "./freeze.ts";
export * from "./llama_pro.ts";
export * from "./lora.ts";
export * from "./lora_layer.ts";
export * from "./lora_targets.ts";
export * from "./peft_format.ts";

export interface FinetuningOptions {
  finetuningType: "lora" | "freeze" | "full";
  /** Training (default) or inference: an untrained model is frozen whole. */
  isTrainable?: boolean;
  freezeTrainableLayers?: number;
  freezeTrainableModules?: string[];
  freezeExtraModules?: string[] | null;
  useLlamaPro?: boolean;
  loraRank?: number;
  loraAlpha?: number | null;
  loraDropout?: number;
  loraTarget?: string[];
  additionalTarget?: string[] | null;
  useRslora?: boolean;
  useDora?: boolean;
  pissaInit?: boolean;
  /** Fast-SVD iterations for PiSSA (pissa_iter); -1 takes the full SVD. */
  pissaIter?: number;
  /** Adapters to load in order: all but the last are merged; the last is resumed when training. */
  adapterNameOrPath?: string[] | null;
  createNewAdapter?: boolean;
  /**
   * dtype of new LoRA weights: LLaMA-Factory upcasts trainable weights to float32 unless
   * pure_bf16; the LoRA path casts its input and output, so a bf16 base model works with it.
   */
  loraDtype?: DType;
  /**
   * LLaMA-Factory's cast_trainable_params_to_fp32 (bf16 without pure_bf16): every trainable
   * parameter is cast to float32 after the setup, the master weights of mixed precision, while
   * frozen weights stay in the dtype the model was loaded in.
   */
  upcastTrainable?: boolean;
}

export interface FinetuningResult {
  /** The LoRA adapter the model carries afterwards (to save), if any. */
  loraConfig: LoraAdapterConfig | null;
  trainableParams: number;
  allParams: number;
}

/** Sets up the model for `finetuningType` in place, as LLaMA-Factory's init_adapter. */
export function applyFinetuning(model: CausalLM, options: FinetuningOptions): FinetuningResult {
  const isTrainable = options.isTrainable ?? true;
  const adapters = options.adapterNameOrPath ?? [];
  if (adapters.length && options.finetuningType !== "lora") {
    throw new UserError("adapter_name_or_path is only valid for LoRA", "adapter_name_or_path", "set finetuning_type: lora, or remove adapter_name_or_path");
  }
  if (options.useLlamaPro && options.finetuningType === "full") {
    throw new UserError("use_llama_pro is only valid for Freeze or LoRA training", "use_llama_pro", "set finetuning_type: freeze or lora");
  }
  // LLaMA-Factory's init_adapter and _setup_lora_tuning on a quantized model (bitsandbytes or GPTQ).
  const quantized = quantizationMethodOf(model);
  if (quantized && isTrainable && options.finetuningType !== "lora") {
    throw new UserError("a quantized model can only be trained with LoRA", "finetuning_type", "set finetuning_type: lora (LLaMA-Factory: \"Quantized models can only be used for the LoRA tuning.\")");
  }
  if (quantized && isTrainable && options.pissaInit) {
    throw new UserError("PiSSA cannot initialise an adapter on a quantized model", "pissa_init", "run PiSSA on the full-precision model (LLaMA-Factory: scripts/pissa_init.py), then train with quantization_bit");
  }
  if (quantized && adapters.length > 1) {
    throw new UserError(`a quantized model accepts a single adapter, got ${adapters.length}`, "adapter_name_or_path", "merge the adapters onto the full-precision model first (lmf export), then load one");
  }
  let loraConfig: LoraAdapterConfig | null = null;
  if (!isTrainable) model.requiresGrad_(false);

  if (options.finetuningType === "full") {
    if (isTrainable) model.requiresGrad_(true);
  } else if (options.finetuningType === "freeze") {
    if (isTrainable) {
      applyFreeze(model, {
        trainableLayers: options.freezeTrainableLayers ?? 2,
        trainableModules: options.freezeTrainableModules ?? ["all"],
        extraModules: options.freezeExtraModules ?? null,
        useLlamaPro: options.useLlamaPro,
      });
    }
  } else {
    // LLaMA-Factory: merge every adapter but the one to resume (the last, when training without
    // create_new_adapter); at inference or with create_new_adapter, merge them all. A quantized
    // model is not mergeable: its one adapter stays a LoRA layer over the quantized weight.
    const keepLast = (isTrainable && !options.createNewAdapter) || quantized !== null;
    const resume = keepLast && adapters.length ? adapters[adapters.length - 1]! : null;
    for (const folder of resume ? adapters.slice(0, -1) : adapters) {
      loadLoraAdapter(model, folder);
      mergeLora(model);
    }
    if (resume) loraConfig = loadLoraAdapter(model, resume, { trainable: isTrainable });
    if (isTrainable && !resume) {
      const rank = options.loraRank ?? 8;
      const requested = options.loraTarget ?? ["all"];
      let targets = requested.length === 1 && requested[0] === "all" ? findAllLinearModules(model) : requested;
      if (options.useLlamaPro) targets = expandedModuleNames(model, targets, options.freezeTrainableLayers ?? 2);
      if (options.useDora && quantized && quantized !== "bnb") {
        throw new UserError("DoRA is not compatible with PTQ-quantized (GPTQ) models", "use_dora", "drop use_dora, or train on the full-precision model with quantization_bit");
      }
      loraConfig = applyLora(model, {
        targets,
        rank,
        alpha: options.loraAlpha ?? rank * 2,
        dropout: options.loraDropout ?? 0,
        useRslora: options.useRslora,
        useDora: options.useDora,
        pissaInit: options.pissaInit,
        pissaIter: options.pissaIter,
        additionalTarget: options.additionalTarget,
        dtype: options.loraDtype,
      });
    }
    if (!isTrainable) model.requiresGrad_(false);
  }
  if (isTrainable && options.upcastTrainable) model.to("float32", { trainableOnly: true });
  return { loraConfig, trainableParams: model.numParameters({ trainableOnly: true }), allParams: model.numParameters() + quantizedParameterCount(model) };
}

/**
 * LLaMA-Factory's "trainable params: N || all params: M || trainable%: x" line; a quantized weight
 * counts with its full number of values, as count_parameters counts a 4-bit Params4bit.
 */
export function paramSummary(model: CausalLM): string {
  const trainable = model.numParameters({ trainableOnly: true });
  const all = model.numParameters() + quantizedParameterCount(model);
  const percent = all ? (100 * trainable) / all : 0;
  return `trainable params: ${trainable.toLocaleString("en-US")} || all params: ${all.toLocaleString("en-US")} || trainable%: ${percent.toFixed(4)}`;
}

/** print_param_status: one line per parameter, then the summary line; returns the lines. */
export function printParamStatus(model: CausalLM, print: (line: string) => void = console.log): string[] {
  const lines = model
    .namedParameters()
    .map(([name, tensor]) => `name: ${name}, dtype: torch.${tensor.dtype}, device: ${tensor.device}, trainable: ${tensor.requiresGrad ? "True" : "False"}`);
  lines.push(paramSummary(model));
  for (const line of lines) print(line);
  return lines;
}
