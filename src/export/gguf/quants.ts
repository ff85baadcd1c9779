// ggml's reference quantization kernels (ggml/src/ggml-quants.c `quantize_row_*_ref`, which
// llama-quantize runs when no importance matrix is given), reproduced bit for bit: every float
// operation is rounded to float32 (Math.fround) in the kernels' own order, halves are converted with
// round-to-nearest-even, and the blocks are laid out as ggml-common.h declares them.
import type { GgmlTypeName } from "./writer.ts";

const f = Math.fround;
const QK_K = 256;
const GROUP_MAX_EPS = f(1e-15);

const f32View = new Float32Array(1);
const u32View = new Uint32Array(f32View.buffer);

/** IEEE half of a float32, round to nearest even (ggml's GGML_FP32_TO_FP16; F16C and the software path agree). */
export function fp16Bits(value: number): number {
  f32View[0] = value;
  const x = u32View[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 | (mantissa >>> 13) : 0);
  let e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let result = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    if (rest > half || (rest === half && (result & 1))) result++;
    return sign | result;
  }
  let result = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (result & 1))) result++;
  return sign | result;
}

/** The float32 a half's bits stand for (GGML_FP16_TO_FP32). */
export function fp16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** bfloat16 of a float32 as ggml_compute_fp32_to_bf16: round to nearest even, NaNs quieted. */
export function bf16Bits(value: number): number {
  f32View[0] = value;
  const x = u32View[0]!;
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 64) & 0xffff;
  return ((x + (0x7fff + ((x >>> 16) & 1))) >>> 16) & 0xffff;
}

/** nearest_int: float32 round half to even through the 1.5·2^23 trick. */
function nearestInt(value: number): number {
  return f(value + 12582912) - 12582912;
}

/** C's roundf: half away from zero. */
function roundf(value: number): number {
  return value < 0 ? -Math.round(-value) : Math.round(value);
}

/** C's (int8_t) cast of a float: truncation toward zero. */
const trunc = Math.trunc;

function putF16(out: DataView, at: number, value: number): void {
  out.setUint16(at, fp16Bits(value), true);
}

/** The first of `x[0..n)` with the largest magnitude, sign kept (ggml's amax / max pair). */
function signedAbsMax(x: Float32Array, n: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < n; j++) {
    if (amax < Math.abs(x[j]!)) {
      amax = Math.abs(x[j]!);
      max = x[j]!;
    }
  }
  return max;
}

// --- 32-element blocks ---------------------------------------------------------------------------

function q4_0(x: Float32Array, out: DataView, o: number): void {
  const max = signedAbsMax(x, 32);
  const d = f(max / -8);
  const id = d ? f(1 / d) : 0;
  putF16(out, o, d);
  for (let j = 0; j < 16; j++) {
    const xi0 = Math.min(15, trunc(f(f(x[j]! * id) + 8.5)));
    const xi1 = Math.min(15, trunc(f(f(x[16 + j]! * id) + 8.5)));
    out.setUint8(o + 2 + j, xi0 | (xi1 << 4));
  }
}

function q4_1(x: Float32Array, out: DataView, o: number): void {
  let min = Infinity;
  let max = -Infinity;
  for (let j = 0; j < 32; j++) {
    if (x[j]! < min) min = x[j]!;
    if (x[j]! > max) max = x[j]!;
  }
  const d = f(f(max - min) / 15);
  const id = d ? f(1 / d) : 0;
  putF16(out, o, d);
  putF16(out, o + 2, min);
  for (let j = 0; j < 16; j++) {
    const xi0 = Math.min(15, trunc(f(f(f(x[j]! - min) * id) + 0.5)));
    const xi1 = Math.min(15, trunc(f(f(f(x[16 + j]! - min) * id) + 0.5)));
    out.setUint8(o + 4 + j, xi0 | (xi1 << 4));
  }
}

function q5_0(x: Float32Array, out: DataView, o: number): void {
  const max = signedAbsMax(x, 32);
  const d = f(max / -16);
  const id = d ? f(1 / d) : 0;
  putF16(out, o, d);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const xi0 = Math.min(31, trunc(f(f(x[j]! * id) + 16.5)));
    const xi1 = Math.min(31, trunc(f(f(x[16 + j]! * id) + 16.5)));
    out.setUint8(o + 6 + j, (xi0 & 0x0f) | ((xi1 & 0x0f) << 4));
    qh |= ((xi0 & 0x10) >>> 4) << j;
    qh |= ((xi1 & 0x10) >>> 4) << (j + 16);
  }
  out.setUint32(o + 2, qh >>> 0, true);
}

function q5_1(x: Float32Array, out: DataView, o: number): void {
  let min = Infinity;
  let max = -Infinity;
  for (let j = 0; j < 32; j++) {
    if (x[j]! < min) min = x[j]!;
    if (x[j]! > max) max = x[j]!;
  }
  const d = f(f(max - min) / 31);
  const id = d ? f(1 / d) : 0;
  putF16(out, o, d);
  putF16(out, o + 2, min);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const xi0 = trunc(f(f(f(x[j]! - min) * id) + 0.5)) & 0xff;
    const xi1 = trunc(f(f(f(x[16 + j]! - min) * id) + 0.5)) & 0xff;
    out.setUint8(o + 8 + j, (xi0 & 0x0f) | ((xi1 & 0x0f) << 4));
    qh |= ((xi0 & 0x10) >>> 4) << j;
    qh |= ((xi1 & 0x10) >>> 4) << (j + 16);
  }
  out.setUint32(o + 4, qh >>> 0, true);
}

function q8_0(x: Float32Array, out: DataView, o: number): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[j]!));
  const d = f(amax / 127);
  const id = d ? f(1 / d) : 0;
  putF16(out, o, d);
  for (let j = 0; j < 32; j++) out.setInt8(o + 2 + j, roundf(f(x[j]! * id)));
}

// --- k-quant helpers -----------------------------------------------------------------------------

/** make_qkx2_quants: scale and min of a sub-block (L gets the levels); returns [scale, -min]. */
function makeQkx2Quants(
  n: number,
  nmax: number,
  x: Float32Array,
  weights: Float32Array,
  L: Uint8Array,
  Laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
): [number, number] {
  let min = x[0]!;
  let max = x[0]!;
  let sumW = weights[0]!;
  let sumX = f(sumW * x[0]!);
  for (let i = 1; i < n; i++) {
    if (x[i]! < min) min = x[i]!;
    if (x[i]! > max) max = x[i]!;
    const w = weights[i]!;
    sumW = f(sumW + w);
    sumX = f(sumX + f(w * x[i]!));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, 0, n);
    return [0, -min];
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = nearestInt(f(iscale * f(x[i]! - min)));
    L[i] = Math.max(0, Math.min(nmax, l));
    const diff = f(f(f(scale * L[i]!) + min) - x[i]!);
    bestError = f(bestError + f(weights[i]! * f(diff * diff)));
  }
  if (nstep < 1) return [scale, -min];
  for (let is = 0; is <= nstep; is++) {
    iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      let l = nearestInt(f(iscale * f(x[i]! - min)));
      l = Math.max(0, Math.min(nmax, l));
      Laux[i] = l;
      const w = weights[i]!;
      sumL = f(sumL + f(w * l));
      sumL2 = f(sumL2 + f(f(w * l) * l));
      sumXL = f(sumXL + f(f(w * l) * x[i]!));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (D > 0) {
      let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
      let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = f(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        const diff = f(f(f(thisScale * Laux[i]!) + thisMin) - x[i]!);
        curError = f(curError + f(weights[i]! * f(diff * diff)));
      }
      if (curError < bestError) {
        L.set(Laux.subarray(0, n));
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return [scale, -min];
}

/** make_qx_quants with rmse_type 1 and no importance weights (q6_K's sub-blocks); L gets levels + nmax. */
function makeQxQuants(n: number, nmax: number, x: Float32Array, L: Int8Array): number {
  const max = signedAbsMax(x, n);
  if (Math.abs(max) < GROUP_MAX_EPS) {
    L.fill(0, 0, n);
    return 0;
  }
  let iscale = f(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    let l = nearestInt(f(iscale * x[i]!));
    l = Math.max(-nmax, Math.min(nmax - 1, l));
    L[i] = l + nmax;
    const w = f(x[i]! * x[i]!);
    sumlx = f(sumlx + f(f(w * x[i]!) * l));
    suml2 = f(suml2 + f(f(w * l) * l));
  }
  let scale = suml2 ? f(sumlx / suml2) : 0;
  let best = f(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = f(-f(nmax + f(f(0.1) * is)) / max);
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      let l = nearestInt(f(iscale * x[i]!));
      l = Math.max(-nmax, Math.min(nmax - 1, l));
      const w = f(x[i]! * x[i]!);
      sumlx = f(sumlx + f(f(w * x[i]!) * l));
      suml2 = f(suml2 + f(f(w * l) * l));
    }
    if (suml2 > 0 && f(sumlx * sumlx) > f(best * suml2)) {
      for (let i = 0; i < n; i++) {
        const l = nearestInt(f(iscale * x[i]!));
        L[i] = nmax + Math.max(-nmax, Math.min(nmax - 1, l));
      }
      scale = f(sumlx / suml2);
      best = f(scale * sumlx);
    }
  }
  return scale;
}

/** The 6-bit scales and mins of q4_K/q5_K packed into 12 bytes, and the per-sub-block (d, dm) back. */
function packScalesMins(scales: Float32Array, mins: Float32Array, out: DataView, o: number): { d: number[]; dm: number[] } {
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < 8; j++) {
    if (scales[j]! > maxScale) maxScale = scales[j]!;
    if (mins[j]! > maxMin) maxMin = mins[j]!;
  }
  const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
  const packed = new Uint8Array(12);
  const ls = new Uint8Array(8);
  const lm = new Uint8Array(8);
  for (let j = 0; j < 8; j++) {
    ls[j] = Math.min(63, nearestInt(f(invScale * scales[j]!)) & 0xff);
    lm[j] = Math.min(63, nearestInt(f(invMin * mins[j]!)) & 0xff);
    if (j < 4) {
      packed[j] = ls[j]!;
      packed[j + 4] = lm[j]!;
    } else {
      packed[j + 4] = (ls[j]! & 0xf) | ((lm[j]! & 0xf) << 4);
      packed[j - 4]! |= (ls[j]! >> 4) << 6;
      packed[j]! |= (lm[j]! >> 4) << 6;
    }
  }
  const dBits = fp16Bits(f(maxScale / 63));
  const dminBits = fp16Bits(f(maxMin / 63));
  out.setUint16(o, dBits, true);
  out.setUint16(o + 2, dminBits, true);
  for (let j = 0; j < 12; j++) out.setUint8(o + 4 + j, packed[j]!);
  const d: number[] = [];
  const dm: number[] = [];
  for (let j = 0; j < 8; j++) {
    // get_scale_min_k4
    const sc = j < 4 ? packed[j]! & 63 : (packed[j + 4]! & 0xf) | ((packed[j - 4]! >> 6) << 4);
    const m = j < 4 ? packed[j + 4]! & 63 : (packed[j + 4]! >> 4) | ((packed[j]! >> 6) << 4);
    d.push(f(fp16Value(dBits) * sc));
    dm.push(f(fp16Value(dminBits) * m));
  }
  return { d, dm };
}

/** The levels of q4_K/q5_K's 8 sub-blocks of 32 (nmax 15 or 31). */
function kQuantLevels(x: Float32Array, out: DataView, o: number, nmax: number, rmin: number, nstep: number): Uint8Array {
  const L = new Uint8Array(QK_K);
  const Laux = new Uint8Array(32);
  const weights = new Float32Array(32);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  for (let j = 0; j < 8; j++) {
    const sub = x.subarray(32 * j, 32 * j + 32);
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = f(sumX2 + f(sub[l]! * sub[l]!));
    const avX = f(Math.sqrt(f(sumX2 / 32)));
    for (let l = 0; l < 32; l++) weights[l] = f(avX + Math.abs(sub[l]!));
    const [scale, min] = makeQkx2Quants(32, nmax, sub, weights, L.subarray(32 * j, 32 * j + 32), Laux, rmin, f(0.1), nstep);
    scales[j] = scale;
    mins[j] = min;
  }
  const { d, dm } = packScalesMins(scales, mins, out, o);
  for (let j = 0; j < 8; j++) {
    if (!d[j]) continue;
    for (let ii = 0; ii < 32; ii++) {
      const l = nearestInt(f(f(x[32 * j + ii]! + dm[j]!) / d[j]!));
      L[32 * j + ii] = Math.max(0, Math.min(nmax, l));
    }
  }
  return L;
}

// --- 256-element super-blocks --------------------------------------------------------------------

function q4_K(x: Float32Array, out: DataView, o: number): void {
  const L = kQuantLevels(x, out, o, 15, f(-1), 20);
  let q = o + 16;
  for (let j = 0; j < QK_K; j += 64) {
    for (let l = 0; l < 32; l++) out.setUint8(q + l, L[j + l]! | (L[j + l + 32]! << 4));
    q += 32;
  }
}

function q5_K(x: Float32Array, out: DataView, o: number): void {
  const L = kQuantLevels(x, out, o, 31, f(-0.5), 15);
  const qh = new Uint8Array(32);
  let ql = o + 48;
  let m1 = 1;
  let m2 = 2;
  for (let n = 0; n < QK_K; n += 64) {
    for (let j = 0; j < 32; j++) {
      let l1 = L[n + j]!;
      if (l1 > 15) {
        l1 -= 16;
        qh[j]! |= m1;
      }
      let l2 = L[n + j + 32]!;
      if (l2 > 15) {
        l2 -= 16;
        qh[j]! |= m2;
      }
      out.setUint8(ql + j, l1 | (l2 << 4));
    }
    m1 <<= 2;
    m2 <<= 2;
    ql += 32;
  }
  for (let j = 0; j < 32; j++) out.setUint8(o + 16 + j, qh[j]!);
}

function q6_K(x: Float32Array, out: DataView, o: number): void {
  const L = new Int8Array(QK_K);
  const scales = new Float32Array(16);
  let maxScale = 0;
  let maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const scale = makeQxQuants(16, 32, x.subarray(16 * ib, 16 * ib + 16), L.subarray(16 * ib, 16 * ib + 16));
    scales[ib] = scale;
    if (Math.abs(scale) > maxAbsScale) {
      maxAbsScale = Math.abs(scale);
      maxScale = scale;
    }
  }
  // Layout: ql[128], qh[64], scales[16] (int8), d (half).
  if (maxAbsScale < GROUP_MAX_EPS) {
    for (let i = 0; i < 210; i++) out.setUint8(o + i, 0);
    return;
  }
  const iscale = f(-128 / maxScale);
  const dBits = fp16Bits(f(1 / iscale));
  out.setUint16(o + 208, dBits, true);
  const sc = new Int8Array(16);
  for (let ib = 0; ib < 16; ib++) {
    sc[ib] = Math.min(127, nearestInt(f(iscale * scales[ib]!)));
    out.setInt8(o + 192 + ib, sc[ib]!);
  }
  for (let j = 0; j < 16; j++) {
    const d = f(fp16Value(dBits) * sc[j]!);
    if (!d) continue;
    for (let ii = 0; ii < 16; ii++) {
      const l = nearestInt(f(x[16 * j + ii]! / d));
      L[16 * j + ii] = Math.max(-32, Math.min(31, l)) + 32;
    }
  }
  let ql = o;
  let qh = o + 128;
  for (let j = 0; j < QK_K; j += 128) {
    for (let l = 0; l < 32; l++) {
      const q1 = L[j + l]! & 0xf;
      const q2 = L[j + l + 32]! & 0xf;
      const q3 = L[j + l + 64]! & 0xf;
      const q4 = L[j + l + 96]! & 0xf;
      out.setUint8(ql + l, q1 | (q3 << 4));
      out.setUint8(ql + l + 32, q2 | (q4 << 4));
      out.setUint8(qh + l, (L[j + l]! >> 4) | ((L[j + l + 32]! >> 4) << 2) | ((L[j + l + 64]! >> 4) << 4) | ((L[j + l + 96]! >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

const KERNELS: Partial<Record<GgmlTypeName, { block: number; bytes: number; quantize: (x: Float32Array, out: DataView, o: number) => void }>> = {
  Q4_0: { block: 32, bytes: 18, quantize: q4_0 },
  Q4_1: { block: 32, bytes: 20, quantize: q4_1 },
  Q5_0: { block: 32, bytes: 22, quantize: q5_0 },
  Q5_1: { block: 32, bytes: 24, quantize: q5_1 },
  Q8_0: { block: 32, bytes: 34, quantize: q8_0 },
  Q4_K: { block: QK_K, bytes: 144, quantize: q4_K },
  Q5_K: { block: QK_K, bytes: 176, quantize: q5_K },
  Q6_K: { block: QK_K, bytes: 210, quantize: q6_K },
};

/** The types `encodeTensor` produces. */
export const ENCODABLE_TYPES: readonly GgmlTypeName[] = ["F32", "F16", "BF16", ...(Object.keys(KERNELS) as GgmlTypeName[])];

/** Encodes float32 values (rows of a tensor, row length a multiple of the block) as `type`. */
export function encodeTensor(values: Float32Array, type: GgmlTypeName): Uint8Array {
  if (type === "F32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength).slice();
  if (type === "F16" || type === "BF16") {
    const out = new Uint16Array(values.length);
    const convert = type === "F16" ? fp16Bits : bf16Bits;
    for (let i = 0; i < values.length; i++) out[i] = convert(values[i]!);
    return new Uint8Array(out.buffer);
  }
  const kernel = KERNELS[type];
  if (!kernel) throw new Error(`GGUF: no quantization kernel for ${type}`);
  if (values.length % kernel.block !== 0) throw new Error(`GGUF: ${type} needs a multiple of ${kernel.block} values, got ${values.length}`);
  const blocks = values.length / kernel.block;
  const bytes = new Uint8Array(blocks * kernel.bytes);
  const view = new DataView(bytes.buffer);
  for (let b = 0; b < blocks; b++) kernel.quantize(values.subarray(b * kernel.block, (b + 1) * kernel.block), view, b * kernel.bytes);
  return bytes;
}
