"""Reference PPO arithmetic in PyTorch, written from TRL 0.9.6 (trl/core.py: masked_mean, masked_var,
masked_whiten, clip_by_value, entropy_from_logits; trl/trainer/ppo_trainer.py: compute_rewards,
compute_advantages, loss; trl/trainer/utils.py: AdaptiveKLController, RunningMoments); no trl needed.

Reads a JSON request on stdin, {"op": ..., ...}, float64 unless said, and prints the JSON answer:
  rewards:    {"scores", "logprobs", "ref_logprobs", "mask", "kl_coef"} -> {"rewards", "non_score_rewards", "kls"}
  advantages: {"values", "rewards", "mask", "gamma", "lam", "whiten_rewards"} -> {"values", "advantages", "returns"}
  whiten:     {"values", "mask", "shift_mean"} -> {"whitened", "mean", "var"}
  loss:       {"old_logprobs", "values", "logits", "vpreds", "logprobs", "mask", "advantages", "returns",
               "cliprange", "cliprange_value", "vf_coef", "ratio_threshold"} -> {"loss", "stats", "grad_logprobs", "grad_vpreds"}
  kl:         {"init", "target", "horizon", "updates": [[current, n_steps], ...]} -> {"values"}
  moments:    {"batches": [[...], ...]} (float32, as TRL) -> {"normalized": [[...]], "mean", "std"}
"""
import json
import sys

import numpy as np
import torch


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def masked_mean(values, mask):
    return (values * mask).sum() / mask.sum()


def masked_var(values, mask, unbiased=True):
    mean = masked_mean(values, mask)
    centered = values - mean
    variance = masked_mean(centered**2, mask)
    if unbiased:
        mask_sum = mask.sum()
        variance = variance * (mask_sum / (mask_sum - 1))
    return variance


def masked_whiten(values, mask, shift_mean=True):
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened += mean
    return whitened


def clip_by_value(x, tensor_min, tensor_max):
    return torch.max(torch.min(x, tensor_max), tensor_min)


def entropy_from_logits(logits):
    pd = torch.nn.functional.softmax(logits, dim=-1)
    return torch.logsumexp(logits, axis=-1) - torch.sum(pd * logits, axis=-1)


def compute_rewards(scores, logprobs, ref_logprobs, masks, kl_coef):
    rewards, non_score_rewards, kls = [], [], []
    for score, logprob, ref_logprob, mask in zip(scores, logprobs, ref_logprobs, masks):
        kl = logprob - ref_logprob
        kls.append(kl)
        non_score_reward = -kl_coef * kl
        non_score_rewards.append(non_score_reward)
        reward = non_score_reward.clone()
        last_non_masked_index = mask.nonzero()[-1]
        reward[last_non_masked_index] += score
        rewards.append(reward)
    return torch.stack(rewards), torch.stack(non_score_rewards), torch.stack(kls)


def compute_advantages(values, rewards, mask, gamma, lam, whiten_rewards):
    lastgaelam = 0
    advantages_reversed = []
    gen_len = rewards.shape[-1]
    values = values * mask
    rewards = rewards * mask
    if whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    for step in reversed(range(gen_len)):
        nextvalues = values[:, step + 1] if step < gen_len - 1 else 0.0
        delta = rewards[:, step] + gamma * nextvalues - values[:, step]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1]).transpose(0, 1)
    returns = advantages + values
    advantages = masked_whiten(advantages, mask)
    return values, advantages.detach(), returns


def trl_loss(old_logprobs, values, logits, vpreds, logprobs, mask, advantages, returns, cliprange, cliprange_value, vf_coef, ratio_threshold):
    """PPOTrainer.loss: the total (pg + vf_coef · vf, zeroed past the ratio threshold) and the stats as floats."""
    vpredclipped = clip_by_value(vpreds, values - cliprange_value, values + cliprange_value)
    vf_losses1 = (vpreds - returns) ** 2
    vf_losses2 = (vpredclipped - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    vf_clipfrac = masked_mean(torch.gt(vf_losses2, vf_losses1).to(mask.dtype), mask)
    ratio = torch.exp(logprobs - old_logprobs)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    pg_clipfrac = masked_mean(torch.gt(pg_losses2, pg_losses).to(mask.dtype), mask)
    total = pg_loss + vf_coef * vf_loss
    avg_ratio = masked_mean(ratio, mask).item()
    if avg_ratio > ratio_threshold:
        pg_loss = pg_loss * 0.0
        vf_loss = vf_loss * 0.0
        total = total * 0.0
    with torch.no_grad():
        stats = {
            "loss/policy": pg_loss.item(),
            "loss/value": vf_loss.item(),
            "loss/total": total.item(),
            "policy/entropy": masked_mean(entropy_from_logits(logits), mask).item(),
            "policy/approxkl": (0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)).item(),
            "policy/policykl": masked_mean(old_logprobs - logprobs, mask).item(),
            "policy/clipfrac": pg_clipfrac.item(),
            "policy/advantages_mean": masked_mean(advantages, mask).item(),
            "returns/mean": masked_mean(returns, mask).item(),
            "returns/var": masked_var(returns, mask).item(),
            "val/vpred": masked_mean(vpreds, mask).item(),
            "val/error": masked_mean((vpreds - returns) ** 2, mask).item(),
            "val/clipfrac": vf_clipfrac.item(),
            "val/mean": masked_mean(values, mask).item(),
            "val/var": masked_var(values, mask).item(),
        }
    return total, stats


def loss(r):
    vpreds = t(r["vpreds"]).requires_grad_(True)
    logprobs = t(r["logprobs"]).requires_grad_(True)
    total, stats = trl_loss(
        t(r["old_logprobs"]), t(r["values"]), t(r["logits"]), vpreds, logprobs, t(r["mask"]), t(r["advantages"]), t(r["returns"]),
        r["cliprange"], r["cliprange_value"], r["vf_coef"], r["ratio_threshold"],
    )
    total.backward()
    return {"loss": total.item(), "stats": stats, "grad_logprobs": logprobs.grad.tolist(), "grad_vpreds": vpreds.grad.tolist()}


class AdaptiveKLController:
    def __init__(self, init_kl_coef, target, horizon):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current, n_steps):
        proportional_error = np.clip(current / self.target - 1, -0.2, 0.2)
        mult = 1 + proportional_error * n_steps / self.horizon
        self.value *= mult


class RunningMoments:
    def __init__(self):
        self.mean = 0
        self.std = 1
        self.var = 1
        self.count = 1e-24

    @torch.no_grad()
    def update(self, xs):
        xs_count = xs.numel()
        xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
        xs_mean, xs_var = xs_mean.float(), xs_var.float()
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        new_sum = xs_var * xs_count
        old_sum = self.var * self.count + delta**2 * self.count * xs_count / tot_count
        tot_sum = old_sum + new_sum
        self.mean += delta * xs_count / tot_count
        new_var = tot_sum / tot_count
        self.std = (new_var * tot_count / (tot_count - 1)).float().sqrt()
        self.var = new_var
        self.count = tot_count
        return xs_mean.item(), (xs_var * xs_count / (xs_count - 1)).float().sqrt().item()


def main():
    r = json.load(sys.stdin)
    op = r["op"]
    if op == "rewards":
        rewards, non_score, kls = compute_rewards(t(r["scores"]), t(r["logprobs"]), t(r["ref_logprobs"]), t(r["mask"]), r["kl_coef"])
        out = {"rewards": rewards.tolist(), "non_score_rewards": non_score.tolist(), "kls": kls.tolist()}
    elif op == "advantages":
        values, advantages, returns = compute_advantages(t(r["values"]), t(r["rewards"]), t(r["mask"]), r["gamma"], r["lam"], r["whiten_rewards"])
        out = {"values": values.tolist(), "advantages": advantages.tolist(), "returns": returns.tolist()}
    elif op == "whiten":
        values, mask = t(r["values"]), t(r["mask"])
        out = {"whitened": masked_whiten(values, mask, r["shift_mean"]).tolist(), "mean": masked_mean(values, mask).item(), "var": masked_var(values, mask).item()}
    elif op == "loss":
        out = loss(r)
    elif op == "kl":
        ctl = AdaptiveKLController(r["init"], r["target"], r["horizon"])
        values = []
        for current, n_steps in r["updates"]:
            ctl.update(current, n_steps)
            values.append(float(ctl.value))
        out = {"values": values}
    elif op == "moments":
        running = RunningMoments()
        normalized = []
        for batch in r["batches"]:
            scores = torch.tensor(batch, dtype=torch.float32)
            running.update(scores)
            factor = running.std.to(torch.float32) + torch.finfo(torch.float32).eps
            normalized.append(((scores - running.mean.to(torch.float32)) / factor).tolist())
        out = {"normalized": normalized, "mean": float(running.mean), "std": float(running.std)}
    else:
        raise ValueError(op)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
