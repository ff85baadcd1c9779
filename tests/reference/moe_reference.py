"""Reference Mixtral / Qwen2-MoE / Qwen3-MoE forward in PyTorch, written from transformers'
modeling_mixtral.py, modeling_qwen2_moe.py and modeling_qwen3_moe.py (eager attention, the experts'
per-expert loop with index_add_, load_balancing_loss_func; no transformers needed). Writes a tiny
random checkpoint and prints its logits and, when output_router_logits is set, the auxiliary loss.
"""
import torch
import torch.nn.functional as F
from torch import nn

from family_common import RMSNorm, additive_mask, apply_rope, cos_sin, eager_attention, main, positions_of, rope_inv_freq

DEFAULTS = {
    "mixtral": {"rms_norm_eps": 1e-5, "rope_theta": 1e6, "sliding_window": None, "num_experts_per_tok": 2, "num_local_experts": 8,
                "router_aux_loss_coef": 0.001, "output_router_logits": False},
    "qwen2_moe": {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "use_sliding_window": False, "decoder_sparse_step": 1,
                  "norm_topk_prob": False, "qkv_bias": True, "mlp_only_layers": [], "router_aux_loss_coef": 0.001, "output_router_logits": False},
    "qwen3_moe": {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "use_sliding_window": False, "decoder_sparse_step": 1,
                  "norm_topk_prob": False, "attention_bias": False, "mlp_only_layers": [], "router_aux_loss_coef": 0.001, "output_router_logits": False},
}


def load_balancing_loss_func(gate_logits, num_experts, top_k, attention_mask):
    concatenated = torch.cat(gate_logits, dim=0)
    routing_weights = F.softmax(concatenated, dim=-1)
    _, selected_experts = torch.topk(routing_weights, top_k, dim=-1)
    expert_mask = F.one_hot(selected_experts, num_experts)
    if attention_mask is None:
        tokens_per_expert = torch.mean(expert_mask.float(), dim=0)
        router_prob_per_expert = torch.mean(routing_weights, dim=0)
    else:
        B, S = attention_mask.shape
        layers = concatenated.shape[0] // (B * S)
        eam = attention_mask[None, :, :, None, None].expand((layers, B, S, top_k, num_experts)).reshape(-1, top_k, num_experts)
        tokens_per_expert = torch.sum(expert_mask.float() * eam, dim=0) / torch.sum(eam, dim=0)
        ram = attention_mask[None, :, :, None].expand((layers, B, S, num_experts)).reshape(-1, num_experts)
        router_prob_per_expert = torch.sum(routing_weights * ram, dim=0) / torch.sum(ram, dim=0)
    return torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0)) * num_experts


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        D = cfg.get("head_dim") or C // H
        mt = cfg["model_type"]
        bias = cfg["qkv_bias"] if mt == "qwen2_moe" else cfg.get("attention_bias", False)
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(C, H * D, bias=bias), nn.Linear(C, KV * D, bias=bias), nn.Linear(C, KV * D, bias=bias)
        self.o_proj = nn.Linear(H * D, C, bias=False)
        if mt == "qwen3_moe":
            self.q_norm, self.k_norm = RMSNorm(D, cfg["rms_norm_eps"]), RMSNorm(D, cfg["rms_norm_eps"])
        self.H, self.KV, self.D = H, KV, D

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D)
        k = self.k_proj(x).view(B, T, self.KV, self.D)
        v = self.v_proj(x).view(B, T, self.KV, self.D).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q.transpose(1, 2), cos, sin), apply_rope(k.transpose(1, 2), cos, sin)
        return self.o_proj(eager_attention(q, k, v, mask))


class SwiGLU(nn.Module):
    def __init__(self, C, I, names=("gate_proj", "up_proj", "down_proj")):
        super().__init__()
        self.names = names
        setattr(self, names[0], nn.Linear(C, I, bias=False))
        setattr(self, names[1], nn.Linear(C, I, bias=False))
        setattr(self, names[2], nn.Linear(I, C, bias=False))

    def forward(self, x):
        gate, up, down = (getattr(self, n) for n in self.names)
        return down(F.silu(gate(x)) * up(x))


class SparseMoeBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, mt = cfg["hidden_size"], cfg["model_type"]
        if mt == "mixtral":
            E, I, names = cfg["num_local_experts"], cfg["intermediate_size"], ("w1", "w3", "w2")
        else:
            E, I, names = cfg["num_experts"], cfg["moe_intermediate_size"], ("gate_proj", "up_proj", "down_proj")
        self.gate = nn.Linear(C, E, bias=False)
        self.experts = nn.ModuleList([SwiGLU(C, I, names) for _ in range(E)])
        if mt == "qwen2_moe":
            self.shared_expert = SwiGLU(C, cfg["shared_expert_intermediate_size"])
            self.shared_expert_gate = nn.Linear(C, 1, bias=False)
        self.E, self.top_k = E, cfg["num_experts_per_tok"]
        self.norm = mt == "mixtral" or cfg["norm_topk_prob"]

    def forward(self, h):
        B, T, C = h.shape
        h = h.view(-1, C)
        router_logits = self.gate(h)
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected = torch.topk(routing_weights, self.top_k, dim=-1)
        if self.norm:
            routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(h.dtype)
        final = torch.zeros((B * T, C), dtype=h.dtype)
        expert_mask = F.one_hot(selected, num_classes=self.E).permute(2, 1, 0)
        for e in range(self.E):
            idx, top_x = torch.where(expert_mask[e])
            if top_x.numel() == 0:
                continue
            out = self.experts[e](h[None, top_x].reshape(-1, C)) * routing_weights[top_x, idx, None]
            final.index_add_(0, top_x, out.to(h.dtype))
        if hasattr(self, "shared_expert"):
            final = final + F.sigmoid(self.shared_expert_gate(h)) * self.shared_expert(h)
        return final.reshape(B, T, C), router_logits


class DecoderLayer(nn.Module):
    def __init__(self, cfg, index):
        super().__init__()
        C, eps, mt = cfg["hidden_size"], cfg["rms_norm_eps"], cfg["model_type"]
        self.self_attn = Attention(cfg)
        if mt == "mixtral":
            self.block_sparse_moe = SparseMoeBlock(cfg)
        elif index not in cfg["mlp_only_layers"] and (index + 1) % cfg["decoder_sparse_step"] == 0:
            self.mlp = SparseMoeBlock(cfg)
        else:
            self.mlp = SwiGLU(C, cfg["intermediate_size"])
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(C, eps), RMSNorm(C, eps)

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        block = self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp
        out = block(self.post_attention_layernorm(h))
        out, router_logits = out if isinstance(out, tuple) else (out, None)
        return h + out, router_logits


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(cfg, i) for i in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class MoeForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    def forward(self, ids, mask2d):
        cfg = self.cfg
        B, T = ids.shape
        pos = positions_of(ids, mask2d)
        D = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        cos, sin = cos_sin(*rope_inv_freq(cfg, D), pos)
        window = cfg.get("sliding_window") if cfg["model_type"] == "mixtral" or cfg.get("use_sliding_window") else None
        mask = additive_mask(B, T, mask2d, window)
        h = self.model.embed_tokens(ids)
        router_logits = []
        for layer in self.model.layers:
            h, logits = layer(h, cos, sin, mask)
            if logits is not None:
                router_logits.append(logits)
        aux = None
        if cfg["output_router_logits"]:
            E = cfg["num_local_experts"] if cfg["model_type"] == "mixtral" else cfg["num_experts"]
            aux = load_balancing_loss_func(router_logits, E, cfg["num_experts_per_tok"], mask2d)
        return self.lm_head(self.model.norm(h)), aux


def build(config):
    cfg = {**DEFAULTS[config["model_type"]], **config}
    cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
    return MoeForCausalLM(cfg), config, []


if __name__ == "__main__":
    main(build)
