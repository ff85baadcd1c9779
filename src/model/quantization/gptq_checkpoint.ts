// GPTQ checkpoints in the AutoGPTQ / transformers layout, loaded as QuantLinear layers (what
// LLaMA-Factory's llama3_lora_sft_gptq.yaml trains LoRA on). Per quantized Linear the checkpoint has
// `qweight` int32 [in·bits/32, out] (each column a little-endian bit stream of `bits`-bit levels
// along the input), `qzeros` int32 [groups, out·bits/32] (each row a bit stream along the output;
// AutoGPTQ's format stores zero − 1, gptq_v2 the zero), `scales` float16 [groups, out] and `g_idx`
// int32 [in] (each input feature's group); W[o, i] = scales[g, o] · (q[i, o] − zero[g, o]), g = g_idx[i].
// The levels are repacked once, at load, into QuantLinear's row-major form (4-bit nibbles, or bytes
// for 8 bits) with one block per (row, group); act-order (desc_act) checkpoints keep their groups
// contiguous by permuting the input features.
import { UserError } from "../../errors.ts";
import { type DType, Linear, type Tensor, arange, keep, openSafetensors, tensor, tidy } from "../../torch/index.ts";
import type { CausalLM } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import type { WeightSink } from "../loader.ts";
import { QuantLinear } from "./quantized_linear.ts";

export interface GptqCheckpointConfig {
  bits: 2 | 3 | 4 | 8;
  /** Input features per group (the whole input for group_size −1). */
  groupSize: number | null;
  descAct: boolean;
  /** AutoGPTQ's own format stores zero − 1 (checkpoint_format "gptq"); gptq_v2 stores the zero. */
  zeroMinusOne: boolean;
}

/** config.json's quantization_config of a GPTQ checkpoint, checked. */
export function gptqConfigOf(config: ModelConfig, folder: string): GptqCheckpointConfig {
  const raw = (config.quantization_config ?? {}) as Record<string, unknown>;
  const where = `${folder}/config.json`;
  const bits = Number(raw.bits);
  if (![2, 3, 4, 8].includes(bits)) throw new UserError(`GPTQ bits ${String(raw.bits)} is not supported`, where, "GPTQ checkpoints have 2, 3, 4 or 8 bits");
  const groupSize = Number(raw.group_size ?? 128);
  if (!Number.isInteger(groupSize) || (groupSize <= 0 && groupSize !== -1)) throw new UserError(`GPTQ group_size ${String(raw.group_size)} is not valid`, where, "group_size is a positive integer or -1");
  const format = String(raw.checkpoint_format ?? "gptq");
  if (format !== "gptq" && format !== "gptq_v2") throw new UserError(`GPTQ checkpoint_format "${format}" is not supported`, where, "lmfactory loads checkpoint_format gptq (AutoGPTQ) and gptq_v2 (GPTQModel)");
  return { bits: bits as GptqCheckpointConfig["bits"], groupSize: groupSize === -1 ? null : groupSize, descAct: Boolean(raw.desc_act), zeroMinusOne: format === "gptq" };
}

/** The `count` levels of `bits` bits starting at bit 0 of a little-endian stream of 32-bit words. */
function readStream(words: Int32Array, wordAt: (k: number) => number, count: number, bits: number, into: (index: number, level: number) => void): void {
  const mask = (1 << bits) - 1;
  for (let i = 0; i < count; i++) {
    const bit = i * bits;
    const k = bit >>> 5;
    const offset = bit & 31;
    let value = words[wordAt(k)]! >>> offset;
    if (offset + bits > 32) value |= words[wordAt(k + 1)]! << (32 - offset);
    into(i, value & mask);
  }
}

/** qweight [in·bits/32, out] -> levels [in][out] (row-major, in · out bytes). */
export function unpackQweight(qweight: Int32Array, inFeatures: number, outFeatures: number, bits: number): Uint8Array {
  const levels = new Uint8Array(inFeatures * outFeatures);
  for (let column = 0; column < outFeatures; column++) {
    readStream(qweight, (k) => k * outFeatures + column, inFeatures, bits, (i, level) => (levels[i * outFeatures + column] = level));
  }
  return levels;
}

/** qzeros [groups, out·bits/32] -> zeros [groups][out] as stored (before AutoGPTQ's + 1). */
export function unpackQzeros(qzeros: Int32Array, groups: number, outFeatures: number, bits: number): Uint8Array {
  const zeros = new Uint8Array(groups * outFeatures);
  const width = qzeros.length / groups;
  for (let group = 0; group < groups; group++) {
    readStream(qzeros, (k) => group * width + k, outFeatures, bits, (o, level) => (zeros[group * outFeatures + o] = level));
  }
  return zeros;
}

/** The stored tensors of one GPTQ layer, as read from the checkpoint. */
export interface GptqTensors {
  qweight: Int32Array;
  qzeros: Int32Array;
  /** float32 [groups · out], scales[g][o] */
  scales: Float32Array;
  /** [in] or null for the trivial i / group_size */
  gIdx: Int32Array | null;
}

/**
 * A QuantLinear over a GPTQ layer: levels [out, in] in group order (input features permuted when
 * g_idx is not i / group_size), one block per (row, group) with scale s and zero z.
 */
export function gptqQuantLinear(
  name: string,
  stored: GptqTensors,
  shape: { inFeatures: number; outFeatures: number },
  config: GptqCheckpointConfig,
  options: { bias: Tensor | null; computeDtype: DType; device: string },
): QuantLinear {
  const { inFeatures, outFeatures } = shape;
  const { bits } = config;
  const groupSize = config.groupSize ?? inFeatures;
  const groups = stored.scales.length / outFeatures;
  // auto_gptq keeps ceil(in / group_size) groups: the last one may be partial (or the only one, shorter than group_size).
  if (groups !== Math.ceil(inFeatures / groupSize)) {
    throw new UserError(`${name}: ${inFeatures} input features do not split into ${groups} GPTQ groups of ${groupSize}`, "model_name_or_path", "the checkpoint's group_size does not fit the layer");
  }
  // The quantized layer's blocks share one (scale, zero): `block` features, so that a whole group
  // is one block, or several when a partial group makes the groups uneven.
  const block = greatestCommonDivisor(inFeatures, groupSize);
  const blocksPerRow = inFeatures / block;
  if (stored.qweight.length !== (inFeatures * bits * outFeatures) / 32) {
    throw new UserError(`${name}.qweight holds ${stored.qweight.length} words, a [${outFeatures}, ${inFeatures}] ${bits}-bit layer needs ${(inFeatures * bits * outFeatures) / 32}`, "model_name_or_path", "config.json and the GPTQ weights do not belong together");
  }
  // Input features in group order: a stable sort by g_idx (the identity unless act-order).
  const gIdx = stored.gIdx ?? Int32Array.from({ length: inFeatures }, (_, i) => Math.floor(i / groupSize));
  const order = Array.from({ length: inFeatures }, (_, i) => i).sort((a, b) => gIdx[a]! - gIdx[b]! || a - b);
  order.forEach((feature, position) => {
    if (gIdx[feature] !== Math.floor(position / groupSize)) {
      throw new UserError(`${name}.g_idx does not give every group ${groupSize} input features`, "model_name_or_path", "the checkpoint's g_idx is not one GPTQ writes");
    }
  });
  const permuted = order.some((feature, position) => feature !== position);
  const levels = unpackQweight(stored.qweight, inFeatures, outFeatures, bits); // [in][out]
  const zeros = unpackQzeros(stored.qzeros, groups, outFeatures, bits); // [groups][out]
  // Row-major [out, in] in group order: 4-bit nibbles (first of a pair high) for bits <= 4, else bytes.
  const packedBits = bits <= 4 ? 4 : 8;
  const bytes = new Uint8Array(packedBits === 4 ? (outFeatures * inFeatures) / 2 : outFeatures * inFeatures);
  for (let o = 0; o < outFeatures; o++) {
    for (let j = 0; j < inFeatures; j++) {
      const level = levels[order[j]! * outFeatures + o]!;
      const e = o * inFeatures + j;
      if (packedBits === 8) bytes[e] = level;
      else bytes[e >> 1] |= e & 1 ? level : level << 4;
    }
  }
  const scale = new Float32Array(outFeatures * blocksPerRow);
  const zero = new Float32Array(outFeatures * blocksPerRow);
  for (let o = 0; o < outFeatures; o++) {
    for (let b = 0; b < blocksPerRow; b++) {
      const g = Math.floor((b * block) / groupSize);
      scale[o * blocksPerRow + b] = stored.scales[g * outFeatures + o]!;
      zero[o * blocksPerRow + b] = zeros[g * outFeatures + o]! + (config.zeroMinusOne ? 1 : 0);
    }
  }
  const device = options.device;
  const place = (t: Tensor) => keep(t.device === device ? t : t.to(device));
  const buffers = tidy(() => ({
    qlevels: place(tensor(bytes, { dtype: "uint8" })),
    qtable: place(arange(0, 2 ** packedBits, 1, { dtype: "float32" })),
    qscale: place(tensor(scale)),
    qzero: place(tensor(zero)),
  }));
  const inputOrder = permuted ? tidy(() => place(tensor(Int32Array.from(order)).to("int64"))) : null;
  return new QuantLinear(
    inFeatures,
    outFeatures,
    {
      method: "gptq",
      format: `gptq ${bits}-bit${permuted ? " act-order" : ""}`,
      stored: buffers,
      levels: (s) => ({ levels: s.qlevels!, bits: packedBits, table: s.qtable!, scale: s.qscale!, zero: s.qzero!, blocksize: block }),
      inputOrder,
    },
    { bias: options.bias, computeDtype: options.computeDtype },
  );
}

const PARTS = ["qweight", "qzeros", "scales", "g_idx"] as const;
type Part = (typeof PARTS)[number];

/**
 * Readies `model` for a GPTQ checkpoint: every Linear with a `<name>.qweight` in the checkpoint
 * frees its float weight and becomes a QuantLinear once its packed tensors have streamed in.
 */
export function gptqWeightSink(model: CausalLM, folder: string, config: GptqCheckpointConfig, computeDtype: DType): WeightSink {
  let names: string[];
  try {
    const reader = openSafetensors(folder);
    names = reader.names();
    reader.close();
  } catch (error) {
    if (error instanceof UserError) throw new UserError(`a GPTQ checkpoint loads from safetensors: ${error.message}`, folder, "convert the checkpoint to safetensors");
    throw error;
  }
  const inCheckpoint = new Set(names);
  const pending = new Map<string, { linear: Linear; device: string; parts: Partial<Record<Part, Int32Array | Float32Array>> }>();
  for (const [name, module] of model.namedModules()) {
    if (!(module instanceof Linear) || !inCheckpoint.has(`${name}.qweight`)) continue;
    pending.set(name, { linear: module, device: module.weight.device, parts: {} });
    module.weight.dispose();
  }
  if (!pending.size) throw new UserError("config.json says GPTQ, but the checkpoint has no qweight tensors", folder, "check that the folder holds the quantized weights");
  const done = new Set<string>();
  const complete = (name: string, parts: Partial<Record<Part, unknown>>) =>
    parts.qweight && parts.qzeros && parts.scales && (parts.g_idx || !inCheckpoint.has(`${name}.g_idx`));
  return {
    accept(key, stored) {
      const dot = key.lastIndexOf(".");
      const [name, part] = [key.slice(0, dot), key.slice(dot + 1) as Part];
      const entry = pending.get(name);
      if (!entry || !PARTS.includes(part)) return false;
      entry.parts[part] = part === "scales" ? (tidy(() => stored.to("float32").data()) as Float32Array) : (tidy(() => stored.to("int32").data()) as Int32Array);
      if (complete(name, entry.parts)) {
        const { linear, device, parts } = entry;
        const layer = gptqQuantLinear(
          name,
          { qweight: parts.qweight as Int32Array, qzeros: parts.qzeros as Int32Array, scales: parts.scales as Float32Array, gIdx: (parts.g_idx as Int32Array | undefined) ?? null },
          { inFeatures: linear.inFeatures, outFeatures: linear.outFeatures },
          config,
          { bias: linear.bias, computeDtype, device },
        );
        model.setSubmodule(name, layer);
        pending.delete(name);
        done.add(`${name}.weight`);
      }
      return true;
    },
    provides: (key) => done.has(key),
    finish() {
      const [name, entry] = [...pending][0] ?? [];
      if (name) {
        const missing = PARTS.filter((part) => !entry!.parts[part] && (part !== "g_idx" || inCheckpoint.has(`${name}.g_idx`)));
        throw new UserError(`the GPTQ checkpoint lacks ${missing.map((part) => `${name}.${part}`).join(", ")}`, folder, "the checkpoint is incomplete");
      }
    },
  };
}

function greatestCommonDivisor(a: number, b: number): number {
  return b === 0 ? a : greatestCommonDivisor(b, a % b);
}
