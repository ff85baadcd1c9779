// The GPTQ algorithm for one Linear (Frantar et al. 2022, as auto_gptq's GPTQ.fasterquant runs it
// under transformers' GPTQConfig defaults): the Hessian H = 2/N Σ x xᵀ of the layer's inputs,
// dead columns zeroed, dampening of damp_percent × mean(diag H), Hinv = upper Cholesky factor of
// H⁻¹, columns quantized left to right in blocks of 128 with each column's error fed forward
// through Hinv, one symmetric min/max grid per group of 128 columns (act-order off).
import { type Tensor, cat, keep, noGrad, tensor, tidy, zeros } from "../../torch/index.ts";
import { fp16Value, fp16Bits } from "../gguf/quants.ts";
import { inverseUpperCholesky } from "./linalg.ts";

export interface GptqOptions {
  bits: number;
  /** Columns per quantization group (-1: one group per row). */
  groupSize: number;
  blockSize: number;
  dampPercent: number;
}

export const GPTQ_DEFAULTS = { groupSize: 128, blockSize: 128, dampPercent: 0.1 } as const;

/** Accumulates auto_gptq's H = 2/N Σ xxᵀ over calibration samples (N counts samples, as add_batch does). */
export class HessianAccumulator {
  H: Tensor;
  samples = 0;

  constructor(columns: number) {
    this.H = keep(zeros([columns, columns]));
  }

  /** x: the layer input of one sample, [..., columns]. */
  add(x: Tensor): void {
    const next = tidy(() => {
      const rows = x.reshape(-1, x.shape[x.shape.length - 1]!).to("float32");
      const total = this.samples + 1;
      const scaled = rows.mul(Math.sqrt(2 / total));
      return this.H.mul(this.samples / total).add(scaled.t().matmul(scaled));
    });
    this.H.dispose();
    this.H = keep(next);
    this.samples += 1;
  }

  dispose(): void {
    this.H.dispose();
  }
}

export interface GptqResult {
  /** Integer levels [out, in] in 0..2^bits−1. */
  levels: Int32Array;
  /** Zero points [out, groups]. */
  zeros: Int32Array;
  /** Scales [groups, out] (fp16 values, as stored). */
  scales: Float32Array;
  /** The quantized weight scales·(q − zero), [out, in] float32. */
  dequantized: Tensor;
  groups: number;
}

/** The quantizer's find_params for a group of columns W [out, cols]: symmetric, per row. */
function groupGrid(W: Tensor, maxq: number): { scale: Float32Array<ArrayBufferLike>; zero: number } {
  const rows = W.shape[0]!;
  const columns = W.shape[1]!;
  const values = W.contiguous().data() as Float32Array;
  const scale = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let xmin = 0;
    let xmax = 0;
    for (let c = 0; c < columns; c++) {
      const v = values[r * columns + c]!;
      if (v < xmin) xmin = v;
      if (v > xmax) xmax = v;
    }
    xmax = Math.max(Math.abs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
    if (xmin === 0 && xmax === 0) {
      xmin = -1;
      xmax = 1;
    }
    // The scale is rounded to the fp16 the checkpoint stores, so the error fed forward is the stored weight's.
    scale[r] = fp16Value(fp16Bits(Math.fround((xmax - xmin) / maxq)));
  }
  return { scale, zero: (maxq + 1) / 2 };
}

/** GPTQ of W [out, in] with the Hessian of its inputs H [in, in]. */
export function gptqQuantize(weight: Tensor, hessian: Tensor, options: GptqOptions): GptqResult {
  return noGrad(() => {
    const [rows, columns] = weight.shape as [number, number];
    const maxq = 2 ** options.bits - 1;
    const groupSize = options.groupSize > 0 ? options.groupSize : columns;
    const groups = Math.ceil(columns / groupSize);
    const W = keep(weight.to("float32").clone());
    const H = hessian.to("float32").clone();
    const diagonal = H.reshape(-1).slice(0, 0, columns * columns, columns + 1);
    const dead = tidy(() => diagonal.eq(0).to("float32"));
    // Dead inputs (never active) get H = 1 and a zero weight.
    diagonal.add_(dead);
    W.mul_(tidy(() => dead.rsub(1).unsqueeze(0)));
    diagonal.add_(options.dampPercent * (diagonal.mean().item() as number));
    const Hinv = tidy(() => inverseUpperCholesky(H).to("float32"));
    H.dispose();
    dead.dispose();
    const levels = new Int32Array(rows * columns);
    const zerosOut = new Int32Array(rows * groups);
    const scalesOut = new Float32Array(groups * rows);
    const Q = keep(zeros([rows, columns]));
    let scale: Float32Array<ArrayBufferLike> = new Float32Array(rows);
    let zero = 0;
    for (let i1 = 0; i1 < columns; i1 += options.blockSize) {
      const count = Math.min(options.blockSize, columns - i1);
      const W1 = keep(W.narrow(1, i1, count).clone());
      const Err1 = keep(zeros([rows, count]));
      const Hinv1 = Hinv.narrow(0, i1, count).narrow(1, i1, count).contiguous();
      const hinv = Hinv1.data() as Float32Array;
      for (let i = 0; i < count; i++) {
        const column = i1 + i;
        if (column % groupSize === 0) {
          ({ scale, zero } = tidy(() => groupGrid(W.narrow(1, column, Math.min(groupSize, columns - column)), maxq)));
          const g = Math.floor(column / groupSize);
          scalesOut.set(scale, g * rows);
          for (let r = 0; r < rows; r++) zerosOut[r * groups + g] = zero;
        }
        tidy(() => {
          const w = W1.select(1, i);
          const scaleTensor = tensor(scale);
          const q = w.div(scaleTensor).round().add(zero).clamp(0, maxq);
          const dq = q.sub(zero).mul(scaleTensor);
          const qValues = q.data() as Float32Array;
          for (let r = 0; r < rows; r++) levels[r * columns + column] = qValues[r]!;
          Q.select(1, column).copy_(dq);
          const d = hinv[i * count + i]!;
          const err = w.sub(dq).div(d);
          Err1.select(1, i).copy_(err);
          W1.narrow(1, i, count - i).sub_(err.unsqueeze(1).matmul(Hinv1.select(0, i).narrow(0, i, count - i).unsqueeze(0)));
        });
      }
      if (i1 + count < columns) {
        tidy(() => {
          W.narrow(1, i1 + count, columns - i1 - count).sub_(Err1.matmul(Hinv.narrow(0, i1, count).narrow(1, i1 + count, columns - i1 - count)));
        });
      }
      Hinv1.dispose();
      W1.dispose();
      Err1.dispose();
    }
    Hinv.dispose();
    W.dispose();
    return { levels, zeros: zerosOut, scales: scalesOut, dequantized: Q, groups };
  });
}

/** Round-to-nearest on the same grid (GPTQ's baseline): each group's scale from its own columns, no error feedback. */
export function roundToNearest(weight: Tensor, options: Pick<GptqOptions, "bits" | "groupSize">): Tensor {
  return noGrad(() =>
    tidy(() => {
      const [, columns] = weight.shape as [number, number];
      const maxq = 2 ** options.bits - 1;
      const groupSize = options.groupSize > 0 ? options.groupSize : columns;
      const parts: Tensor[] = [];
      for (let c = 0; c < columns; c += groupSize) {
        const block = weight.narrow(1, c, Math.min(groupSize, columns - c)).to("float32");
        const { scale, zero } = groupGrid(block, maxq);
        const s = tensor(scale).unsqueeze(1);
        parts.push(block.div(s).round().add(zero).clamp(0, maxq).sub(zero).mul(s));
      }
      return cat(parts, 1);
    }),
  );
}

