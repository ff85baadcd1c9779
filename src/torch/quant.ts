// Block quantization kernels of the addon (native/src/quant.cc), after bitsandbytes' kernels:
// 4-bit NF4/FP4 quantization, 8-bit quantization against a 256-value code, dequantization by table
// lookup, and a linear layer over packed levels whose backward re-dequantizes the weight.
import { SCALAR_TYPE, type DType } from "./dtype.ts";
import { native } from "./native.ts";
import { Tensor } from "./tensor.ts";

/**
 * bitsandbytes' quantize_4bit kernel: per block of `blocksize` values the absmax (float32), each
 * value x·(1/absmax) mapped to its 4-bit level (NF4's or FP4's decision tree), two levels per byte,
 * the first in the high nibble. Returns packed uint8 [ceil(n/2)] and absmax [blocks].
 */
export function quantize4bit(values: Tensor, blocksize: number, type: "nf4" | "fp4"): { packed: Tensor; absmax: Tensor } {
  const [packed, absmax] = native.quantize_4bit(values.id, blocksize, type === "nf4");
  return { packed: new Tensor(packed!), absmax: new Tensor(absmax!) };
}

/**
 * bitsandbytes' quantize_blockwise kernel: per block the absmax, each value x·(1/absmax) rounded to
 * the nearest of the 256 sorted `code` values by the kernel's binary search. Returns levels uint8 [n].
 */
export function quantizeBlockwise(values: Tensor, code: Tensor, blocksize: number): { levels: Tensor; absmax: Tensor } {
  const [levels, absmax] = native.quantize_blockwise(values.id, code.id, blocksize);
  return { levels: new Tensor(levels!), absmax: new Tensor(absmax!) };
}

/**
 * Packed levels and what turns them back into values: W[e] = (table[level] - zero[b]) · scale[b],
 * b = e / blocksize; 4-bit levels two per byte (high nibble first), 8-bit levels one per byte.
 */
export interface PackedLevels {
  levels: Tensor;
  bits: 4 | 8;
  /** float32 [2^bits] */
  table: Tensor;
  /** float32 [blocks] */
  scale: Tensor;
  /** float32 [blocks], subtracted before scaling (GPTQ's zero points); none for bitsandbytes. */
  zero?: Tensor | null;
  blocksize: number;
}

/**
 * The `numel` values of `packed` as a flat [numel] tensor of `dtype` (computed in float32, then
 * cast). `composed` takes the ATen-op path other devices use, instead of the CPU's fused loop.
 */
export function dequantizeLevels(packed: PackedLevels, numel: number, dtype: DType, composed = false): Tensor {
  return new Tensor(
    native.dequantize(
      packed.levels.id,
      packed.table.id,
      packed.scale.id,
      packed.zero?.id ?? null,
      packed.bits,
      packed.blocksize,
      numel,
      SCALAR_TYPE[dtype],
      composed,
    ),
  );
}

/**
 * x [..., in] -> x · Wᵀ [..., out] with W [out, in] dequantized from `packed` in x's dtype. The
 * gradient flows to x only, through a W dequantized again in the backward pass, so no tensor of
 * W's size outlives the call (bitsandbytes' MatMul4Bit).
 */
export function packedLinear(x: Tensor, packed: PackedLevels, outFeatures: number, inFeatures: number, composed = false): Tensor {
  return new Tensor(
    native.packed_linear(
      x.id,
      packed.levels.id,
      packed.table.id,
      packed.scale.id,
      packed.zero?.id ?? null,
      packed.bits,
      packed.blocksize,
      outFeatures,
      inFeatures,
      composed,
    ),
  );
}
