// The value tables of bitsandbytes' formats (bitsandbytes/functional.py): NF4 and FP4 as
// get_4bit_type lists them (indexed by the 4-bit level; FP4's by its bit pattern), and the signed
// 8-bit dynamic map of create_dynamic_map that double quantization uses for the absmax values.
import { type Tensor, cat, linspace, tensor, tidy } from "../../torch/index.ts";

/** NF4: the 16 normal-quantile levels of create_normal_map(0.9677083), as bitsandbytes hard-codes them. */
const NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
];

/**
 * FP4 (1 sign, 2 exponent, 1 mantissa bits, bias 2) by bit pattern, before division by its absmax
 * 12. bitsandbytes' list writes pattern 0b1000 as the Python integer -0, which is +0.
 */
const FP4 = [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, 0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0];

/** float32 [16]: the value of each 4-bit level (get_4bit_type: the list divided by its absmax). */
export function fourBitCode(type: "nf4" | "fp4"): Tensor {
  const values = type === "nf4" ? NF4 : FP4;
  const absmax = Math.max(...values.map(Math.abs));
  // Float32 division as torch's div_ does it (a float32 quotient of float32 operands rounds the same via double).
  return tensor(Float32Array.from(values, (value) => Math.fround(value) / absmax));
}

/**
 * float32 [256]: create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), computed
 * with the same libtorch ops in the same order (linspace, midpoints, scaling by powers of ten),
 * so the float32 values are bitsandbytes' own.
 */
export function dynamicCode(): Tensor {
  return tidy(() => {
    const parts: Tensor[] = [];
    // Decimal literals for 10^(i-6): Python's 10 ** -6 is the correctly rounded 1e-06.
    const powers = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];
    for (let i = 0; i < 7; i++) {
      const boundaries = linspace(0.1, 1, 2 ** i + 1, { dtype: "float32" });
      const count = boundaries.shape[0]!;
      const means = boundaries.narrow(0, 0, count - 1).add(boundaries.narrow(0, 1, count - 1)).div(2.0);
      parts.push(means.mul(powers[i]!), means.mul(-powers[i]!));
    }
    parts.push(tensor(new Float32Array([0, 1])));
    const values = Array.from(cat(parts, 0).data() as Float32Array).sort((a, b) => a - b);
    return tensor(Float32Array.from(values));
  });
}
