"""Reference DeepSeek-V2 / V2-Lite forward in PyTorch, written from DeepSeek's own
modeling_deepseek.py (the checkpoints' remote code; eager attention): MLA with the compressed KV
latent and the decoupled RoPE key (its pair-to-half channel permutation and rotate_half), softmax
scale times YaRN's mscale², MoEGate (greedy / group_limited_greedy, norm_topk_prob or
routed_scaling_factor) with its balance loss in training (seq_aux), the training path's expert loop
and moe_infer at inference, shared experts. Writes a tiny random checkpoint and prints its logits
(and the summed balance loss in training); see family_common.main.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from family_common import RMSNorm, additive_mask, main, positions_of, rope_inv_freq, rotate_half

DEFAULTS = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "attention_bias": False, "q_lora_rank": 1536, "kv_lora_rank": 512,
            "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128, "n_shared_experts": None, "n_routed_experts": None,
            "routed_scaling_factor": 1.0, "topk_method": "greedy", "n_group": None, "topk_group": None, "num_experts_per_tok": None,
            "moe_layer_freq": 1, "first_k_dense_replace": 0, "norm_topk_prob": False, "aux_loss_alpha": 0.001, "seq_aux": True,
            "moe_intermediate_size": 1407, "rope_scaling": None}


def yarn_get_mscale(scale=1, mscale=1):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def apply_rotary_pos_emb(q, k, cos, sin):
    b, h, s, d = q.shape
    q = q.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
    b, h, s, d = k.shape
    k = k.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class MLP(nn.Module):
    def __init__(self, C, I):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(C, I, bias=False), nn.Linear(C, I, bias=False), nn.Linear(I, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty((cfg["n_routed_experts"], cfg["hidden_size"])))

    def forward(self, hidden_states):
        cfg = self.cfg
        bsz, seq_len, h = hidden_states.shape
        E, top_k = cfg["n_routed_experts"], cfg["num_experts_per_tok"]
        hidden_states = hidden_states.view(-1, h)
        logits = F.linear(hidden_states.type(torch.float32), self.weight.type(torch.float32), None)
        scores = logits.softmax(dim=-1, dtype=torch.float32)
        if cfg["topk_method"] == "greedy":
            topk_weight, topk_idx = torch.topk(scores, k=top_k, dim=-1, sorted=False)
        else:
            group_scores = scores.view(bsz * seq_len, cfg["n_group"], -1).max(dim=-1).values
            group_idx = torch.topk(group_scores, k=cfg["topk_group"], dim=-1, sorted=False)[1]
            group_mask = torch.zeros_like(group_scores)
            group_mask.scatter_(1, group_idx, 1)
            score_mask = group_mask.unsqueeze(-1).expand(bsz * seq_len, cfg["n_group"], E // cfg["n_group"]).reshape(bsz * seq_len, -1)
            tmp_scores = scores.masked_fill(~score_mask.bool(), 0.0)
            topk_weight, topk_idx = torch.topk(tmp_scores, k=top_k, dim=-1, sorted=False)
        if top_k > 1 and cfg["norm_topk_prob"]:
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
        else:
            topk_weight = topk_weight * cfg["routed_scaling_factor"]
        aux_loss = None
        if self.training and cfg["aux_loss_alpha"] > 0.0:
            topk_idx_for_aux_loss = topk_idx.view(bsz, -1)
            if cfg["seq_aux"]:
                scores_for_seq_aux = scores.view(bsz, seq_len, -1)
                ce = torch.zeros(bsz, E)
                ce.scatter_add_(1, topk_idx_for_aux_loss, torch.ones(bsz, seq_len * top_k)).div_(seq_len * top_k / E)
                aux_loss = (ce * scores_for_seq_aux.mean(dim=1)).sum(dim=1).mean() * cfg["aux_loss_alpha"]
            else:
                mask_ce = F.one_hot(topk_idx_for_aux_loss.view(-1), num_classes=E)
                ce = mask_ce.float().mean(0)
                aux_loss = (scores.mean(0) * ce * E).sum() * cfg["aux_loss_alpha"]
        return topk_idx, topk_weight, aux_loss


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, I = cfg["hidden_size"], cfg["moe_intermediate_size"]
        self.experts = nn.ModuleList([MLP(C, I) for _ in range(cfg["n_routed_experts"])])
        self.gate = MoEGate(cfg)
        if cfg["n_shared_experts"] is not None:
            self.shared_experts = MLP(C, I * cfg["n_shared_experts"])
        self.k = cfg["num_experts_per_tok"]

    def forward(self, hidden_states):
        identity, orig_shape = hidden_states, hidden_states.shape
        topk_idx, topk_weight, aux_loss = self.gate(hidden_states)
        hidden_states = hidden_states.view(-1, hidden_states.shape[-1])
        flat_topk_idx = topk_idx.view(-1)
        if self.training:
            hidden_states = hidden_states.repeat_interleave(self.k, dim=0)
            y = torch.empty_like(hidden_states)
            for i, expert in enumerate(self.experts):
                y[flat_topk_idx == i] = expert(hidden_states[flat_topk_idx == i])
            y = (y.view(*topk_weight.shape, -1) * topk_weight.unsqueeze(-1)).sum(dim=1).to(identity.dtype)
        else:
            y = torch.zeros_like(hidden_states)
            for i, expert in enumerate(self.experts):
                token_idx, slot = torch.where(topk_idx == i)
                if token_idx.numel():
                    y.index_add_(0, token_idx, (expert(hidden_states[token_idx]) * topk_weight[token_idx, slot, None]).to(y.dtype))
        y = y.view(*orig_shape)
        if hasattr(self, "shared_experts"):
            y = y + self.shared_experts(identity)
        return y, aux_loss


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, H = cfg["hidden_size"], cfg["num_attention_heads"]
        self.nope, self.rope, self.v, self.rank = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
        self.H, self.q_head_dim = H, self.nope + self.rope
        bias = cfg["attention_bias"]
        if cfg["q_lora_rank"] is None:
            self.q_proj = nn.Linear(C, H * self.q_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(C, cfg["q_lora_rank"], bias=bias)
            self.q_a_layernorm = RMSNorm(cfg["q_lora_rank"], 1e-6)
            self.q_b_proj = nn.Linear(cfg["q_lora_rank"], H * self.q_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(C, self.rank + self.rope, bias=bias)
        self.kv_a_layernorm = RMSNorm(self.rank, 1e-6)
        self.kv_b_proj = nn.Linear(self.rank, H * (self.nope + self.v), bias=False)
        self.o_proj = nn.Linear(H * self.v, C, bias=bias)
        self.softmax_scale = self.q_head_dim ** (-0.5)
        rs = cfg.get("rope_scaling")
        if rs is not None:
            mscale_all_dim = rs.get("mscale_all_dim", 0)
            if mscale_all_dim:
                mscale = yarn_get_mscale(rs["factor"], mscale_all_dim)
                self.softmax_scale = self.softmax_scale * mscale * mscale

    def forward(self, x, cos, sin, mask):
        bsz, q_len, _ = x.shape
        q = self.q_proj(x) if hasattr(self, "q_proj") else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(bsz, q_len, self.H, self.q_head_dim).transpose(1, 2)
        q_nope, q_pe = torch.split(q, [self.nope, self.rope], dim=-1)
        compressed_kv = self.kv_a_proj_with_mqa(x)
        compressed_kv, k_pe = torch.split(compressed_kv, [self.rank, self.rope], dim=-1)
        k_pe = k_pe.view(bsz, q_len, 1, self.rope).transpose(1, 2)
        kv = self.kv_b_proj(self.kv_a_layernorm(compressed_kv)).view(bsz, q_len, self.H, self.nope + self.v).transpose(1, 2)
        k_nope, value_states = torch.split(kv, [self.nope, self.v], dim=-1)
        q_pe, k_pe = apply_rotary_pos_emb(q_pe, k_pe, cos, sin)
        query_states = torch.cat([q_nope, q_pe], dim=-1)
        key_states = torch.cat([k_nope, k_pe.expand(-1, self.H, -1, -1)], dim=-1)
        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) * self.softmax_scale + mask
        attn_weights = attn_weights.softmax(dim=-1, dtype=torch.float32).to(query_states.dtype)
        out = torch.matmul(attn_weights, value_states).transpose(1, 2).reshape(bsz, q_len, self.H * self.v)
        return self.o_proj(out)


class DecoderLayer(nn.Module):
    def __init__(self, cfg, i):
        super().__init__()
        C = cfg["hidden_size"]
        self.self_attn = Attention(cfg)
        sparse = cfg["n_routed_experts"] is not None and i >= cfg["first_k_dense_replace"] and i % cfg["moe_layer_freq"] == 0
        self.mlp = MoE(cfg) if sparse else MLP(C, cfg["intermediate_size"])
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(C, cfg["rms_norm_eps"]), RMSNorm(C, cfg["rms_norm_eps"])

    def forward(self, h, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        out = self.mlp(self.post_attention_layernorm(h))
        out, aux = out if isinstance(out, tuple) else (out, None)
        return h + out, aux


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(cfg, i) for i in range(cfg["num_hidden_layers"])])
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class DeepseekV2ForCausalLM(nn.Module):
    # The balance loss comes weighted by aux_loss_alpha already (AddAuxiliaryLoss adds it as is).
    aux_coef = 1.0

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    def forward(self, ids, mask2d):
        cfg = self.cfg
        B, T = ids.shape
        pos = positions_of(ids, mask2d)
        inv, att = rope_inv_freq(cfg, cfg["qk_rope_head_dim"])
        freqs = pos.float()[:, :, None] * inv[None, None, :]
        emb = torch.cat((freqs, freqs), -1)
        cos, sin = (emb.cos() * att)[:, None], (emb.sin() * att)[:, None]
        mask = additive_mask(B, T, mask2d)
        h = self.model.embed_tokens(ids)
        total = None
        for layer in self.model.layers:
            h, aux = layer(h, cos, sin, mask)
            if aux is not None:
                total = aux if total is None else total + aux
        return self.lm_head(self.model.norm(h)), total


def build(config):
    cfg = {**DEFAULTS, **config}
    return DeepseekV2ForCausalLM(cfg), config, []


if __name__ == "__main__":
    main(build)
