// Quantized models, as LLaMA-Factory's configure_quantization decides: a checkpoint that is already
// quantized (config.json's quantization_config: GPTQ) loads as it is stored, and quantization_bit
// quantizes a full-precision checkpoint on the fly (bitsandbytes 4/8-bit) while it streams in. Also
// the checks every command shares: what a quantized model cannot do (merging adapters into it).
import { UserError } from "../../errors.ts";
import type { DType, Module } from "../../torch/index.ts";
import type { CausalLM } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import type { WeightSink } from "../loader.ts";
import { bnbFormat, bnbWeightSink } from "./bnb.ts";
import { gptqConfigOf, gptqWeightSink } from "./gptq_checkpoint.ts";
import { type QuantizationMethod, type QuantizedLinear, isQuantizedLinear } from "./quantized_linear.ts";

export * from "./bitsandbytes.ts";
export * from "./bnb.ts";
export * from "./codes.ts";
export * from "./gptq_checkpoint.ts";
export * from "./quantized_linear.ts";

/** On-the-fly quantization (quantization_bit and its companions). */
export interface QuantizationOptions {
  method: string;
  bits: number;
  type: "nf4" | "fp4";
  doubleQuant: boolean;
}

/** quant_method values of quantization_config that lmfactory cannot load, with why. */
const UNSUPPORTED_CHECKPOINTS: Record<string, string> = {
  awq: "AWQ checkpoints (AutoAWQ's GEMM/GEMV packing) are not supported yet",
  aqlm: "AQLM checkpoints (additive codebooks) are not supported",
  bitsandbytes: "checkpoints saved already quantized by bitsandbytes are not supported",
  hqq: "HQQ checkpoints are not supported",
  eetq: "EETQ checkpoints are not supported",
  quanto: "Quanto checkpoints are not supported",
  mxfp4: "MXFP4 checkpoints are not supported",
  fp8: "FP8 checkpoints are not supported",
};

/**
 * Readies `model` (built with empty weights) for the load of `folder`: the sink that takes the
 * quantized layers' tensors, or null for a plain load. Priority as LLaMA-Factory's: an already
 * quantized checkpoint first (quantization_bit is then ignored, with a notice), then on-the-fly.
 */
export function prepareQuantization(
  model: CausalLM,
  folder: string,
  options: { quantization?: QuantizationOptions | null; computeDtype: DType; warn?: (line: string) => void; print?: (line: string) => void },
): WeightSink | null {
  const stored = model.config.quantization_config as { quant_method?: unknown } | undefined;
  if (stored) {
    const method = String(stored.quant_method ?? "");
    if (method !== "gptq") {
      throw new UserError(
        UNSUPPORTED_CHECKPOINTS[method] ?? `quantization_config.quant_method "${method}" is not supported`,
        `${folder}/config.json`,
        "use the full-precision model (with quantization_bit: 4 or 8 to quantize it while loading), or a GPTQ checkpoint",
      );
    }
    if (options.quantization) options.warn?.("quantization_bit has no effect on a model that is already quantized (GPTQ); it is ignored, as in LLaMA-Factory.");
    const config = gptqConfigOf(model.config as ModelConfig, folder);
    options.print?.(`Loading ${config.bits}-bit GPTQ-quantized model.`);
    return gptqWeightSink(model, folder, config, options.computeDtype);
  }
  const quantization = options.quantization;
  if (!quantization) return null;
  if (quantization.method !== "bnb" && quantization.method !== "bitsandbytes") {
    throw new UserError(`quantization_method ${quantization.method} is not supported yet`, "quantization_method", "use quantization_method: bnb");
  }
  if (quantization.bits !== 4 && quantization.bits !== 8) {
    throw new UserError(`bitsandbytes quantizes to 4 or 8 bits, not ${quantization.bits}`, "quantization_bit", "set quantization_bit: 4 or 8");
  }
  const bnb = { bits: quantization.bits, type: quantization.type, doubleQuant: quantization.doubleQuant, computeDtype: options.computeDtype } as const;
  options.print?.(`Quantizing model to ${quantization.bits} bit with bitsandbytes' format (${bnbFormat(bnb)}), compute dtype ${options.computeDtype}.`);
  return bnbWeightSink(model, bnb);
}

/** Every quantized linear layer of a model, with its name. */
export function quantizedLayers(model: Module): [string, QuantizedLinear][] {
  return model.namedModules().filter((entry): entry is [string, QuantizedLinear] => isQuantizedLinear(entry[1]));
}

/** The method of a quantized model (LLaMA-Factory's model.quantization_method), or null. */
export function quantizationMethodOf(model: Module): QuantizationMethod | null {
  return quantizedLayers(model)[0]?.[1].quantizationMethod ?? null;
}

/** The weights the quantized layers stand for, as count_parameters counts a 4-bit weight (its full size). */
export function quantizedParameterCount(model: Module): number {
  return quantizedLayers(model).reduce((total, [, layer]) => total + layer.inFeatures * layer.outFeatures, 0);
}

/**
 * LLaMA-Factory's refusal ("Cannot merge adapters to a quantized model"): an adapter is never
 * merged into a quantized base; it merges onto the full-precision model instead.
 */
export function cannotMergeError(method: QuantizationMethod, what = "adapters"): UserError {
  return new UserError(
    `${what} cannot be merged into a quantized model (${method === "gptq" ? "a GPTQ checkpoint" : "quantization_bit"})`,
    method === "gptq" ? "model_name_or_path" : "quantization_bit",
    method === "gptq"
      ? "merge the adapter onto the full-precision model the GPTQ checkpoint was made from (model_name_or_path: that model, adapter_name_or_path: the adapter), then quantize the merged export"
      : "drop quantization_bit: the adapter merges onto the full-precision model (LoRA adapters trained on a quantized base load on the unquantized one)",
  );
}

/** For `lmf export` and every merge: throws cannotMergeError when `model` is quantized. */
export function assertMergeable(model: Module, what = "adapters"): void {
  const method = quantizationMethodOf(model);
  if (method) throw cannotMergeError(method, what);
}
