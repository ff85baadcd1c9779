// The Hugging Face folder of `lmf export`, as LLaMA-Factory's export_model leaves it after
// `save_pretrained` (transformers' modeling_utils and configuration_utils): config.json with the
// export dtype, generation_config.json, weights sharded by size (safetensors, or `.bin` when
// legacy), the tokenizer saved with left padding and the template's chat template, the reward
// model's value head, and the Ollama Modelfile.
import { copyFileSync, existsSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import type { CausalLM } from "../model/registry.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { type DType, saveSafetensorsSharded, saveTorchBinSharded } from "../torch/index.ts";
import { pythonJsonDumps } from "../torch/io/shards.ts";

type Json = Record<string, unknown>;

/** transformers' architecture class for each model_type lmfactory builds. */
const ARCHITECTURE_NAMES: Record<string, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
};

/** config.json as transformers' to_json_file writes it: sorted keys, runtime-only keys dropped, `torch_dtype` set. */
export function exportedConfig(model: CausalLM, dtype: DType, extra: Json = {}): Json {
  const config: Json = Object.fromEntries(Object.entries(model.config).filter(([key]) => !key.startsWith("_")));
  config.architectures = Array.isArray(config.architectures) && config.architectures.length ? config.architectures : [ARCHITECTURE_NAMES[model.config.model_type] ?? "LlamaForCausalLM"];
  config.torch_dtype = dtype;
  return { ...config, ...extra };
}

/**
 * generation_config.json: the model folder's own, else GenerationConfig.from_model_config's (the
 * config's bos/eos/pad ids, marked `_from_model_config`).
 */
export function exportedGenerationConfig(model: CausalLM, own: Json | null): Json {
  if (own) return { ...own };
  const generation: Json = { _from_model_config: true };
  for (const key of ["bos_token_id", "eos_token_id", "pad_token_id"] as const) {
    const value = model.config[key];
    if (value !== null && value !== undefined) generation[key] = value;
  }
  return generation;
}

export interface HfFolderOptions {
  /** dtype of the floating weights in the files. */
  dtype: DType;
  /** The shard limit ("5GB" from export_size, or bytes). */
  maxShardSize: number | string;
  /** pytorch_model.bin shards instead of safetensors (export_legacy_format). */
  legacyFormat: boolean;
  generationConfig: Json;
  /** The chat template the tokenizer is saved with (null: none). */
  chatTemplate: string | null;
  /** The Ollama Modelfile's text. */
  modelfile: string;
  /** value_head.safetensors (or .bin) to copy beside the weights (a reward model's head). */
  valueHead?: string | null;
  /** Keys added to config.json (GPTQ's quantization_config). */
  configExtra?: Json;
  /** Writes the weights instead of the model's state dict (GPTQ's packed tensors); returns file names. */
  writeWeights?: (folder: string) => string[];
}

/** Writes the folder's files into `folder` (which exists); returns their names. */
export function writeHfFolder(model: CausalLM, tokenizer: Tokenizer, folder: string, options: HfFolderOptions): string[] {
  const files: string[] = [];
  const writeJson = (name: string, value: unknown) => {
    writeFileSync(join(folder, name), `${pythonJsonDumps(value)}\n`);
    files.push(name);
  };
  writeJson("config.json", exportedConfig(model, options.dtype, options.configExtra));
  writeJson("generation_config.json", options.generationConfig);
  if (options.writeWeights) {
    files.push(...options.writeWeights(folder));
  } else {
    const state = { ...model.stateDict() };
    // transformers drops a tied head on save and re-ties it on load.
    if (model.config.tie_word_embeddings) delete state["lm_head.weight"];
    const written = options.legacyFormat
      ? saveTorchBinSharded(folder, state, { maxShardSize: options.maxShardSize, dtype: options.dtype })
      : saveSafetensorsSharded(folder, state, { maxShardSize: options.maxShardSize, dtype: options.dtype });
    files.push(...written.map((path) => basename(path)));
  }
  if (options.valueHead && existsSync(options.valueHead)) {
    copyFileSync(options.valueHead, join(folder, basename(options.valueHead)));
    files.push(basename(options.valueHead));
  }
  files.push(...tokenizer.save(folder, { chatTemplate: options.chatTemplate, paddingSide: "left" }));
  writeFileSync(join(folder, "Modelfile"), options.modelfile);
  files.push("Modelfile");
  return files;
}
