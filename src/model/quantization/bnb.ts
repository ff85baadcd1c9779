// On-the-fly quantization as transformers' bitsandbytes integration does it (quantizers/
// quantizer_bnb_4bit.py, _8bit.py): every Linear but the output head becomes a quantized layer
// (Linear4bit / Linear8bitLt), its weight quantized the moment the checkpoint tensor streams in,
// so the full-precision model never sits in memory; bias, norms and embeddings stay in the
// compute dtype.
import { UserError } from "../../errors.ts";
import { type DType, Linear, type Tensor, keep, tidy } from "../../torch/index.ts";
import type { CausalLM } from "../causal_lm.ts";
import type { WeightSink } from "../loader.ts";
import { type FourBitWeight, fourBitLevels, int8Levels, quantizeFourBit, quantizeInt8Rows } from "./bitsandbytes.ts";
import { QuantLinear } from "./quantized_linear.ts";

export interface BnbOptions {
  bits: 4 | 8;
  /** 4-bit data type (bnb_4bit_quant_type). */
  type: "nf4" | "fp4";
  /** bnb_4bit_use_double_quant. */
  doubleQuant: boolean;
  /** bnb_4bit_compute_dtype: the model's dtype, as LLaMA-Factory passes it. */
  computeDtype: DType;
}

/** The format's name, for messages ("nf4, double quantization"). */
export function bnbFormat(options: BnbOptions): string {
  if (options.bits === 8) return "int8";
  return options.doubleQuant ? `${options.type}, double quantization` : options.type;
}

/** A quantized layer from a float weight [out, in] (quantized in its own dtype) and an optional bias. */
export function bnbQuantLinear(weight: Tensor, bias: Tensor | null, options: BnbOptions & { device?: string }): QuantLinear {
  const [outFeatures, inFeatures] = weight.shape as [number, number];
  const device = options.device ?? weight.device;
  const onDevice = (stored: Record<string, Tensor>) =>
    Object.fromEntries(Object.entries(stored).map(([name, tensor]) => [name, tensor.device === device ? tensor : keep(tensor.to(device))]));
  if (options.bits === 8) {
    const quantized = quantizeInt8Rows(weight);
    const own = { weight_levels: quantized.levels, weight_table: quantized.table, weight_scale: quantized.scale, SCB: quantized.rowAbsmax };
    const stored = tidy(() => onDevice(own));
    disposeMoved(own, stored);
    return new QuantLinear(
      inFeatures,
      outFeatures,
      {
        method: "bnb",
        format: bnbFormat(options),
        stored,
        levels: (s) => int8Levels({ levels: s.weight_levels!, table: s.weight_table!, scale: s.weight_scale!, rowAbsmax: s.SCB! }, inFeatures),
      },
      { bias, computeDtype: options.computeDtype },
    );
  }
  const quantized = quantizeFourBit(weight, { type: options.type, doubleQuant: options.doubleQuant });
  const own: Record<string, Tensor> = { weight_packed: quantized.packed, weight_code: quantized.code };
  if (quantized.absmax) own.weight_absmax = quantized.absmax;
  if (quantized.nested) {
    Object.assign(own, {
      nested_levels: quantized.nested.levels,
      nested_absmax: quantized.nested.absmax,
      nested_code: quantized.nested.code,
      nested_offset: quantized.nested.offset,
    });
  }
  const stored = tidy(() => onDevice(own));
  disposeMoved(own, stored);
  const numel = outFeatures * inFeatures;
  const asWeight = (s: Record<string, Tensor>): FourBitWeight => ({
    type: options.type,
    blocksize: quantized.blocksize,
    packed: s.weight_packed!,
    code: s.weight_code!,
    absmax: s.weight_absmax ?? null,
    nested: s.nested_levels ? { levels: s.nested_levels, absmax: s.nested_absmax!, code: s.nested_code!, offset: s.nested_offset! } : null,
  });
  return new QuantLinear(
    inFeatures,
    outFeatures,
    { method: "bnb", format: bnbFormat(options), stored, levels: (s) => fourBitLevels(asWeight(s), numel) },
    { bias, computeDtype: options.computeDtype },
  );
}

/** Frees the host copies that were moved to the device. */
function disposeMoved(original: Record<string, Tensor>, moved: Record<string, Tensor>): void {
  for (const [name, tensor] of Object.entries(original)) if (moved[name] !== tensor) tensor.dispose();
}

/** The Linear layers bitsandbytes quantizes: all but the output head (transformers' modules_to_not_convert). */
export function bnbTargets(model: CausalLM): [string, Linear][] {
  const head = model.outputEmbeddings();
  return model.namedModules().filter((entry): entry is [string, Linear] => entry[1] instanceof Linear && entry[1] !== head);
}

/**
 * Prepares `model` (built with empty weights) for a quantized load: each target Linear's weight is
 * freed now and quantized when `<name>.weight` streams in, when the Linear is swapped for a
 * QuantLinear that keeps the Linear's bias tensor (so the bias loads wherever it comes in the file).
 */
export function bnbWeightSink(model: CausalLM, options: BnbOptions): WeightSink {
  const pending = new Map<string, { name: string; linear: Linear; device: string }>();
  for (const [name, linear] of bnbTargets(model)) {
    pending.set(`${name}.weight`, { name, linear, device: linear.weight.device });
    linear.weight.dispose();
  }
  const done = new Set<string>();
  return {
    accept(key, tensor) {
      const target = pending.get(key);
      if (!target) return false;
      const { name, linear, device } = target;
      if (tensor.shape[0] !== linear.outFeatures || tensor.shape[1] !== linear.inFeatures) {
        throw new UserError(
          `${key} has shape [${tensor.shape}] in the checkpoint but [${linear.outFeatures},${linear.inFeatures}] in the model built from config.json`,
          "model_name_or_path",
          "config.json and the weights do not belong together",
        );
      }
      // transformers loads the weight in torch_dtype (the compute dtype) and quantizes that.
      const weight = tensor.dtype === options.computeDtype ? tensor : tensor.to(options.computeDtype);
      model.setSubmodule(name, bnbQuantLinear(weight, linear.bias, { ...options, device }));
      pending.delete(key);
      done.add(key);
      return true;
    },
    provides: (key) => done.has(key),
    finish() {
      // Missing weights are reported by the loader with the rest of the state dict.
    },
  };
}
