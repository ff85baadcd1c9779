// LongLoRA's shifted sparse attention (S²-Attn) for training, as LLaMA-Factory patches Llama
// attention (model_utils/longlora.py): attention runs inside groups of `ratio * T` tokens, and half
// of the heads see groups shifted by half a group, so information still flows between groups.
import { type Module, type Tensor, cat, scaledDotProductAttention, tidy } from "../../torch/index.ts";
import type { AttentionKernel } from "../causal_lm.ts";

/** LLaMA-Factory's group size ratio (`config.group_size_ratio`). */
export const GROUP_SIZE_RATIO = 0.25;

/**
 * q [B, H, T, D], k/v [B, Hkv, T, D] -> [B, H, T, D]. `mask` is an additive [B, 1, T, T] mask or
 * null for plain causal; like upstream, each group reuses the mask's first group block.
 */
export function shiftedSparseAttention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null, ratio: number): Tensor {
  return tidy(() => {
    const [B, H, T, D] = q.shape as [number, number, number, number];
    const groupSize = Math.floor(T * ratio);
    if (groupSize < 1 || T % groupSize !== 0) {
      throw new Error(`shift_attn: sequence length ${T} is not divisible by the group size ${groupSize} (${ratio} x ${T})`);
    }
    const groups = T / groupSize;
    const kvGroups = H / k.shape[1]!;
    const [keys, values] = kvGroups > 1 ? [k.repeatInterleave(kvGroups, 1), v.repeatInterleave(kvGroups, 1)] : [k, v];
    const half = Math.floor(H / 2);
    // [B, H, T, D] -> heads in the second half rolled back by half a group -> [B*G, H, g, D]
    const shift = (state: Tensor) => {
      const byToken = state.transpose(1, 2); // [B, T, H, D]
      const shifted = cat([byToken.slice(2, 0, half), byToken.slice(2, half).roll(-Math.floor(groupSize / 2), 1)], 2);
      return shifted.reshape(B * groups, groupSize, H, D).transpose(1, 2);
    };
    const groupMask = mask ? mask.slice(2, 0, groupSize).slice(3, 0, groupSize).repeat(groups, 1, 1, 1) : null;
    const attended = groupMask
      ? scaledDotProductAttention(shift(q), shift(keys), shift(values), { mask: groupMask })
      : scaledDotProductAttention(shift(q), shift(keys), shift(values), { isCausal: true });
    const byToken = attended.transpose(1, 2).reshape(B, T, H, D);
    const restored = cat([byToken.slice(2, 0, half), byToken.slice(2, half).roll(Math.floor(groupSize / 2), 1)], 2);
    return restored.transpose(1, 2); // [B, H, T, D]
  });
}

/**
 * Surgery, as LLaMA-Factory patches the attention forward: every attention module's kernel becomes
 * S²-Attn while training without a cache, and stays full attention otherwise. Returns the count.
 */
export function applyShiftedSparseAttention(model: Module, ratio: number): number {
  let patched = 0;
  for (const module of model.modules()) {
    const host = module as Module & { attentionKernel?: AttentionKernel };
    if (typeof host.attentionKernel !== "function") continue;
    const fullAttention = host.attentionKernel;
    host.attentionKernel = (q, k, v, mask, state) =>
      state.training && !state.cached ? shiftedSparseAttention(q, k, v, mask, ratio) : fullAttention(q, k, v, mask, state);
    patched++;
  }
  return patched;
}
