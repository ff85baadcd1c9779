// The one loading sequence of every command (LLaMA-Factory's load_tokenizer + load_model): the
// folder (local or the HF cache at a revision), the tokenizer with its added tokens, the chat
// template, config patches, the architecture, weights (quantized as they stream in, or a GPTQ
// checkpoint's packed layers), upcasts, vocabulary resize, attention patches and the fine-tuning
// setup (adapters merged or trained). `lmf train`, `chat`, `api`, `eval` and `export` all load
// through here.
import { join } from "node:path";
import { getTemplateAndFixTokenizer } from "../data/templates/index.ts";
import type { ChatTemplate, TemplateOptions } from "../data/templates/index.ts";
import type { DType } from "../torch/index.ts";
import { type FinetuningOptions, type FinetuningResult, applyFinetuning, paramSummary, printParamStatus } from "./adapters/index.ts";
import type { CausalLM } from "./causal_lm.ts";
import { loadConfig } from "./config.ts";
import { resolveModelPath } from "./hub.ts";
import { loadWeights } from "./loader.ts";
import { type FlashAttn, patchConfig } from "./patches/config.ts";
import { resizeTokenEmbeddings } from "./patches/embedding.ts";
import { applyShiftedSparseAttention } from "./patches/longlora.ts";
import { upcastLayernorm } from "./patches/upcast.ts";
import { type QuantizationOptions, prepareQuantization } from "./quantization/index.ts";
import { architectureFor } from "./registry.ts";
import { UserError } from "../errors.ts";
import { type LoadTokenizerOptions, type Tokenizer, loadTokenizer } from "../data/tokenizer.ts";

export interface TokenizerOptions {
  modelNameOrPath: string;
  cacheDir?: string | null;
  revision?: string;
  tokenizer?: LoadTokenizerOptions;
  /** A built-in template name, "auto"/null for the tokenizer's own chat template. */
  template: string | null;
  templateOptions?: TemplateOptions;
}

export interface LoadedTokenizer {
  /** The resolved local folder of the model. */
  modelFolder: string;
  tokenizer: Tokenizer;
  template: ChatTemplate;
  /** Tokens the template added to the tokenizer (its stop words), which may grow the vocabulary. */
  addedTokens: number;
}

export interface ModelOptions {
  dtype: DType;
  device: string;
  /** Training (patches and adapters for training) or inference (frozen, adapters merged). */
  training: boolean;
  trainFromScratch?: boolean;
  flashAttn?: FlashAttn;
  ropeScaling?: "linear" | "dynamic" | "yarn" | "llama3" | null;
  /** The context the run needs (cutoff_len in training), for RoPE scaling. */
  modelMaxLength?: number | null;
  shiftAttn?: boolean;
  /** moe_aux_loss_coef: weight of a mixture of experts' router loss in training. */
  moeAuxLossCoef?: number | null;
  upcastLayernorm?: boolean;
  upcastLmheadOutput?: boolean;
  resizeVocab?: boolean;
  /** quantization_bit and its companions: quantize the weights while they load (QLoRA). */
  quantization?: QuantizationOptions | null;
  finetuning: FinetuningOptions;
  printParamStatus?: boolean;
  print?: (line: string) => void;
  /** Where notices go (warnings); `print` by default. */
  warn?: (line: string) => void;
  /** Called as checkpoint tensors are copied in (a terminal's progress bar). */
  onLoadProgress?: (done: number, total: number) => void;
}

export interface LoadedModel extends LoadedTokenizer {
  model: CausalLM;
  finetuning: FinetuningResult;
}

/** The tokenizer and chat template, before any model is loaded (so bad data fails early). */
export function loadTokenizerAndTemplate(options: TokenizerOptions): LoadedTokenizer {
  const modelFolder = resolveModelPath(options.modelNameOrPath, { cacheDir: options.cacheDir, revision: options.revision });
  const tokenizer = loadTokenizer(modelFolder, options.tokenizer);
  const { template, addedTokens } = getTemplateAndFixTokenizer(options.template, tokenizer, options.templateOptions);
  return { modelFolder, tokenizer, template, addedTokens };
}

/** Builds the model of `loaded.modelFolder` for training or inference, as LLaMA-Factory's load_model. */
export function loadModelFor(loaded: LoadedTokenizer, options: ModelOptions): LoadedModel {
  const print = options.print ?? (() => {});
  const { modelFolder, tokenizer } = loaded;
  const config = loadConfig(modelFolder);
  for (const notice of patchConfig(config, {
    flashAttn: options.flashAttn,
    ropeScaling: options.ropeScaling,
    modelMaxLength: options.modelMaxLength,
    shiftAttn: options.shiftAttn,
    training: options.training,
    moeAuxLossCoef: options.moeAuxLossCoef,
  })) {
    print(notice);
  }
  const model = architectureFor(config, join(modelFolder, "config.json")).build(config, {
    dtype: options.dtype,
    device: options.device,
    init: options.trainFromScratch ? "hf" : "empty",
  });
  try {
    if (options.trainFromScratch && (options.quantization || config.quantization_config)) {
      throw new UserError("train_from_scratch cannot start from a quantized model", "train_from_scratch", "drop quantization_bit (or use a full-precision config.json) to train from random weights");
    }
    if (!options.trainFromScratch) {
      // The quantized layers take their tensors as they stream in: no full-precision copy of them is ever held.
      const sink = prepareQuantization(model, modelFolder, { quantization: options.quantization, computeDtype: options.dtype, print, warn: options.warn ?? print });
      loadWeights(model, modelFolder, options.dtype, sink, options.onLoadProgress);
    }
    if (options.training && typeof config.group_size_ratio === "number") applyShiftedSparseAttention(model, config.group_size_ratio);
    model.upcastLogits = options.upcastLmheadOutput ?? false;
    if (options.upcastLayernorm) print(`upcast_layernorm: ${upcastLayernorm(model).length} norm weights kept in float32`);
    // Tokens from add_tokens / add_special_tokens grow the embeddings (LLaMA-Factory forces resize_vocab
    // for them); the template's stop words alone do not, as in LLaMA-Factory, which only warns.
    // At inference the prompt itself holds the template's tokens, so the embeddings must cover them.
    const ownLength = tokenizer.length - loaded.addedTokens;
    if (options.resizeVocab || ownLength > config.vocab_size || (!options.training && tokenizer.length > config.vocab_size)) {
      const before = config.vocab_size;
      const size = resizeTokenEmbeddings(model, tokenizer.length);
      if (size !== before) print(`resized the vocabulary to ${size} for ${tokenizer.length} tokens`);
    } else if (tokenizer.length > config.vocab_size) {
      const rows = config.vocab_size;
      const ids = Array.from({ length: tokenizer.length - rows }, (_, i) => rows + i);
      const names = (tokenizer.convertIdsToTokens(ids) as (string | null)[]).map((name, i) => `${name ?? "?"} (id ${ids[i]})`);
      (options.warn ?? print)(
        `the template added ${names.join(", ")} to the tokenizer, beyond the model's ${rows} embedding rows; the model keeps ` +
          `${rows} rows, so these tokens can only end generation. Set resize_vocab: true to grow the vocabulary to ` +
          `${Math.ceil(tokenizer.length / 64) * 64} (LLaMA-Factory: "New tokens have been added, make sure resize_vocab is True").`,
      );
    }
    const finetuning = applyFinetuning(model, { ...options.finetuning, isTrainable: options.training });
    if (options.training) print(paramSummary(model));
    if (options.printParamStatus) printParamStatus(model, print);
    if (!options.training) model.eval();
    return { ...loaded, model, finetuning };
  } catch (error) {
    model.dispose();
    throw error;
  }
}

/** Tokenizer, template and model in one call. */
export function loadPretrained(tokenizerOptions: TokenizerOptions, modelOptions: ModelOptions): LoadedModel {
  return loadModelFor(loadTokenizerAndTemplate(tokenizerOptions), modelOptions);
}
