// Mixture-of-experts parts shared by mixtral.ts, qwen2_moe.ts and deepseek_v2.ts: top-k routing,
// experts computed only on the tokens routed to them (transformers' MixtralSparseMoeBlock loop,
// batched: one sort, one gather, one scatter-add), and the router's load-balancing loss
// (transformers' load_balancing_loss_func, Switch Transformer eqs. 4-6) collected during a pass.
import { type Tensor, arange, cat, keep, tidy, zerosLike } from "../../torch/index.ts";
import type { ModelConfig } from "../config.ts";
import type { AuxiliaryCollector } from "./decoder.ts";

/** An expert: any module mapping [n, C] -> [n, C]. */
export interface Expert {
  forward(x: Tensor): Tensor;
}

/** float32, or float64 for a float64 pass (finite-difference checks), as HF's float upcasts. */
function atLeastFloat32(x: Tensor): Tensor {
  return x.dtype === "float64" ? x : x.to("float32");
}

/**
 * Softmax over the router logits [N, E] (in float32), the top `k` experts of each token, their
 * weights renormalised to sum to 1 when `normalize` (Mixtral always, Qwen's norm_topk_prob), cast
 * back to the logits' dtype. Returns weights and expert ids [N, k].
 */
export function topKRouting(routerLogits: Tensor, k: number, normalize: boolean): { weights: Tensor; experts: Tensor } {
  return tidy(() => {
    const probs = atLeastFloat32(routerLogits).softmax(-1);
    const { values, indices } = probs.topk(k, -1);
    const weights = normalize ? values.div(values.sum(-1, true)) : values;
    return { weights: weights.to(routerLogits.dtype), experts: indices };
  });
}

/**
 * sum_j weights[n, j] · experts[ids[n, j]](x[n]) for x [N, C], ids and weights [N, k] -> [N, C].
 * The (token, expert) pairs are sorted by expert so each expert runs once on the rows routed to
 * it; experts no token chose do not run (their weights get no gradient, as in transformers).
 */
export function dispatchExperts(x: Tensor, experts: readonly Expert[], ids: Tensor, weights: Tensor): Tensor {
  return tidy(() => {
    const [N, C] = [x.shape[0]!, x.shape[1]!];
    const k = ids.shape[1]!;
    const { values: sortedIds, indices: order } = ids.reshape(-1).sort(); // [N*k]
    const counts = sortedIds.view(1, -1).eq(arange(0, experts.length).view(-1, 1)).sum(1).toArray() as number[]; // [E]
    const tokens = arange(0, N).view(N, 1).expand(N, k).reshape(-1).indexSelect(0, order); // token of each pair
    const gathered = x.indexSelect(0, tokens); // [N*k, C], grouped by expert
    const pairWeights = weights.reshape(-1).indexSelect(0, order).view(-1, 1);
    const chunks = gathered.split(counts, 0);
    const outputs = chunks.map((rows, e) => (counts[e]! > 0 ? experts[e]!.forward(rows) : rows));
    const weighted = cat(outputs, 0).mul(pairWeights); // [N*k, C]
    return zerosLike(x).scatterAdd(0, tokens.view(-1, 1).expand(N * k, C), weighted.to(x.dtype));
  });
}

/**
 * transformers' load_balancing_loss_func over the router logits of every MoE layer of a pass,
 * times router_aux_loss_coef: E · Σ_e f_e · P_e, with f_e the share of (token, top-k slot) pairs
 * routed to expert e and P_e its mean router probability, both over all layers' tokens (padding
 * excluded when the pass has a mask). Under gradient checkpointing the layers are recomputed one
 * at a time: f is held fixed (it has no gradient), so layer i's part is E · Σ_e f_e · Σ_t p_i[t, e]
 * / (layers · tokens), whose gradient through that layer is the loss's.
 */
export class RouterLoadBalancing implements AuxiliaryCollector {
  private readonly _logits = new Map<number, Tensor>();
  /** [N] 1 for real tokens (null: all count), this pass. */
  private _weights: Tensor | null = null;
  private _active = false;
  /** How many times a stage took the loss this pass, and f (per expert, summed over the k slots) when it did. */
  private _taken = 0;
  private _tokensPerExpert: Tensor | null = null;

  private _coefficient = 0;

  constructor(
    private readonly config: ModelConfig,
    readonly numExperts: number,
    readonly topK: number,
  ) {}

  /** Records when config.output_router_logits is on (LLaMA-Factory sets it for training), never while decoding. */
  begin(B: number, T: number, attentionMask: Tensor | null, pass: { cached: boolean; training: boolean }): void {
    this.clear();
    const active = !pass.cached && this.config.output_router_logits === true;
    this._active = active;
    this._coefficient = (this.config.router_aux_loss_coef as number | undefined) ?? 0.001;
    // Neat packing numbers examples 1, 2, ...: every nonzero slot is a real token.
    if (active && attentionMask) this._weights = keep(tidy(() => attentionMask.ne(0).to("float32").reshape(B * T)));
  }

  /** An MoE layer's router logits [N, E] for this pass (kept until the next pass). */
  record(layerIndex: number, routerLogits: Tensor): void {
    if (!this._active) return;
    this._logits.get(layerIndex)?.dispose();
    this._logits.set(layerIndex, keep(routerLogits));
  }

  loss(): Tensor | null {
    if (!this._active || this._logits.size === 0) return null;
    this._taken++;
    return tidy(() => {
      const layers = [...this._logits.keys()].sort((a, b) => a - b);
      const logits = cat(layers.map((layer) => this._logits.get(layer)!), 0); // [L*N, E]
      const probs = logits.softmax(-1);
      const f = this.tokensPerExpert(probs, layers.length);
      const P = this.meanOverTokens(probs, layers.length); // [E]
      if (!this._tokensPerExpert) this._tokensPerExpert = keep(f.detach());
      return f.mul(P).sum().mul(this.numExperts * this._coefficient);
    });
  }

  lossOfLayer(layerIndex: number): Tensor | null {
    const logits = this._logits.get(layerIndex);
    if (!this._taken || !logits || !this._tokensPerExpert) return null;
    const f = this._tokensPerExpert;
    return tidy(() => {
      const perLayer = this.meanOverTokens(logits.softmax(-1), 1).div(this._logits.size); // [E]
      return f.mul(perLayer).sum().mul(this.numExperts * this._coefficient * this._taken);
    });
  }

  /** f_e: mean over real tokens of how many of the top-k slots chose e, from probs [L*N, E]. */
  private tokensPerExpert(probs: Tensor, layers: number): Tensor {
    const { indices } = probs.topk(this.topK, -1); // [L*N, k]
    const experts = arange(0, this.numExperts).view(1, 1, -1);
    const chosen = indices.unsqueeze(-1).eq(experts).to(probs.dtype === "float64" ? "float64" : "float32").sum(1); // [L*N, E]
    return this.meanOverTokens(chosen, layers);
  }

  /** The mean of x [L*N, E] over real tokens (every layer's), in float32 -> [E]. */
  private meanOverTokens(x: Tensor, layers: number): Tensor {
    const values = atLeastFloat32(x);
    if (!this._weights) return values.mean(0);
    const weights = this._weights.repeat(layers).view(-1, 1).to(values.dtype); // [L*N, 1]
    return values.mul(weights).sum(0).div(weights.sum());
  }

  private clear(): void {
    for (const logits of this._logits.values()) logits.dispose();
    this._logits.clear();
    this._weights?.dispose();
    this._weights = null;
    this._tokensPerExpert?.dispose();
    this._tokensPerExpert = null;
    this._taken = 0;
    this._active = false;
  }

  dispose(): void {
    this.clear();
  }
}
