// `template: auto` (or none): the tokenizer's own Jinja `chat_template`, rendered with
// @huggingface/jinja as transformers' `apply_chat_template` would. The conversation is rendered
// prefix by prefix (each prompt with the generation prompt, each answer as the last message) and
// the differences become the prompt and answer segments, so only answers are trained.
import { Template as JinjaRenderer } from "@huggingface/jinja";
import { UserError } from "../../errors.ts";
import type { Tokenizer } from "../tokenizer.ts";
import type { Message } from "../types.ts";
import type { ChatTemplate, EncodeMultiturnOptions } from "./template.ts";
import { type FunctionCall, TOOL_FORMATS, parseFunctionCalls } from "./tools.ts";

/** A message as chat templates expect it (OpenAI/transformers conversation format). */
interface ChatMessage {
  role: string;
  content: string;
  tool_calls?: Array<{ type: "function"; function: { name: string; arguments: unknown } }>;
}

const PROBE_USER = "lmfProbeUser";
const PROBE_ANSWER = "lmfProbeAnswer";
const PROBE_NEXT = "lmfProbeNext";

function commonPrefixLength(a: string, b: string): number {
  const limit = Math.min(a.length, b.length);
  let i = 0;
  while (i < limit && a.charCodeAt(i) === b.charCodeAt(i)) i += 1;
  return i;
}

function commonSuffixLength(a: string, b: string): number {
  const limit = Math.min(a.length, b.length);
  let i = 0;
  while (i < limit && a.charCodeAt(a.length - 1 - i) === b.charCodeAt(b.length - 1 - i)) i += 1;
  return i;
}

/**
 * The first token boundary of `text` at or after `position`: a character-level common suffix can
 * start inside a token (the `|>` that ends both `<|begin_of_text|>` and `<|eot_id|>`).
 */
function tokenBoundaryAtOrAfter(tokenizer: Tokenizer, text: string, position: number): number {
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  for (let count = 0; count <= ids.length; count += 1) {
    const length = tokenizer.decode(ids.slice(0, count)).length;
    if (length >= position) return length;
  }
  return text.length;
}

/** Chat templates read tools in the OpenAI shape; bare function schemas are wrapped as transformers users pass them. */
function wrapTool(tool: unknown): unknown {
  if (tool && typeof tool === "object" && (tool as Record<string, unknown>).type === "function") return tool;
  return { type: "function", function: tool };
}

export class JinjaTemplate implements ChatTemplate {
  readonly name = "auto";
  readonly efficientEos = false;
  readonly stopWords: readonly string[] = [];
  defaultSystem = "";
  enableThinking: boolean | null = true;
  preserveThinking = false;
  private readonly renderer: JinjaRenderer;
  /** Text such a template appends after every conversation whatever `add_generation_prompt` says; null when it obeys the flag. */
  private forcedGenerationPrompt: string | null | undefined;

  constructor(readonly source: string) {
    try {
      this.renderer = new JinjaRenderer(source);
    } catch (error) {
      throw new UserError(`the tokenizer's chat_template does not parse: ${(error as Error).message}`, "tokenizer_config.json", "set `template` to a built-in template name");
    }
  }

  /** transformers' `apply_chat_template(..., tokenize=False)`. */
  render(tokenizer: Tokenizer, messages: ChatMessage[], addGenerationPrompt: boolean, tools?: unknown[]): string {
    const context: Record<string, unknown> = {
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: tokenizer.bosToken ?? "",
      eos_token: tokenizer.eosToken ?? "",
      pad_token: tokenizer.padToken ?? "",
      unk_token: tokenizer.unkToken ?? "",
    };
    if (tools && tools.length > 0) context.tools = tools;
    if (this.enableThinking !== null) context.enable_thinking = this.enableThinking;
    try {
      return this.renderer.render(context);
    } catch (error) {
      throw new UserError(`the tokenizer's chat_template failed to render: ${(error as Error).message}`, "chat_template", "set `template` to a built-in template name");
    }
  }

  /** The conversation in the format chat templates read: the system first, function calls as `tool_calls`, observations as `tool`. */
  chatMessages(messages: Message[], system?: string, tools?: string): { chat: ChatMessage[]; tools: unknown[] | undefined } {
    const chat: ChatMessage[] = [];
    const systemText = system || this.defaultSystem;
    if (systemText) chat.push({ role: "system", content: systemText });
    for (const message of messages) {
      switch (message.role) {
        case "user":
        case "assistant":
          chat.push({ role: message.role, content: message.content });
          break;
        case "observation":
          chat.push({ role: "tool", content: message.content });
          break;
        case "function": {
          const match = /<tool_call>([\s\S]*?)<\/tool_call>/.exec(message.content);
          const json = match ? match[1]! : message.content;
          const calls = parseFunctionCalls(json, message.content);
          chat.push({
            role: "assistant",
            content: match ? message.content.replace(match[0], "") : "",
            tool_calls: calls.map((call) => ({ type: "function", function: { name: call.name, arguments: JSON.parse(call.arguments) as unknown } })),
          });
          break;
        }
        default:
          throw new UserError(`unexpected role "${message.role}"`, "conversation", "the system goes in _system, not in the messages");
      }
    }
    let toolList: unknown[] | undefined;
    if (tools) {
      try {
        const parsed = JSON.parse(tools) as unknown;
        toolList = (Array.isArray(parsed) ? parsed : [parsed]).map(wrapTool);
      } catch {
        throw new UserError(`invalid JSON in tool description: ${JSON.stringify(tools.slice(0, 200))}`, "_tools", "give tools as a JSON list of function schemas");
      }
    }
    return { chat, tools: toolList };
  }

  /**
   * The text of each message, in order: message i's segment is what rendering messages[0..i]
   * adds to the rendering of messages[0..i-1] (prompts with the generation prompt, answers as the
   * conversation's end).
   */
  segments(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string): string[] {
    const { chat, tools: toolList } = this.chatMessages(messages, system, tools);
    const offset = chat.length - messages.length;
    const forced = this.generationSuffix(tokenizer);
    let previous = "";
    const segments: string[] = [];
    for (let i = 0; i < messages.length; i += 1) {
      const isPromptEnd = i % 2 === 0;
      let text = this.render(tokenizer, chat.slice(0, offset + i + 1), isPromptEnd, toolList);
      if (!isPromptEnd && forced && text.endsWith(forced)) text = text.slice(0, text.length - forced.length);
      segments.push(this.newPart(previous, text, i));
      previous = text;
    }
    return segments;
  }

  encodeOneturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string): [number[], number[]] {
    const ids = this.segments(tokenizer, messages, system, tools).map((text) => tokenizer.encode(text, { addSpecialTokens: false }));
    return [ids.slice(0, -1).flat(), ids[ids.length - 1] ?? []];
  }

  encodeMultiturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string, _options?: EncodeMultiturnOptions): Array<[number[], number[]]> {
    return this.renderMultiturn(tokenizer, messages, system, tools).map(([source, target]) => [
      tokenizer.encode(source, { addSpecialTokens: false }),
      tokenizer.encode(target, { addSpecialTokens: false }),
    ]);
  }

  renderMultiturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string, _options?: EncodeMultiturnOptions): Array<[string, string]> {
    const segments = this.segments(tokenizer, messages, system, tools);
    const pairs: Array<[string, string]> = [];
    for (let i = 0; i < segments.length; i += 2) pairs.push([segments[i]!, segments[i + 1] ?? ""]);
    return pairs;
  }

  getStopTokenIds(tokenizer: Tokenizer): number[] {
    const ids = new Set<number>();
    if (tokenizer.eosTokenId !== null) ids.add(tokenizer.eosTokenId);
    // The template's own turn end is usually generation_config's eos (Llama 3's <|eot_id|>).
    const configured = tokenizer.generationConfig?.eos_token_id;
    for (const id of Array.isArray(configured) ? configured : [configured]) if (typeof id === "number") ids.add(id);
    return [...ids];
  }

  extractTool(content: string): string | FunctionCall[] {
    return TOOL_FORMATS.qwen!.toolExtractor(content);
  }

  fixSpecialTokens(tokenizer: Tokenizer): number {
    let added = 0;
    if (tokenizer.eosTokenId === null) added += tokenizer.addSpecialTokens({ eos_token: "<|endoftext|>" });
    if (tokenizer.padTokenId === null) tokenizer.padToken = tokenizer.eosToken;
    return added;
  }

  /**
   * What `text` adds to the previous rendering. When the template renders the last answer
   * differently once more turns follow (Qwen3 drops its thought), the previous rendering's tail is
   * re-found in `text` where the two part, and what follows it is new.
   */
  private newPart(previous: string, text: string, index: number): string {
    if (text.startsWith(previous)) return text.slice(previous.length);
    const common = commonPrefixLength(previous, text);
    // The common prefix may run a few characters into the changed part ("<t" of "<think>" and "<tool_call>").
    for (let split = common; split >= Math.max(0, common - 64); split -= 1) {
      const first = text.charCodeAt(split);
      for (let size = previous.length - split; size > 0; size -= 1) {
        const start = previous.length - size;
        if (previous.charCodeAt(start) === first && text.startsWith(previous.slice(start), split)) return text.slice(split + size);
      }
    }
    throw new UserError(
      `the tokenizer's chat_template renders message ${index} in a way that cannot be split into prompt and answer`,
      "chat_template",
      "set `template` to the built-in template of this model family",
    );
  }

  /**
   * Some templates (Llama 3 base) append the assistant header whether or not a generation prompt is
   * asked for. That header is found by probing: the text after an answer at the end, minus the
   * answer's closing, which is what comes between an answer and a following user turn less the
   * user turn's opening.
   */
  private generationSuffix(tokenizer: Tokenizer): string | null {
    if (this.forcedGenerationPrompt !== undefined) return this.forcedGenerationPrompt;
    const user = { role: "user", content: PROBE_USER };
    const answer = { role: "assistant", content: PROBE_ANSWER };
    const plain = this.render(tokenizer, [user], false);
    if (plain !== this.render(tokenizer, [user], true)) {
      this.forcedGenerationPrompt = null;
      return null;
    }
    const ended = this.render(tokenizer, [user, answer], false);
    const continued = this.render(tokenizer, [user, answer, { role: "user", content: PROBE_NEXT }], false);
    const tailEnd = ended.slice(ended.lastIndexOf(PROBE_ANSWER) + PROBE_ANSWER.length);
    const afterAnswer = continued.indexOf(PROBE_ANSWER) + PROBE_ANSWER.length;
    const between = continued.slice(afterAnswer, continued.indexOf(PROBE_NEXT, afterAnswer));
    const common = commonSuffixLength(plain.slice(0, plain.indexOf(PROBE_USER)), between);
    const closing = between.slice(0, tokenBoundaryAtOrAfter(tokenizer, between, between.length - common));
    this.forcedGenerationPrompt = tailEnd.startsWith(closing) && tailEnd.length > closing.length ? tailEnd.slice(closing.length) : null;
    return this.forcedGenerationPrompt;
  }
}
