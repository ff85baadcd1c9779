// ChatModel for the library API, after LLaMA-Factory's `ChatModel(args)`: loaded from the same
// arguments as `lmf chat` (a config path, CLI tokens or LLaMA-Factory keys); `chat` returns
// responses shaped as its `Response`, `streamChat` yields the answer's text pieces.
import type { Message } from "../data/types.ts";
import type { InferArgs, ParseOptions } from "../hparams/index.ts";
import type { ChatModel as ChatEngine, GenerationSettings } from "../infer/chat_model.ts";
import { type JobInput, parseArgs } from "./args.ts";

export type { Message } from "../data/types.ts";
export type { GenerationSettings } from "../infer/chat_model.ts";

/** LLaMA-Factory's `Response`: the answer, its length and the prompt's in tokens, why it ended ("stop" or "length"). */
export interface ChatResponse {
  responseText: string;
  responseLength: number;
  promptLength: number;
  finishReason: string;
}

/** Generation settings for one call (over the config's generating arguments), and a system prompt. */
export interface ChatOptions extends GenerationSettings {
  system?: string;
}

export class ChatModel {
  private constructor(
    /** The engine underneath (model, tokenizer, template). */
    readonly engine: ChatEngine,
    /** The parsed arguments it was loaded from. */
    readonly args: InferArgs,
  ) {}

  /** Loads the model, adapters (merged), tokenizer and template the arguments name, as `lmf chat` does. */
  static async load(input: JobInput<"chat">, options: Pick<ParseOptions, "onWarning"> = {}): Promise<ChatModel> {
    const args = parseArgs(input, "chat", { onWarning: options.onWarning });
    const { loadChatModelFromArgs } = await import("../infer/from_args.ts");
    return new ChatModel(loadChatModelFromArgs(args), args);
  }

  /** The answer to a conversation that ends with a user turn. */
  chat(messages: Message[], options: ChatOptions = {}): ChatResponse[] {
    const { system, ...settings } = options;
    return this.engine.chat([messages], settings, system).map((answer) => ({
      responseText: answer.text,
      responseLength: answer.completionTokens,
      promptLength: answer.promptTokens,
      finishReason: answer.finishReason,
    }));
  }

  /** The answer as text pieces while it is generated. */
  *streamChat(messages: Message[], options: ChatOptions = {}): Generator<string> {
    const { system, ...settings } = options;
    yield* this.engine.streamChat(messages, settings, system);
  }

  /** Frees the model's tensors. */
  dispose(): void {
    this.engine.dispose();
  }
}
