// The inference jobs' view of the parsed arguments (like a stage workflow, it alone of src/infer
// sees whole argument groups): the chat model to load and the generation defaults, shared by
// `lmf chat`, `lmf api` and anything else that serves a model.
import type { InferArgs } from "../hparams/index.ts";
import { generationSettingsFromArgs, inferDtype, modelOptionsFromArgs, tokenizerOptionsFromArgs } from "../model/from_args.ts";
import { loadPretrained } from "../model/pretrained.ts";
import type { ProgressBar } from "../terminal/progress.ts";
import { ChatModel } from "./chat_model.ts";

export { generationSettingsFromArgs } from "../model/from_args.ts";

/**
 * Loads the model, adapters, tokenizer and template the arguments name (the one loader), with their
 * generation defaults; `bar` (a terminal's) shows the weights loading.
 */
export function loadChatModelFromArgs(args: Pick<InferArgs, "model" | "data" | "finetuning"> & Partial<Pick<InferArgs, "generating">>, bar: ProgressBar | null = null): ChatModel {
  const { generating } = args;
  const onLoadProgress = bar ? (done: number, total: number) => bar.update("loading weights", done, total) : undefined;
  const loaded = loadPretrained(
    tokenizerOptionsFromArgs(args),
    modelOptionsFromArgs(args, { dtype: inferDtype(args.model), device: "cpu", training: false, onLoadProgress }),
  );
  bar?.end();
  const settings = generating ? { ...generationSettingsFromArgs(generating), useKvCache: args.model.use_kv_cache } : { useKvCache: args.model.use_kv_cache };
  return ChatModel.fromLoaded(loaded, settings, generating?.skip_special_tokens ?? true);
}
