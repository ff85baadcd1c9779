// What one model family's GGUF export declares, as llama.cpp's convert_hf_to_gguf.py writes that
// family (its architecture name, metadata keys, tensor names and the rewrites the converter makes),
// and the metadata every family shares (TextModel.set_gguf_parameters).
import { UserError } from "../../errors.ts";
import type { ModelConfig } from "../../model/config.ts";
import type { Tensor } from "../../torch/index.ts";
import { type GgufValue, f32, str, u32 } from "./writer.ts";

export type Metadata = [string, GgufValue][];

export interface GgufFamily {
  /** llama.cpp's `general.architecture` for this checkpoint. */
  arch(config: ModelConfig): string;
  /**
   * Why llama.cpp's graph for this architecture cannot compute what this checkpoint computes
   * (checked before anything is written), or null.
   */
  refuse?(config: ModelConfig): string | null;
  /** The `{arch}.*` keys the converter writes for this family (the tokenizer's come after). */
  metadata(config: ModelConfig, arch: string): Metadata;
  /** HF parameter name inside `model.layers.N.` → llama.cpp's name inside `blk.N.`. */
  layerNames(config: ModelConfig): Record<string, string>;
  /**
   * Expert weights (`model.layers.N.<block>.experts.E.<suffix>`): suffix → llama.cpp's 3-D tensor
   * inside `blk.N.`, the experts stacked in order ([E, out, in]).
   */
  expertNames?: Record<string, string>;
  /** The converter's rewrite of one tensor (float32, by llama.cpp name), e.g. Gemma's norm + 1. */
  rewrite?(name: string, weight: Tensor, config: ModelConfig): Tensor;
  /** One llama.cpp tensor the converter writes as several (DeepSeek's kv_b), each made from the whole. */
  split?(name: string, config: ModelConfig): { name: string; shape: number[]; make(weight: Tensor): Tensor }[] | null;
  /** Tensors the converter adds that the checkpoint has no parameter for (RoPE factors). [n] */
  extraTensors?(config: ModelConfig): { name: string; values: number[] }[];
  /** llama.cpp names this architecture's graph has no slot for: a zero tensor is dropped, another refused. */
  notInGraph?: RegExp;
  /** llama.cpp's loader requires output.weight, so tied embeddings are written twice. */
  untieOutput?: boolean;
}

/** The keys TextModel.set_gguf_parameters writes for every family. */
export function commonMetadata(config: ModelConfig, arch: string): Metadata {
  return [
    [`${arch}.vocab_size`, u32(config.vocab_size)],
    [`${arch}.context_length`, u32(config.max_position_embeddings)],
    [`${arch}.embedding_length`, u32(config.hidden_size)],
    [`${arch}.block_count`, u32(config.num_hidden_layers)],
    [`${arch}.feed_forward_length`, u32(config.intermediate_size)],
    [`${arch}.attention.head_count`, u32(config.num_attention_heads)],
    [`${arch}.attention.head_count_kv`, u32(config.num_key_value_heads)],
    [`${arch}.attention.layer_norm_rms_epsilon`, f32(config.rms_norm_eps)],
    [`${arch}.attention.key_length`, u32(config.head_dim)],
    [`${arch}.attention.value_length`, u32(config.head_dim)],
    [`${arch}.rope.freq_base`, f32(config.rope_theta)],
  ];
}

/** `rope.dimension_count`: the rotated part of each head (partial_rotary_factor where set). */
export function ropeDimensions(config: ModelConfig, arch: string): Metadata {
  return [[`${arch}.rope.dimension_count`, u32(Math.floor(config.head_dim * (config.partial_rotary_factor ?? 1)))]];
}

/** The scaling keys for linear and YaRN RoPE scaling; other types are the family's to handle. */
export function ropeScalingMetadata(config: ModelConfig, arch: string, handled: readonly string[] = []): Metadata {
  const scaling = config.rope_scaling;
  if (!scaling || scaling.rope_type === "default" || handled.includes(scaling.rope_type)) return [];
  const factor = scaling.factor ?? 1;
  if (scaling.rope_type === "linear") return [[`${arch}.rope.scaling.type`, str("linear")], [`${arch}.rope.scaling.factor`, f32(factor)]];
  if (scaling.rope_type === "yarn") {
    return [
      [`${arch}.rope.scaling.type`, str("yarn")],
      [`${arch}.rope.scaling.factor`, f32(factor)],
      [`${arch}.rope.scaling.original_context_length`, u32(scaling.original_max_position_embeddings ?? config.max_position_embeddings)],
    ];
  }
  throw new UserError(`GGUF export does not support rope_scaling '${scaling.rope_type}' for ${arch}`, "export", "llama.cpp has no equivalent; export without it");
}

/** MoE counts as LlamaModel / Qwen2MoeModel write them. */
export function expertMetadata(arch: string, experts: number, used: number): Metadata {
  return [
    [`${arch}.expert_count`, u32(experts)],
    [`${arch}.expert_used_count`, u32(used)],
  ];
}
