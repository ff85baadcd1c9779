// Gemma, Gemma 2 and Gemma 3 (text) as GGUF: llama.cpp's `gemma`, `gemma2`, `gemma3`, as the
// converter's GemmaModel / Gemma2Model / Gemma3Model write them: norms stored as (1 + w), the extra
// norms, soft-capping and sliding-window keys. llama.cpp fixes what HF configures (its
// llama_load_hparams_gemma2/3: the sliding pattern, Gemma 3's local RoPE base 10000, the query
// scale), so other values are refused, or for the query scale folded into the weights.
import type { ModelConfig } from "../../model/config.ts";
import type { Tensor } from "../../torch/index.ts";
import { type GgufFamily, type Metadata, commonMetadata, ropeScalingMetadata } from "./family.ts";
import { f32, u32 } from "./writer.ts";

const ARCHITECTURE: Record<string, string> = { gemma: "gemma", gemma2: "gemma2", gemma3_text: "gemma3" };

/** llama.cpp's set_swa_pattern(n): layer i slides unless i % n == n - 1. */
const SWA_PATTERN: Record<string, number> = { gemma2: 2, gemma3: 6 };

/** The layer counts llama.cpp's loader takes for the 27B models (which scale queries by hidden / heads). */
const LAYERS_27B: Record<string, number> = { gemma2: 46, gemma3: 62 };

const nullable = (value: unknown): number | null => (typeof value === "number" ? value : null);

/** How llama.cpp's graph scales queries, as 1 / sqrt(this) (f_attention_scale). */
function llamaCppQueryScalar(config: ModelConfig, arch: string): number {
  if (config.num_hidden_layers === LAYERS_27B[arch]) return Math.floor(config.hidden_size / config.num_attention_heads);
  return config.head_dim;
}

/** The factor folded into the queries so that llama.cpp's scale gives HF's query_pre_attn_scalar^-0.5. */
function queryFold(config: ModelConfig, arch: string): number {
  if (arch === "gemma") return 1;
  const scalar = nullable(config.query_pre_attn_scalar) ?? config.head_dim;
  return Math.sqrt(llamaCppQueryScalar(config, arch) / scalar);
}

/** Whether each layer slides, as the model file reads it (config.json's layer_types or the family pattern). */
function slidingLayers(config: ModelConfig, arch: string): boolean[] {
  if (Array.isArray(config.layer_types)) return (config.layer_types as string[]).map((type) => type === "sliding_attention");
  const every = arch === "gemma3" ? (nullable(config.sliding_window_pattern) ?? 6) : SWA_PATTERN[arch]!;
  return Array.from({ length: config.num_hidden_layers }, (_, i) => (i + 1) % every !== 0);
}

export const gemmaFamily: GgufFamily = {
  arch: (config) => ARCHITECTURE[config.model_type]!,
  refuse(config) {
    const arch = ARCHITECTURE[config.model_type]!;
    const act = (config.hidden_activation as string | undefined) ?? "gelu_pytorch_tanh";
    if (act !== "gelu_pytorch_tanh" && act !== "gelu_tanh") return `its MLP activation is ${act}; llama.cpp's Gemma graphs use the tanh-approximated GELU`;
    // GemmaModel.modify_tensors drops lm_head: llama.cpp's gemma and gemma2 always project with token_embd.
    if (arch !== "gemma3" && !config.tie_word_embeddings) return `llama.cpp's ${arch} has no output matrix of its own (it reuses the token embedding), and this checkpoint's lm_head is untied`;
    if (arch === "gemma") return null;
    const pattern = SWA_PATTERN[arch]!;
    const sliding = slidingLayers(config, arch);
    if (sliding.some((slides, i) => slides !== (i % pattern < pattern - 1))) {
      return `its sliding-window layers are not llama.cpp's fixed pattern (every ${pattern === 2 ? "2nd" : `${pattern}th`} layer global, the others sliding)`;
    }
    if (config.sliding_window === null) return "it has no sliding_window, and llama.cpp slides its local layers";
    if (arch === "gemma2") {
      if (nullable(config.attn_logit_softcapping) === null || nullable(config.final_logit_softcapping) === null) {
        return "llama.cpp's gemma2 always soft-caps attention and final logits, and this config turns one off";
      }
      return null;
    }
    if (nullable(config.attn_logit_softcapping) !== null) return "llama.cpp's gemma3 has no attention soft-capping (attn_logit_softcapping)";
    if (nullable(config.final_logit_softcapping) !== null) return "llama.cpp's gemma3 with sliding layers has no final logit soft-capping";
    const localBase = nullable(config.rope_local_base_freq) ?? 10000;
    if (localBase !== 10000) return `llama.cpp's gemma3 uses RoPE base 10000 on sliding layers, and this config sets rope_local_base_freq ${localBase}`;
    const scaling = config.rope_scaling?.rope_type ?? "default";
    if (scaling !== "default" && scaling !== "linear") return `llama.cpp's gemma3 reads linear RoPE scaling only, not ${scaling}`;
    return null;
  },
  metadata(config, arch) {
    const metadata: Metadata = [...commonMetadata(config, arch), ...ropeScalingMetadata(config, arch)];
    if (arch === "gemma2") {
      metadata.push(
        [`${arch}.attn_logit_softcapping`, f32(nullable(config.attn_logit_softcapping)!)],
        [`${arch}.final_logit_softcapping`, f32(nullable(config.final_logit_softcapping)!)],
      );
    }
    if (arch !== "gemma") metadata.push([`${arch}.attention.sliding_window`, u32(config.sliding_window!)]);
    return metadata;
  },
  layerNames(config) {
    const names: Record<string, string> = {
      "input_layernorm.weight": "attn_norm.weight",
      "self_attn.q_proj.weight": "attn_q.weight",
      "self_attn.k_proj.weight": "attn_k.weight",
      "self_attn.v_proj.weight": "attn_v.weight",
      "self_attn.o_proj.weight": "attn_output.weight",
      "self_attn.q_norm.weight": "attn_q_norm.weight",
      "self_attn.k_norm.weight": "attn_k_norm.weight",
      "mlp.gate_proj.weight": "ffn_gate.weight",
      "mlp.up_proj.weight": "ffn_up.weight",
      "mlp.down_proj.weight": "ffn_down.weight",
    };
    if (config.model_type === "gemma") return { ...names, "post_attention_layernorm.weight": "ffn_norm.weight" };
    return {
      ...names,
      "post_attention_layernorm.weight": "post_attention_norm.weight",
      "pre_feedforward_layernorm.weight": "ffn_norm.weight",
      "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    };
  },
  rewrite(name, weight, config): Tensor {
    const arch = ARCHITECTURE[config.model_type]!;
    const fold = queryFold(config, arch);
    // The converter writes Gemma's norm weights as the (1 + w) the model multiplies by.
    let out = name.endsWith("norm.weight") ? weight.add(1) : weight;
    // Queries scaled into llama.cpp's fixed scale: Gemma 2 on q_proj, Gemma 3 after its q_norm.
    if (fold !== 1 && (arch === "gemma2" ? /\.attn_q\.weight$/ : /\.attn_q_norm\.weight$/).test(name)) out = out.mul(fold);
    return out;
  },
};
