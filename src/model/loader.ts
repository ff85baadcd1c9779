// Loads and saves Hugging Face model folders: config.json, weights (model.safetensors, sharded
// safetensors with their index, or pytorch_model.bin), generation_config.json, tokenizer files.
// Weights stream tensor by tensor into a model built without initialisation, so memory never
// holds two full copies.
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import {
  type DType,
  type Tensor,
  type TensorReader,
  iterateTorchBin,
  noGrad,
  openSafetensors,
  saveSafetensors,
  saveSafetensorsSharded,
  saveTorchBin,
  tidy,
} from "../torch/index.ts";
import { type ModelConfig, loadConfig } from "./config.ts";
import { prepareQuantization } from "./quantization/index.ts";
import { type CausalLM, architectureFor } from "./registry.ts";

export interface LoadModelOptions {
  dtype?: DType;
  device?: string;
  /** Random weights from the config (HF's init), no checkpoint needed. */
  trainFromScratch?: boolean;
}

/** A model folder as it is stored (a GPTQ checkpoint with its quantized layers), without tokenizer or adapters. */
export function loadModel(folder: string, options: LoadModelOptions = {}): CausalLM {
  const config = loadConfig(folder);
  const architecture = architectureFor(config, join(folder, "config.json"));
  const build = { dtype: options.dtype ?? "float32", device: options.device ?? "cpu" };
  if (options.trainFromScratch) return architecture.build(config, { ...build, init: "hf" });
  const model = architecture.build(config, { ...build, init: "empty" });
  try {
    loadWeights(model, folder, build.dtype, prepareQuantization(model, folder, { computeDtype: build.dtype }));
  } catch (error) {
    model.dispose();
    throw error;
  }
  return model;
}

/** The checkpoint's tensors one at a time, in their stored dtypes (the caller disposes each). */
export function* checkpointTensors(folder: string): Generator<[string, Tensor]> {
  if (existsSync(join(folder, "model.safetensors")) || existsSync(join(folder, "model.safetensors.index.json"))) {
    const reader: TensorReader = openSafetensors(folder);
    try {
      yield* reader.tensors();
    } finally {
      reader.close();
    }
    return;
  }
  if (existsSync(join(folder, "pytorch_model.bin.index.json")) || existsSync(join(folder, "pytorch_model.bin"))) {
    const path = existsSync(join(folder, "pytorch_model.bin.index.json"))
      ? join(folder, "pytorch_model.bin.index.json")
      : join(folder, "pytorch_model.bin");
    yield* iterateTorchBin(path);
    return;
  }
  throw new UserError(
    "no weights found (model.safetensors, model.safetensors.index.json or pytorch_model.bin)",
    folder,
    "point model_name_or_path at a complete model folder, or set train_from_scratch: true to start from random weights",
  );
}

/**
 * Takes the checkpoint tensors of layers that are stored other than as the model's own state (a
 * weight quantized as it streams in, a GPTQ layer's packed tensors), before the state dict sees them.
 */
export interface WeightSink {
  /** Uses `tensor` (copying what it keeps; the loader frees it) and returns true, or returns false. */
  accept(name: string, tensor: Tensor): boolean;
  /** True for a state-dict name the sink has filled instead of the checkpoint (a quantized layer's `weight`). */
  provides(name: string): boolean;
  /** After the last tensor: throws a UserError naming what never arrived. */
  finish(): void;
}

/**
 * Copies a checkpoint's tensors into `model` (built in `dtype`) one at a time, each converted to
 * its target's dtype as it is copied; the tensors `sink` accepts go to it as stored (GPTQ's int32
 * and float16 tensors, a weight to quantize). `onProgress` counts the checkpoint tensors taken.
 */
export function loadWeights(
  model: CausalLM,
  folder: string,
  dtype: DType,
  sink: WeightSink | null = null,
  onProgress?: (done: number, total: number) => void,
): void {
  const targets = model.stateDict();
  const total = Object.keys(targets).length;
  const loaded = new Set<string>();
  const unexpected: string[] = [];
  noGrad(() => {
    for (const [name, tensor] of checkpointTensors(folder)) {
      tidy(() => {
        const target = targets[name];
        if (sink?.accept(name, tensor)) {
          loaded.add(name);
          onProgress?.(Math.min(loaded.size, total), total);
        } else if (!target) {
          // Older checkpoints store RoPE's inv_freq; it is recomputed from the config.
          if (!name.endsWith("rotary_emb.inv_freq")) unexpected.push(name);
        } else if (target.shape.join(",") !== tensor.shape.join(",")) {
          throw new UserError(
            `${name} has shape [${tensor.shape}] in the checkpoint but [${target.shape}] in the model built from config.json`,
            folder,
            "config.json and the weights do not belong together",
          );
        } else {
          // copy_ converts to the target's dtype (the model's, `dtype`) without a second full copy.
          target.copy_(tensor);
          loaded.add(name);
          onProgress?.(Math.min(loaded.size, total), total);
        }
        tensor.dispose();
      });
    }
  });
  const tied = model.config.tie_word_embeddings ? ["lm_head.weight"] : [];
  sink?.finish();
  const missing = Object.keys(targets).filter((name) => !loaded.has(name) && !tied.includes(name) && !sink?.provides(name));
  if (missing.length) {
    throw new UserError(
      `the checkpoint lacks ${missing.length} weight(s) the model needs: ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""}`,
      folder,
      "check that the weights match config.json (model_type, num_hidden_layers, tie_word_embeddings)",
    );
  }
  onProgress?.(total, total);
  if (unexpected.length) {
    console.warn(`lmf: ignored ${unexpected.length} checkpoint tensor(s) the model does not use: ${unexpected.slice(0, 5).join(", ")}`);
  }
}

export interface SaveModelOptions {
  /** Shard above this size ("5GB", bytes); one file when the model fits. */
  maxShardSize?: number | string;
  /** pytorch_model.bin instead of safetensors (export_legacy_format). */
  legacyFormat?: boolean;
  /** Files copied beside the weights (tokenizer, generation config) from this folder. */
  copyFrom?: string | null;
}

const FOLDER_FILES = /^(tokenizer.*|special_tokens_map\.json|vocab\.json|merges\.txt|.*\.model|added_tokens\.json|generation_config\.json|chat_template\.(json|jinja))$/;

/** Writes an HF folder transformers loads: config.json, weights, and the tokenizer files. */
export function saveModel(model: CausalLM, folder: string, options: SaveModelOptions = {}): void {
  mkdirSync(folder, { recursive: true });
  const state = { ...model.stateDict() };
  // transformers drops the tied head on save and re-ties it on load.
  if (model.config.tie_word_embeddings) delete state["lm_head.weight"];
  const dtype = state["model.embed_tokens.weight"]?.dtype ?? "float32";
  // Runtime-only keys (`_attn_implementation`) stay out of the saved config, as in transformers.
  const config = Object.fromEntries(Object.entries({ ...model.config, torch_dtype: dtype }).filter(([key]) => !key.startsWith("_")));
  writeFileSync(join(folder, "config.json"), JSON.stringify(config, null, 2) + "\n");
  if (options.legacyFormat) saveTorchBin(join(folder, "pytorch_model.bin"), state);
  else if (options.maxShardSize !== undefined) saveSafetensorsSharded(folder, state, { maxShardSize: options.maxShardSize });
  else saveSafetensors(join(folder, "model.safetensors"), state, { format: "pt" });
  if (options.copyFrom) {
    for (const name of readdirSync(options.copyFrom)) {
      if (FOLDER_FILES.test(name)) copyFileSync(join(options.copyFrom, name), join(folder, name));
    }
  }
}
