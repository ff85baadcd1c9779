// The chat-template mechanism of LLaMA-Factory (`data/template.py`, `data/formatter.py`): slots,
// the per-message encoding (each slot tokenised on its own, without special tokens), the
// Llama-2 style (system folded into the first user turn) and the reasoning style (empty
// `<think>` blocks, thought stripping), EOS/pad fix-up and stop words.
import { UserError } from "../../errors.ts";
import type { Tokenizer } from "../tokenizer.ts";
import type { Message } from "../types.ts";
import { type FunctionCall, type ToolUtils, formatTools, getToolUtils, parseFunctionCalls } from "./tools.ts";

/**
 * One piece of a formatted message: text (with `{{content}}` / `{{idx}}` placeholders in a
 * template), the tokenizer's BOS or EOS id, or the id of a named token.
 */
export type Slot = string | { special: "bos_token" | "eos_token" } | { token: string };

export const BOS: Slot = { special: "bos_token" };
export const EOS: Slot = { special: "eos_token" };
export const token = (name: string): Slot => ({ token: name });

/** How a template lays turns out: LLaMA-Factory's Template, Llama2Template or ReasoningTemplate. */
export type TemplateStyle = "default" | "llama2" | "reasoning";

/** A template as registered (LLaMA-Factory's `register_template` arguments); unset slots get its defaults. */
export interface TemplateSpec {
  user?: Slot[];
  assistant?: Slot[];
  system?: Slot[];
  /** Slots around a function-call message; defaults to the assistant slots. */
  function?: Slot[];
  observation?: Slot[];
  prefix?: Slot[];
  /** Tool format of both the function-call text and the tool list in the system prompt. */
  toolFormat?: string;
  /** A plain slot the tool list's JSON is written into instead (LLaMA-Factory's StringFormatter format_tools). */
  tools?: string;
  defaultSystem?: string;
  stopWords?: string[];
  thoughtWords?: [string, string];
  toolCallWords?: [string, string];
  efficientEos?: boolean;
  replaceEos?: boolean;
  replaceJinjaTemplate?: boolean;
  style?: TemplateStyle;
}

export interface EncodeMultiturnOptions {
  /** Strip the thoughts of earlier turns and add an empty thought to the last one only (mask_history without preserve_thinking). */
  discardingHistoryCot?: boolean;
}

/** What the processors and the chat engine need from a template, built-in or the tokenizer's Jinja one. */
export interface ChatTemplate {
  readonly name: string;
  readonly efficientEos: boolean;
  readonly stopWords: readonly string[];
  defaultSystem: string;
  enableThinking: boolean | null;
  preserveThinking: boolean;
  /** (prompt ids, response ids): everything before the last message, and the last message. */
  encodeOneturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string): [number[], number[]];
  /** One (source ids, target ids) pair per user/assistant turn. */
  encodeMultiturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string, options?: EncodeMultiturnOptions): Array<[number[], number[]]>;
  /** The same pairs as text, for inspection and golden tests. */
  renderMultiturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string, options?: EncodeMultiturnOptions): Array<[string, string]>;
  getStopTokenIds(tokenizer: Tokenizer): number[];
  extractTool(content: string): string | FunctionCall[];
  /** Sets EOS/pad and adds stop words as special tokens; returns how many tokens were new. */
  fixSpecialTokens(tokenizer: Tokenizer): number;
}

const PLACEHOLDER = /\{\{([a-zA-Z_][a-zA-Z0-9_]*)\}\}/g;

/** Fills the placeholders of a slot list; each placeholder's first occurrence in a slot is replaced (the content itself is never rescanned). */
export function fillSlots(slots: readonly Slot[], values: Record<string, string>): Slot[] {
  return slots.map((slot) => {
    if (typeof slot !== "string") return slot;
    const used = new Set<string>();
    return slot.replace(PLACEHOLDER, (whole, name: string) => {
      if (!(name in values) || used.has(name)) return whole;
      used.add(name);
      return values[name]!;
    });
  });
}

function tokenId(tokenizer: Tokenizer, name: string): number {
  const id = tokenizer.convertTokensToIds(name);
  if (id === null) {
    throw new UserError(`the template needs the token ${JSON.stringify(name)}, which this tokenizer lacks`, "template", "use the template that matches the model family");
  }
  return id;
}

/** Slots to ids: each text slot is encoded on its own without special tokens, so BPE merges never cross slots. */
export function slotsToIds(tokenizer: Tokenizer, slots: readonly Slot[]): number[] {
  const ids: number[] = [];
  for (const slot of slots) {
    if (typeof slot === "string") {
      if (slot.length > 0) ids.push(...tokenizer.encode(slot, { addSpecialTokens: false }));
    } else if ("token" in slot) {
      ids.push(tokenId(tokenizer, slot.token));
    } else {
      const id = slot.special === "bos_token" ? tokenizer.bosTokenId : tokenizer.eosTokenId;
      if (id !== null) ids.push(id);
    }
  }
  return ids;
}

/** Slots to the text they stand for (special slots become their token strings). */
export function slotsToText(tokenizer: Tokenizer, slots: readonly Slot[]): string {
  let text = "";
  for (const slot of slots) {
    if (typeof slot === "string") text += slot;
    else if ("token" in slot) text += slot.token;
    else text += (slot.special === "bos_token" ? tokenizer.bosToken : tokenizer.eosToken) ?? "";
  }
  return text;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export class Template implements ChatTemplate {
  readonly name: string;
  readonly formatUser: Slot[];
  readonly formatAssistant: Slot[];
  readonly formatSystem: Slot[];
  formatFunction: Slot[];
  readonly formatObservation: Slot[];
  readonly formatPrefix: Slot[];
  functionTools: ToolUtils;
  toolTools: ToolUtils;
  /** The tool list's plain slot, if the template has one (cleared by a tool_format override). */
  toolsSlot: string | null;
  defaultSystem: string;
  readonly stopWords: readonly string[];
  readonly thoughtWords: readonly [string, string];
  readonly toolCallWords: readonly [string, string];
  readonly efficientEos: boolean;
  readonly replaceEos: boolean;
  readonly replaceJinjaTemplate: boolean;
  readonly style: TemplateStyle;
  enableThinking: boolean | null = true;
  preserveThinking = false;
  /** "Today" for tool prompts that print the date (llama3). */
  toolDate: () => Date = () => new Date();

  constructor(name: string, spec: TemplateSpec) {
    this.name = name;
    this.efficientEos = spec.efficientEos ?? false;
    // LLaMA-Factory's register_template defaults: the assistant ends with EOS unless the EOS is written by the processor.
    const defaultSlots: Slot[] = this.efficientEos ? ["{{content}}"] : ["{{content}}", EOS];
    this.formatUser = spec.user ?? ["{{content}}"];
    this.formatAssistant = spec.assistant ?? defaultSlots;
    this.formatSystem = spec.system ?? ["{{content}}"];
    this.formatFunction = spec.function ?? spec.assistant ?? defaultSlots;
    this.formatObservation = spec.observation ?? spec.user ?? ["{{content}}"];
    this.formatPrefix = spec.prefix ?? [];
    this.functionTools = getToolUtils(spec.toolFormat ?? "default");
    this.toolTools = this.functionTools;
    this.toolsSlot = spec.tools ?? null;
    this.defaultSystem = spec.defaultSystem ?? "";
    this.stopWords = spec.stopWords ?? [];
    this.thoughtWords = spec.thoughtWords ?? ["<think>\n", "\n</think>\n\n"];
    this.toolCallWords = spec.toolCallWords ?? ["<tool_call>", "</tool_call>"];
    this.replaceEos = spec.replaceEos ?? false;
    this.replaceJinjaTemplate = spec.replaceJinjaTemplate ?? false;
    this.style = spec.style ?? "default";
  }

  /** `tool_format` in DataArguments: both tool formatters change and the function slots become the defaults. */
  setToolFormat(name: string): void {
    this.functionTools = getToolUtils(name);
    this.toolTools = this.functionTools;
    this.toolsSlot = null;
    this.formatFunction = this.efficientEos ? ["{{content}}"] : ["{{content}}", EOS];
  }

  encodeOneturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string): [number[], number[]] {
    const [prompt, response] = this.oneturnSlots(messages, system, tools);
    return [slotsToIds(tokenizer, prompt), slotsToIds(tokenizer, response)];
  }

  /** `encodeOneturn` as text. */
  renderOneturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string): [string, string] {
    const [prompt, response] = this.oneturnSlots(messages, system, tools);
    return [slotsToText(tokenizer, prompt), slotsToText(tokenizer, response)];
  }

  encodeMultiturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string, options: EncodeMultiturnOptions = {}): Array<[number[], number[]]> {
    return this.multiturnSlots(messages, system, tools, options).map(([source, target]) => [slotsToIds(tokenizer, source), slotsToIds(tokenizer, target)]);
  }

  renderMultiturn(tokenizer: Tokenizer, messages: Message[], system?: string, tools?: string, options: EncodeMultiturnOptions = {}): Array<[string, string]> {
    return this.multiturnSlots(messages, system, tools, options).map(([source, target]) => [slotsToText(tokenizer, source), slotsToText(tokenizer, target)]);
  }

  getStopTokenIds(tokenizer: Tokenizer): number[] {
    const ids = new Set<number>();
    if (tokenizer.eosTokenId !== null) ids.add(tokenizer.eosTokenId);
    for (const word of this.stopWords) {
      const id = tokenizer.convertTokensToIds(word);
      if (id !== null) ids.add(id);
    }
    return [...ids];
  }

  extractTool(content: string): string | FunctionCall[] {
    return this.toolTools.toolExtractor(content);
  }

  fixSpecialTokens(tokenizer: Tokenizer): number {
    let added = 0;
    let stopWords = [...this.stopWords];
    if (this.replaceEos) {
      if (stopWords.length === 0) throw new UserError(`template ${this.name} replaces the EOS token but has no stop words`);
      if (tokenizer.eosToken !== stopWords[0]) added += tokenizer.addSpecialTokens({ eos_token: stopWords[0] });
      stopWords = stopWords.slice(1);
    }
    if (tokenizer.eosTokenId === null) added += tokenizer.addSpecialTokens({ eos_token: "<|endoftext|>" });
    if (tokenizer.padTokenId === null) tokenizer.padToken = tokenizer.eosToken;
    if (stopWords.length > 0) added += tokenizer.addSpecialTokens({ additional_special_tokens: stopWords });
    return added;
  }

  /** Removes `<think>...</think>` blocks (LLaMA-Factory's `remove_thought`). */
  removeThought(content: string): string {
    const pattern = new RegExp(`${escapeRegExp(this.thoughtWords[0])}([\\s\\S]*?)${escapeRegExp(this.thoughtWords[1])}`, "g");
    return content.replace(pattern, "").replace(/^\n+/, "");
  }

  private hasThought(content: string): boolean {
    return content.includes(this.thoughtWords[0].trim()) || content.includes(this.thoughtWords[1].trim());
  }

  private emptyThought(): string {
    return this.thoughtWords[0] + this.thoughtWords[1];
  }

  private oneturnSlots(messages: Message[], system?: string, tools?: string): [Slot[], Slot[]] {
    let turns = messages;
    if (this.style === "reasoning") {
      turns = messages.map((message) => ({ ...message }));
      if (!this.preserveThinking) {
        for (let i = 1; i < turns.length - 2; i += 2) turns[i]!.content = this.removeThought(turns[i]!.content);
      }
      if (this.enableThinking === false) turns[turns.length - 1]!.content = this.removeThought(turns[turns.length - 1]!.content);
    }
    const encoded = this.messageSlots(turns, system, tools);
    const prompt = encoded.slice(0, -1).flat();
    let response = encoded[encoded.length - 1] ?? [];
    if (this.style === "reasoning" && !this.hasThought(turns[turns.length - 1]!.content)) {
      // An answer without a thought gets an empty one: trained when thinking is on, part of the prompt otherwise.
      if (!this.enableThinking) prompt.push(this.emptyThought());
      else response = [this.emptyThought(), ...response];
    }
    return [prompt, response];
  }

  private multiturnSlots(messages: Message[], system: string | undefined, tools: string | undefined, options: EncodeMultiturnOptions): Array<[Slot[], Slot[]]> {
    let turns = messages;
    let thoughtTurns: number[] = [];
    if (this.style === "reasoning") {
      turns = messages.map((message) => ({ ...message }));
      if (this.enableThinking === false) {
        for (let i = 1; i < turns.length; i += 2) turns[i]!.content = this.removeThought(turns[i]!.content);
      }
      if (options.discardingHistoryCot) {
        for (let i = 1; i < turns.length - 2; i += 2) turns[i]!.content = this.removeThought(turns[i]!.content);
        thoughtTurns = [turns.length - 2];
      } else {
        for (let i = 0; i < turns.length; i += 2) thoughtTurns.push(i);
      }
    }
    const encoded = this.messageSlots(turns, system, tools);
    for (const i of thoughtTurns) {
      if (this.hasThought(turns[i + 1]!.content)) continue;
      if (!this.enableThinking) encoded[i] = [...encoded[i]!, this.emptyThought()];
      else encoded[i + 1] = [this.emptyThought(), ...encoded[i + 1]!];
    }
    const pairs: Array<[Slot[], Slot[]]> = [];
    for (let i = 0; i < encoded.length; i += 2) pairs.push([encoded[i]!, encoded[i + 1] ?? []]);
    return pairs;
  }

  /** One slot list per message: turn 0 carries the prefix and the system (with the tool text appended). */
  private messageSlots(messages: Message[], system: string | undefined, tools: string | undefined): Slot[][] {
    const systemText = system || this.defaultSystem;
    const toolText = () => {
      if (!tools) return "";
      return this.toolsSlot !== null ? this.toolsSlot.replace("{{content}}", tools) : formatTools(this.toolTools, tools, { date: this.toolDate() });
    };
    return messages.map((message, i) => {
      const elements: Slot[] = [];
      let foldedSystem = "";
      if (i === 0) {
        elements.push(...this.formatPrefix);
        // LLaMA-Factory tests the raw tools string, so "[]" still renders an (empty) system turn.
        if (systemText || tools) {
          const filled = fillSlots(this.formatSystem, { content: systemText + toolText() });
          if (this.style === "llama2") foldedSystem = typeof filled[0] === "string" ? filled[0] : "";
          else elements.push(...filled);
        }
      }
      switch (message.role) {
        case "user":
          if (this.style === "llama2") elements.push(...fillSlots(this.formatUser, { content: foldedSystem + message.content }));
          else elements.push(...fillSlots(this.formatUser, { content: message.content, idx: String(Math.floor(i / 2)) }));
          break;
        case "assistant":
          elements.push(...fillSlots(this.formatAssistant, { content: message.content }));
          break;
        case "observation":
          elements.push(...fillSlots(this.formatObservation, { content: message.content }));
          break;
        case "function":
          elements.push(...fillSlots(this.formatFunction, { content: this.functionText(message.content) }));
          break;
        default:
          throw new UserError(`unexpected role "${message.role}" at message ${i}`, "conversation", "a conversation alternates user/observation and assistant/function turns; the system goes in _system");
      }
      return elements;
    });
  }

  /**
   * A function message's text: its JSON tool call(s) in the tool format, keeping a thought or any
   * text outside `<tool_call>...</tool_call>` in front (LLaMA-Factory's FunctionFormatter).
   */
  private functionText(content: string): string {
    if (this.style !== "llama2") {
      const callPattern = new RegExp(`${escapeRegExp(this.toolCallWords[0])}([\\s\\S]*?)${escapeRegExp(this.toolCallWords[1])}`);
      const callMatch = callPattern.exec(content);
      if (callMatch) {
        const outside = content.replace(callMatch[0], "");
        return outside + this.functionTools.functionFormatter(parseFunctionCalls(callMatch[1]!, content));
      }
      const thoughtPattern = new RegExp(`${escapeRegExp(this.thoughtWords[0])}([\\s\\S]*?)${escapeRegExp(this.thoughtWords[1])}`);
      const thoughtMatch = thoughtPattern.exec(content);
      if (thoughtMatch) {
        const json = content.replace(thoughtMatch[0], "");
        return thoughtMatch[0] + this.functionTools.functionFormatter(parseFunctionCalls(json, content));
      }
    }
    return this.functionTools.functionFormatter(parseFunctionCalls(content, content));
  }
}
