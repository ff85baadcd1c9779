// The model arguments as the loader's flat options: the one mapping from LLaMA-Factory's model,
// data and finetuning groups to `loadTokenizerAndTemplate` / `loadModelFor`, shared by train,
// chat, api, eval and export (like a stage workflow, this file sees whole argument groups).
import { join } from "node:path";
import type { DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments } from "../hparams/index.ts";
import type { DType } from "../torch/index.ts";
import type { FinetuningOptions } from "./adapters/index.ts";
import type { GenerateOptions } from "./generation.ts";
import type { FlashAttn } from "./patches/config.ts";
import type { ModelOptions, TokenizerOptions } from "./pretrained.ts";

interface ArgGroups {
  model: ModelArguments;
  data: DataArguments;
  finetuning: FinetuningArguments;
}

/** Tokenizer and template options; `pt` without a template trains on plain text (the `empty` template). */
export function tokenizerOptionsFromArgs(args: ArgGroups, stage?: string): TokenizerOptions {
  const { model, data } = args;
  return {
    modelNameOrPath: model.model_name_or_path!,
    cacheDir: model.cache_dir,
    revision: model.model_revision,
    tokenizer: {
      splitSpecialTokens: model.split_special_tokens,
      addTokens: model.add_tokens ?? undefined,
      addSpecialTokens: model.add_special_tokens ?? undefined,
    },
    template: stage === "pt" && !data.template ? "empty" : data.template,
    templateOptions: {
      defaultSystem: data.default_system,
      enableThinking: data.enable_thinking,
      toolFormat: data.tool_format,
      trainOnPrompt: data.train_on_prompt,
    },
  };
}

/** The fine-tuning setup the arguments ask for (adapters to merge, resume or create). */
export function finetuningOptionsFromArgs(args: ArgGroups, dtype: DType): FinetuningOptions {
  const { model, finetuning } = args;
  return {
    finetuningType: finetuning.finetuning_type as "lora" | "freeze" | "full",
    freezeTrainableLayers: finetuning.freeze_trainable_layers,
    freezeTrainableModules: finetuning.freeze_trainable_modules,
    freezeExtraModules: finetuning.freeze_extra_modules,
    useLlamaPro: finetuning.use_llama_pro,
    loraRank: finetuning.lora_rank,
    loraAlpha: finetuning.lora_alpha,
    loraDropout: finetuning.lora_dropout,
    loraTarget: finetuning.lora_target,
    additionalTarget: finetuning.additional_target,
    useRslora: finetuning.use_rslora,
    useDora: finetuning.use_dora,
    pissaInit: finetuning.pissa_init,
    pissaIter: finetuning.pissa_iter,
    // adapter_folder: the subfolder of each adapter path that holds its files (PEFT's `subfolder`).
    adapterNameOrPath: model.adapter_folder ? (model.adapter_name_or_path?.map((path) => join(path, model.adapter_folder!)) ?? null) : model.adapter_name_or_path,
    createNewAdapter: finetuning.create_new_adapter,
    // LLaMA-Factory keeps trainable LoRA weights in float32 unless pure_bf16.
    loraDtype: finetuning.finetuning_type === "lora" && dtype !== "float32" && !finetuning.pure_bf16 ? "float32" : undefined,
    // bf16 (mixed precision, with autocast): the trainable weights become float32 master weights.
    // fp16 keeps its half-precision weights: its mixed precision needs loss scaling, not built.
    upcastTrainable: dtype === "bfloat16" && !finetuning.pure_bf16,
  };
}

/** Model options for training (`training`) or inference, in `dtype` on `device`. */
export function modelOptionsFromArgs(
  args: ArgGroups,
  options: {
    dtype: DType;
    device: string;
    training: boolean;
    modelMaxLength?: number | null;
    print?: (line: string) => void;
    warn?: (line: string) => void;
    onLoadProgress?: (done: number, total: number) => void;
  },
): ModelOptions {
  const { model } = args;
  return {
    dtype: options.dtype,
    device: options.device,
    training: options.training,
    trainFromScratch: model.train_from_scratch,
    flashAttn: model.flash_attn as FlashAttn,
    ropeScaling: model.rope_scaling as ModelOptions["ropeScaling"],
    modelMaxLength: options.modelMaxLength,
    shiftAttn: model.shift_attn,
    moeAuxLossCoef: model.moe_aux_loss_coef,
    // As LLaMA-Factory's prepare_model_for_training: the upcasts are for training only.
    upcastLayernorm: options.training && model.upcast_layernorm,
    upcastLmheadOutput: options.training && model.upcast_lmhead_output,
    resizeVocab: model.resize_vocab,
    quantization:
      model.quantization_bit === null
        ? null
        : {
            method: model.quantization_method,
            bits: model.quantization_bit,
            type: model.quantization_type as "nf4" | "fp4",
            doubleQuant: model.double_quantization,
          },
    finetuning: finetuningOptionsFromArgs(args, options.dtype),
    printParamStatus: model.print_param_status,
    print: options.print,
    warn: options.warn,
    onLoadProgress: options.onLoadProgress,
  };
}

/** infer_dtype: auto is float32 on CPU (bfloat16 when asked; float16 matmul needs CUDA). */
export function inferDtype(model: ModelArguments): DType {
  return model.infer_dtype === "bfloat16" ? "bfloat16" : model.infer_dtype === "float16" ? "float16" : "float32";
}

/** The generating arguments as generation settings (the one mapping: chat, api, eval and sft's predict). */
export function generationSettingsFromArgs(generating: GeneratingArguments): Omit<GenerateOptions, "eosTokenId" | "padTokenId"> {
  return {
    doSample: generating.do_sample,
    temperature: generating.temperature,
    topP: generating.top_p,
    topK: generating.top_k,
    numBeams: generating.num_beams,
    maxLength: generating.max_length,
    maxNewTokens: generating.max_new_tokens,
    repetitionPenalty: generating.repetition_penalty,
    lengthPenalty: generating.length_penalty,
  };
}
