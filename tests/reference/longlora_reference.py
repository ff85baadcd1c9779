"""LongLoRA S²-Attn as LLaMA-Factory's model_utils/longlora.py computes it (sdpa branch, causal).

stdin: {"q": [...], "k": [...], "v": [...], "shape": [B, H, T, D], "kv_heads": Hkv, "ratio": r}
stdout: {"out": [...]} flattened [B, H, T, D]
"""
import json
import sys

import torch

req = json.load(sys.stdin)
B, H, T, D = req["shape"]
KV = req["kv_heads"]
q = torch.tensor(req["q"], dtype=torch.float64).view(B, H, T, D)
k = torch.tensor(req["k"], dtype=torch.float64).view(B, KV, T, D).repeat_interleave(H // KV, dim=1)
v = torch.tensor(req["v"], dtype=torch.float64).view(B, KV, T, D).repeat_interleave(H // KV, dim=1)
groupsz = int(T * req["ratio"])
num_groups = T // groupsz


def shift(state):
    state = state.transpose(1, 2)
    state = torch.cat((state[:, :, : H // 2], state[:, :, H // 2 :].roll(-groupsz // 2, dims=1)), dim=2)
    return state.reshape(B * num_groups, groupsz, H, D).transpose(1, 2)


qs, ks, vs = shift(q), shift(k), shift(v)
scores = qs @ ks.transpose(-1, -2) / D**0.5
causal = torch.ones(groupsz, groupsz, dtype=torch.bool).tril()
scores = scores.masked_fill(~causal, float("-inf"))
out = (scores.softmax(-1) @ vs).transpose(1, 2).contiguous().reshape(B, T, H, D)
out = torch.cat((out[:, :, : H // 2], out[:, :, H // 2 :].roll(groupsz // 2, dims=1)), dim=2)
json.dump({"out": out.transpose(1, 2).flatten().tolist()}, sys.stdout)
