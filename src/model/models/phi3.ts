// Phi-3, Phi-3.5 and Phi-4 (text; model_type phi3), following transformers' modeling_phi3.py: Llama's
// layout with q/k/v fused into one `qkv_proj` and gate/up into one `gate_up_proj` (so LoRA targets
// the fused modules by those names), partial rotary where partial_rotary_factor < 1, LongRoPE
// scaling from rope.ts, and dropout on each residual branch (resid_pdrop).
import { type Tensor, Dropout, Linear, Module, RMSNorm, tidy } from "../../torch/index.ts";
import type { KVCache } from "../cache.ts";
import type { AttentionKernel, BuildOptions, DecoderLayer, LayerContext } from "../causal_lm.ts";
import type { ModelConfig } from "../config.ts";
import { applyRotary } from "../rope.ts";
import { DecoderForCausalLM, DecoderModel, type RotaryContext, activation, defaultKernel } from "./decoder.ts";

// --- Attention -----------------------------------------------------------------------------------

export class Phi3Attention extends Module {
  qkv_proj: Linear;
  o_proj: Linear;
  attentionKernel: AttentionKernel;
  private readonly _heads: number;
  private readonly _kvHeads: number;
  private readonly _headDim: number;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const, bias: false };
    const [hidden, heads, kvHeads, headDim] = [config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim];
    this.qkv_proj = new Linear(hidden, (heads + 2 * kvHeads) * headDim, layer);
    this.o_proj = new Linear(heads * headDim, hidden, layer);
    this.attentionKernel = defaultKernel(config._attn_implementation === "eager");
    this._heads = heads;
    this._kvHeads = kvHeads;
    this._headDim = headDim;
  }

  /** x [B, T, C] -> [B, T, C]; the fused projection's rows are q, then k, then v. */
  forward(x: Tensor, context: RotaryContext, cache: KVCache | null, layerIndex: number): Tensor {
    const [B, T] = [x.shape[0]!, x.shape[1]!];
    const [H, Hkv, D] = [this._heads, this._kvHeads, this._headDim];
    const [q, k, v] = this.qkv_proj.forward(x).split([H * D, Hkv * D, Hkv * D], -1);
    const query = applyRotary(q!.view(B, T, H, D).transpose(1, 2), context.cos, context.sin); // [B, H, T, D]
    const key = applyRotary(k!.view(B, T, Hkv, D).transpose(1, 2), context.cos, context.sin); // [B, Hkv, T, D]
    let [keys, values] = [key, v!.view(B, T, Hkv, D).transpose(1, 2)];
    if (cache) [keys, values] = cache.update(layerIndex, keys, values); // [B, Hkv, S, D]
    const attended = this.attentionKernel(query, keys, values, context.mask, { training: this.training, cached: cache !== null });
    return this.o_proj.forward(attended.transpose(1, 2).reshape(B, T, H * D));
  }
}

// --- MLP -----------------------------------------------------------------------------------------

export class Phi3MLP extends Module {
  gate_up_proj: Linear;
  down_proj: Linear;
  private readonly _act: (x: Tensor) => Tensor;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    const layer = { dtype: options.dtype, device: options.device, init: "empty" as const, bias: false };
    this.gate_up_proj = new Linear(config.hidden_size, 2 * config.intermediate_size, layer);
    this.down_proj = new Linear(config.intermediate_size, config.hidden_size, layer);
    this._act = activation(config.hidden_act);
  }

  /** down(up * act(gate)), gate and up the two halves of the fused projection. */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const [gate, up] = this.gate_up_proj.forward(x).chunk(2, -1);
      return this.down_proj.forward(up!.mul(this._act(gate!)));
    });
  }
}

// --- Decoder layer -------------------------------------------------------------------------------

export class Phi3DecoderLayer extends Module implements DecoderLayer {
  self_attn: Phi3Attention;
  mlp: Phi3MLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
  resid_attn_dropout: Dropout;
  resid_mlp_dropout: Dropout;

  constructor(config: ModelConfig, options: BuildOptions) {
    super();
    const norm = { eps: config.rms_norm_eps, dtype: options.dtype, device: options.device };
    this.self_attn = new Phi3Attention(config, options);
    this.mlp = new Phi3MLP(config, options);
    this.input_layernorm = new RMSNorm(config.hidden_size, norm);
    this.post_attention_layernorm = new RMSNorm(config.hidden_size, norm);
    const pdrop = typeof config.resid_pdrop === "number" ? config.resid_pdrop : 0;
    this.resid_attn_dropout = new Dropout(pdrop);
    this.resid_mlp_dropout = new Dropout(pdrop);
  }

  /** h = x + drop(attn(norm(x))); out = h + drop(mlp(norm(h))). */
  forward(x: Tensor, context: LayerContext, cache: KVCache | null, layerIndex: number): Tensor {
    return tidy(() => {
      const attended = this.self_attn.forward(this.input_layernorm.forward(x), context as RotaryContext, cache, layerIndex);
      const h = x.add(this.resid_attn_dropout.forward(attended));
      return h.add(this.resid_mlp_dropout.forward(this.mlp.forward(this.post_attention_layernorm.forward(h))));
    });
  }
}

// --- Model ---------------------------------------------------------------------------------------

export class Phi3Model extends DecoderModel<Phi3DecoderLayer> {}

export class Phi3ForCausalLM extends DecoderForCausalLM<Phi3Model> {
  constructor(config: ModelConfig, options: BuildOptions = {}) {
    super(config, new Phi3Model(config, options, { layer: () => new Phi3DecoderLayer(config, options) }), options);
  }
}
