// Writing GPTQ layers in the AutoGPTQ / transformers layout (auto_gptq's QuantLinear.pack): per
// Linear `qweight` int32 [in·bits/32, out] with 32/bits levels per word (3-bit levels straddle
// words), `qzeros` int32 [groups, out·bits/32] holding zero − 1, `g_idx` int32 [in]. Reading them
// back is the loader's (src/model/quantization/gptq_checkpoint.ts).
import { UserError } from "../../errors.ts";

/** Packs levels [rows][cols] along rows (qweight: rows = in) into int32 words [rows·bits/32][cols]. */
function packRows(levels: Int32Array, rows: number, cols: number, bits: number): Int32Array {
  const words = new Uint32Array((rows / 32) * bits * cols);
  const level = (r: number, c: number) => levels[r * cols + c]! >>> 0;
  for (let c = 0; c < cols; c++) {
    let word = 0;
    for (let r0 = 0; r0 < rows; r0 += 32) {
      // auto_gptq's bit layout: levels at increasing bit offsets, a 3-bit level split across words.
      let bit = 0;
      let value = 0;
      const flush = () => {
        words[word * cols + c] = value >>> 0;
        word++;
        value = 0;
        bit = 0;
      };
      for (let j = 0; j < 32; j++) {
        const q = level(r0 + j, c);
        value = (value | (q << bit)) >>> 0;
        bit += bits;
        if (bit >= 32) {
          const spill = bit - 32;
          flush();
          if (spill > 0) {
            value = q >>> (bits - spill);
            bit = spill;
          }
        }
      }
      if (bit > 0) flush();
    }
  }
  return new Int32Array(words.buffer);
}

/** The inverse of packRows. */
function unpackRows(words: Int32Array, rows: number, cols: number, bits: number): Int32Array {
  const levels = new Int32Array(rows * cols);
  const mask = (1 << bits) - 1;
  for (let c = 0; c < cols; c++) {
    let word = 0;
    for (let r0 = 0; r0 < rows; r0 += 32) {
      let bit = 0;
      for (let j = 0; j < 32; j++) {
        const current = words[word * cols + c]! >>> 0;
        let q = (current >>> bit) & mask;
        bit += bits;
        if (bit >= 32) {
          const spill = bit - 32;
          word++;
          if (spill > 0) q |= ((words[word * cols + c]! >>> 0) & ((1 << spill) - 1)) << (bits - spill);
          bit = spill;
        }
        levels[(r0 + j) * cols + c] = q;
      }
    }
  }
  return levels;
}

function transpose(values: Int32Array, rows: number, cols: number): Int32Array {
  const out = new Int32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

/** Checks the shapes the packed layout allows. */
export function checkGptqShape(name: string, inFeatures: number, outFeatures: number, bits: number): void {
  if (inFeatures % 32 !== 0 || (outFeatures * bits) % 32 !== 0) {
    throw new UserError(
      `${name} is [${outFeatures}, ${inFeatures}]: GPTQ's packed layout needs in_features divisible by 32 and out_features·bits divisible by 32`,
      "export_quantization_bit",
      "export without GPTQ, or use a model whose dimensions are multiples of 32",
    );
  }
}

/**
 * QuantLinear.pack: levels [out, in] (0..2^bits−1) and zeros [out, groups] as the four tensors of
 * the checkpoint (qweight, qzeros with zero − 1, g_idx = i / group_size).
 */
export function packGptq(levels: Int32Array, zeros: Int32Array, shape: { out: number; in: number; groups: number; groupSize: number; bits: number }) {
  const { out, in: inFeatures, groups, groupSize, bits } = shape;
  const qweight = packRows(transpose(levels, out, inFeatures), inFeatures, out, bits);
  const zerosMinusOne = transpose(zeros, out, groups).map((z) => (z - 1) & ((1 << bits) - 1));
  // qzeros packs along columns: pack the transpose [out, groups] along rows, then transpose back.
  const packedT = packRows(transpose(zerosMinusOne, groups, out), out, groups, bits);
  const qzeros = transpose(packedT, (out * bits) / 32, groups);
  const gIdx = Int32Array.from({ length: inFeatures }, (_, i) => Math.floor(i / groupSize));
  return { qweight, qzeros, gIdx };
}

/** The levels [out, in] and zeros [out, groups] of packed tensors (qzeros + 1, as auto_gptq dequantizes). */
export function unpackGptq(qweight: Int32Array, qzeros: Int32Array, shape: { out: number; in: number; groups: number; bits: number }) {
  const { out, in: inFeatures, groups, bits } = shape;
  const levels = transpose(unpackRows(qweight, inFeatures, out, bits), inFeatures, out);
  const zerosT = unpackRows(transpose(qzeros, groups, (out * bits) / 32), out, groups, bits);
  const zeros = zerosT.map((z) => z + 1);
  return { levels, zeros };
}
