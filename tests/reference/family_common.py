"""Shared parts of the model-family references (gemma_reference.py, phi3_reference.py, ...), written
from transformers' modeling_rope_utils.py, masking_utils.py and the eager attention functions (no
transformers needed): safetensors writing, RoPE tables, masks, attention, and the stdin/stdout driver.

Each family script builds its own torch modules with the Hugging Face parameter names, draws random
weights, writes them as an HF folder (config.json + model.safetensors) for lmfactory to load, and
prints the logits (and optionally the loss, auxiliary loss and gradients) for the request.
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F


def save_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(chunks))


def write_checkpoint(folder, config, model, tied_names=()):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    state = {k: v for k, v in model.state_dict().items() if k not in tied_names}
    save_safetensors(os.path.join(folder, "model.safetensors"), state)


def randomize(model, seed, std):
    """Every parameter ~ N(0, std), norms included, so that (1 + w) and biases are exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


# --- RoPE (modeling_rope_utils.py) -------------------------------------------------------------------

def default_inv_freq(base, dim):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def rope_inv_freq(cfg, dim, seq_len=None, base=None, scaling="config"):
    """inverse frequencies [dim/2] and the attention scaling of cos/sin."""
    base = cfg.get("rope_theta", 10000.0) if base is None else base
    rs = (cfg.get("rope_scaling") or {}) if scaling == "config" else (scaling or {})
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "su":
        kind = "longrope"
    if kind == "default":
        return default_inv_freq(base, dim), 1.0
    if kind == "linear":
        return default_inv_freq(base, dim) / rs["factor"], 1.0
    if kind == "longrope":
        original = cfg.get("original_max_position_embeddings") or rs.get("original_max_position_embeddings")
        if original:
            factor = cfg["max_position_embeddings"] / original
        else:
            original, factor = cfg["max_position_embeddings"], rs.get("factor", 1.0)
        att = rs.get("attention_factor")
        if att is None:
            att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
        ext = torch.tensor(rs["long_factor"] if seq_len and seq_len > original else rs["short_factor"], dtype=torch.float32)
        shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
        return 1.0 / (ext * base**shape), att
    if kind == "yarn":
        factor = rs["factor"]
        old = rs.get("original_max_position_embeddings") or cfg["max_position_embeddings"]

        def get_mscale(scale, mscale=1):
            return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

        att = rs.get("attention_factor")
        if att is None:
            if rs.get("mscale") and rs.get("mscale_all_dim"):
                att = get_mscale(factor, rs["mscale"]) / get_mscale(factor, rs["mscale_all_dim"])
            else:
                att = get_mscale(factor)
        fast, slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def cdim(rot):
            return (dim * math.log(old / (rot * 2 * math.pi))) / (2 * math.log(base))

        low, high = math.floor(cdim(fast)), math.ceil(cdim(slow))
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
        extra, inter = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
        ef = 1 - ramp
        return inter * (1 - ef) + extra * ef, att
    raise ValueError(kind)


def cos_sin(inv, att, positions):
    """positions [B, T] -> cos, sin [B, 1, T, dim] (emb = cat(freqs, freqs))."""
    freqs = positions.float()[:, :, None] * inv[None, None, :]
    emb = torch.cat((freqs, freqs), -1)
    return (emb.cos() * att)[:, None], (emb.sin() * att)[:, None]


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rope(x, cos, sin):
    """Rotate the first cos.shape[-1] channels of x (partial rotary), pass the rest."""
    d = cos.shape[-1]
    rot, rest = x[..., :d], x[..., d:]
    return torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)


# --- masks and attention -----------------------------------------------------------------------------

def positions_of(ids, mask2d):
    B, T = ids.shape
    if mask2d is None:
        return torch.arange(T).expand(B, T)
    return (mask2d.cumsum(-1) - 1).masked_fill(mask2d == 0, 1)


def additive_mask(B, T, mask2d, window=None):
    """[B, 1, T, T] 0 / -inf: causal, the sliding window (q - k < window), padding."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if window is not None:
        allowed = allowed & ((i - j) < window)
    allowed = allowed[None, None].expand(B, 1, T, T)
    if mask2d is not None:
        allowed = allowed & mask2d.bool()[:, None, None, :]
    allowed = allowed | (~allowed.any(-1, keepdim=True))
    return torch.zeros(B, 1, T, T).masked_fill(~allowed, float("-inf"))


def eager_attention(q, k, v, mask, scale=None, softcap=None):
    """q [B, H, T, D], k [B, Hkv, T, D], v [B, Hkv, T, Dv] -> [B, T, H * Dv] (repeat_kv, fp32 softmax)."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q @ k.transpose(-1, -2) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores + mask
    out = scores.softmax(-1, dtype=torch.float32).to(q.dtype) @ v
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def rms_norm(x, w, eps, offset=0.0):
    """Llama: w * norm(x); Gemma (offset 1): norm(x) * (1 + w), in float32."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    if offset:
        return (normed * (offset + w.float())).type_as(x)
    return w * normed.to(x.dtype)


class RMSNorm(torch.nn.Module):
    def __init__(self, size, eps, offset=0.0):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(size))
        self.eps, self.offset = eps, offset

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps, self.offset)


def causal_lm_loss(logits, labels):
    """transformers' ForCausalLMLoss: mean cross-entropy of position t predicting label t + 1."""
    shifted = torch.cat([labels[:, 1:], torch.full((labels.shape[0], 1), -100)], 1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), shifted.reshape(-1), ignore_index=-100)


# --- driver ------------------------------------------------------------------------------------------

def main(build):
    """build(config) -> (torch model, full config written, tied names). The model's forward(ids, mask2d)
    returns (logits, aux_loss or None). Request on stdin:
    {"folder", "config", "seed", "std", "input_ids", "attention_mask", "labels", "grads": [names]}."""
    req = json.load(sys.stdin)
    torch.manual_seed(0)
    model, config, tied = build(req["config"])
    randomize(model, req.get("seed", 0), req.get("std", 0.2))
    if tied:
        model.tie()
    write_checkpoint(req["folder"], config, model, tied)
    ids = torch.tensor(req["input_ids"])
    mask2d = torch.tensor(req["attention_mask"]) if req.get("attention_mask") is not None else None
    model.train(req.get("train", False))
    logits, aux = model(ids, mask2d)
    out = {"shape": list(logits.shape), "logits": logits.detach().flatten().tolist()}
    if aux is not None:
        out["aux_loss"] = float(aux)
    if req.get("labels") is not None:
        loss = causal_lm_loss(logits, torch.tensor(req["labels"]))
        out["lm_loss"] = float(loss)
        if aux is not None:
            loss = loss + getattr(model, "aux_coef", config.get("router_aux_loss_coef", 0.001)) * aux
        out["loss"] = float(loss)
        loss.backward()
        params = dict(model.named_parameters())
        out["grads"] = {name: params[name].grad.flatten().tolist() for name in req.get("grads", []) if params[name].grad is not None}
    json.dump(out, sys.stdout)
