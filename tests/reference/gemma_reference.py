"""Reference Gemma / Gemma 2 / Gemma 3 (text) forward in PyTorch, written from transformers'
modeling_gemma.py, modeling_gemma2.py and modeling_gemma3.py (eager attention, no transformers
needed). Writes a tiny random checkpoint and prints its logits; see family_common.main.
"""
import torch
from torch import nn

from family_common import RMSNorm, additive_mask, apply_rope, cos_sin, eager_attention, main, positions_of, rope_inv_freq

DEFAULTS = {
    "gemma": {"head_dim": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False, "tie_word_embeddings": True},
    "gemma2": {"head_dim": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False, "tie_word_embeddings": True,
               "query_pre_attn_scalar": 256, "sliding_window": 4096, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    "gemma3_text": {"head_dim": 256, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0, "attention_bias": False, "tie_word_embeddings": True,
                    "query_pre_attn_scalar": 256, "sliding_window": 4096, "final_logit_softcapping": None, "attn_logit_softcapping": None,
                    "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6, "rope_scaling": None},
}


def layer_types(cfg):
    if cfg.get("layer_types"):
        return cfg["layer_types"]
    n, mt = cfg["num_hidden_layers"], cfg["model_type"]
    if mt == "gemma":
        return ["full_attention"] * n
    pattern = 2 if mt == "gemma2" else cfg["sliding_window_pattern"]
    return ["sliding_attention" if bool((i + 1) % pattern) else "full_attention" for i in range(n)]


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H, KV, D = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        bias = cfg["attention_bias"]
        self.q_proj, self.k_proj = nn.Linear(C, H * D, bias=bias), nn.Linear(C, KV * D, bias=bias)
        self.v_proj, self.o_proj = nn.Linear(C, KV * D, bias=bias), nn.Linear(H * D, C, bias=bias)
        if cfg["model_type"] == "gemma3_text":
            self.q_norm, self.k_norm = RMSNorm(D, cfg["rms_norm_eps"], 1.0), RMSNorm(D, cfg["rms_norm_eps"], 1.0)
        self.H, self.KV, self.D = H, KV, D
        self.scaling = (cfg["query_pre_attn_scalar"] if cfg["model_type"] != "gemma" else D) ** -0.5
        self.softcap = cfg.get("attn_logit_softcapping") if cfg["model_type"] != "gemma" else None

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.KV, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.KV, self.D).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return self.o_proj(eager_attention(q, k, v, mask, self.scaling, self.softcap))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, I = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(C, I, bias=False), nn.Linear(C, I, bias=False), nn.Linear(I, C, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg, sliding):
        super().__init__()
        eps = cfg["rms_norm_eps"]
        self.self_attn, self.mlp = Attention(cfg), MLP(cfg)
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], eps, 1.0), RMSNorm(cfg["hidden_size"], eps, 1.0)
        self.sandwich = cfg["model_type"] != "gemma"
        if self.sandwich:
            self.pre_feedforward_layernorm = RMSNorm(cfg["hidden_size"], eps, 1.0)
            self.post_feedforward_layernorm = RMSNorm(cfg["hidden_size"], eps, 1.0)
        self.sliding = sliding

    def forward(self, h, rope, masks):
        cos, sin = rope["sliding" if self.sliding else "full"]
        mask = masks["sliding" if self.sliding else "full"]
        if not self.sandwich:
            h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
            return h + self.mlp(self.post_attention_layernorm(h))
        h = h + self.post_attention_layernorm(self.self_attn(self.input_layernorm(h), cos, sin, mask))
        return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(cfg, t == "sliding_attention") for t in layer_types(cfg)])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"], 1.0)


class GemmaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    def tie(self):
        self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, ids, mask2d):
        cfg = self.cfg
        B, T = ids.shape
        pos = positions_of(ids, mask2d)
        rope = {"full": cos_sin(*rope_inv_freq(cfg, cfg["head_dim"]), pos)}
        if cfg["model_type"] == "gemma3_text":
            rope["sliding"] = cos_sin(*rope_inv_freq(cfg, cfg["head_dim"], base=cfg["rope_local_base_freq"], scaling=None), pos)
        else:
            rope["sliding"] = rope["full"]
        masks = {"full": additive_mask(B, T, mask2d), "sliding": additive_mask(B, T, mask2d, cfg.get("sliding_window"))}
        h = self.model.embed_tokens(ids)
        h = h * torch.tensor(cfg["hidden_size"] ** 0.5, dtype=h.dtype)
        for layer in self.model.layers:
            h = layer(h, rope, masks)
        logits = self.lm_head(self.model.norm(h))
        cap = cfg.get("final_logit_softcapping") if cfg["model_type"] != "gemma" else None
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits, None


def build(config):
    cfg = {**DEFAULTS[config["model_type"]], **config}
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    model = GemmaForCausalLM(cfg)
    return model, config, ["lm_head.weight"] if cfg["tie_word_embeddings"] else []


if __name__ == "__main__":
    main(build)
