"""Reference preference losses in PyTorch, written from LLaMA-Factory's train/trainer_utils.py
(get_batch_logps), train/dpo/trainer.py (odds_ratio_loss, simpo_loss, bco_loss) and TRL's
DPOTrainer.dpo_loss (v0.8.6: sigmoid, hinge, ipo, kto_pair) and KTOTrainer.kto_loss; no trl needed.

Reads a JSON request on stdin, {"op": ..., ...}, float64 throughout, and prints the JSON answer:
  logps: {"logits": [N,T,V], "labels": [N,T], "ld_alpha": float|null} -> {"logps": [N], "valid_length": [N]}
  dpo:   {"loss_type", "beta", "label_smoothing", "pc", "pr", "rc", "rr"} -> {"losses", "chosen_rewards", "rejected_rewards"}
  orpo:  {"beta", "c", "r"} -> {"losses"};  simpo: {"beta", "gamma", "c", "r"} -> {"losses"}
  bco:   {"beta", "delta", "pc", "pr", "rc", "rr"} -> {"losses"}
  kto:   {"beta", "desirable_weight", "undesirable_weight", "pc", "pr", "pkl", "rc", "rr", "rkl"} -> {"losses", "kl"}
"""
import json
import sys

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def get_batch_logps(logits, labels, ld_alpha=None):
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != IGNORE_INDEX
    labels[labels == IGNORE_INDEX] = 0
    per_token_logps = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    valid_length = loss_mask.sum(-1)
    if ld_alpha is not None:
        num_examples = labels.shape[0] // 2
        chosen_lengths = valid_length[:num_examples]
        rejected_lengths = valid_length[num_examples:]
        min_lengths = torch.min(chosen_lengths, rejected_lengths)
        start_positions = torch.argmax(loss_mask.int(), dim=1)
        public_lengths = start_positions + torch.cat([min_lengths, min_lengths], dim=0)
        seq_len = labels.shape[-1]
        position_ids = torch.arange(seq_len).expand_as(per_token_logps)
        ld_mask = position_ids < public_lengths.unsqueeze(1)
        front_mask = (ld_mask * loss_mask).double()
        rear_mask = (~ld_mask * loss_mask).double()
        logps = (per_token_logps * front_mask).sum(-1) + ld_alpha * (per_token_logps * rear_mask).sum(-1)
    else:
        logps = (per_token_logps * loss_mask).sum(-1)
    return logps, valid_length


def dpo_loss(loss_type, beta, label_smoothing, pc, pr, rc, rr):
    logits = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == "kto_pair":
        chosen_kl = (pc - rc).mean().clamp(min=0)
        rejected_kl = (pr - rr).mean().clamp(min=0)
        losses = torch.cat((1 - F.sigmoid(beta * ((pc - rc) - rejected_kl)), 1 - F.sigmoid(beta * (chosen_kl - (pr - rr)))), 0)
    else:
        raise ValueError(loss_type)
    return losses, beta * (pc - rc), beta * (pr - rr)


def kto_loss(beta, wd, wu, pc, pr, pkl, rc, rr, rkl):
    kl = (pkl - rkl).mean().clamp(min=0)
    chosen_losses = 1 - F.sigmoid(beta * ((pc - rc) - kl))
    rejected_losses = 1 - F.sigmoid(beta * (kl - (pr - rr)))
    return torch.cat((wd * chosen_losses, wu * rejected_losses), 0), kl


def main():
    r = json.load(sys.stdin)
    op = r["op"]
    if op == "logps":
        logps, valid = get_batch_logps(t(r["logits"]), torch.tensor(r["labels"]), r.get("ld_alpha"))
        out = {"logps": logps.tolist(), "valid_length": valid.tolist()}
    elif op == "dpo":
        losses, cr, rr_ = dpo_loss(r["loss_type"], r["beta"], r["label_smoothing"], t(r["pc"]), t(r["pr"]), t(r["rc"]), t(r["rr"]))
        out = {"losses": losses.tolist(), "chosen_rewards": cr.tolist(), "rejected_rewards": rr_.tolist()}
    elif op == "orpo":
        c, rej, beta = t(r["c"]), t(r["r"]), r["beta"]
        log_odds = (c - rej) - (torch.log1p(-torch.exp(c)) - torch.log1p(-torch.exp(rej)))
        out = {"losses": (-c + beta * -F.logsigmoid(log_odds)).tolist()}
    elif op == "simpo":
        c, rej, beta = t(r["c"]), t(r["r"]), r["beta"]
        out = {"losses": (-F.logsigmoid(beta * ((c - rej) - r["gamma"] / beta))).tolist()}
    elif op == "bco":
        beta, delta = r["beta"], r["delta"]
        cl, rl = t(r["pc"]) - t(r["rc"]), t(r["pr"]) - t(r["rr"])
        out = {"losses": (-F.logsigmoid(beta * cl - delta) - F.logsigmoid(-(beta * rl - delta))).tolist()}
    elif op == "kto":
        losses, kl = kto_loss(r["beta"], r["desirable_weight"], r["undesirable_weight"], *(t(r[k]) for k in ["pc", "pr", "pkl", "rc", "rr", "rkl"]))
        out = {"losses": losses.tolist(), "kl": kl.item()}
    else:
        raise ValueError(op)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
