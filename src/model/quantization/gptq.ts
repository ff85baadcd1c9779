// GPTQ checkpoints in the AutoGPTQ / transformers layout (auto_gptq's QuantLinear.pack and its
// dequantization): per Linear `qweight` int32 [in·bits/32, out] with 32/bits levels per word (3-bit
// levels straddle words), `qzeros` int32 [groups, out·bits/32] holding zero − 1, `scales` fp16
// [groups, out], `g_idx` int32 [in]; config.json's `quantization_config`. GptqLinear dequantizes
// W = scales[g] · (q − zero) on the fly in each forward.
import { UserError } from "../../errors.ts";
import { Linear, Module, type Tensor, linear, noGrad, tensor, tidy, keep } from "../../torch/index.ts";
import type { CausalLM } from "../causal_lm.ts";

export interface GptqConfig {
  bits: number;
  group_size: number;
  desc_act?: boolean;
  sym?: boolean;
  quant_method?: string;
  [key: string]: unknown;
}

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

/** A Linear whose weight is GPTQ-packed; the float weight is rebuilt in each forward. */
export class GptqLinear extends Module {
  declare qweight: Tensor;
  declare qzeros: Tensor;
  declare scales: Tensor;
  declare g_idx: Tensor;
  declare bias: Tensor | null;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly bits: number;
  readonly groups: number;
  /** Unpacked from the loaded buffers on first use: levels [out, in] and zeros [out, in] as float. */
  private unpacked: { levels: Tensor; zeros: Tensor } | null = null;

  constructor(inFeatures: number, outFeatures: number, options: { bits: number; groupSize: number; bias: boolean; dtype: "float32" | "bfloat16" | "float16" }) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.bits = options.bits;
    const groupSize = options.groupSize > 0 ? options.groupSize : inFeatures;
    this.groups = Math.ceil(inFeatures / groupSize);
    this.registerBuffer("qweight", tensor(new Int32Array((inFeatures / 32) * options.bits * outFeatures), { shape: [(inFeatures / 32) * options.bits, outFeatures], dtype: "int32" }));
    this.registerBuffer("qzeros", tensor(new Int32Array(this.groups * ((outFeatures * options.bits) / 32)), { shape: [this.groups, (outFeatures * options.bits) / 32], dtype: "int32" }));
    this.registerBuffer("scales", tensor(new Float32Array(this.groups * outFeatures), { shape: [this.groups, outFeatures] }).to(options.dtype));
    this.registerBuffer("g_idx", tensor(Int32Array.from({ length: inFeatures }, (_, i) => Math.floor(i / groupSize)), { shape: [inFeatures], dtype: "int32" }));
    this.registerBuffer("bias", options.bias ? tensor(new Float32Array(outFeatures)).to(options.dtype) : null);
  }

  /** The dequantized weight [out, in] = scales[g_idx] · (q − zero), in the scales' dtype. */
  weight(): Tensor {
    if (!this.unpacked) {
      const { levels, zeros } = unpackGptq(this.qweight.data() as Int32Array, this.qzeros.data() as Int32Array, {
        out: this.outFeatures,
        in: this.inFeatures,
        groups: this.groups,
        bits: this.bits,
      });
      this.unpacked = tidy(() => {
        const index = this.g_idx.to("int64");
        const zerosPerColumn = tensor(zeros, { shape: [this.outFeatures, this.groups], dtype: "int32" }).to("float32").indexSelect(1, index);
        return { levels: keep(tensor(Uint8Array.from(levels), { shape: [this.outFeatures, this.inFeatures], dtype: "uint8" })), zeros: keep(zerosPerColumn) };
      });
    }
    const { levels, zeros } = this.unpacked;
    return tidy(() => {
      const scales = this.scales.to("float32").t().indexSelect(1, this.g_idx.to("int64")); // [out, in]
      return levels.to("float32").sub(zeros).mul(scales).to(this.scales.dtype);
    });
  }

  forward(x: Tensor): Tensor {
    return tidy(() => linear(x, this.weight().to(x.dtype), this.bias ? this.bias.to(x.dtype) : null));
  }

  override dispose(): void {
    this.unpacked?.levels.dispose();
    this.unpacked?.zeros.dispose();
    this.unpacked = null;
    super.dispose();
  }
}

/** The GPTQ config of a checkpoint's config.json, if it is one. */
export function gptqConfigOf(config: Record<string, unknown>): GptqConfig | null {
  const quantization = config.quantization_config as GptqConfig | undefined;
  if (!quantization) return null;
  if (quantization.quant_method !== "gptq") {
    throw new UserError(`quantization_config.quant_method '${String(quantization.quant_method)}' is not supported`, "config.json", "lmfactory loads GPTQ checkpoints (quant_method: gptq)");
  }
  if (![2, 3, 4, 8].includes(quantization.bits)) throw new UserError(`GPTQ bits ${quantization.bits} is not supported`, "config.json", "use 2, 3, 4 or 8 bits");
  if (quantization.desc_act) throw new UserError("GPTQ checkpoints with desc_act (act-order) are not supported", "config.json", "quantize with desc_act: false");
  return quantization;
}

/** Swaps every decoder-layer Linear for a GptqLinear before a GPTQ checkpoint's weights load. */
export function applyGptqLinears(model: CausalLM, config: GptqConfig, dtype: "float32" | "bfloat16" | "float16"): void {
  noGrad(() => {
    for (const [name, module] of model.namedModules()) {
      if (!(module instanceof Linear) || !/\.layers\.\d+\./.test(name)) continue;
      checkGptqShape(name, module.inFeatures, module.outFeatures, config.bits);
      const replacement = new GptqLinear(module.inFeatures, module.outFeatures, { bits: config.bits, groupSize: config.group_size, bias: module.bias !== null, dtype });
      model.setSubmodule(name, replacement);
      module.dispose();
    }
  });
}
