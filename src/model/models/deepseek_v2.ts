// DeepSeek-V2 and DeepSeek-V2-Lite (model_type deepseek_v2), following DeepSeek's modeling_deepseek.py
// (the checkpoints' own code; transformers' modeling_deepseek_v2.py has the same layout): multi-head
// latent attention (keys and values expanded from a compressed latent `kv_a_proj_with_mqa` ->
// `kv_a_layernorm` -> `kv_b_proj`, queries direct or through q_lora_rank, a decoupled RoPE part shared
// by all heads, softmax scale with YaRN's mscale²), and from layer first_k_dense_replace on a mixture
// of routed experts (greedy or group-limited top-k, routed_scaling_factor or norm_topk_prob) plus
// shared experts, with DeepSeek's own balance loss (aux_loss_alpha, per sequence with seq_aux).
import { type Tensor, Linear, Module, RMSNorm, arange, cat, empty, keep, noGrad, parameter, tidy } from "../../torch/index.ts";
import { UserError } from "../../errors.ts";
import type { KVCache } from "../cache.ts";
import type { AttentionKernel, BuildOptions, DecoderLayer, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { applyInterleavedRotary } from "../rope.ts";
import { type AuxiliaryCollector, DecoderForCausalLM, DecoderModel, type RotaryContext, defaultKernel } from "./decoder.ts";
import { LlamaMLP } from "./llama.ts";
import { dispatchExperts } from "./moe.ts";

const num = (value: unknown, fallback: number): number => (typeof value === "number" ? value : fallback);

/** YaRN's mscale: 0.1 · m · ln(s) + 1 for a scale s > 1. */
function yarnMscale(scale: number, m: number): number {
  return scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1;
}

// --- Attention -----------------------------------------------------------------------------------

export class DeepseekV2Attention extends Module {
  q_proj: Linear | null = null;
  q_a_proj: Linear | null = null;
  q_a_layernorm: RMSNorm | null = null;
  q_b_proj: Linear | null = null;
  kv_a_proj_with_mqa: Linear;
  kv_a_layernorm: RMSNorm;
  kv_b_proj: Linear;
  o_proj: Linear;
  attentionKernel: AttentionKernel;
  private readonly _heads: number;
  private readonly _nope: number;
  private readonly _rope: number;
  private readonly _v: number;
  private readonly _rank: number;
  private readonly _scale: number;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const, bias: false };
    const bias = { ...layer, bias: config.attention_bias };
    const latentNorm = { eps: 1e-6, dtype: options.dtype, device: options.device }; // DeepSeek leaves these at the default eps
    const [C, H] = [config.hidden_size, config.num_attention_heads];
    const [nope, rope, v, rank] = [num(config.qk_nope_head_dim, 128), num(config.qk_rope_head_dim, 64), num(config.v_head_dim, 128), num(config.kv_lora_rank, 512)];
    const qRank = config.q_lora_rank as number | null | undefined;
    if (qRank) {
      this.q_a_proj = new Linear(C, qRank, bias);
      this.q_a_layernorm = new RMSNorm(qRank, latentNorm);
      this.q_b_proj = new Linear(qRank, H * (nope + rope), layer);
    } else {
      this.q_proj = new Linear(C, H * (nope + rope), layer);
    }
    this.kv_a_proj_with_mqa = new Linear(C, rank + rope, bias);
    this.kv_a_layernorm = new RMSNorm(rank, latentNorm);
    this.kv_b_proj = new Linear(rank, H * (nope + v), layer);
    this.o_proj = new Linear(H * v, C, bias);
    this.attentionKernel = defaultKernel(config._attn_implementation === "eager");
    [this._heads, this._nope, this._rope, this._v, this._rank] = [H, nope, rope, v, rank];
    let scale = (nope + rope) ** -0.5;
    const scaling = config.rope_scaling;
    if (scaling && scaling.rope_type !== "default" && scaling.mscale_all_dim) {
      const mscale = yarnMscale(scaling.factor ?? 1, scaling.mscale_all_dim);
      scale *= mscale * mscale;
    }
    this._scale = scale;
  }

  /** x [B, T, C] -> [B, T, C]; k and v expand from the latent per head, the RoPE key is shared. */
  forward(x: Tensor, context: RotaryContext, cache: KVCache | null, layerIndex: number): Tensor {
    const [B, T] = [x.shape[0]!, x.shape[1]!];
    const [H, nope, rope, v] = [this._heads, this._nope, this._rope, this._v];
    const queries = this.q_proj ? this.q_proj.forward(x) : this.q_b_proj!.forward(this.q_a_layernorm!.forward(this.q_a_proj!.forward(x)));
    const [qNope, qRope] = queries.view(B, T, H, nope + rope).transpose(1, 2).split([nope, rope], -1); // [B, H, T, *]
    const [latent, kRopeFlat] = this.kv_a_proj_with_mqa.forward(x).split([this._rank, rope], -1);
    const expanded = this.kv_b_proj.forward(this.kv_a_layernorm.forward(latent!)).view(B, T, H, nope + v).transpose(1, 2);
    const [kNope, values] = expanded.split([nope, v], -1); // [B, H, T, nope], [B, H, T, v]
    const kRope = applyInterleavedRotary(kRopeFlat!.view(B, 1, T, rope), context.cos, context.sin).expand(B, H, T, rope);
    const q = cat([qNope!, applyInterleavedRotary(qRope!, context.cos, context.sin)], -1); // [B, H, T, nope + rope]
    let [keys, vals] = [cat([kNope!, kRope], -1), values!.contiguous()];
    if (cache) [keys, vals] = cache.update(layerIndex, keys, vals);
    const state = { training: this.training, cached: cache !== null, scale: this._scale };
    const attended = this.attentionKernel(q, keys, vals, context.mask, state); // [B, H, T, v]
    return this.o_proj.forward(attended.transpose(1, 2).reshape(B, T, H * v));
  }
}

// --- Mixture of experts --------------------------------------------------------------------------

/**
 * DeepSeek's MoEGate balance loss: per layer, with scores s [B, T, E] and the top-k choices, seq_aux
 * gives mean_b Σ_e (E · count_be / (T · k)) · mean_t s_bte, else Σ_e (E · count_e / (N · k)) · mean
 * s_e over all N tokens; times aux_loss_alpha, summed over layers. Recorded in training only, padding included
 * (as DeepSeek's code computes it); each layer's part is its own, so checkpointing recomputes it.
 */
export class DeepseekBalanceLoss implements AuxiliaryCollector {
  private readonly _losses = new Map<number, Tensor>();
  private _shape: [number, number] = [0, 0];
  private _active = false;
  private _taken = 0;

  constructor(private readonly config: ModelConfig) {}

  begin(B: number, T: number, _attentionMask: Tensor | null, pass: { cached: boolean; training: boolean }): void {
    this.clear();
    this._shape = [B, T];
    this._active = !pass.cached && pass.training && num(this.config.aux_loss_alpha, 0.001) > 0;
  }

  /** A layer's router scores [B*T, E] (softmax, float32) and choices [B*T, k]. */
  record(layerIndex: number, scores: Tensor, experts: Tensor): void {
    if (!this._active) return;
    const [B, T] = this._shape;
    const [E, k] = [scores.shape[1]!, experts.shape[1]!];
    const loss = tidy(() => {
      const chosen = experts.view(B * T, k, 1).eq(arange(0, E).view(1, 1, E)).to(scores.dtype).sum(1); // [B*T, E]
      if (this.config.seq_aux !== false) {
        const share = chosen.view(B, T, E).sum(1).div((T * k) / E); // [B, E]
        return share.mul(scores.view(B, T, E).mean(1)).sum(1).mean();
      }
      return chosen.mean(0).mul(E / k).mul(scores.mean(0)).sum(); // f_e over the N·k choices
    });
    this._losses.get(layerIndex)?.dispose();
    this._losses.set(layerIndex, keep(loss.mul(num(this.config.aux_loss_alpha, 0.001))));
    loss.dispose();
  }

  loss(): Tensor | null {
    if (!this._active || this._losses.size === 0) return null;
    this._taken++;
    return tidy(() => [...this._losses.values()].reduce((sum, loss) => sum.add(loss)));
  }

  lossOfLayer(layerIndex: number): Tensor | null {
    const loss = this._losses.get(layerIndex);
    return this._taken && loss ? tidy(() => loss.mul(this._taken)) : null;
  }

  private clear(): void {
    for (const loss of this._losses.values()) loss.dispose();
    this._losses.clear();
    this._taken = 0;
    this._active = false;
  }

  dispose(): void {
    this.clear();
  }
}

/** The router: `weight` [E, C] as DeepSeek's MoEGate holds it, scoring in float32. */
export class DeepseekV2Gate extends Module {
  weight: Tensor;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    if ((config.scoring_func ?? "softmax") !== "softmax") {
      throw new UserError(`deepseek_v2: scoring_func '${String(config.scoring_func)}' is not supported`, "config.json", "DeepSeek-V2 and V2-Lite score experts with softmax");
    }
    const C = config.hidden_size;
    const weight = empty([num(config.n_routed_experts, 0), C], { dtype: options.dtype ?? "float32", device: options.device ?? "cpu" });
    // MoEGate.reset_parameters (kaiming_uniform_, a = sqrt(5)); HF's _init_weights leaves it so.
    if (options.init !== "empty") noGrad(() => weight.uniform_(-1 / Math.sqrt(C), 1 / Math.sqrt(C)));
    this.weight = parameter(weight);
  }

  /** x [N, C] -> softmax scores [N, E] in float32 (or float64 for a float64 pass). */
  forward(x: Tensor): Tensor {
    const dtype = x.dtype === "float64" ? "float64" : "float32";
    return x.to(dtype).matmul(this.weight.to(dtype).t()).softmax(-1);
  }
}

export class DeepseekV2MoE extends Module {
  gate: DeepseekV2Gate;
  experts: LlamaMLP[];
  shared_experts: LlamaMLP | null = null;
  private readonly _config: ModelConfig;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    if (!["greedy", "group_limited_greedy", undefined].includes(config.topk_method as string | undefined)) {
      throw new UserError(`deepseek_v2: topk_method '${String(config.topk_method)}' is not supported`, "config.json", "DeepSeek-V2 routes with greedy or group_limited_greedy");
    }
    const size = num(config.moe_intermediate_size, 1407);
    this.gate = new DeepseekV2Gate(config, options);
    this.experts = Array.from({ length: num(config.n_routed_experts, 0) }, () => new LlamaMLP(config, options, size, false));
    const shared = config.n_shared_experts as number | null | undefined;
    if (shared) this.shared_experts = new LlamaMLP(config, options, size * shared, false);
    this._config = config;
  }

  /** x [B, T, C] -> [B, T, C]; `record` receives the scores [B*T, E] and the choices [B*T, k]. */
  forward(x: Tensor, record: (scores: Tensor, experts: Tensor) => void): Tensor {
    return tidy(() => {
      const [B, T, C] = x.shape as [number, number, number];
      const hidden = x.reshape(B * T, C);
      const scores = this.gate.forward(hidden); // [N, E]
      const { weights, experts } = this.route(scores);
      record(scores, experts);
      let out = dispatchExperts(hidden, this.experts, experts, weights);
      if (this.shared_experts) out = out.add(this.shared_experts.forward(hidden));
      return out.view(B, T, C);
    });
  }

  /** Greedy top-k, or top-k within the topk_group best of n_group groups (group_limited_greedy). */
  private route(scores: Tensor): { weights: Tensor; experts: Tensor } {
    const config = this._config;
    const k = num(config.num_experts_per_tok, 1);
    let candidates = scores;
    if (config.topk_method === "group_limited_greedy") {
      const [N, E] = [scores.shape[0]!, scores.shape[1]!];
      const groups = num(config.n_group, 1);
      const best = scores.view(N, groups, E / groups).amax(-1).topk(num(config.topk_group, groups), -1).indices; // [N, topk_group]
      const chosenGroup = best.unsqueeze(-1).eq(arange(0, groups).view(1, 1, groups)).to("int32").sum(1).gt(0); // [N, groups]
      candidates = scores.maskedFill(chosenGroup.view(N, groups, 1).expand(N, groups, E / groups).reshape(N, E).logicalNot(), 0);
    }
    const { values, indices } = candidates.topk(k, -1);
    const weights = k > 1 && config.norm_topk_prob === true ? values.div(values.sum(-1, true).add(1e-20)) : values.mul(num(config.routed_scaling_factor, 1));
    return { weights, experts: indices };
  }
}

// --- Decoder layer -------------------------------------------------------------------------------

export class DeepseekV2DecoderLayer extends Module implements DecoderLayer {
  self_attn: DeepseekV2Attention;
  mlp: DeepseekV2MoE | LlamaMLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
  private readonly _balance: DeepseekBalanceLoss;

  constructor(config: ModelConfig, index: number, balance: DeepseekBalanceLoss, options: BuildOptions) {
    super();
    const norm = { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device };
    this.self_attn = new DeepseekV2Attention(config, options);
    const sparse = config.n_routed_experts != null && index >= num(config.first_k_dense_replace, 0) && index % num(config.moe_layer_freq, 1) === 0;
    this.mlp = sparse ? new DeepseekV2MoE(config, options) : new LlamaMLP(config, options, config.intermediate_size, false);
    this.input_layernorm = new RMSNorm(config.hidden_size, norm);
    this.post_attention_layernorm = new RMSNorm(config.hidden_size, norm);
    this._balance = balance;
  }

  forward(x: Tensor, context: LayerContext, cache: KVCache | null, layerIndex: number): Tensor {
    return tidy(() => {
      const h = x.add(this.self_attn.forward(this.input_layernorm.forward(x), context as RotaryContext, cache, layerIndex));
      const normed = this.post_attention_layernorm.forward(h);
      const mlp = this.mlp instanceof DeepseekV2MoE ? this.mlp.forward(normed, (scores, experts) => this._balance.record(layerIndex, scores, experts)) : this.mlp.forward(normed);
      return h.add(mlp);
    });
  }
}

// --- Model ---------------------------------------------------------------------------------------

export class DeepseekV2Model extends DecoderModel<DeepseekV2DecoderLayer> {}

export class DeepseekV2ForCausalLM extends DecoderForCausalLM<DeepseekV2Model> {
  constructor(config: ModelConfig, options: BuildOptions = {}) {
    const balance = new DeepseekBalanceLoss(config);
    // RoPE covers the decoupled qk_rope_head_dim channels only.
    const rotary = { ...config, head_dim: num(config.qk_rope_head_dim, 64), partial_rotary_factor: 1 };
    const layer = (index: number) => new DeepseekV2DecoderLayer(config, index, balance, options);
    super(config, new DeepseekV2Model(rotary, options, { layer, auxiliary: balance }), options);
  }
}
