"""Reference training loop in PyTorch for the trainer parity test: the Llama forward of
llama_reference.py on the same weights, the causal-LM loss averaged over every trained token of
the accumulated batch, torch.nn.utils.clip_grad_norm_, torch.optim.AdamW with HF's no-decay groups
and HF's linear schedule with warmup.

stdin: {"folder", "steps": [[{"input_ids", "attention_mask", "labels"}, ...], ...] (micro-batches
per optimizer step), "optim" ("sgd", else AdamW), "lr", "weight_decay", "betas", "eps", "max_grad_norm", "warmup", "total",
"autocast" (optional: "bfloat16" runs each forward under torch.autocast("cpu", dtype=torch.bfloat16) over
the float32 parameters, as HF's Trainer does with bf16=True; backward outside it)}
stdout: {"losses": [...]}
"""
import json
import math
import sys

import torch

sys.path.insert(0, "tests/reference")
import llama_reference as ref  # noqa: E402

req = json.load(sys.stdin)
folder = req["folder"]
W = ref.load_safetensors(f"{folder}/model.safetensors")
params = {name: t.clone().requires_grad_(True) for name, t in W.items()}
ref.load_safetensors = lambda path: params  # the forward reads our live parameters


def no_decay(name):
    lowered = name.lower()
    return "bias" in lowered or "norm" in lowered


groups = [
    {"params": [p for n, p in params.items() if not no_decay(n)], "weight_decay": req["weight_decay"]},
    {"params": [p for n, p in params.items() if no_decay(n)], "weight_decay": 0.0},
]
if req.get("optim") == "sgd":  # the HF Trainer's `optim: sgd`: torch SGD with the learning rate only
    optimizer = torch.optim.SGD(groups, lr=req["lr"])
else:
    optimizer = torch.optim.AdamW(groups, lr=req["lr"], betas=tuple(req["betas"]), eps=req["eps"])
warmup, total = req["warmup"], req["total"]
scheduler = torch.optim.lr_scheduler.LambdaLR(
    optimizer, lambda s: s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
)
autocast = req.get("autocast")
losses = []
for micro_batches in req["steps"]:
    trained = sum(sum(1 for v in row[1:] if v != -100) for mb in micro_batches for row in mb["labels"])
    step_loss = 0.0
    for mb in micro_batches:
        mask = mb["attention_mask"] if any(0 in row for row in mb["attention_mask"]) else None
        with torch.autocast("cpu", dtype=getattr(torch, autocast or "bfloat16"), enabled=autocast is not None):
            logits = ref.forward(folder, mb["input_ids"], mask)
            labels = torch.tensor(mb["labels"])
            # transformers' ForCausalLMLoss upcasts the logits before the loss.
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
            ) / trained
        loss.backward()
        step_loss += loss.item()
    torch.nn.utils.clip_grad_norm_(list(params.values()), req["max_grad_norm"])
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    losses.append(step_loss)
json.dump({"losses": losses}, sys.stdout)
