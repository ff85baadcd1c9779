// bitsandbytes' weight formats (bitsandbytes/functional.py, nn/modules.py) as packed levels:
// 4-bit NF4/FP4 (quantize_4bit: blocks of 64, a float32 absmax per block) with optional double
// quantization (compress_statistics: the absmax values minus their mean, quantized in blocks of 256
// against the 8-bit dynamic map), and LLM.int8's row-wise int8 weights (int8_vectorwise_quant:
// CB = round(W · 127 / absmax(row)), SCB = absmax(row)).
import {
  type DType,
  type PackedLevels,
  type Tensor,
  arange,
  dequantizeLevels,
  fullLike,
  keep,
  quantize4bit,
  quantizeBlockwise,
  tidy,
  where,
} from "../../torch/index.ts";
import { dynamicCode, fourBitCode } from "./codes.ts";

/** quantize_4bit's default block size, which transformers and LLaMA-Factory use. */
export const BNB_4BIT_BLOCKSIZE = 64;
/** Double quantization quantizes the absmax values in blocks of this many. */
export const NESTED_BLOCKSIZE = 256;

/** The absmax values of a double-quantized weight: code[levels] · absmax[b] + offset (bnb's state2). */
export interface NestedAbsmax {
  levels: Tensor;
  /** float32 [ceil(blocks / 256)] */
  absmax: Tensor;
  /** float32 [256]: the signed dynamic map. */
  code: Tensor;
  /** float32 [] : the mean subtracted before quantizing. */
  offset: Tensor;
}

/** A 4-bit weight as bitsandbytes stores it (Params4bit + QuantState). */
export interface FourBitWeight {
  type: "nf4" | "fp4";
  blocksize: number;
  /** uint8 [ceil(n/2)], the first of each pair in the high nibble. */
  packed: Tensor;
  /** float32 [16] */
  code: Tensor;
  /** float32 [blocks], or null when double-quantized (then `nested`). */
  absmax: Tensor | null;
  nested: NestedAbsmax | null;
}

/**
 * quantize_4bit(weight, blocksize, compress_statistics=doubleQuant, quant_type=type). The tensors
 * returned are kept (they outlive any tidy); `weight` is read in its own dtype.
 */
export function quantizeFourBit(weight: Tensor, options: { type: "nf4" | "fp4"; doubleQuant: boolean; blocksize?: number }): FourBitWeight {
  const blocksize = options.blocksize ?? BNB_4BIT_BLOCKSIZE;
  return tidy(() => {
    const { packed, absmax } = quantize4bit(weight, blocksize, options.type);
    const code = fourBitCode(options.type);
    if (!options.doubleQuant) return keepAll({ type: options.type, blocksize, packed, code, absmax, nested: null });
    // compress_statistics: offset = absmax.mean(); quantize_blockwise(absmax - offset, blocksize=256).
    const offset = absmax.mean();
    const nestedCode = dynamicCode();
    const quantized = quantizeBlockwise(absmax.sub(offset), nestedCode, NESTED_BLOCKSIZE);
    const nested = { levels: quantized.levels, absmax: quantized.absmax, code: nestedCode, offset };
    return keepAll({ type: options.type, blocksize, packed, code, absmax: null, nested });
  });
}

function keepAll(weight: FourBitWeight): FourBitWeight {
  for (const tensor of [weight.packed, weight.code, weight.absmax, weight.nested?.levels, weight.nested?.absmax, weight.nested?.code, weight.nested?.offset]) {
    if (tensor) keep(tensor);
  }
  return weight;
}

/** float32 [blocks]: the per-block absmax, dequantized from the nested state when double-quantized. */
export function blockAbsmax(weight: FourBitWeight, blocks: number): Tensor {
  if (!weight.nested) return weight.absmax!;
  const nested = weight.nested;
  return tidy(() =>
    dequantizeLevels({ levels: nested.levels, bits: 8, table: nested.code, scale: nested.absmax, blocksize: NESTED_BLOCKSIZE }, blocks, "float32").add(nested.offset),
  );
}

/** The packed levels of a 4-bit weight (its absmax dequantized first when nested). */
export function fourBitLevels(weight: FourBitWeight, numel: number): PackedLevels {
  const blocks = Math.ceil(numel / weight.blocksize);
  return { levels: weight.packed, bits: 4, table: weight.code, scale: blockAbsmax(weight, blocks), blocksize: weight.blocksize };
}

/** dequantize_4bit: the weight [out, in] in `dtype` (computed in float32, as bitsandbytes does). */
export function dequantizeFourBit(weight: FourBitWeight, shape: [number, number], dtype: DType): Tensor {
  const numel = shape[0] * shape[1];
  return tidy(() => dequantizeLevels(fourBitLevels(weight, numel), numel, dtype).view(...shape));
}

/** LLM.int8 weights: CB int8 [out, in] as levels CB + 128, SCB float32 [out]. */
export interface Int8Weight {
  /** uint8 [out · in]: CB + 128 */
  levels: Tensor;
  /** float32 [out]: the absmax of each row (bitsandbytes' SCB). */
  rowAbsmax: Tensor;
  /** float32 [256]: level -> CB value (-128 .. 127). */
  table: Tensor;
  /** float32 [out]: SCB / 127 as bitsandbytes multiplies it (SCB · 7.874015718698502e-3). */
  scale: Tensor;
}

/**
 * int8_vectorwise_quant(W) with threshold 0, as Int8Params quantizes a weight: row absmax SCB,
 * CB = round(W · (127 / SCB)) in float32 (the quotient as PyTorch computes it: 1/SCB · 127). A row of zeros (no absmax) quantizes to zeros.
 */
export function quantizeInt8Rows(weight: Tensor): Int8Weight {
  return tidy(() => {
    const rowAbsmax = weight.abs().amax(1).to("float32"); // [out]
    // bitsandbytes writes 127.0 / row_stats, which PyTorch evaluates as reciprocal(row_stats) · 127.
    const ratio = rowAbsmax.reciprocal().mul(127).view(-1, 1); // [out, 1]
    const scaled = weight.to("float32").mul(ratio).round();
    const cb = where(rowAbsmax.view(-1, 1).eq(0), fullLike(scaled, 0), scaled); // [out, in]
    const levels = cb.add(128).to("uint8").view(-1);
    const table = arange(-128, 128, 1, { dtype: "float32" });
    const scale = rowAbsmax.mul(7.874015718698502e-3);
    return { levels: keep(levels), rowAbsmax: keep(rowAbsmax), table: keep(table), scale: keep(scale) };
  });
}

/** The packed levels of an int8 weight: one block per row. */
export function int8Levels(weight: Int8Weight, inFeatures: number): PackedLevels {
  return { levels: weight.levels, bits: 8, table: weight.table, scale: weight.scale, blocksize: inFeatures };
}
