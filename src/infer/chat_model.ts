// The chat engine, after LLaMA-Factory's ChatModel / HuggingfaceEngine: a model (with its adapters
// merged), its tokenizer and template; `chat(messages)` renders the conversation with the template,
// generates with the generation arguments and decodes the answer; `streamChat` yields text pieces.
import type { ChatTemplate } from "../data/templates/template.ts";
import type { Message } from "../data/types.ts";
import type { CausalLM } from "../model/causal_lm.ts";
import { contextLength } from "../model/config.ts";
import { type GenerateOptions, generate, generateStream, loadGenerationConfig } from "../model/generation.ts";
import { type LoadedModel, loadPretrained } from "../model/pretrained.ts";
import type { LoadTokenizerOptions, Tokenizer } from "../data/tokenizer.ts";

export interface ChatModelOptions {
  modelNameOrPath: string;
  adapterNameOrPath?: string[] | null;
  cacheDir?: string | null;
  /** Branch, tag or commit of a hub id in the cache (`model_revision`). */
  revision?: string;
  /** `split_special_tokens`, `add_tokens`, `add_special_tokens`. */
  tokenizer?: LoadTokenizerOptions;
  template?: string | null;
  defaultSystem?: string | null;
  enableThinking?: boolean | null;
  /** Overrides the template's tool format (`tool_format`). */
  toolFormat?: string | null;
  /** Drop special tokens from answers (`skip_special_tokens`, default true). */
  skipSpecialTokens?: boolean;
  inferDtype?: "auto" | "float32" | "bfloat16" | "float16";
  flashAttn?: "auto" | "disabled" | "sdpa" | "fa2" | "fa3";
  ropeScaling?: "linear" | "dynamic" | "yarn" | "llama3" | null;
}

/** Generation settings a request may set (GeneratingArguments in camelCase). */
export type GenerationSettings = Omit<GenerateOptions, "eosTokenId" | "padTokenId">;

export class ChatModel {
  private constructor(
    readonly model: CausalLM,
    readonly tokenizer: Tokenizer,
    readonly template: ChatTemplate,
    readonly defaults: GenerationSettings,
    readonly skipSpecialTokens: boolean,
  ) {}

  /** A model loaded for inference by the one loader, with the folder's generation_config.json under `generation`. */
  static fromLoaded(loaded: LoadedModel, generation: GenerationSettings = {}, skipSpecialTokens = true): ChatModel {
    const fromFolder = loadGenerationConfig(loaded.modelFolder);
    return new ChatModel(loaded.model, loaded.tokenizer, loaded.template, { ...fromFolder, ...generation }, skipSpecialTokens);
  }

  /** The library entry point: a model folder, its LoRA adapters (merged) and a template. */
  static load(options: ChatModelOptions, generation: GenerationSettings = {}): ChatModel {
    // infer_dtype auto: float32 on CPU (bfloat16 when asked; float16 matmul needs CUDA).
    const dtype = options.inferDtype === "bfloat16" ? "bfloat16" : options.inferDtype === "float16" ? "float16" : "float32";
    const loaded = loadPretrained(
      {
        modelNameOrPath: options.modelNameOrPath,
        cacheDir: options.cacheDir,
        revision: options.revision,
        tokenizer: options.tokenizer,
        template: options.template ?? null,
        templateOptions: { defaultSystem: options.defaultSystem, enableThinking: options.enableThinking, toolFormat: options.toolFormat },
      },
      {
        dtype,
        device: "cpu",
        training: false,
        flashAttn: options.flashAttn,
        ropeScaling: options.ropeScaling,
        finetuning: { finetuningType: "lora", adapterNameOrPath: options.adapterNameOrPath ?? null },
      },
    );
    return ChatModel.fromLoaded(loaded, generation, options.skipSpecialTokens ?? true);
  }

  /** An answer's text: generated ids decoded, special tokens dropped unless `skip_special_tokens: false`. */
  decode(ids: readonly number[]): string {
    return this.tokenizer.decode(ids, { skipSpecialTokens: this.skipSpecialTokens });
  }

  /** The longest prompt + answer the model serves (its config after the rope_scaling patch). */
  get contextLength(): number {
    return contextLength(this.model.config);
  }

  /** The prompt ids for a conversation that ends with a user (or observation) turn. */
  promptIds(messages: Message[], system?: string, tools?: string): number[] {
    return this.template.encodeOneturn(this.tokenizer, [...messages, { role: "assistant", content: "" }], system, tools)[0];
  }

  private options(overrides: GenerationSettings): GenerateOptions {
    const stopIds = this.template.getStopTokenIds(this.tokenizer);
    return { ...this.defaults, ...overrides, eosTokenId: stopIds, padTokenId: this.tokenizer.padTokenId ?? stopIds[0] ?? 0 };
  }

  /** One answer per conversation, decoded as `decode` does. */
  chat(conversations: Message[][], settings: GenerationSettings = {}, system?: string): { text: string; finishReason: string; promptTokens: number; completionTokens: number }[] {
    const prompts = conversations.map((messages) => this.promptIds(messages, system));
    const { sequences, finishReasons } = generate(this.model, prompts, this.options(settings));
    return sequences.map((ids, i) => ({
      text: this.decode(ids),
      finishReason: finishReasons[i]!,
      promptTokens: prompts[i]!.length,
      completionTokens: ids.length,
    }));
  }

  /** The answer as text pieces while it is generated (each piece decodes cleanly). */
  *streamChat(messages: Message[], settings: GenerationSettings = {}, system?: string): Generator<string> {
    const generated: number[] = [];
    let emitted = "";
    const stops = new Set(this.template.getStopTokenIds(this.tokenizer));
    for (const token of generateStream(this.model, this.promptIds(messages, system), this.options(settings))) {
      if (stops.has(token)) break;
      generated.push(token);
      const text = this.decode(generated);
      // Hold back a piece that ends inside a multi-byte character.
      if (text.endsWith("\uFFFD")) continue;
      yield text.slice(emitted.length);
      emitted = text;
    }
  }

  dispose(): void {
    this.model.dispose();
  }
}
