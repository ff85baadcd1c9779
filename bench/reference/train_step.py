"""PyTorch eager reference for bench/train_step.ts: an idiomatic nn.Module Llama (GQA, SwiGLU,
RMSNorm, HF's rotate-half RoPE, eager causal attention as transformers runs it on torch 1.13;
Qwen2's q/k/v bias and tied embeddings from config.json), loaded from the same safetensors,
trained with torch.optim.AdamW (HF's no-decay groups) and clip_grad_norm_, optionally with
torch.utils.checkpoint per decoder layer. precision "bf16" is HF's Trainer with bf16=True as
LLaMA-Factory sets the model up: weights loaded in bfloat16, trainable ones upcast to float32,
each forward under torch.autocast("cpu", dtype=torch.bfloat16), the loss on float32 logits.

stdin: {"folder", "mode", "trainable": [names], "batches": [[[ids]]], "lr", "weight_decay",
"max_grad_norm", "lora_rank", "lora_alpha", "checkpointing", "threads", "precision": "fp32" | "bf16"}
stdout: {"losses", "step_s", "before_mib" (RSS when the loop starts), "peak_mib" (VmHWM over the loop)}
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/reference"))
from llama_reference import load_safetensors  # noqa: E402  (the tests' reader, shared)


def status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024


def reset_peak():
    """Resets VmHWM (Linux clear_refs 5) so the peak is the training loop's, not the loading's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class LoraLinear(nn.Module):
    """PEFT's layout: base_layer plus lora_A [r, in], lora_B [out, r], scaled by alpha / r."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        self.scaling = alpha / rank

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # transformers' LlamaRMSNorm: normalise in float32, back to the input dtype, then scale.
        x32 = x.float()
        variance = x32.pow(2).mean(-1, keepdim=True)
        return self.weight * (x32 * torch.rsqrt(variance + self.eps)).to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads, self.kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.head_dim = cfg["hidden_size"] // self.heads
        h = cfg["hidden_size"]
        bias = cfg.get("model_type") == "qwen2" or cfg.get("attention_bias", False)
        self.q_proj = nn.Linear(h, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, h, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = q @ k.transpose(2, 3) * self.head_dim**-0.5 + mask
        out = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        dim = cfg["hidden_size"] // cfg["num_attention_heads"]
        self.register_buffer("inv_freq", 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, dim, 2).float() / dim)), persistent=False)
        self.gradient_checkpointing = False

    def forward(self, ids):
        T = ids.shape[1]
        x = self.embed_tokens(ids)
        with torch.autocast("cpu", enabled=False):  # RoPE tables in float32, as transformers
            freqs = torch.outer(torch.arange(T, dtype=torch.float32), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None].to(x.dtype), emb.sin()[None, None].to(x.dtype)
        mask = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)[None, None].to(x.dtype)
        for layer in self.layers:
            if self.gradient_checkpointing:
                x = checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg.get("tie_word_embeddings"):
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, ids):
        return self.lm_head(self.model(ids))


def main():
    req = json.load(sys.stdin)
    torch.set_num_threads(req["threads"])
    folder = req["folder"]
    with open(f"{folder}/config.json") as f:
        cfg = json.load(f)
    model = LlamaForCausalLM(cfg)
    state = load_safetensors(f"{folder}/model.safetensors", expect_dtype="F32")
    if req["mode"] == "lora":
        for layer in model.model.layers:
            for parent, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")), (layer.mlp, ("gate_proj", "up_proj", "down_proj"))):
                for name in names:
                    setattr(parent, name, LoraLinear(getattr(parent, name), req["lora_rank"], req["lora_alpha"]))
        lora = load_safetensors(f"{folder}/lora_init.safetensors", expect_dtype="F32")
        remapped = {}
        lora_modules = {k.rsplit(".lora_", 1)[0] for k in lora}
        for name, t in state.items():
            module, leaf = name.rsplit(".", 1)
            remapped[f"{module}.base_layer.{leaf}" if module in lora_modules else name] = t
        remapped.update(lora)
        state = remapped
        del remapped, lora
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied head shares the embedding's weight and is not in the checkpoint (transformers drops it on save).
    tied = {"lm_head.weight"} if cfg.get("tie_word_embeddings") else set()
    assert not unexpected and not [m for m in missing if "inv_freq" not in m and m not in tied], (missing, unexpected)
    del state
    trainable = set(req["trainable"])
    names = {n for n, _ in model.named_parameters()}
    assert trainable <= names, sorted(trainable - names)[:5]
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    bf16 = req.get("precision") == "bf16"
    if bf16:
        # LLaMA-Factory: the model loaded in bfloat16, trainable weights upcast to float32 master
        # weights; the LoRA weights are lmfactory's float32 initialisation, kept as they are.
        for name, p in model.named_parameters():
            if "lora_" in name:
                continue
            p.data = p.data.to(torch.bfloat16)
            if name in trainable:
                p.data = p.data.float()
    model.model.gradient_checkpointing = req["checkpointing"]
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = lambda n: "bias" in n.lower() or "norm" in n.lower()
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in params if not no_decay(n)], "weight_decay": req["weight_decay"]},
            {"params": [p for n, p in params if no_decay(n)], "weight_decay": 0.0},
        ],
        lr=req["lr"],
    )
    reset_peak()
    before = status_mib("VmRSS")
    losses, times = [], []
    for batch in req["batches"]:
        started = time.perf_counter()
        ids = torch.tensor(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids)
            V = logits.shape[-1]
            # transformers' ForCausalLMLoss upcasts the logits.
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, V), ids[:, 1:].reshape(-1), reduction="sum") / ids[:, 1:].numel()
        del logits
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], req["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - started)
    json.dump({"losses": losses, "step_s": times, "before_mib": before, "peak_mib": status_mib("VmHWM")}, sys.stdout)


if __name__ == "__main__":
    main()
