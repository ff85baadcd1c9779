// Which ggml type each tensor of a GGUF export gets, as llama.cpp's src/llama-quant.cpp picks them
// without an importance matrix (tensor_allows_quantization, llama_tensor_get_type_impl,
// tensor_type_fallback): norms and 1-D tensors stay f32; the output (and tied token embeddings) go
// to q6_K; the k-quant mixes give chosen attn_v / ffn_down layers more bits; rows whose length the
// block does not divide fall back to a 32-block type, or f16. Tensors are visited in llama.cpp's
// order (by layer, then by name), which its per-layer counters depend on.
import type { GgmlTypeName } from "./writer.ts";

/** lmfactory's `export_gguf_type` values with llama.cpp's llama_ftype and default tensor type. */
export const GGUF_FILE_TYPES = {
  f32: { ftype: 0, base: "F32" },
  f16: { ftype: 1, base: "F16" },
  bf16: { ftype: 32, base: "BF16" },
  q8_0: { ftype: 7, base: "Q8_0" },
  q4_0: { ftype: 2, base: "Q4_0" },
  q4_k_m: { ftype: 15, base: "Q4_K" },
  q5_k_m: { ftype: 17, base: "Q5_K" },
  q6_k: { ftype: 18, base: "Q6_K" },
} as const satisfies Record<string, { ftype: number; base: GgmlTypeName }>;

export type GgufFileType = keyof typeof GGUF_FILE_TYPES;

const BLOCK: Partial<Record<GgmlTypeName, number>> = { Q4_0: 32, Q4_1: 32, Q5_0: 32, Q5_1: 32, Q8_0: 32, Q4_K: 256, Q5_K: 256, Q6_K: 256 };
const isQuantized = (type: GgmlTypeName) => BLOCK[type] !== undefined;

export interface MixTensor {
  /** llama.cpp's name (`blk.3.attn_v.weight`). */
  name: string;
  /** torch shape; ggml's ne[0] (the row length) is the last entry. */
  shape: readonly number[];
}

export interface MixModel {
  arch: string;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
}

/** ggml_n_dims: the dims up to the last ggml dim above 1 (torch's leading 1s do not count). */
function ggmlDims(shape: readonly number[]): number {
  const first = shape.findIndex((n) => n !== 1);
  return first < 0 ? 1 : shape.length - first;
}

/**
 * tensor_allows_quantization for the tensors these files hold: not 1-D in ggml's sense (Qwen2-MoE's
 * [1, hidden] shared-expert gate is 1-D there), not norms, not the MoE router (ffn_gate_inp).
 */
function allowsQuantization(tensor: MixTensor): boolean {
  return ggmlDims(tensor.shape) >= 2 && tensor.name.endsWith("weight") && !tensor.name.includes("_norm.weight") && !tensor.name.includes("ffn_gate_inp.weight");
}

/** weight_name_comparer: by `blk.N.` layer (others first), then by name. */
function llamaCppOrder(a: string, b: string): number {
  const layer = (name: string) => Number(/^blk\.(\d+)\./.exec(name)?.[1] ?? -1);
  return layer(a) - layer(b) || (a < b ? -1 : a > b ? 1 : 0);
}

/** tensor_type_fallback for the types these mixes use. */
function fallback(type: GgmlTypeName, rowLength: number): GgmlTypeName {
  if (!isQuantized(type) || rowLength % BLOCK[type]! === 0) return type;
  const smaller: Partial<Record<GgmlTypeName, GgmlTypeName>> = { Q4_K: "Q5_0", Q5_K: "Q5_1", Q6_K: "Q8_0" };
  const next = smaller[type] ?? type;
  return rowLength % BLOCK[next]! === 0 ? next : "F16";
}

/** The ggml type of every tensor (by name) for a file of `fileType`. */
export function tensorTypes(tensors: readonly MixTensor[], fileType: GgufFileType, model: MixModel): Map<string, GgmlTypeName> {
  const base: GgmlTypeName = GGUF_FILE_TYPES[fileType].base;
  const ordered = [...tensors].sort((a, b) => llamaCppOrder(a.name, b.name));
  const hasOutput = tensors.some((tensor) => tensor.name === "output.weight");
  const nAttentionV = tensors.filter((tensor) => tensor.name.includes("attn_v.weight")).length;
  const nFfnDown = model.numLayers;
  const is70B = model.numLayers === 80 && ((model.arch === "llama" && model.numHeads !== model.numKvHeads) || model.arch === "qwen2");
  const useMoreBits = (i: number, n: number) => i < Math.floor(n / 8) || i >= Math.floor((7 * n) / 8) || (i - Math.floor(n / 8)) % 3 === 2;
  let iAttentionV = 0;
  let iFfnDown = 0;
  const types = new Map<string, GgmlTypeName>();
  for (const tensor of ordered) {
    if (!allowsQuantization(tensor)) {
      types.set(tensor.name, "F32");
      continue;
    }
    let type: GgmlTypeName = base;
    if (isQuantized(base)) {
      const rowLength = tensor.shape[tensor.shape.length - 1]!;
      const isOutput = tensor.name === "output.weight" || (!hasOutput && tensor.name === "token_embd.weight");
      if (isOutput) {
        if (rowLength % BLOCK[type]! !== 0) type = "Q8_0";
        else if (type !== "Q8_0") type = "Q6_K";
      } else if (tensor.name.includes("attn_v.weight")) {
        if ((fileType === "q4_k_m" || fileType === "q5_k_m") && useMoreBits(iAttentionV, nAttentionV)) type = "Q6_K";
        if (is70B && type === "Q4_K") type = "Q5_K";
        iAttentionV++;
      } else if (tensor.name.includes("ffn_down")) {
        if ((fileType === "q4_k_m" || fileType === "q5_k_m") && useMoreBits(iFfnDown, nFfnDown)) type = "Q6_K";
        iFfnDown++;
      }
      type = fallback(type, rowLength);
    }
    types.set(tensor.name, type);
  }
  return types;
}
