// The model side of `POST /v1/chat/completions`, after LLaMA-Factory's `api/chat.py`
// (create_chat_completion_response / create_stream_chat_completion_response) and the OpenAI
// Chat Completions objects (`chat.completion`, `chat.completion.chunk`): one batched generate for
// the n choices, or a token-by-token stream; `stop` strings cut the text; tool calls parsed by the
// template become `tool_calls`. The prompt and answer must fit the model's context (OpenAI's
// context_length_exceeded). Sequences join the server's running batch (continuous batching,
// src/model/decode_batch.ts) and each `next()` takes what the batch's last step produced; beam
// search runs its own steps, one per `next()`.
import { randomUUID } from "node:crypto";
import type { FunctionCall } from "../../data/templates/tools.ts";
import type { DecodeBatch } from "../../model/decode_batch.ts";
import { type FinishReason, type GenerateOptions, type GenerateOutput, generateSteps } from "../../model/generation.ts";
import type { ChatModel } from "../chat_model.ts";
import { PREFILL_TOKENS_PER_STEP } from "./memory_budget.ts";
import { ApiError, type ChatRequest } from "./protocol.ts";

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

/** A request's prompt ids and generation options, checked against the model's context. */
export interface PreparedChat {
  prompt: number[];
  options: GenerateOptions;
  /** Sequences generated at once: the n choices, or the beams of beam search. */
  rows: number;
}

/** Generation time limit of a request: `maxTime` seconds counted from `timeOrigin` (ms, its arrival). */
export interface TimeLimit {
  maxTime: number;
  timeOrigin: number;
}

function contextExceeded(message: string): ApiError {
  return new ApiError(400, message, "messages", "context_length_exceeded");
}

/**
 * Renders the prompt and fixes the token budget within the model's context C, as OpenAI does: a
 * prompt of C tokens or more, or prompt + max_tokens over C, is a 400 context_length_exceeded;
 * without max_tokens the model's default budget (max_new_tokens, or max_length - prompt) is cut
 * to C - prompt. The prompt is fed PREFILL_TOKENS_PER_STEP tokens per step over all rows.
 */
export function prepareChat(chat: ChatModel, request: ChatRequest, timeLimit: TimeLimit | null = null): PreparedChat {
  const prompt = chat.promptIds(request.messages, request.system, request.tools || undefined);
  const context = chat.contextLength;
  const stopIds = chat.template.getStopTokenIds(chat.tokenizer);
  const rows = request.n * Math.max(1, request.settings.numBeams ?? chat.defaults.numBeams ?? 1);
  const options: GenerateOptions = {
    ...chat.defaults,
    ...request.settings,
    eosTokenId: stopIds,
    padTokenId: chat.tokenizer.padTokenId ?? stopIds[0] ?? 0,
    prefillChunk: Math.max(1, Math.floor(PREFILL_TOKENS_PER_STEP / rows)),
    ...(timeLimit ?? {}),
  };
  if (prompt.length >= context) {
    throw contextExceeded(
      `This model's maximum context length is ${context} tokens. However, your messages resulted in ${prompt.length} tokens, which leaves no room for an answer. Please reduce the length of the messages.`,
    );
  }
  const requested = request.settings.maxNewTokens;
  if (requested != null && requested > 0) {
    if (prompt.length + requested > context) {
      throw contextExceeded(
        `This model's maximum context length is ${context} tokens. However, you requested ${prompt.length + requested} tokens (${prompt.length} in the messages, ${requested} in the completion). Please reduce the length of the messages or completion.`,
      );
    }
    return { prompt, options, rows };
  }
  const defaultBudget = options.maxNewTokens != null && options.maxNewTokens > 0 ? options.maxNewTokens : (options.maxLength ?? 20) - prompt.length;
  if (defaultBudget > 0) options.maxNewTokens = Math.min(defaultBudget, context - prompt.length);
  return { prompt, options, rows };
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

/**
 * Generation of `rows` copies of a prompt with generateSteps' protocol: each `next()` yields the
 * new token of every row (the pad token for a row with none this step) or null when no row has
 * one, and the return value is generate's output. With a batch, the rows are sequences of the
 * running batch (whose steps run between the `next()` calls); beam search, or no batch, runs
 * `generateSteps` itself, one model step per `next()`.
 */
export function* generationSteps(chat: ChatModel, batch: DecodeBatch | null, prompt: number[], rows: number, options: GenerateOptions): Generator<number[] | null, GenerateOutput> {
  if (!batch || (options.numBeams ?? 1) > 1) return yield* generateSteps(chat.model, new Array<number[]>(rows).fill(prompt), options);
  const sequences = Array.from({ length: rows }, () => batch.add(prompt, options));
  try {
    const taken = new Array<number>(rows).fill(0);
    const pad = options.padTokenId ?? 0;
    for (;;) {
      const failed = sequences.find((sequence) => sequence.error !== null);
      if (failed) throw failed.error;
      const fresh = sequences.map((sequence, i) => (taken[i]! < sequence.tokens.length ? sequence.tokens[taken[i]!++]! : null));
      if (fresh.some((token) => token !== null)) {
        yield fresh.map((token) => token ?? pad);
        continue;
      }
      if (sequences.every((sequence) => sequence.done)) break;
      yield null;
    }
    return { sequences: sequences.map((sequence) => [...sequence.tokens]), finishReasons: sequences.map((sequence) => sequence.finishReason!) };
  } finally {
    for (const sequence of sequences) sequence.close();
  }
}

/** All n choices (the same prompt n times), one scheduler step per `next()`. */
export function* completeChat(chat: ChatModel, request: ChatRequest, prepared: PreparedChat, modelName: string, batch: DecodeBatch | null = null): Generator<unknown, ChatCompletion> {
  const { prompt, options } = prepared;
  const { sequences, finishReasons } = yield* generationSteps(chat, batch, prompt, request.n, options);
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
 * One answer as text pieces while it is generated, one piece per token (one model step per
 * `next()`); the return value is the finish reason and usage. Text is held back (the piece is "")
 * while it ends inside a multi-byte character or could begin a stop string.
 */
export function* streamChat(chat: ChatModel, request: ChatRequest, prepared: PreparedChat, batch: DecodeBatch | null = null): Generator<string, StreamEnd> {
  const { prompt, options } = prepared;
  const stopTokens = new Set(chat.template.getStopTokenIds(chat.tokenizer));
  const steps = generationSteps(chat, batch, prompt, 1, options);
  const generated: number[] = [];
  let completionTokens = 0;
  let emitted = 0;
  let finishReason: FinishReason = "length";
  let text = "";
  try {
    for (;;) {
      const next = steps.next();
      if (next.done) {
        finishReason = next.value.finishReasons[0]!;
        break;
      }
      // A prefill chunk (or a step of the batch that gave this answer nothing): no token yet.
      if (next.value === null) {
        yield "";
        continue;
      }
      const token = next.value[0]!;
      completionTokens += 1;
      if (stopTokens.has(token)) {
        finishReason = "stop";
        break;
      }
      generated.push(token);
      text = chat.decode(generated);
      const stopAt = firstStopIndex(text, request.stop);
      if (stopAt !== -1) {
        text = text.slice(0, stopAt);
        finishReason = "stop";
        break;
      }
      const safe = text.endsWith("\uFFFD") ? emitted : Math.max(emitted, text.length - partialStopLength(text, request.stop));
      yield text.slice(emitted, safe);
      emitted = safe;
    }
    // What was held back (a partial stop string that never completed, a trailing odd byte) goes out now.
    if (text.length > emitted) yield text.slice(emitted);
  } finally {
    // Stopping early (stop string, client gone) frees the generation's KV cache.
    steps.return({ sequences: [], finishReasons: [] });
  }
  return { finishReason, usage: { prompt_tokens: prompt.length, completion_tokens: completionTokens, total_tokens: prompt.length + completionTokens } };
}
