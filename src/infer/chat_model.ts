// The chat engine, after LLaMA-Factory's ChatModel / HuggingfaceEngine: a model (with its adapters
// merged), its tokenizer and template; `chat(messages)` renders the conversation with the template,
// generates with the generation arguments and decodes the answer; `streamChat` yields text pieces.
import { getTemplateAndFixTokenizer } from "../data/templates/index.ts";
import type { ChatTemplate } from "../data/templates/template.ts";
import type { Message } from "../data/types.ts";
import { applyFinetuning } from "../model/adapters/index.ts";
import { contextLength, loadConfig } from "../model/config.ts";
import { type GenerateOptions, generate, generateStream, loadGenerationConfig } from "../model/generation.ts";
import { resolveModelPath } from "../model/hub.ts";
import { loadWeights } from "../model/loader.ts";
import { patchConfig } from "../model/patches/config.ts";
import { resizeTokenEmbeddings } from "../model/patches/embedding.ts";
import { architectureFor, type CausalLM } from "../model/registry.ts";
import { type Tokenizer, loadTokenizer } from "../model/tokenizer.ts";
import type { DType } from "../torch/index.ts";

export interface ChatModelOptions {
  modelNameOrPath: string;
  adapterNameOrPath?: string[] | null;
  cacheDir?: string | null;
  template?: string | null;
  defaultSystem?: string | null;
  enableThinking?: boolean | null;
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
  ) {}

  static load(options: ChatModelOptions, generation: GenerationSettings = {}): ChatModel {
    const folder = resolveModelPath(options.modelNameOrPath, { cacheDir: options.cacheDir });
    const tokenizer = loadTokenizer(folder);
    const { template, addedTokens } = getTemplateAndFixTokenizer(options.template, tokenizer, {
      defaultSystem: options.defaultSystem,
      enableThinking: options.enableThinking,
    });
    const config = loadConfig(folder);
    patchConfig(config, { flashAttn: options.flashAttn, ropeScaling: options.ropeScaling, training: false });
    // infer_dtype auto: float32 on CPU (bfloat16 when asked; float16 matmul needs CUDA).
    const dtype: DType = options.inferDtype === "bfloat16" ? "bfloat16" : options.inferDtype === "float16" ? "float16" : "float32";
    const model = architectureFor(config).build(config, { dtype, init: "empty" });
    loadWeights(model, folder, dtype);
    if (addedTokens > 0 || tokenizer.length > config.vocab_size) resizeTokenEmbeddings(model, tokenizer.length);
    applyFinetuning(model, { finetuningType: "lora", isTrainable: false, adapterNameOrPath: options.adapterNameOrPath ?? null });
    model.eval();
    const fromFolder = loadGenerationConfig(folder);
    return new ChatModel(model, tokenizer, template, { ...fromFolder, ...generation });
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

  /** One answer per conversation, decoded without special tokens. */
  chat(conversations: Message[][], settings: GenerationSettings = {}, system?: string): { text: string; finishReason: string; promptTokens: number; completionTokens: number }[] {
    const prompts = conversations.map((messages) => this.promptIds(messages, system));
    const { sequences, finishReasons } = generate(this.model, prompts, this.options(settings));
    return sequences.map((ids, i) => ({
      text: this.tokenizer.decode(ids, { skipSpecialTokens: true }),
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
      const text = this.tokenizer.decode(generated, { skipSpecialTokens: true });
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
