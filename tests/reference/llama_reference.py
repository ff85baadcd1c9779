"""Reference Llama-family forward in PyTorch, written from transformers' modeling_llama.py,
modeling_qwen2.py, modeling_qwen3.py and modeling_rope_utils.py (no transformers needed).

Reads a JSON request on stdin: {"folder": ..., "input_ids": [[...]], "attention_mask": [[...]] | null}
and prints {"logits": [...]} (flattened float32 logits [B, T, V]).
"""
import json
import math
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64, "I64": torch.int64}


def load_safetensors(path, expect_dtype=None):
    """Every tensor of a safetensors file as float32; `expect_dtype` ("F32"...) asserts the stored dtype."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert expect_dtype is None or info["dtype"] == expect_dtype, f"{name}: {info['dtype']}"
        start, end = info["data_offsets"]
        raw = bytearray(data[8 + n + start : 8 + n + end])
        out[name] = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"]).float()
    return out


def load_folder(folder):
    """A model folder's weights as float32: model.safetensors, its shards by index, or pytorch_model.bin (shards)."""
    import os

    for index_name, single in (("model.safetensors.index.json", "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        load = load_safetensors if single.endswith(".safetensors") else lambda p: {k: v.float() for k, v in torch.load(p).items()}
        if os.path.exists(f"{folder}/{index_name}"):
            weight_map = json.load(open(f"{folder}/{index_name}"))["weight_map"]
            out = {}
            for shard in sorted(set(weight_map.values())):
                out.update(load(f"{folder}/{shard}"))
            assert set(out) == set(weight_map), "the index and the shards name different tensors"
            return out
        if os.path.exists(f"{folder}/{single}"):
            return load(f"{folder}/{single}")
    raise FileNotFoundError(f"no weights in {folder}")


def inv_freq_and_scale(cfg, dim):
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "linear":
        return inv / rs["factor"], 1.0
    if kind == "llama3":
        factor, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / lo, old / hi
        wavelen = 2 * math.pi / inv
        inv_l = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, inv_l), 1.0
    if kind == "yarn":
        factor = rs["factor"]
        old = rs.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
        get_mscale = lambda s, m=1: 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0
        att = rs.get("attention_factor") or get_mscale(factor)
        fast, slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1
        cdim = lambda rot: (dim * math.log(old / (rot * 2 * math.pi))) / (2 * math.log(base))
        low, high = math.floor(cdim(fast)), math.ceil(cdim(slow))
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
        extra, inter = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
        ef = 1 - ramp
        return inter * (1 - ef) + extra * ef, att
    return inv, 1.0


def rms_norm(x, w, eps):
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(folder, input_ids, attention_mask):
    cfg = json.load(open(f"{folder}/config.json"))
    W = load_folder(folder)
    mt = cfg["model_type"]
    H, C = cfg["num_attention_heads"], cfg["hidden_size"]
    KV = cfg.get("num_key_value_heads") or H
    D = cfg.get("head_dim") or C // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    window = cfg.get("sliding_window") if (mt == "mistral" or cfg.get("use_sliding_window")) else None
    ids = torch.tensor(input_ids)
    B, T = ids.shape
    mask2d = torch.tensor(attention_mask) if attention_mask is not None else torch.ones(B, T, dtype=torch.int64)
    pos = (mask2d.cumsum(-1) - 1).masked_fill(mask2d == 0, 1) if attention_mask is not None else torch.arange(T).expand(B, T)
    inv, att_scale = inv_freq_and_scale(cfg, D)
    freqs = pos.float()[:, :, None] * inv[None, None, :]
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = (emb.cos() * att_scale)[:, None], (emb.sin() * att_scale)[:, None]
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if window is not None:
        allowed = allowed & ((i - j) < window)
    allowed = allowed[None, None] & mask2d.bool()[:, None, None, :]
    allowed = allowed | (~allowed.any(-1, keepdim=True))
    bias = torch.zeros(B, 1, T, T).masked_fill(~allowed, float("-inf"))
    h = W["model.embed_tokens.weight"][ids]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        x = rms_norm(h, W[p + "input_layernorm.weight"], eps)
        lin = lambda name, v: torch.nn.functional.linear(v, W[p + name + ".weight"], W.get(p + name + ".bias"))
        q = lin("self_attn.q_proj", x).view(B, T, H, D)
        k = lin("self_attn.k_proj", x).view(B, T, KV, D)
        v = lin("self_attn.v_proj", x).view(B, T, KV, D).transpose(1, 2)
        if mt == "qwen3":
            q = rms_norm(q, W[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, W[p + "self_attn.k_norm.weight"], eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        scores = q @ k.transpose(-1, -2) * D**-0.5 + bias  # transformers eager_attention_forward: * scaling
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
        h = h + lin("self_attn.o_proj", o)
        x = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        g = lin("mlp.gate_proj", x)
        u = lin("mlp.up_proj", x)
        h = h + lin("mlp.down_proj", torch.nn.functional.silu(g) * u)
    h = rms_norm(h, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return h @ head.T


if __name__ == "__main__":
    req = json.load(sys.stdin)
    with torch.no_grad():
        logits = forward(req["folder"], req["input_ids"], req.get("attention_mask"))
    json.dump({"shape": list(logits.shape), "logits": logits.flatten().tolist()}, sys.stdout)
