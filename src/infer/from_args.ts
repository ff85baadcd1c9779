// The inference jobs' view of the parsed arguments (like a stage workflow, it alone of src/infer
// sees whole argument groups): the chat model to load and the generation defaults, shared by
// `lmf chat`, `lmf api` and anything else that serves a model.
import type { InferArgs } from "../hparams/index.ts";
import { ChatModel, type GenerationSettings } from "./chat_model.ts";

export function generationSettingsFromArgs(generating: InferArgs["generating"]): GenerationSettings {
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

/** Loads the model, adapters, tokenizer and template the arguments name, with their generation defaults. */
export function loadChatModelFromArgs(args: InferArgs): ChatModel {
  const { model, data, generating } = args;
  return ChatModel.load(
    {
      modelNameOrPath: model.model_name_or_path!,
      adapterNameOrPath: model.adapter_name_or_path,
      cacheDir: model.cache_dir,
      revision: model.model_revision,
      tokenizer: {
        splitSpecialTokens: model.split_special_tokens,
        addTokens: model.add_tokens ?? undefined,
        addSpecialTokens: model.add_special_tokens ?? undefined,
      },
      template: data.template,
      defaultSystem: data.default_system,
      enableThinking: data.enable_thinking,
      toolFormat: data.tool_format,
      skipSpecialTokens: generating.skip_special_tokens,
      inferDtype: model.infer_dtype as "auto" | "float32" | "bfloat16" | "float16",
      flashAttn: model.flash_attn as "auto" | "disabled" | "sdpa" | "fa2" | "fa3",
      ropeScaling: model.rope_scaling as "linear" | "dynamic" | "yarn" | "llama3" | null,
    },
    { ...generationSettingsFromArgs(generating), useKvCache: model.use_kv_cache },
  );
}
