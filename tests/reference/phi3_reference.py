"""Reference Phi-3 / Phi-3.5 / Phi-4 (text, model_type phi3) forward in PyTorch, written from
transformers' modeling_phi3.py (eager attention, no transformers needed): fused qkv_proj and
gate_up_proj, partial rotary, LongRoPE with short factors within the pretrained context and long ones
past it. Writes a tiny random checkpoint and prints its logits; see family_common.main.
"""
from torch import nn

from family_common import RMSNorm, additive_mask, apply_rope, cos_sin, eager_attention, main, positions_of, rope_inv_freq

DEFAULTS = {"rms_norm_eps": 1e-5, "rope_theta": 10000.0, "partial_rotary_factor": 1.0, "sliding_window": None,
            "original_max_position_embeddings": 4096, "tie_word_embeddings": False}


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H = cfg["hidden_size"], cfg["num_attention_heads"]
        KV, D = cfg["num_key_value_heads"], C // H
        self.qkv_proj = nn.Linear(C, (H + 2 * KV) * D, bias=False)
        self.o_proj = nn.Linear(H * D, C, bias=False)
        self.H, self.KV, self.D = H, KV, D

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        qkv = self.qkv_proj(x)
        q_end = self.H * self.D
        k_end = q_end + self.KV * self.D
        q = qkv[..., :q_end].view(B, T, self.H, self.D).transpose(1, 2)
        k = qkv[..., q_end:k_end].view(B, T, self.KV, self.D).transpose(1, 2)
        v = qkv[..., k_end:].view(B, T, self.KV, self.D).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
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
        self.self_attn, self.mlp = Attention(cfg), MLP(cfg)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class Phi3ForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    def forward(self, ids, mask2d):
        cfg = self.cfg
        B, T = ids.shape
        pos = positions_of(ids, mask2d)
        D = cfg["hidden_size"] // cfg["num_attention_heads"]
        # LongRoPE picks its factors from the pass's length (max position + 1), as HF's dynamic update.
        inv, att = rope_inv_freq(cfg, int(D * cfg["partial_rotary_factor"]), seq_len=int(pos.max()) + 1)
        cos, sin = cos_sin(inv, att, pos)
        mask = additive_mask(B, T, mask2d, cfg.get("sliding_window"))
        h = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            h = layer(h, cos, sin, mask)
        return self.lm_head(self.model.norm(h)), None


def build(config):
    cfg = {**DEFAULTS, **config}
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    return Phi3ForCausalLM(cfg), config, []


if __name__ == "__main__":
    main(build)
