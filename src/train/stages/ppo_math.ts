// The arithmetic of a PPO step, as TRL 0.9.6 (trl/trainer/ppo_trainer.py, trl/core.py, the version
// LLaMA-Factory's CustomPPOTrainer needs): masked mean / variance / whitening, the per-token rewards
// (−kl_coef · (logp − ref_logp), the score added at the last response token), GAE advantages and
// returns, the clipped policy and value losses with their statistics, the adaptive KL controller
// and the running score moments of use_score_norm. Tensors are [B, T] over response positions, the
// mask 1 where a response token is predicted; every function computes in the dtype it is given.
import { type Tensor, stack, tensor, tidy } from "../../torch/index.ts";

/** TRL's masked_mean over all elements: sum(values · mask) / sum(mask). */
export function maskedMean(values: Tensor, mask: Tensor): Tensor {
  return tidy(() => values.mul(mask).sum().div(mask.sum()));
}

/** TRL's masked_var: the masked mean of squared deviations, × n / (n − 1) when unbiased (n = mask sum). */
export function maskedVar(values: Tensor, mask: Tensor, unbiased = true): Tensor {
  return tidy(() => {
    const centered = values.sub(maskedMean(values, mask));
    const variance = maskedMean(centered.square(), mask);
    if (!unbiased) return variance;
    const n = mask.sum().item();
    if (n === 0) throw new Error("masked_var: the mask is empty");
    if (n === 1) throw new Error("masked_var: the mask holds one element, the unbiased variance is undefined (use a mini-batch with more response tokens)");
    return variance.mul(n / (n - 1));
  });
}

/** TRL's masked_whiten: (values − mean) / sqrt(var + 1e-8), the mean added back unless shiftMean. */
export function maskedWhiten(values: Tensor, mask: Tensor, shiftMean = true): Tensor {
  return tidy(() => {
    const mean = maskedMean(values, mask);
    const whitened = values.sub(mean).mul(maskedVar(values, mask).add(1e-8).rsqrt());
    return shiftMean ? whitened : whitened.add(mean);
  });
}

/** The index of the last 1 of each mask row (TRL: mask.nonzero()[-1]). */
export function lastMaskedIndex(mask: number[][]): number[] {
  return mask.map((row, i) => {
    const last = row.lastIndexOf(1);
    if (last < 0) throw new Error(`row ${i} has no response token`);
    return last;
  });
}

export interface Rewards {
  /** [B, T] −kl_coef · kl, plus the score at each row's last response token. */
  rewards: Tensor;
  /** [B, T] −kl_coef · kl. */
  nonScoreRewards: Tensor;
  /** [B, T] logp − ref_logp (TRL's kl_penalty "kl"). */
  kls: Tensor;
}

/** TRL's compute_rewards: scores [B], logprobs / refLogprobs [B, T], mask rows [B][T]. */
export function computeRewards(scores: Tensor, logprobs: Tensor, refLogprobs: Tensor, mask: number[][], klCoef: number): Rewards {
  return tidy(() => {
    const kls = logprobs.sub(refLogprobs);
    const nonScoreRewards = kls.mul(-klCoef);
    const last = lastMaskedIndex(mask);
    const atLast = tensor(mask.map((row, i) => row.map((_, t) => (t === last[i] ? 1 : 0))), { dtype: scores.dtype, device: scores.device });
    const rewards = nonScoreRewards.add(atLast.mul(scores.unsqueeze(1)));
    return { rewards, nonScoreRewards, kls };
  });
}

export interface AdvantageOptions {
  gamma: number;
  lam: number;
  whitenRewards: boolean;
}

/**
 * TRL's compute_advantages: values and rewards masked, rewards whitened (mean kept) when asked, GAE
 * backwards over the positions, returns = advantages + values, then the advantages whitened.
 * Returns the masked values too, as TRL does (they are the old values of the loss).
 */
export function computeAdvantages(values: Tensor, rewards: Tensor, mask: Tensor, options: AdvantageOptions): { values: Tensor; advantages: Tensor; returns: Tensor } {
  return tidy(() => {
    const maskedValues = values.mul(mask);
    let maskedRewards = rewards.mul(mask);
    if (options.whitenRewards) maskedRewards = maskedWhiten(maskedRewards, mask, false);
    const T = rewards.shape[1]!;
    const reversed: Tensor[] = [];
    let lastGaeLam: Tensor | number = 0;
    for (let t = T - 1; t >= 0; t--) {
      const current = maskedValues.select(1, t);
      const next: Tensor | number = t < T - 1 ? maskedValues.select(1, t + 1) : 0;
      const delta = maskedRewards.select(1, t).add(typeof next === "number" ? next : next.mul(options.gamma)).sub(current);
      lastGaeLam = delta.add(typeof lastGaeLam === "number" ? lastGaeLam : lastGaeLam.mul(options.gamma * options.lam));
      reversed.push(lastGaeLam);
    }
    const advantages = stack(reversed.reverse(), 1);
    const returns = advantages.add(maskedValues);
    return { values: maskedValues, advantages: maskedWhiten(advantages, mask).detach(), returns };
  });
}

export interface LossOptions {
  cliprange: number;
  cliprangeValue: number;
  vfCoef: number;
  ratioThreshold: number;
}

export interface LossInputs {
  oldLogprobs: Tensor;
  /** The old values (masked, from the rollout). */
  values: Tensor;
  /** [B, T, V] the mini-batch's logits at the response positions, for the entropy. */
  logits: Tensor;
  vpreds: Tensor;
  logprobs: Tensor;
  mask: Tensor;
  advantages: Tensor;
  returns: Tensor;
}

export interface PpoLoss {
  /** pg_loss + vf_coef · vf_loss, zero (with its graph) when the mean ratio passed the threshold. */
  loss: Tensor;
  /** TRL's train stats of the mini-batch (`loss/policy`, `policy/clipfrac`, `val/vpred`, ...), as numbers. */
  stats: Record<string, number>;
  /** The mean ratio was above ratio_threshold: the losses were zeroed. */
  skipped: boolean;
}

/** entropy of softmax(logits) over the last dimension: logsumexp − Σ softmax · logits. */
function entropyFromLogits(logits: Tensor): Tensor {
  return tidy(() => logits.logsumexp(-1).sub(logits.softmax(-1).mul(logits).sum(-1)));
}

/** TRL's PPOTrainer.loss: the clipped value loss, the clipped policy loss, the ratio guard and the statistics. */
export function ppoLoss(inputs: LossInputs, options: LossOptions): PpoLoss {
  const { oldLogprobs, values, vpreds, logprobs, mask, advantages, returns } = inputs;
  let skipped = false;
  const stats: Record<string, number> = {};
  const loss = tidy(() => {
    // TRL's clip_by_value: max(min(x, values + c), values − c).
    const vpredClipped = vpreds.minimum(values.add(options.cliprangeValue)).maximum(values.sub(options.cliprangeValue));
    const vfLosses1 = vpreds.sub(returns).square();
    const vfLosses2 = vpredClipped.sub(returns).square();
    let vfLoss = maskedMean(vfLosses1.maximum(vfLosses2), mask).mul(0.5);
    const vfClipfrac = maskedMean(vfLosses2.gt(vfLosses1).to(mask.dtype), mask);

    const ratio = logprobs.sub(oldLogprobs).exp();
    const pgLosses = advantages.neg().mul(ratio);
    const pgLosses2 = advantages.neg().mul(ratio.clamp(1 - options.cliprange, 1 + options.cliprange));
    let pgLoss = maskedMean(pgLosses.maximum(pgLosses2), mask);
    const pgClipfrac = maskedMean(pgLosses2.gt(pgLosses).to(mask.dtype), mask);

    let total = pgLoss.add(vfLoss.mul(options.vfCoef));
    const avgRatio = maskedMean(ratio, mask).item();
    if (avgRatio > options.ratioThreshold) {
      skipped = true;
      pgLoss = pgLoss.mul(0);
      vfLoss = vfLoss.mul(0);
      total = total.mul(0);
    }
    const detached = (t: Tensor) => t.detach();
    const number = (t: Tensor) => detached(t).item();
    Object.assign(stats, {
      "loss/policy": number(pgLoss),
      "loss/value": number(vfLoss),
      "loss/total": number(total),
      "policy/entropy": number(maskedMean(entropyFromLogits(detached(inputs.logits)), mask)),
      "policy/approxkl": number(maskedMean(detached(logprobs).sub(oldLogprobs).square(), mask).mul(0.5)),
      "policy/policykl": number(maskedMean(oldLogprobs.sub(detached(logprobs)), mask)),
      "policy/clipfrac": number(pgClipfrac),
      "policy/advantages_mean": number(maskedMean(advantages, mask)),
      "returns/mean": number(maskedMean(returns, mask)),
      "returns/var": number(maskedVar(returns, mask)),
      "val/vpred": number(maskedMean(detached(vpreds), mask)),
      "val/error": number(maskedMean(detached(vpreds).sub(returns).square(), mask)),
      "val/clipfrac": number(vfClipfrac),
      "val/mean": number(maskedMean(values, mask)),
      "val/var": number(maskedVar(values, mask)),
    });
    return total;
  });
  return { loss, stats, skipped };
}

/** TRL's AdaptiveKLController (Ziegler et al.): value ×= 1 + clip(kl / target − 1, ±0.2) · n_steps / horizon. */
export class AdaptiveKLController {
  constructor(
    public value: number,
    readonly target: number,
    readonly horizon: number,
  ) {}

  update(current: number, nSteps: number): void {
    const error = Math.min(Math.max(current / this.target - 1, -0.2), 0.2);
    this.value *= 1 + (error * nSteps) / this.horizon;
  }
}

/** TRL's FixedKLController (adap_kl_ctrl false). */
export class FixedKLController {
  constructor(public value: number) {}
  update(): void {}
}

/**
 * TRL's RunningMoments: the running mean and (unbiased) std of every score seen, updated per batch
 * with the parallel-variance formula; starts at mean 0, std 1, count 1e-24. Kept in float32 as TRL keeps them.
 */
export class RunningMoments {
  mean = 0;
  std = 1;
  var = 1;
  count = 1e-24;

  /** Adds a batch; returns its own mean and unbiased std. */
  update(xs: number[]): { mean: number; std: number } {
    const f = Math.fround;
    const n = xs.length;
    const xsMean = f(xs.reduce((a, b) => a + b, 0) / n);
    const xsVar = f(xs.reduce((a, b) => a + (b - xsMean) ** 2, 0) / n);
    const delta = f(xsMean - this.mean);
    const total = this.count + n;
    const newSum = f(xsVar * n);
    const oldSum = f(this.var * this.count + (delta * delta * this.count * n) / total);
    const totalSum = f(oldSum + newSum);
    this.mean = f(this.mean + (delta * n) / total);
    const newVar = f(totalSum / total);
    this.std = f(Math.sqrt(f((newVar * total) / (total - 1))));
    this.var = newVar;
    this.count = total;
    return { mean: xsMean, std: Math.sqrt((xsVar * n) / (n - 1)) };
  }
}

/** use_score_scaling with use_score_norm: (score − running mean) / (running std + eps) after the update. */
export function normalizeScores(scores: number[], moments: RunningMoments): number[] {
  moments.update(scores);
  const eps = 1.1920928955078125e-7; // torch.finfo(float32).eps
  const f = Math.fround;
  const scale = f(moments.std + eps);
  return scores.map((score) => f(f(score - moments.mean) / scale));
}
