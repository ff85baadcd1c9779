"""Reference GLM-4 (0414, model_type glm4) forward in PyTorch, written from transformers'
modeling_glm4.py and modeling_glm.py (eager attention, no transformers needed): partial rotary with
GLM's interleaved rotate_half, post-attention and post-MLP norms, fused gate_up_proj. Writes a tiny
random checkpoint and prints its logits; see family_common.main.
"""
import torch
from torch import nn

from family_common import RMSNorm, additive_mask, cos_sin, eager_attention, main, positions_of, rope_inv_freq

DEFAULTS = {"head_dim": 128, "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "attention_bias": True,
            "tie_word_embeddings": False}


def rotate_half(x):
    """GLM: interleaved pairs (x0, x1) -> (-x1, x0)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary_pos_emb(x, cos, sin):
    cos = cos[..., : cos.shape[-1] // 2].repeat_interleave(2, dim=-1)
    sin = sin[..., : sin.shape[-1] // 2].repeat_interleave(2, dim=-1)
    d = cos.shape[-1]
    rot, rest = x[..., :d], x[..., d:]
    return torch.cat([rot * cos + rotate_half(rot) * sin, rest], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H, KV, D = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        bias = cfg["attention_bias"]
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(C, H * D, bias=bias), nn.Linear(C, KV * D, bias=bias), nn.Linear(C, KV * D, bias=bias)
        self.o_proj = nn.Linear(H * D, C, bias=False)
        self.H, self.KV, self.D = H, KV, D

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.KV, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.KV, self.D).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, cos, sin), apply_rotary_pos_emb(k, cos, sin)
        return self.o_proj(eager_attention(q, k, v, mask))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, I = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_up_proj, self.down_proj = nn.Linear(C, 2 * I, bias=False), nn.Linear(I, C, bias=False)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(up * nn.functional.silu(gate))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.self_attn, self.mlp = Attention(cfg), MLP(cfg)
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(C, eps), RMSNorm(C, eps)
        self.post_self_attn_layernorm, self.post_mlp_layernorm = RMSNorm(C, eps), RMSNorm(C, eps)

    def forward(self, h, cos, sin, mask):
        h = h + self.post_self_attn_layernorm(self.self_attn(self.input_layernorm(h), cos, sin, mask))
        return h + self.post_mlp_layernorm(self.mlp(self.post_attention_layernorm(h)))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class Glm4ForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    def forward(self, ids, mask2d):
        cfg = self.cfg
        B, T = ids.shape
        pos = positions_of(ids, mask2d)
        cos, sin = cos_sin(*rope_inv_freq(cfg, int(cfg["head_dim"] * cfg["partial_rotary_factor"])), pos)
        mask = additive_mask(B, T, mask2d)
        h = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            h = layer(h, cos, sin, mask)
        return self.lm_head(self.model.norm(h)), None


def build(config):
    cfg = {**DEFAULTS, **config}
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    return Glm4ForCausalLM(cfg), config, []


if __name__ == "__main__":
    main(build)
