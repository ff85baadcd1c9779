# PyTorch reference values for tests/torch/parity.test.ts: reads a JSON list of op requests on
# stdin, runs each with torch (float64) and prints a JSON list of flat results, in order.
# Run with the system interpreter that has python3-torch:
#   echo '[{"op": "softmax", "x": [[1, 2]], "dim": -1}]' | /usr/bin/python3 tests/reference/ops_reference.py
import json
import sys

import torch
import torch.nn.functional as F


def t(value, dtype=torch.float64):
    return torch.tensor(value, dtype=dtype)


def run(request):
    op = request["op"]
    if op == "cross_entropy":
        return F.cross_entropy(
            t(request["logits"]),
            t(request["target"], torch.long),
            ignore_index=request["ignore_index"],
            reduction=request["reduction"],
            label_smoothing=request["label_smoothing"],
        )
    if op == "sdpa":
        q, k, v = t(request["q"]), t(request["k"]), t(request["v"])
        # Grouped-query heads as HF's repeat_kv does it: each key/value head serves a group.
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        mask = t(request["mask"]) if request.get("mask") is not None else None
        if mask is None and not request["causal"]:
            out, _ = torch.ops.aten._scaled_dot_product_attention(q, k, v, None, 0.0, False, False)
            return out
        # Composed in the reference, so the check does not lean on the same fused kernel.
        scores = q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)
        if request["causal"]:
            T, S = scores.shape[-2], scores.shape[-1]
            blocked = torch.ones(T, S, dtype=torch.bool).triu(S - T + 1)
            scores = scores.masked_fill(blocked, float("-inf"))
        if mask is not None:
            scores = scores + mask
        return scores.softmax(-1) @ v
    if op == "gelu":
        return F.gelu(t(request["x"]), approximate=request["approximate"])
    if op == "logsumexp":
        return torch.logsumexp(t(request["x"]), dim=request["dim"], keepdim=request["keepdim"])
    if op == "var":
        return torch.var(t(request["x"]), dim=request["dim"], unbiased=request["unbiased"], keepdim=request["keepdim"])
    if op == "softmax":
        return torch.softmax(t(request["x"]), dim=request["dim"])
    if op == "log_softmax":
        return torch.log_softmax(t(request["x"]), dim=request["dim"])
    raise ValueError(f"unknown op {op}")


if __name__ == "__main__":
    requests = json.load(sys.stdin)
    print(json.dumps([run(r).reshape(-1).tolist() for r in requests]))
