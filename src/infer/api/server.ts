// `lmf api`: an OpenAI-compatible HTTP server over a ChatModel, after LLaMA-Factory's `api/app.py`
// (routes, bearer auth from API_KEY, API_HOST / API_PORT / API_MODEL_NAME) and the OpenAI Chat
// Completions API (JSON and server-sent-event responses, error shape). Plain `node:http`: two
// routes need no framework. Generation runs on the event loop one model step at a time: the running
// requests decode together in one batch (continuous batching: they join and leave between steps),
// the scheduler bounds how many run and wait; each request has a time limit and must fit the
// model's context.
import { createHash, timingSafeEqual } from "node:crypto";
import { type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { UserError, isUserError } from "../../errors.ts";
import type { InferArgs } from "../../hparams/index.ts";
import { DecodeBatch } from "../../model/decode_batch.ts";
import type { ChatModel } from "../chat_model.ts";
import { loadChatModelFromArgs } from "../from_args.ts";
import { type ChatCompletionChunk, type PreparedChat, completeChat, completionId, prepareChat, streamChat, unixSeconds } from "./completions.ts";
import { DEFAULT_LIMITS, type ServerLimits, limitsFromEnv } from "./limits.ts";
import { PREFILL_TOKENS_PER_STEP, formatBytes, memoryBudget, requestBytes, serverBytes } from "./memory_budget.ts";
import { ApiError, type ChatRequest, parseChatRequest } from "./protocol.ts";
import { OverloadedError, Scheduler } from "./scheduler.ts";

export interface ApiServerOptions {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** When set, every request needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string | null;
  /** The one model id served (`GET /v1/models`, and the `model` a request must name). */
  modelName?: string;
  /** Larger request bodies get 413. */
  maxBodyBytes?: number;
  /** Where unexpected errors are reported (the client only gets a short 500 message). */
  log?: (message: string) => void;
  /** Sequences at once, requests waiting, seconds per request (limits.ts); defaults for the rest. */
  limits?: Partial<ServerLimits>;
}

export interface ApiServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export const DEFAULT_MODEL_NAME = "gpt-3.5-turbo";
const DEFAULT_MAX_BODY_BYTES = 1 << 20;
/** After a 413 the rest of the body is read and dropped for at most this long; then the connection is cut. */
const DRAIN_MS = 30_000;

const CORS_HEADERS = { "access-control-allow-origin": "*", "access-control-allow-headers": "*", "access-control-allow-methods": "GET, POST, OPTIONS" };

function sendJson(res: ServerResponse, status: number, body: unknown, headers: OutgoingHttpHeaders = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { ...CORS_HEADERS, ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** The client closed its connection before its request body was complete: nobody to answer. */
class UploadAborted extends Error {}

const sha256 = (text: string): Buffer => createHash("sha256").update(text).digest();

function checkApiKey(req: IncomingMessage, apiKey: string): void {
  const header = req.headers.authorization ?? "";
  const token = header.startsWith("Bearer ") ? header.slice("Bearer ".length).trim() : "";
  // Hashing first gives equal lengths, so the comparison takes the same time for every wrong key.
  if (!token || !timingSafeEqual(sha256(token), sha256(apiKey))) throw new ApiError(401, "Invalid API key.", null, "invalid_api_key");
}

/**
 * The request body, at most `limit` bytes. A larger one (declared or counted) is read to its end
 * and dropped before the 413 goes out: Node closes a connection answered mid-upload, and the
 * client, still sending, would see a reset instead of the 413. A body still coming after DRAIN_MS
 * is answered anyway, and its connection closed.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"]);
    const chunks: Buffer[] = [];
    let size = 0;
    let oversized = false;
    let settled = false;
    let cut: NodeJS.Timeout | undefined;
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(cut);
      outcome();
    };
    const tooLarge = () => reject(new ApiError(413, `The request body is larger than ${limit} bytes.`, null, "request_too_large"));
    const refuse = (): void => {
      oversized = true;
      chunks.length = 0;
      cut = setTimeout(() => settle(tooLarge), DRAIN_MS).unref();
    };
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (oversized) return;
      if (size > limit) refuse();
      else chunks.push(chunk);
    });
    req.once("end", () => settle(() => (oversized ? tooLarge() : resolve(Buffer.concat(chunks)))));
    // A client that goes away mid-upload: reported once through "close", not as an error with a stack.
    req.on("error", () => undefined);
    req.once("close", () =>
      settle(() => {
        const of = Number.isFinite(declared) ? ` of ${declared}` : "";
        reject(new UploadAborted(`a client closed its connection during the upload of its request (${size}${of} bytes received)`));
      }),
    );
    if (declared > limit) refuse();
  });
}

async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const body = await readBody(req, limit);
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    throw new ApiError(400, "We could not parse the JSON body of your request. Send a JSON object with 'Content-Type: application/json'.", null, "invalid_json");
  }
}

function writeEvent(res: ServerResponse, data: unknown): void {
  res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
}

/**
 * SSE as LLaMA-Factory and OpenAI send it: a role delta, content deltas, a finish chunk, `[DONE]`;
 * one model step per `next()`, for the scheduler.
 */
function* streamCompletion(res: ServerResponse, chat: ChatModel, request: ChatRequest, prepared: PreparedChat, modelName: string, batch: DecodeBatch): Generator<void, void> {
  const pieces = streamChat(chat, request, prepared, batch);
  // The first step runs before any byte is sent, so a generation-settings error can still be a 400.
  let step = pieces.next();
  const id = completionId();
  const created = unixSeconds();
  const chunk = (delta: ChatCompletionChunk["choices"][0]["delta"], finishReason: ChatCompletionChunk["choices"][0]["finish_reason"] = null): ChatCompletionChunk => ({
    id,
    object: "chat.completion.chunk",
    created,
    model: modelName,
    choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }],
    ...(request.includeUsageInStream ? { usage: null } : {}),
  });
  res.writeHead(200, { ...CORS_HEADERS, "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive" });
  writeEvent(res, chunk({ role: "assistant", content: "" }));
  try {
    while (!step.done) {
      if (res.destroyed) return;
      if (step.value) writeEvent(res, chunk({ content: step.value }));
      // The scheduler lets the socket flush and the other requests step before the next token.
      yield;
      step = pieces.next();
    }
    writeEvent(res, chunk({}, step.value.finishReason));
    if (request.includeUsageInStream) writeEvent(res, { ...chunk({}), choices: [], usage: step.value.usage });
    writeEvent(res, "[DONE]");
    res.end();
  } finally {
    // A client that went away mid-answer: close the generator so its KV cache is freed.
    if (!step.done) pieces.return({ finishReason: "stop", usage: { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } });
  }
}

/** Starts the server; resolves once it listens. */
export async function createApiServer(chat: ChatModel, options: ApiServerOptions = {}): Promise<ApiServer> {
  const host = options.host ?? "127.0.0.1";
  const modelName = options.modelName ?? DEFAULT_MODEL_NAME;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const apiKey = options.apiKey || null;
  const log = options.log ?? ((message: string) => console.error(message));
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...options.limits };
  // Every running request's sequences decode together, one model step per scheduler tick.
  const batch = new DecodeBatch(chat.model, { prefillTokensPerStep: PREFILL_TOKENS_PER_STEP });
  const scheduler = new Scheduler(limits.maxSequences, limits.maxWaiting, () => batch.step());

  async function chatCompletions(req: IncomingMessage, res: ServerResponse, arrivedAt: number): Promise<void> {
    let clientGone = false;
    res.once("close", () => (clientGone = !res.writableFinished));
    const request = parseChatRequest(await readJsonBody(req, maxBodyBytes));
    if (request.model !== modelName) {
      throw new ApiError(404, `The model '${request.model}' does not exist; this server serves '${modelName}'.`, "model", "model_not_found");
    }
    const prepared = prepareChat(chat, request, { maxTime: limits.requestTimeoutSeconds, timeOrigin: arrivedAt });
    if (prepared.rows > limits.maxSequences) {
      const what = prepared.rows === request.n ? `'n' is ${request.n}` : `'n' ${request.n} with num_beams ${prepared.rows / request.n} makes ${prepared.rows} sequences`;
      throw new ApiError(400, `${what}, but this server generates at most ${limits.maxSequences} sequences at once (API_MAX_CONCURRENT); ask for fewer choices.`, "n");
    }
    const job = { seats: prepared.rows, startBy: arrivedAt + limits.requestTimeoutSeconds * 1000, abandoned: () => clientGone };
    if (request.stream) {
      await scheduler.submit({ ...job, start: () => streamCompletion(res, chat, request, prepared, modelName, batch) });
      return;
    }
    const completion = await scheduler.submit({ ...job, start: () => completeChat(chat, request, prepared, modelName, batch) });
    if (completion) sendJson(res, 200, completion);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const arrivedAt = Date.now();
    const path = (req.url ?? "/").split("?")[0]!.replace(/\/+$/, "");
    if (req.method === "OPTIONS") {
      res.writeHead(204, CORS_HEADERS).end();
      return;
    }
    const routes: Record<string, string> = { "/v1/models": "GET", "/v1/chat/completions": "POST" };
    const method = routes[path];
    if (!method) throw new ApiError(404, `Unknown path ${req.method} ${path || "/"}; this server has GET /v1/models and POST /v1/chat/completions.`, null, "unknown_url");
    if (req.method !== method) throw new ApiError(405, `${path} only accepts ${method}.`, null, "method_not_allowed");
    if (apiKey) checkApiKey(req, apiKey);
    if (path === "/v1/models") {
      sendJson(res, 200, { object: "list", data: [{ id: modelName, object: "model", created: unixSeconds(), owned_by: "owner" }] });
      return;
    }
    await chatCompletions(req, res, arrivedAt);
  }

  function fail(res: ServerResponse, error: unknown): void {
    if (error instanceof UploadAborted) return log(`lmf api: ${error.message}`);
    if (error instanceof OverloadedError) return sendJson(res, error.status, error.toBody(), { "retry-after": String(error.retryAfterSeconds) });
    if (error instanceof ApiError) return sendJson(res, error.status, error.toBody());
    if (isUserError(error)) return sendJson(res, 400, new ApiError(400, error.message).toBody());
    log(`lmf api: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    if (res.headersSent) {
      // Mid-stream: the client library reads an `error` event, then the stream ends.
      if (!res.destroyed) res.end(`data: ${JSON.stringify(new ApiError(500, "The server had an error while generating.").toBody())}\n\n`);
      return;
    }
    sendJson(res, 500, new ApiError(500, "The server had an error while processing your request.").toBody());
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => fail(res, error));
  });
  // Keep idle connections open longer than clients do (undici: 4 s), so a client never reuses a
  // socket the server is closing at that moment; answers may wait in the queue, so no request timeout.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 0;
  // `Expect: 100-continue` (curl sends it for large bodies): an oversized body is refused before it is sent.
  server.on("checkContinue", (req: IncomingMessage, res: ServerResponse) => {
    if (Number(req.headers["content-length"]) > maxBodyBytes) return fail(res, new ApiError(413, `The request body is larger than ${maxBodyBytes} bytes.`, null, "request_too_large"));
    res.writeContinue();
    server.emit("request", req, res);
  });
  server.on("clientError", (_error, socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 8000, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (error) => log(`lmf api: server error: ${error.message}`));
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        // Running generations are closed now, so their caches are freed before the model is.
        scheduler.stop();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function envPort(value: string | undefined): number {
  if (value === undefined || value === "") return 8000;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UserError(`API_PORT must be a port number (0-65535); got ${JSON.stringify(value)}`, "environment", "e.g. API_PORT=8000");
  return port;
}

/** `lmf api`: loads the model from the parsed arguments and serves until SIGINT or SIGTERM. */
export async function runApi(args: InferArgs, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const port = envPort(env.API_PORT);
  const limits = limitsFromEnv(env);
  const chat = loadChatModelFromArgs(args);
  const server = await createApiServer(chat, {
    host: env.API_HOST || "127.0.0.1",
    port,
    apiKey: env.API_KEY || null,
    modelName: env.API_MODEL_NAME || DEFAULT_MODEL_NAME,
    limits,
  });
  const budget = memoryBudget(chat.model.config, chat.model.outputEmbeddings().weight.dtype, chat.contextLength);
  console.log(
    `lmf api: context ${chat.contextLength} tokens; up to ${limits.maxSequences} sequences at once (API_MAX_CONCURRENT), ${limits.maxWaiting} requests waiting (API_MAX_QUEUE), ` +
      `${limits.requestTimeoutSeconds} s per request (API_REQUEST_TIMEOUT); memory beyond the weights: at most ${formatBytes(requestBytes(budget, 1))} for one request, ${formatBytes(serverBytes(budget, limits.maxSequences))} in all.`,
  );
  console.log(`lmf api: serving '${env.API_MODEL_NAME || DEFAULT_MODEL_NAME}' at ${server.url}/v1 (POST /chat/completions, GET /models); Ctrl-C stops.`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  await server.close();
  chat.dispose();
}
