// A Linear whose weight is stored quantized: what adapters, the loader and export see of any
// quantized format (bitsandbytes 4/8-bit, GPTQ), as PEFT sees bnb.nn.Linear4bit / Linear8bitLt and
// GPTQ's QuantLinear. The forward dequantizes the weight on the fly, one layer at a time, and the
// backward gives the input's gradient only (the packed weight is frozen).
import { type DType, ITEM_SIZE, Module, type PackedLevels, type Parameter, type Tensor, dequantizeLevels, keep, packedLinear, parameter, tidy } from "../../torch/index.ts";

export type QuantizationMethod = "bnb" | "gptq";

/** The surface every quantized linear layer offers (LoRA wraps it as it wraps a Linear). */
export interface QuantizedLinear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly bias: Tensor | null;
  /** The dtype the layer computes in (bnb's compute_dtype); inputs are cast to it. */
  readonly computeDtype: DType;
  readonly quantizationMethod: QuantizationMethod;
  /** The device the stored weight lives on. */
  readonly device: string;
  /** "nf4", "fp4", "int8", "gptq 4-bit", ... for messages. */
  readonly format: string;
  /** A fresh [out, in] copy of the weight in `dtype` (the compute dtype by default); the caller frees it. */
  dequantizeWeight(dtype?: DType): Tensor;
  /** x [..., in] -> [..., out] in x's dtype. */
  forward(x: Tensor): Tensor;
  /** Bytes the stored weight takes (packed levels and their scales). */
  storedBytes(): number;
}

export function isQuantizedLinear(module: unknown): module is QuantizedLinear {
  return module instanceof QuantLinear;
}

/** How a QuantLinear's packed weight becomes values; `scale` may be computed per call (double quantization). */
export interface QuantLinearSpec {
  method: QuantizationMethod;
  format: string;
  /** Tensors that make up the stored weight; they become the layer's buffers (moved and freed with it). */
  stored: Record<string, Tensor>;
  /** The packed levels of the weight [out, in] (row-major, or columns in `inputOrder`) from the buffers. */
  levels: (stored: Record<string, Tensor>) => PackedLevels;
  /** int64 [in]: the weight's columns are the input's features in this order (GPTQ's act-order). */
  inputOrder?: Tensor | null;
}

/**
 * The one quantized linear layer: a packed weight (any format expressible as PackedLevels), an
 * optional bias kept in the compute dtype, and the fused dequantize-and-multiply of the addon.
 */
export class QuantLinear extends Module implements QuantizedLinear {
  bias: Parameter | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly computeDtype: DType;
  readonly quantizationMethod: QuantizationMethod;
  readonly format: string;
  /** The ATen-op path instead of the CPU's fused loop (what CUDA runs), for checks. */
  composedKernel = false;
  readonly #levels: (stored: Record<string, Tensor>) => PackedLevels;
  readonly #storedNames: string[];

  constructor(inFeatures: number, outFeatures: number, spec: QuantLinearSpec, options: { bias: Tensor | null; computeDtype: DType }) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.computeDtype = options.computeDtype;
    this.quantizationMethod = spec.method;
    this.format = spec.format;
    this.#levels = spec.levels;
    // Non-persistent buffers: they move with the module and are freed with it, but are not state
    // dict entries (the checkpoint's names are the loader's business) and never change dtype.
    this.#storedNames = Object.keys(spec.stored);
    for (const [name, tensor] of Object.entries(spec.stored)) this.registerBuffer(name, tensor, false);
    if (spec.inputOrder) {
      this.registerBuffer("input_order", spec.inputOrder, false);
      this.registerBuffer("input_order_inverse", tidy(() => spec.inputOrder!.sort(0).indices), false);
    }
    this.bias = options.bias ? parameter(keep(options.bias), false) : null;
  }

  #buffer(name: string): Tensor | null {
    return (this as unknown as Record<string, Tensor | undefined>)[name] ?? null;
  }

  get device(): string {
    return this.#buffer(this.#storedNames[0]!)!.device;
  }

  /** The packed weight as the buffers hold it now (after any device move). */
  packedLevels(): PackedLevels {
    return this.#levels(Object.fromEntries(this.#storedNames.map((name) => [name, this.#buffer(name)!])));
  }

  dequantizeWeight(dtype: DType = this.computeDtype): Tensor {
    return tidy(() => {
      const numel = this.outFeatures * this.inFeatures;
      const weight = dequantizeLevels(this.packedLevels(), numel, dtype, this.composedKernel).view(this.outFeatures, this.inFeatures);
      // Column j holds input feature order[j]: the inverse permutation puts the columns back.
      const inverse = this.#buffer("input_order_inverse");
      return inverse ? weight.indexSelect(1, inverse) : weight;
    });
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const input = x.dtype === this.computeDtype ? x : x.to(this.computeDtype);
      const order = this.#buffer("input_order");
      const ordered = order ? input.indexSelect(-1, order) : input;
      let out = packedLinear(ordered, this.packedLevels(), this.outFeatures, this.inFeatures, this.composedKernel);
      if (this.bias) out = out.add(this.bias);
      return out.dtype === x.dtype ? out : out.to(x.dtype);
    });
  }

  storedBytes(): number {
    return this.#storedNames.reduce((total, name) => {
      const tensor = this.#buffer(name)!;
      return total + tensor.numel * ITEM_SIZE[tensor.dtype];
    }, 0);
  }
}
