// The KV cache of generation: keys and values of past positions per decoder layer, in
// preallocated buffers written in place (transformers' DynamicCache, without copying per step);
// and `RowCaches`, one such cache per row of a batch whose rows are at different lengths
// (continuous batching: each sequence keeps its own cache, nothing is copied when rows come and go).
import { type Tensor, cat, empty, keep, tensor, tidy } from "../torch/index.ts";

/** Attention over this step's q/k/v [B, H(kv), T, D] and the cached positions. */
export type AttendFn = (q: Tensor, keys: Tensor, values: Tensor) => Tensor;

/** What a decoder layer needs of a cache: how much it holds, and attention through it. */
export interface AttentionCache {
  /** Positions cached, shared by every row (0 for RowCaches, whose rows differ: pass positionIds). */
  readonly length: number;
  /** True when each row has its own length: no shared mask; each row attends alone. */
  readonly perRow: boolean;
  /** Stores k/v for `layer` and returns `attend(q, all keys, all values)` [B, H, T, D]. */
  attend(layer: number, q: Tensor, k: Tensor, v: Tensor, attend: AttendFn): Tensor;
}

/**
 * Keys and values of past positions, per layer one buffer [B, Hkv, capacity, D] filled up to
 * `length`, kept outside `tidy`. Each step writes its new positions in place and attention reads a
 * view of the filled part, so a step costs no copy of the history (growing by `cat` copied it all).
 */
export class KVCache implements AttentionCache {
  readonly perRow = false;
  keys: (Tensor | null)[];
  values: (Tensor | null)[];
  private readonly _lengths: number[];
  /** Positions to reserve at the first write (prompt + new tokens, when the caller knows them). */
  private readonly _reserve: number;

  constructor(numLayers: number, options: { capacity?: number } = {}) {
    this.keys = new Array(numLayers).fill(null);
    this.values = new Array(numLayers).fill(null);
    this._lengths = new Array(numLayers).fill(0);
    this._reserve = options.capacity ?? 0;
  }

  /** Positions already cached. */
  get length(): number {
    return this._lengths[0] ?? 0;
  }

  /** Writes this step's k [B, Hkv, T, D] and v [B, Hkv, T, Dv] after the cached ones; returns the history [B, Hkv, S, D|Dv]. */
  update(layer: number, key: Tensor, value: Tensor): [Tensor, Tensor] {
    const past = this._lengths[layer]!;
    const T = key.shape[2]!;
    const needed = past + T;
    if (needed > (this.keys[layer]?.shape[2] ?? 0)) this.grow(layer, key, value, Math.max(needed, this._reserve, 2 * past));
    this.keys[layer]!.narrow(2, past, T).copy_(key);
    this.values[layer]!.narrow(2, past, T).copy_(value);
    this._lengths[layer] = needed;
    return [this.keys[layer]!.narrow(2, 0, needed), this.values[layer]!.narrow(2, 0, needed)];
  }

  attend(layer: number, q: Tensor, k: Tensor, v: Tensor, attend: AttendFn): Tensor {
    const [keys, values] = this.update(layer, k, v);
    return attend(q, keys, values);
  }

  /** Keeps batch rows `sources` (beam search: each surviving beam's parent), in that order. */
  reorder(sources: number[]): void {
    tidy(() => {
      const index = tensor(sources, { dtype: "int64", device: this.keys[0]?.device ?? "cpu" });
      for (const list of [this.keys, this.values]) {
        list.forEach((old, layer) => {
          if (!old) return;
          list[layer] = keep(old.indexSelect(0, index));
          old.dispose();
        });
      }
    });
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t?.dispose();
    this.keys.fill(null);
    this.values.fill(null);
    this._lengths.fill(0);
  }

  /** Moves the layer to buffers of `capacity` positions, carrying over what is cached. */
  private grow(layer: number, key: Tensor, value: Tensor, capacity: number): void {
    const past = this._lengths[layer]!;
    for (const [list, like] of [[this.keys, key], [this.values, value]] as const) {
      const [B, heads, , D] = like.shape as number[];
      const buffer = keep(empty([B!, heads!, capacity, D!], { dtype: like.dtype, device: like.device }));
      const old = list[layer];
      if (old && past > 0) tidy(() => buffer.narrow(2, 0, past).copy_(old.narrow(2, 0, past)));
      old?.dispose();
      list[layer] = buffer;
    }
  }
}

/**
 * The caches of the rows of one decode step, each a batch-1 KVCache at its own length: row i's
 * k/v go to `caches[i]` and row i attends to its own history only, with the same attention call
 * as when it is decoded alone. Single-token steps without a shared mask (no padding, no active
 * sliding window), as a continuous-batching decode step is.
 */
export class RowCaches implements AttentionCache {
  readonly perRow = true;
  readonly length = 0;

  constructor(readonly caches: readonly KVCache[]) {}

  attend(layer: number, q: Tensor, k: Tensor, v: Tensor, attend: AttendFn): Tensor {
    return tidy(() =>
      cat(
        this.caches.map((cache, i) => cache.attend(layer, q.narrow(0, i, 1), k.narrow(0, i, 1), v.narrow(0, i, 1), attend)),
        0,
      ),
    );
  }
}
