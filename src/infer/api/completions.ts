// The model side of `POST /v1/chat/completions`, after LLaMA-Factory's `api/chat.py`
// (create_chat_completion_response / create_stream_chat_completion_response) and the OpenAI
// Chat Completions objects (`chat.completion`, `chat.completion.chunk`): one batched generate for
// the n choices, or a token-by-token stream; `stop` strings cut the text; tool calls parsed by the
// template become `tool_calls`.
import { randomUUID } from "node:crypto";
import type { FunctionCall } from "../../data/templates/tools.ts";
import { type FinishReason, type GenerateOptions, generate, generateStream } from "../../model/generation.ts";
import type { ChatModel, GenerationSettings } from "../chat_model.ts";
import type { ChatRequest } from "./protocol.ts";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ToolCall {
  id: string;
  type: "function";
  function: FunctionCall;
}

export type ChoiceFinishReason = FinishReason | "tool_calls";

export interface ChatCompletionChoice {
  index: number;
  message: { role: "assistant"; content: string | null; tool_calls?: ToolCall[] };
  finish_reason: ChoiceFinishReason;
  logprobs: null;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: ChatCompletionChoice[];
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: { index: number; delta: { role?: "assistant"; content?: string }; finish_reason: ChoiceFinishReason | null; logprobs: null }[];
  usage?: Usage | null;
}

export const completionId = (): string => `chatcmpl-${randomUUID().replaceAll("-", "")}`;
export const unixSeconds = (): number => Math.floor(Date.now() / 1000);

/** The request's settings over the model's defaults, stopping on the template's stop tokens (as ChatModel does). */
function generateOptions(chat: ChatModel, settings: GenerationSettings): GenerateOptions {
  const stopIds = chat.template.getStopTokenIds(chat.tokenizer);
  return { ...chat.defaults, ...settings, eosTokenId: stopIds, padTokenId: chat.tokenizer.padTokenId ?? stopIds[0] ?? 0 };
}

function promptFor(chat: ChatModel, request: ChatRequest): number[] {
  return chat.promptIds(request.messages, request.system, request.tools || undefined);
}

/** Where the first stop string starts in `text`, or -1. */
export function firstStopIndex(text: string, stops: readonly string[]): number {
  let first = -1;
  for (const stop of stops) {
    const at = text.indexOf(stop);
    if (at !== -1 && (first === -1 || at < first)) first = at;
  }
  return first;
}

/** How many trailing characters of `text` could be the start of a stop string (held back while streaming). */
function partialStopLength(text: string, stops: readonly string[]): number {
  let longest = 0;
  for (const stop of stops) {
    for (let length = Math.min(stop.length - 1, text.length); length > longest; length--) {
      if (text.endsWith(stop.slice(0, length))) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}

/**
 * The assistant message of one choice: when tools were offered and the template's extractor finds
 * function calls in the text, they become `tool_calls` (LLaMA-Factory: `finish_reason: tool_calls`).
 */
export function buildChoice(
  index: number,
  text: string,
  finishReason: FinishReason,
  toolsOffered: boolean,
  extractTool: (content: string) => string | FunctionCall[],
): ChatCompletionChoice {
  if (toolsOffered) {
    const extracted = extractTool(text);
    if (Array.isArray(extracted)) {
      const toolCalls = extracted.map((call): ToolCall => ({
        id: `call_${randomUUID().replaceAll("-", "")}`,
        type: "function",
        function: { name: call.name, arguments: call.arguments },
      }));
      return { index, message: { role: "assistant", content: null, tool_calls: toolCalls }, finish_reason: "tool_calls", logprobs: null };
    }
  }
  return { index, message: { role: "assistant", content: text }, finish_reason: finishReason, logprobs: null };
}

/** All n choices in one batched generate (the same prompt n times). Runs synchronously. */
export function completeChat(chat: ChatModel, request: ChatRequest, modelName: string): ChatCompletion {
  const prompt = promptFor(chat, request);
  const { sequences, finishReasons } = generate(chat.model, new Array<number[]>(request.n).fill(prompt), generateOptions(chat, request.settings));
  const decode = (ids: number[]) => chat.decode(ids);
  let completionTokens = 0;
  const choices = sequences.map((ids, index) => {
    let text = decode(ids);
    let finishReason = finishReasons[index]!;
    let used = ids.length;
    const stopAt = firstStopIndex(text, request.stop);
    if (stopAt !== -1) {
      text = text.slice(0, stopAt);
      finishReason = "stop";
      used = tokensUntilStop(ids, request.stop, decode);
    }
    completionTokens += used;
    return buildChoice(index, text, finishReason, request.tools !== "", (content) => chat.template.extractTool(content));
  });
  return {
    id: completionId(),
    object: "chat.completion",
    created: unixSeconds(),
    model: modelName,
    choices,
    usage: { prompt_tokens: prompt.length, completion_tokens: completionTokens, total_tokens: prompt.length + completionTokens },
  };
}

/**
 * The fewest leading tokens whose text already holds a stop string: what a stream stopping at the
 * stop string would have generated, so streamed and non-streamed usage agree. Binary search,
 * since a longer prefix keeps containing the stop string.
 */
function tokensUntilStop(ids: number[], stops: readonly string[], decode: (ids: number[]) => string): number {
  let low = 1;
  let high = ids.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (firstStopIndex(decode(ids.slice(0, middle)), stops) !== -1) high = middle;
    else low = middle + 1;
  }
  return high;
}

export interface StreamEnd {
  finishReason: FinishReason;
  usage: Usage;
}

/**
 * One answer as text pieces while it is generated; the return value is the finish reason and usage.
 * Pieces are held back while they end inside a multi-byte character or could begin a stop string.
 * Synchronous per token: the caller yields to the event loop between pieces.
 */
export function* streamChat(chat: ChatModel, request: ChatRequest): Generator<string, StreamEnd> {
  const prompt = promptFor(chat, request);
  const stopTokens = new Set(chat.template.getStopTokenIds(chat.tokenizer));
  const tokens = generateStream(chat.model, prompt, generateOptions(chat, request.settings));
  const generated: number[] = [];
  let completionTokens = 0;
  let emitted = 0;
  let finishReason: FinishReason = "length";
  let text = "";
  try {
    for (;;) {
      const next = tokens.next();
      if (next.done) {
        finishReason = next.value;
        break;
      }
      completionTokens += 1;
      if (stopTokens.has(next.value)) {
        finishReason = "stop";
        break;
      }
      generated.push(next.value);
      text = chat.decode(generated);
      const stopAt = firstStopIndex(text, request.stop);
      if (stopAt !== -1) {
        text = text.slice(0, stopAt);
        finishReason = "stop";
        break;
      }
      if (text.endsWith("\uFFFD")) continue;
      const safe = text.length - partialStopLength(text, request.stop);
      if (safe > emitted) {
        yield text.slice(emitted, safe);
        emitted = safe;
      }
    }
    // What was held back (a partial stop string that never completed, a trailing odd byte) goes out now.
    if (text.length > emitted) yield text.slice(emitted);
  } finally {
    // Stopping early (stop string, client gone) frees the generation's KV cache.
    tokens.return("stop");
  }
  return { finishReason, usage: { prompt_tokens: prompt.length, completion_tokens: completionTokens, total_tokens: prompt.length + completionTokens } };
}
