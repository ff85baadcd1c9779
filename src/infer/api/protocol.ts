// The request side of the OpenAI Chat Completions API (platform.openai.com/docs/api-reference/chat)
// as LLaMA-Factory's `api/protocol.py` and `api/chat.py:_process_request` accept it: checks a parsed
// JSON body field by field and turns it into template messages, a system prompt, tools and
// generation settings. Every problem is an `ApiError` carrying OpenAI's error shape.
import type { Message, Role } from "../../data/types.ts";
import type { GenerationSettings } from "../chat_model.ts";

/** An error answered as `{ error: { message, type, param, code } }` with an HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = status >= 500 ? "server_error" : "invalid_request_error",
  ) {
    super(message);
  }

  toBody(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A checked chat-completion request, ready for the model. */
export interface ChatRequest {
  model: string;
  messages: Message[];
  system: string | undefined;
  /** JSON list of function schemas for the template's tool formatter; "" when none. */
  tools: string;
  settings: GenerationSettings;
  n: number;
  stop: string[];
  stream: boolean;
  includeUsageInStream: boolean;
}

/** More choices than this per request are refused: each one is a row of the model batch. */
export const MAX_CHOICES = 16;
const MAX_STOP_STRINGS = 4;

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === "object" && value !== null && !Array.isArray(value);

function invalid(message: string, param: string, code: string | null = null): ApiError {
  return new ApiError(400, message, param, code);
}

function optionalNumber(body: Json, key: string, { min, max, integer = false }: { min: number; max: number; integer?: boolean }): number | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw invalid(`'${key}' must be ${integer ? "an integer" : "a number"}; got ${JSON.stringify(value)}.`, key);
  }
  if (value < min || value > max) throw invalid(`'${key}' must be between ${min} and ${max}; got ${value}.`, key);
  return value;
}

function optionalBoolean(body: Json, key: string): boolean | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "boolean") throw invalid(`'${key}' must be true or false; got ${JSON.stringify(value)}.`, key);
  return value;
}

/** String content, or the text parts of a content list (images, audio and video are not supported here). */
function contentText(content: unknown, param: string): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (!Array.isArray(content)) throw invalid(`'${param}' must be a string or a list of content parts.`, param);
  return content
    .map((part, i) => {
      if (!isObject(part) || typeof part.type !== "string") throw invalid(`'${param}[${i}]' must be a content part with a 'type'.`, `${param}[${i}]`);
      if (part.type !== "text") throw invalid(`Content parts of type '${part.type}' are not supported; only 'text'.`, `${param}[${i}]`);
      if (typeof part.text !== "string") throw invalid(`'${param}[${i}].text' must be a string.`, `${param}[${i}].text`);
      return part.text;
    })
    .join("");
}

/** An assistant message's `tool_calls` as the template's function message: a JSON list of `{name, arguments}`. */
function functionContent(toolCalls: unknown, param: string): string {
  if (!Array.isArray(toolCalls) || toolCalls.length === 0) throw invalid(`'${param}' must be a non-empty list.`, param);
  const calls = toolCalls.map((call, i) => {
    const where = `${param}[${i}].function`;
    if (!isObject(call) || !isObject(call.function) || typeof call.function.name !== "string" || typeof call.function.arguments !== "string") {
      throw invalid(`'${where}' must have a string 'name' and a JSON string 'arguments'.`, where);
    }
    // OpenAI sends arguments as a JSON string; the template wants the object the model was trained on.
    let args: unknown = call.function.arguments;
    try {
      args = JSON.parse(call.function.arguments);
    } catch {
      // Not JSON: kept as the string the client sent.
    }
    return { name: call.function.name, arguments: args };
  });
  return JSON.stringify(calls);
}

/** LLaMA-Factory's role rules: an optional system message, then u/a/u/a/.../u with tool turns as user turns. */
function toTemplateMessages(raw: unknown): { messages: Message[]; system: string | undefined } {
  if (!Array.isArray(raw) || raw.length === 0) throw invalid("'messages' must be a non-empty list.", "messages");
  raw.forEach((message, i) => {
    if (!isObject(message) || typeof message.role !== "string") throw invalid(`'messages[${i}]' must be an object with a 'role'.`, `messages[${i}]`);
  });
  const list = raw as Json[];
  let system: string | undefined;
  let start = 0;
  if (list[0]!.role === "system" || list[0]!.role === "developer") {
    system = contentText(list[0]!.content, "messages[0].content");
    start = 1;
  }
  const turns = list.slice(start);
  if (turns.length % 2 === 0) {
    throw invalid("Only supports u/a/u/a/u...: after an optional system message, user and assistant turns alternate and the last one is a user (or tool) turn.", "messages");
  }
  const messages = turns.map((message, k): Message => {
    const i = k + start;
    const param = `messages[${i}]`;
    const userTurn = k % 2 === 0;
    const role = message.role as string;
    const allowed = userTurn ? ["user", "tool"] : ["assistant", "function"];
    if (!allowed.includes(role)) {
      throw invalid(`Invalid role '${role}' at ${param}: expected ${allowed.join(" or ")} (an optional system message first, then user/assistant alternating, ending on user or tool).`, `${param}.role`);
    }
    if (role === "assistant" && message.tool_calls !== undefined && message.tool_calls !== null) {
      return { role: "function", content: functionContent(message.tool_calls, `${param}.tool_calls`) };
    }
    const templateRole: Role = role === "tool" ? "observation" : (role as Role);
    return { role: templateRole, content: contentText(message.content, `${param}.content`) };
  });
  return { messages, system };
}

function toolsJson(raw: unknown): string {
  if (raw === undefined || raw === null) return "";
  if (!Array.isArray(raw)) throw invalid("'tools' must be a list.", "tools");
  if (raw.length === 0) return "";
  const functions = raw.map((tool, i) => {
    if (!isObject(tool) || tool.type !== "function" || !isObject(tool.function) || typeof tool.function.name !== "string") {
      throw invalid(`'tools[${i}]' must be {"type": "function", "function": {"name", "description", "parameters"}}.`, `tools[${i}]`);
    }
    return tool.function;
  });
  return JSON.stringify(functions);
}

function stopStrings(raw: unknown): string[] {
  if (raw === undefined || raw === null) return [];
  const list = typeof raw === "string" ? [raw] : raw;
  if (!Array.isArray(list) || list.some((item) => typeof item !== "string" || item.length === 0)) {
    throw invalid("'stop' must be a non-empty string or a list of non-empty strings.", "stop");
  }
  if (list.length > MAX_STOP_STRINGS) throw invalid(`'stop' takes at most ${MAX_STOP_STRINGS} strings.`, "stop");
  return list as string[];
}

/** Checks a parsed body and maps its fields the way LLaMA-Factory's HF engine does. */
export function parseChatRequest(body: unknown): ChatRequest {
  if (!isObject(body)) throw invalid("The request body must be a JSON object.", "body");
  if (typeof body.model !== "string") throw invalid("'model' must be a string.", "model");
  const { messages, system } = toTemplateMessages(body.messages);
  const tools = toolsJson(body.tools);
  const n = optionalNumber(body, "n", { min: 1, max: MAX_CHOICES, integer: true }) ?? 1;
  const stream = optionalBoolean(body, "stream") ?? false;
  if (stream && tools) throw invalid("Cannot stream function calls.", "stream");
  if (stream && n > 1) throw invalid("Cannot stream multiple responses.", "n");
  const streamOptions = body.stream_options;
  const includeUsageInStream = isObject(streamOptions) && streamOptions.include_usage === true;

  const settings: GenerationSettings = {};
  const doSample = optionalBoolean(body, "do_sample");
  const temperature = optionalNumber(body, "temperature", { min: 0, max: 2 });
  const topP = optionalNumber(body, "top_p", { min: 0, max: 1 });
  const maxTokens = optionalNumber(body, "max_completion_tokens", { min: 1, max: 1 << 20, integer: true }) ?? optionalNumber(body, "max_tokens", { min: 1, max: 1 << 20, integer: true });
  const presencePenalty = optionalNumber(body, "presence_penalty", { min: -2, max: 2 });
  if (doSample !== undefined) settings.doSample = doSample;
  if (temperature !== undefined) {
    // OpenAI's temperature 0 means deterministic: greedy decoding (as LLaMA-Factory's HF engine).
    if (temperature === 0) settings.doSample = false;
    else settings.temperature = temperature;
  }
  if (topP !== undefined && topP > 0) settings.topP = topP;
  if (maxTokens !== undefined) settings.maxNewTokens = maxTokens;
  if (presencePenalty !== undefined && presencePenalty !== 0) {
    // LLaMA-Factory passes presence_penalty on as repetition_penalty, which must be positive.
    if (presencePenalty < 0) throw invalid("'presence_penalty' is used as repetition_penalty here and must be positive (1.0 means none).", "presence_penalty");
    settings.repetitionPenalty = presencePenalty;
  }
  if (n > 1) {
    // Several choices only differ when sampled; LLaMA-Factory forces sampling at temperature 1.0 if unset.
    settings.doSample = true;
    if (settings.temperature === undefined) settings.temperature = 1.0;
  }
  return { model: body.model, messages, system, tools, settings, n, stop: stopStrings(body.stop), stream, includeUsageInStream };
}
