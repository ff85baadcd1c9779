"""A whole PPO step in PyTorch, written from TRL 0.9.6's PPOTrainer.step (prepare_model_inputs,
batched_forward_pass, compute_rewards, compute_advantages, the ppo_epochs loop with accelerate's
gradient accumulation, train_minibatch, record_step_stats' KL, the KL controller update), on the Llama
forward of llama_reference.py with a value head on the last hidden states: full fine-tuning, the
reference being the initial weights, float32, AdamW with weight decay 0. The mini-batch
permutations are given (TRL draws them with numpy).

stdin: {"folder", "v_head": {"weight": [[...]], "bias": [...]}, "pad", "lr", "betas", "eps",
        "config": {"mini", "accum", "batch", "ppo_epochs", "max_grad_norm", "init_kl", "target", "horizon",
                   "gamma", "lam", "cliprange", "cliprange_value", "vf_coef", "ratio_threshold", "score_norm", "whiten_rewards"},
        "steps": [{"queries", "responses", "scores", "orders": [[...] per epoch]}]}
stdout: {"stats": [{name: value}, ...], "kl_coef": [...], "weights": {name: [flat]}}
"""
import json
import sys

import torch

sys.path.insert(0, "tests/reference")
import llama_reference as ref  # noqa: E402
from ppo_reference import AdaptiveKLController, RunningMoments, compute_advantages, compute_rewards, masked_mean, trl_loss  # noqa: E402

req = json.load(sys.stdin)
folder, cfg = req["folder"], req["config"]
W = ref.load_safetensors(f"{folder}/model.safetensors")
params = {name: w.clone().requires_grad_(True) for name, w in W.items()}
initial = {name: w.clone() for name, w in W.items()}
v_weight = torch.tensor(req["v_head"]["weight"], dtype=torch.float32).requires_grad_(True)
v_bias = torch.tensor(req["v_head"]["bias"], dtype=torch.float32).requires_grad_(True)
C = v_weight.shape[1]


def forward(weights, input_ids, attention_mask):
    """logits [B, T, V] and values [B, T]: llama_reference's forward with an identity head gives the last hidden states."""
    patched = dict(weights)
    patched["lm_head.weight"] = torch.eye(C)
    ref.load_safetensors = lambda path: patched
    hidden = ref.forward(folder, input_ids, attention_mask)
    logits = hidden @ weights["lm_head.weight"].T
    values = (hidden @ v_weight.T + v_bias).squeeze(-1)
    return logits, values


def logprobs_from_logits(logits, labels):
    return torch.gather(torch.nn.functional.log_softmax(logits, dim=2), 2, labels.unsqueeze(2)).squeeze(-1)


def batched_forward_pass(weights, queries, responses, input_ids, attention_mask):
    """TRL's batched_forward_pass over chunks of mini_batch_size: logprobs, logits, values and masks at positions 0..T-2."""
    all_logprobs, all_logits, all_values, all_masks = [], [], [], []
    for start in range(0, len(queries), cfg["mini"]):
        ids = input_ids[start : start + cfg["mini"]]
        mask = attention_mask[start : start + cfg["mini"]]
        padded = bool((mask == 0).any())
        logits, values = forward(weights, ids.tolist(), mask.tolist() if padded else None)
        logprobs = logprobs_from_logits(logits[:, :-1, :], ids[:, 1:])
        masks = torch.zeros_like(mask)
        masks[:, :-1] = mask[:, 1:]
        for j in range(len(ids)):
            q_start = len(queries[start + j]) - 1
            end = q_start + len(responses[start + j])
            masks[j, :q_start] = 0
            masks[j, end:] = 0
        all_logprobs.append(logprobs)
        all_logits.append(logits[:, :-1])
        all_values.append(values[:, :-1])
        all_masks.append(masks[:, :-1])
    return torch.cat(all_logprobs), torch.cat(all_logits), torch.cat(all_values), torch.cat(all_masks).float()


trainable = list(params.values()) + [v_weight, v_bias]
optimizer = torch.optim.AdamW(trainable, lr=req["lr"], betas=tuple(req["betas"]), eps=req["eps"], weight_decay=0.0)
kl_ctl = AdaptiveKLController(cfg["init_kl"], cfg["target"], cfg["horizon"])
running = RunningMoments()
out_stats, kl_values = [], []
for step in req["steps"]:
    queries, responses = step["queries"], step["responses"]
    scores = torch.tensor(step["scores"], dtype=torch.float32)
    if cfg["score_norm"]:
        running.update(scores)
        factor = running.std.to(torch.float32) + torch.finfo(torch.float32).eps
        scores = (scores - running.mean.to(torch.float32)) / factor
    # prepare_model_inputs: query + response, right-padded (DataCollatorWithPadding, padding_side right).
    rows = [q + r for q, r in zip(queries, responses)]
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([row + [req["pad"]] * (width - len(row)) for row in rows])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    with torch.no_grad():
        all_logprobs, _, values, masks = batched_forward_pass(params, queries, responses, input_ids, attention_mask)
        ref_logprobs, _, _, _ = batched_forward_pass(initial, queries, responses, input_ids, attention_mask)
        rewards, non_score_reward, kls = compute_rewards(scores, all_logprobs, ref_logprobs, masks, kl_ctl.value)
        values, advantages, returns = compute_advantages(values, rewards, masks, cfg["gamma"], cfg["lam"], cfg["whiten_rewards"])
    backward_batch = cfg["mini"] * cfg["accum"]
    all_stats = []
    for order in step["orders"]:
        for b in range(0, cfg["batch"], backward_batch):
            backward_inds = order[b : b + backward_batch]
            for m in range(0, backward_batch, cfg["mini"]):
                inds = torch.tensor(backward_inds[m : m + cfg["mini"]])
                logprobs, logits, vpreds, _ = batched_forward_pass(
                    params, [queries[i] for i in inds], [responses[i] for i in inds], input_ids[inds], attention_mask[inds]
                )
                total, stats = trl_loss(
                    all_logprobs[inds], values[inds], logits, vpreds, logprobs, masks[inds], advantages[inds], returns[inds],
                    cfg["cliprange"], cfg["cliprange_value"], cfg["vf_coef"], cfg["ratio_threshold"],
                )
                (total / cfg["accum"]).backward()  # accelerate's backward under gradient accumulation
                all_stats.append(stats)
            torch.nn.utils.clip_grad_norm_(trainable, cfg["max_grad_norm"])
            optimizer.step()
            optimizer.zero_grad()
    stats = {f"ppo/{name}": sum(s[name] for s in all_stats) / len(all_stats) for name in all_stats[0]}
    mean_kl = (kls * masks).sum(axis=-1).mean().item()
    stats.update({"objective/kl": mean_kl, "objective/kl_coef": kl_ctl.value, "ppo/mean_scores": scores.mean().item(),
                  "ppo/mean_non_score_reward": masked_mean(non_score_reward, masks).item()})
    kl_ctl.update(mean_kl, cfg["batch"])
    out_stats.append(stats)
    kl_values.append(float(kl_ctl.value))
weights = {name: p.detach().flatten().tolist() for name, p in params.items()}
weights["v_head.summary.weight"] = v_weight.detach().flatten().tolist()
weights["v_head.summary.bias"] = v_bias.detach().flatten().tolist()
json.dump({"stats": out_stats, "kl_coef": kl_values, "weights": weights}, sys.stdout)
