// Scaled dot-product attention, as torch.nn.functional.scaled_dot_product_attention computes it:
// libtorch's fused kernel where it has one, and the composed formula otherwise. Grouped-query
// attention repeats each key/value head for its group of query heads (HF's repeat_kv).
import { autocastDeviceOf, autocastState } from "./autocast.ts";
import { native } from "./native.ts";
import { full } from "./creation.ts";
import { tidy } from "./scope.ts";
import { Tensor } from "./tensor.ts";

export interface AttentionOptions {
  /** Additive float mask broadcastable to [B, H, T, S] (0 keeps, -inf drops), or a bool mask (true keeps). */
  mask?: Tensor | null;
  /** Query i attends to keys up to i + (S - T): the queries are the last T of S positions. */
  isCausal?: boolean;
  dropoutP?: number;
  /** Defaults to 1/sqrt(D); another value uses the composed path. */
  scale?: number;
  /** Scores become softcap·tanh(scores/softcap) before the mask (Gemma 2); uses the composed path. */
  softcap?: number | null;
}

/** q [B, Hq, T, D], k [B, Hkv, S, D], v [B, Hkv, S, Dv] with Hq a multiple of Hkv -> [B, Hq, T, Dv]. */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  return tidy(() => {
    if (singleQuery(q, k, options)) return attendGrouped(q, k, v, options, scaledDotProductAttention);
    const [key, value] = repeatKv(q, k, v);
    const D = q.shape[3]!;
    if ((options.scale !== undefined && options.scale !== 1 / Math.sqrt(D)) || options.softcap) {
      return attentionComposed(q, key, value, options);
    }
    // libtorch 1.13's kernel is not on autocast's lists: its math path would add the mask to and
    // take the softmax of bfloat16 scores. transformers runs eager attention there (its sdpa needs
    // torch >= 2.1), whose softmax is float32; libtorch 2's public kernel is autocast to bfloat16.
    if (!hasPublicSdpa() && autocastState(autocastDeviceOf(q.device)).enabled) return attentionComposed(q, key, value, options);
    let mask = options.mask ?? null;
    const T = q.shape[2]!;
    const S = key.shape[2]!;
    if ((mask && options.isCausal) || (options.isCausal && T !== S)) {
      // The fused kernel takes a mask or causality, not both, and aligns causality to the first
      // key; with a KV cache the queries are the last T of S positions, so compose instead.
      return attentionComposed(q, key, value, options);
    }
    if (mask && mask.dtype === "bool") mask = full(mask.shape, 0).maskedFill(mask.logicalNot(), -Infinity);
    return new Tensor(native.sdpa(q.id, key.id, value.id, mask ? mask.id : null, options.dropoutP ?? 0, options.isCausal ?? false));
  });
}

/** softmax(q kᵀ · scale + mask) v, written out; the reference for the fused kernel. */
export function attentionComposed(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  return tidy(() => {
    if (singleQuery(q, k, options)) return attendGrouped(q, k, v, options, attentionComposed);
    const [key, value] = repeatKv(q, k, v);
    const [T, D] = [q.shape[2]!, q.shape[3]!];
    const S = key.shape[2]!;
    const scale = options.scale ?? 1 / Math.sqrt(D);
    let scores = q.matmul(key.transpose(-2, -1)).mul(scale); // [B, H, T, S]
    if (options.softcap) scores = scores.div(options.softcap).tanh().mul(options.softcap);
    if (options.isCausal) {
      // Query i sees keys up to i + (S - T): the last T positions of a cache of length S.
      const blocked = full([T, S], 1, { dtype: "bool" }).triu(S - T + 1);
      scores = scores.maskedFill(blocked, -Infinity);
    }
    if (options.mask) {
      scores = options.mask.dtype === "bool" ? scores.maskedFill(options.mask.logicalNot(), -Infinity) : scores.add(options.mask);
    }
    // Half-precision scores: softmax in float32, cast back to the query's dtype (transformers'
    // eager_attention_forward).
    const half = scores.dtype === "bfloat16" || scores.dtype === "float16";
    let weights = half ? scores.to("float32").softmax(-1).to(q.dtype) : scores.softmax(-1);
    if (options.dropoutP) weights = new Tensor(native.dropout(weights.id, options.dropoutP, true));
    return weights.matmul(value);
  });
}

/**
 * One query per head (decoding with a KV cache) whose mask, if any, is shared by all heads: the
 * query is the last position, so causality hides nothing, and the heads of a group can share
 * their key/value head as rows of one query instead of copying the whole cache per group.
 */
function singleQuery(q: Tensor, k: Tensor, options: AttentionOptions): boolean {
  const mask = options.mask;
  const sharedMask = !mask || (mask.ndim === 4 && mask.shape[1] === 1 && mask.shape[2] === 1);
  const worthIt = options.isCausal || q.shape[1] !== k.shape[1]; // false once regrouped: no recursion
  return q.shape[2] === 1 && worthIt && sharedMask && !options.dropoutP && q.shape[1]! % k.shape[1]! === 0;
}

/** q [B, Hq, 1, D] as [B, Hkv, Hq/Hkv, D] against unrepeated k/v [B, Hkv, S, D] -> [B, Hq, 1, D]. */
function attendGrouped(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions, attend: typeof attentionComposed): Tensor {
  const [B, queryHeads, , D] = q.shape as number[];
  const kvHeads = k.shape[1]!;
  const grouped = q.reshape(B!, kvHeads, queryHeads! / kvHeads, D!);
  return attend(grouped, k, v, { ...options, isCausal: false }).reshape(B!, queryHeads!, 1, v.shape[3]!);
}

function repeatKv(q: Tensor, k: Tensor, v: Tensor): [Tensor, Tensor] {
  const queryHeads = q.shape[1]!;
  const kvHeads = k.shape[1]!;
  if (queryHeads === kvHeads) return [k, v];
  if (queryHeads % kvHeads !== 0) {
    throw new Error(`attention: ${queryHeads} query heads are not a multiple of ${kvHeads} key/value heads`);
  }
  const groups = queryHeads / kvHeads;
  return [k.repeatInterleave(groups, 1), v.repeatInterleave(groups, 1)];
}

let publicSdpa: boolean | null = null;

/** Whether libtorch has the public, autocast-aware scaled_dot_product_attention (>= 2.0). */
function hasPublicSdpa(): boolean {
  publicSdpa ??= Number(native.build_info().torch_version.split(".")[0]) >= 2;
  return publicSdpa;
}
