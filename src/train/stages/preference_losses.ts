// The preference losses on sequence log-probabilities, per example: TRL's DPOTrainer.dpo_loss
// (sigmoid with cDPO label smoothing, hinge, ipo; kto_pair as TRL 0.8.6 wrote it), LLaMA-Factory's
// CustomDPOTrainer odds_ratio_loss (ORPO), simpo_loss and bco_loss, and TRL's KTOTrainer.kto_loss.
// Inputs are [B] tensors (policy and reference log-probs); rewards come back detached.
import { type Tensor, cat, tidy } from "../../torch/index.ts";

export type ReferenceLoss = "sigmoid" | "hinge" | "ipo" | "kto_pair";

export interface PreferenceLosses {
  /** [B], or [2B] for kto_pair (the chosen then the rejected half). */
  losses: Tensor;
  /** β · (policy − reference) log-ratio, or β · policy log-prob without a reference; [B], detached. */
  chosenRewards: Tensor;
  rejectedRewards: Tensor;
}

/**
 * DPO's family with z = (π_c − π_r) − (ref_c − ref_r): sigmoid −logσ(βz)(1−ε) − logσ(−βz)ε, hinge
 * relu(1 − βz), ipo (z − 1/(2β))², kto_pair 1 − σ(β(Δ_c − KL_r)) and 1 − σ(β(KL_c − Δ_r)) with
 * KL = mean(Δ).clamp(min 0) of the other half (not detached, as in TRL 0.8.6).
 */
export function dpoLoss(
  type: ReferenceLoss,
  policy: { chosen: Tensor; rejected: Tensor },
  reference: { chosen: Tensor; rejected: Tensor },
  options: { beta: number; labelSmoothing: number },
): PreferenceLosses {
  const { beta, labelSmoothing } = options;
  return tidy(() => {
    const chosenRatio = policy.chosen.sub(reference.chosen);
    const rejectedRatio = policy.rejected.sub(reference.rejected);
    const z = policy.chosen.sub(policy.rejected).sub(reference.chosen.sub(reference.rejected));
    let losses: Tensor;
    switch (type) {
      case "sigmoid":
        losses = z.mul(beta).logSigmoid().neg().mul(1 - labelSmoothing).sub(z.mul(-beta).logSigmoid().mul(labelSmoothing));
        break;
      case "hinge":
        losses = z.mul(-beta).add(1).relu();
        break;
      case "ipo":
        losses = z.sub(1 / (2 * beta)).square();
        break;
      case "kto_pair": {
        const chosenKl = chosenRatio.mean().clamp(0);
        const rejectedKl = rejectedRatio.mean().clamp(0);
        losses = cat([
          chosenRatio.sub(rejectedKl).mul(beta).sigmoid().neg().add(1),
          chosenKl.sub(rejectedRatio).mul(beta).sigmoid().neg().add(1),
        ]);
        break;
      }
    }
    return { losses, chosenRewards: chosenRatio.detach().mul(beta), rejectedRewards: rejectedRatio.detach().mul(beta) };
  });
}

/**
 * ORPO on average log-probs: −c + β·(−logσ(log_odds)), log_odds = (c − r) − (log1p(−e^c) − log1p(−e^r)).
 * log1p(−e^x) is log(1 − e^x): 1 − e^x is exact in floating point for e^x in [0.5, 1], as torch's log1p sees it.
 */
export function orpoLoss(chosen: Tensor, rejected: Tensor, beta: number): PreferenceLosses & { sftLosses: Tensor } {
  return tidy(() => {
    const log1mexp = (x: Tensor) => x.exp().neg().add(1).log();
    const logOdds = chosen.sub(rejected).sub(log1mexp(chosen).sub(log1mexp(rejected)));
    const sftLosses = chosen.neg();
    const losses = sftLosses.add(logOdds.logSigmoid().neg().mul(beta));
    return { losses, sftLosses, chosenRewards: chosen.detach().mul(beta), rejectedRewards: rejected.detach().mul(beta) };
  });
}

/** SimPO on average log-probs: −logσ(β(c − r) − γ). */
export function simpoLoss(chosen: Tensor, rejected: Tensor, beta: number, gamma: number): PreferenceLosses {
  return tidy(() => ({
    losses: chosen.sub(rejected).mul(beta).sub(gamma).logSigmoid().neg(),
    chosenRewards: chosen.detach().mul(beta),
    rejectedRewards: rejected.detach().mul(beta),
  }));
}

/** BCO's term with the running reward baseline δ: −logσ(βΔ_c − δ) − logσ(−(βΔ_r − δ)). */
export function bcoLoss(
  policy: { chosen: Tensor; rejected: Tensor },
  reference: { chosen: Tensor; rejected: Tensor },
  beta: number,
  delta: number,
): Tensor {
  return tidy(() => {
    const chosen = policy.chosen.sub(reference.chosen).mul(beta);
    const rejected = policy.rejected.sub(reference.rejected).mul(beta);
    return chosen.sub(delta).logSigmoid().neg().sub(rejected.sub(delta).neg().logSigmoid());
  });
}

/** TRL's RunningMoments mean, updated with one value at a time (BCO's reward baseline δ). */
export class RunningMean {
  mean = 0;
  private count = 1e-24;
  update(value: number): number {
    const total = this.count + 1;
    this.mean += (value - this.mean) / total;
    this.count = total;
    return this.mean;
  }
}

export interface KtoLosses extends PreferenceLosses {
  /** The detached KL estimate mean(π_KL − ref_KL), clamped at 0. */
  kl: Tensor;
}

/**
 * KTO: kl = mean(π_KL − ref_KL) detached and clamped at 0; desirable 1 − σ(β((π_c − ref_c) − kl))
 * weighted `desirableWeight`, undesirable 1 − σ(β(kl − (π_r − ref_r))) weighted `undesirableWeight`.
 * Either side may be empty ([0] tensors).
 */
export function ktoLoss(
  policy: { chosen: Tensor; rejected: Tensor; kl: Tensor },
  reference: { chosen: Tensor; rejected: Tensor; kl: Tensor },
  options: { beta: number; desirableWeight: number; undesirableWeight: number },
): KtoLosses {
  const { beta } = options;
  return tidy(() => {
    const kl = policy.kl.sub(reference.kl).mean().detach().clamp(0);
    const chosenRatio = policy.chosen.sub(reference.chosen);
    const rejectedRatio = policy.rejected.sub(reference.rejected);
    const chosenLosses = chosenRatio.sub(kl).mul(beta).sigmoid().neg().add(1).mul(options.desirableWeight);
    const rejectedLosses = kl.sub(rejectedRatio).mul(beta).sigmoid().neg().add(1).mul(options.undesirableWeight);
    return {
      losses: cat([chosenLosses, rejectedLosses]),
      chosenRewards: chosenRatio.detach().mul(beta),
      rejectedRewards: rejectedRatio.detach().mul(beta),
      kl,
    };
  });
}
