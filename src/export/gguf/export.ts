// GGUF export of any supported family: the family table (model_type → src/export/gguf/<family>.ts),
// the refusals checked before anything is written, and the one writer path (llama.cpp names,
// experts stacked, the converter's rewrites, llama-quantize's per-tensor types).
import { UserError } from "../../errors.ts";
import type { ModelConfig } from "../../model/config.ts";
import type { CausalLM } from "../../model/registry.ts";
import { type Tensor, noGrad, stack, tidy } from "../../torch/index.ts";
import type { GgufFamily, Metadata } from "./family.ts";
import { gemmaFamily } from "./gemma.ts";
import { deepseekV2Family } from "./deepseek_v2.ts";
import { glm4Family } from "./glm4.ts";
import { llamaFamily, qwenFamily } from "./llama.ts";
import { GGUF_FILE_TYPES, type GgufFileType, tensorTypes } from "./mix.ts";
import { phi3Family } from "./phi3.ts";
import { qwenMoeFamily } from "./qwen_moe.ts";
import { encodeTensor } from "./quants.ts";
import { type GgufTokenizer, tokenizerMetadata } from "./tokenizer.ts";
import { type GgufTensor, str, u32, writeGguf } from "./writer.ts";

/** HF model_type → its GGUF family. */
const FAMILIES: Record<string, GgufFamily> = {
  llama: llamaFamily,
  mistral: llamaFamily,
  mixtral: llamaFamily,
  qwen2: qwenFamily,
  qwen3: qwenFamily,
  gemma: gemmaFamily,
  gemma2: gemmaFamily,
  gemma3_text: gemmaFamily,
  phi3: phi3Family,
  qwen2_moe: qwenMoeFamily,
  qwen3_moe: qwenMoeFamily,
  glm4: glm4Family,
  deepseek_v2: deepseekV2Family,
};

/**
 * llama-quantize's per-tensor mixes (q4_0, the k-quants) are reproduced and checked byte for byte for
 * these dense families only (its rules for experts and other architectures are not); every family
 * takes the types below, checked byte for byte against llama-quantize per family.
 */
const MIXED_TYPES_CHECKED: readonly string[] = ["llama", "mistral", "qwen2", "qwen3"];
const TYPES_BEYOND_LLAMA: readonly GgufFileType[] = ["f32", "f16", "bf16", "q8_0"];

/** Why this checkpoint cannot be exported as GGUF of `type` (one message), or null. */
export function ggufRefusal(config: ModelConfig, type: GgufFileType = "f32"): string | null {
  const family = FAMILIES[config.model_type];
  if (!family) return `GGUF export does not support model_type '${config.model_type}'; it supports ${Object.keys(FAMILIES).join(", ")}`;
  const reason = family.refuse?.(config);
  if (reason) return `this ${config.model_type} checkpoint cannot be exported as GGUF (llama.cpp's ${family.arch(config)} would compute something else): ${reason}`;
  if (!MIXED_TYPES_CHECKED.includes(config.model_type) && !TYPES_BEYOND_LLAMA.includes(type)) {
    return `export_gguf_type ${type} (llama-quantize's mix) is only reproduced for the dense Llama family (llama, mistral, qwen2, qwen3); for ${config.model_type} choose ${TYPES_BEYOND_LLAMA.join(", ")} (or quantize the f16 file with llama-quantize)`;
  }
  return null;
}

export interface ExportGgufOptions {
  /**
   * The file type (llama.cpp's names): f32, f16, bf16, or a quantization whose per-tensor mix is
   * llama-quantize's; norms, biases and other 1-D tensors stay f32 in every type.
   */
  type?: GgufFileType;
  /** general.name; defaults to "lmfactory-export". */
  name?: string;
}

/** ggml's GGML_QNT_VERSION, which llama.cpp writes as general.quantization_version. */
const QUANTIZATION_VERSION = 2;

/** One tensor as the converter would hand it to the writer: float32 values made on demand. */
interface Pending {
  name: string;
  shape: number[];
  values: () => Float32Array;
}

/** The llama.cpp name of an HF parameter outside the experts, or null for one GGUF does not carry. */
function tensorName(family: GgufFamily, config: ModelConfig, hfName: string): string | null {
  if (hfName === "model.embed_tokens.weight") return "token_embd.weight";
  if (hfName === "model.norm.weight") return "output_norm.weight";
  if (hfName === "lm_head.weight") return "output.weight";
  const match = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  const inner = match && family.layerNames(config)[match[2]!];
  return inner ? `blk.${match[1]}.${inner}` : null;
}

/** The float32 data of `weight` after the family's rewrite for `name`. */
function rewritten(family: GgufFamily, config: ModelConfig, name: string, weight: () => Tensor): Float32Array {
  return tidy(() => noGrad(() => {
    const value = weight().to("float32");
    return (family.rewrite ? family.rewrite(name, value, config) : value).contiguous().data() as Float32Array;
  }));
}

/** Writes `model` as a GGUF file llama.cpp loads, with the tokenizer's vocabulary. */
export function exportGguf(model: CausalLM, tokenizer: GgufTokenizer, path: string, options: ExportGgufOptions = {}): void {
  const config = model.config;
  const type = options.type ?? "f32";
  const refusal = ggufRefusal(config, type);
  if (refusal) throw new UserError(refusal, "export_format: gguf");
  const family = FAMILIES[config.model_type]!;
  const arch = family.arch(config);
  if (tokenizer.tokens.length !== config.vocab_size) {
    throw new UserError(
      `the tokenizer has ${tokenizer.tokens.length} tokens but the model's vocab_size is ${config.vocab_size}`,
      "GGUF export",
      "pad the tokenizer's vocabulary to vocab_size (llama.cpp takes n_vocab from the token list)",
    );
  }
  const metadata: Metadata = [
    ["general.architecture", str(arch)],
    ["general.name", str(options.name ?? "lmfactory-export")],
    ["general.file_type", u32(GGUF_FILE_TYPES[type].ftype)],
    ["general.quantization_version", u32(QUANTIZATION_VERSION)],
    ...family.metadata(config, arch),
    ...tokenizerMetadata(tokenizer),
  ];

  const pending: Pending[] = (family.extraTensors?.(config) ?? []).map(({ name, values }) => ({ name, shape: [values.length], values: () => new Float32Array(values) }));
  const state = model.stateDict();
  // blk.N.<name> → the experts' weights in expert order.
  const experts = new Map<string, Tensor[]>();
  for (const [hfName, weight] of Object.entries(state)) {
    const expert = /^model\.layers\.(\d+)\.[^.]+\.experts\.(\d+)\.(.+)$/.exec(hfName);
    const expertName = expert && family.expertNames?.[expert[3]!];
    if (expert && expertName) {
      const key = `blk.${expert[1]}.${expertName}`;
      const list = experts.get(key) ?? [];
      list[Number(expert[2])] = weight;
      experts.set(key, list);
      continue;
    }
    if (hfName === "lm_head.weight" && config.tie_word_embeddings) continue;
    const name = tensorName(family, config, hfName);
    if (!name) {
      throw new UserError(`GGUF export has no llama.cpp name for parameter "${hfName}"`, "export", "merge adapters before exporting");
    }
    if (family.notInGraph?.test(name)) {
      if (tidy(() => weight.abs().max().item()) === 0) continue;
      throw new UserError(`llama.cpp's ${arch} has no "${name}"; this model's is non-zero`, "GGUF export", "set attention_bias: false for this model");
    }
    const parts = family.split?.(name, config);
    if (parts) {
      for (const part of parts) pending.push({ name: part.name, shape: part.shape, values: () => rewritten(family, config, part.name, () => part.make(weight)) });
      continue;
    }
    pending.push({ name, shape: [...weight.shape], values: () => rewritten(family, config, name, () => weight) });
    // Tied embeddings where llama.cpp's loader requires an output matrix: the converter's copy.
    if (name === "token_embd.weight" && config.tie_word_embeddings && family.untieOutput) {
      pending.push({ name: "output.weight", shape: [...weight.shape], values: () => rewritten(family, config, "output.weight", () => weight) });
    }
  }
  for (const [name, list] of experts) {
    const first = list[0]!;
    if (list.length !== list.filter(Boolean).length) throw new Error(`GGUF export: ${name} is missing experts`);
    pending.push({ name, shape: [list.length, ...first.shape], values: () => rewritten(family, config, name, () => stack(list, 0)) });
  }

  const types = tensorTypes(pending, type, { arch, numLayers: config.num_hidden_layers, numHeads: config.num_attention_heads, numKvHeads: config.num_key_value_heads });
  const tensors: GgufTensor[] = pending.map(({ name, shape, values }) => {
    const ggmlType = types.get(name)!;
    // The float32 values llama.cpp's converter would write, then encoded as llama-quantize encodes them.
    return { name, shape, type: ggmlType, data: () => encodeTensor(values(), ggmlType) };
  });
  writeGguf(path, { metadata, tensors });
}
