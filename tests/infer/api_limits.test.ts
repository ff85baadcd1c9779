// `lmf api` under load and abuse, on a real loopback server over a tiny random chat model: the
// context limit (OpenAI's context_length_exceeded), a responsive and fair server while answers are
// long (answers decoded together, token by token), the waiting-queue limit (503 + Retry-After), the per-request time
// limit, 413 for oversized bodies of any size, and one log line for an aborted upload. The
// scheduler itself is checked with hand-made step-wise jobs.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import OpenAI from "openai";
import { limitsFromEnv } from "../../src/infer/api/limits.ts";
import { memoryBudget, requestBytes, serverBytes } from "../../src/infer/api/memory_budget.ts";
import { type ApiServer, type ApiServerOptions, createApiServer } from "../../src/infer/api/server.ts";
import { OverloadedError, Scheduler } from "../../src/infer/api/scheduler.ts";
import { ChatModel } from "../../src/infer/chat_model.ts";
import { normalizeConfig } from "../../src/model/config.ts";
import { makeTinyChatModel } from "../fixtures/tiny_model.ts";

const MODEL_NAME = "tiny-test";
const CONTEXT = 4096;
// Greedy, this random model does not stop within 3000 tokens after "Hello" (about 2 ms a token here).
const ENDLESS = "Hello";

const chat = ChatModel.load({ modelNameOrPath: makeTinyChatModel({ max_position_embeddings: CONTEXT }), template: "qwen" });
// As `lmf api --max_new_tokens 100000` would: a default budget far past the context.
const chatWithLongDefault = ChatModel.load({ modelNameOrPath: makeTinyChatModel({ max_position_embeddings: 256 }), template: "qwen" }, { doSample: false, maxNewTokens: 100_000 });
const servers: ApiServer[] = [];

after(async () => {
  for (const server of servers) await server.close();
  chat.dispose();
  chatWithLongDefault.dispose();
});

async function serve(options: ApiServerOptions = {}, model = chat): Promise<ApiServer> {
  const server = await createApiServer(model, { host: "127.0.0.1", port: 0, modelName: MODEL_NAME, ...options });
  servers.push(server);
  return server;
}

const user = (content: string) => [{ role: "user", content }];

function post(server: ApiServer, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(`${server.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal });
}

/** A streamed request read event by event; `firstContent` resolves at the first token's text, `done` at [DONE]. */
function openStream(server: ApiServer, body: Record<string, unknown>) {
  const controller = new AbortController();
  let markFirst: (at: number) => void = () => undefined;
  const firstContent = new Promise<number>((resolve) => (markFirst = resolve));
  const done = (async () => {
    const response = await post(server, { model: MODEL_NAME, stream: true, temperature: 0, ...body }, controller.signal);
    assert.equal(response.status, 200);
    const decoder = new TextDecoder();
    let buffer = "";
    let finishReason: string | null = null;
    let contentChunks = 0;
    try {
      for await (const bytes of response.body!) {
        buffer += decoder.decode(bytes, { stream: true });
        let end: number;
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const data = buffer.slice("data: ".length, end);
          buffer = buffer.slice(end + 2);
          if (data === "[DONE]") return { finishReason, contentChunks, endedAt: Date.now() };
          const choice = JSON.parse(data).choices[0];
          if (choice?.delta?.content) {
            contentChunks += 1;
            markFirst(Date.now());
          }
          finishReason = choice?.finish_reason ?? finishReason;
        }
      }
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    }
    return { finishReason, contentChunks, endedAt: Date.now() };
  })();
  return { firstContent, done, abort: () => controller.abort() };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test("a prompt longer than the context gets 400 context_length_exceeded, as OpenAI answers", async () => {
  const server = await serve();
  const long = "x ".repeat(CONTEXT);
  const promptTokens = chat.promptIds([{ role: "user", content: long }]).length;
  assert.ok(promptTokens > CONTEXT);
  const started = Date.now();
  const response = await post(server, { model: MODEL_NAME, messages: user(long) });
  assert.equal(response.status, 400);
  const { error } = (await response.json()) as { error: Record<string, unknown> };
  assert.equal(error.type, "invalid_request_error");
  assert.equal(error.param, "messages");
  assert.equal(error.code, "context_length_exceeded");
  assert.match(error.message as string, new RegExp(`maximum context length is ${CONTEXT} tokens.*resulted in ${promptTokens} tokens`));
  assert.ok(Date.now() - started < 2000, "refused before any generation");
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  await assert.rejects(
    client.chat.completions.create({ model: MODEL_NAME, messages: [{ role: "user", content: long }] }),
    (caught: unknown) => caught instanceof OpenAI.BadRequestError && caught.code === "context_length_exceeded",
  );
});

test("prompt + max_tokens over the context gets 400; without max_tokens the answer stops at the context", async () => {
  const server = await serve({}, chatWithLongDefault);
  const context = chatWithLongDefault.contextLength;
  const prompt = chatWithLongDefault.promptIds([{ role: "user", content: ENDLESS }]).length;
  const over = await post(server, { model: MODEL_NAME, messages: user(ENDLESS), max_tokens: context - prompt + 1 });
  assert.equal(over.status, 400);
  const { error } = (await over.json()) as { error: Record<string, unknown> };
  assert.equal(error.code, "context_length_exceeded");
  assert.match(error.message as string, new RegExp(`requested ${context + 1} tokens \\(${prompt} in the messages, ${context - prompt + 1} in the completion\\)`));
  const huge = await post(server, { model: MODEL_NAME, messages: user(ENDLESS), max_tokens: 1 << 20 });
  assert.equal(huge.status, 400);
  const fits = await post(server, { model: MODEL_NAME, messages: user(ENDLESS), max_tokens: context - prompt, temperature: 0 });
  assert.equal(fits.status, 200);
  // The model's default budget (max_new_tokens 100000 here) is cut to what the context leaves.
  const response = await post(server, { model: MODEL_NAME, messages: user(ENDLESS), temperature: 0 }, AbortSignal.timeout(20_000));
  const completion = (await response.json()) as OpenAI.ChatCompletion;
  assert.equal(completion.choices[0]!.finish_reason, "length");
  assert.deepEqual({ ...completion.usage }, { prompt_tokens: prompt, completion_tokens: context - prompt, total_tokens: context });
});

test("GET /v1/models answers at once while a long answer is generated, streamed or not", async () => {
  const server = await serve();
  const models = async () => {
    const started = Date.now();
    const response = await fetch(`${server.url}/v1/models`);
    assert.equal(response.status, 200);
    return Date.now() - started;
  };
  const controller = new AbortController();
  let longFinished = false;
  const long = post(server, { model: MODEL_NAME, messages: user(ENDLESS), temperature: 0, max_tokens: 3000 }, controller.signal)
    .then(() => (longFinished = true))
    .catch(() => undefined);
  await sleep(300);
  const waited = await models();
  assert.ok(!longFinished, "the long answer is still being generated");
  assert.ok(waited < 1000, `GET /v1/models took ${waited} ms behind a non-streamed generation`);
  controller.abort();
  await long;
  const stream = openStream(server, { messages: user(ENDLESS), max_tokens: 3000 });
  await stream.firstContent;
  const waitedStreaming = await models();
  assert.ok(waitedStreaming < 1000, `GET /v1/models took ${waitedStreaming} ms behind a stream`);
  stream.abort();
  await stream.done;
});

test("two streams interleave: the second's first token comes before the first stream ends", async () => {
  const server = await serve();
  const first = openStream(server, { messages: user(ENDLESS), max_tokens: 2000 });
  await first.firstContent;
  const second = openStream(server, { messages: user("Tell me a story."), max_tokens: 5 });
  const secondFirstToken = await Promise.race([second.firstContent, first.done.then(() => Infinity)]);
  const secondEnd = await second.done;
  assert.ok(secondFirstToken !== Infinity, "the second stream's first token arrived after the first stream ended");
  assert.equal(secondEnd.finishReason, "length");
  let firstEnded = false;
  void first.done.then(() => (firstEnded = true));
  await sleep(0);
  assert.ok(!firstEnded, "the short stream finished while the long one was still running");
  first.abort();
  await first.done;
});

test("a full waiting queue gets 503 with Retry-After; n over the sequence limit gets 400", async () => {
  const server = await serve({ limits: { maxSequences: 1, maxWaiting: 1 } });
  const running = openStream(server, { messages: user(ENDLESS), max_tokens: 3000 });
  await running.firstContent;
  const waitingController = new AbortController();
  const waiting = post(server, { model: MODEL_NAME, messages: user("Hi"), max_tokens: 3 }, waitingController.signal).catch(() => undefined);
  await sleep(100);
  const refused = await post(server, { model: MODEL_NAME, messages: user("Hi"), max_tokens: 3 });
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get("retry-after"), "1");
  const { error } = (await refused.json()) as { error: Record<string, unknown> };
  assert.equal(error.type, "server_error");
  assert.match(error.message as string, /overloaded.*API_MAX_QUEUE/);
  const tooMany = await post(server, { model: MODEL_NAME, messages: user("Hi"), n: 2, max_tokens: 3 });
  assert.equal(tooMany.status, 400);
  assert.match(((await tooMany.json()) as { error: { message: string } }).error.message, /at most 1 sequences at once/);
  waitingController.abort();
  running.abort();
  await Promise.all([waiting, running.done]);
  await sleep(100);
  // Once the clients are gone (the server sees their connections close), the next one is served.
  const served = await post(server, { model: MODEL_NAME, messages: user("Hi"), max_tokens: 3 }, AbortSignal.timeout(10_000));
  assert.equal(served.status, 200);
});

test("the per-request time limit ends an answer with finish_reason length, streamed or not", async () => {
  const server = await serve({ limits: { requestTimeoutSeconds: 0.5 } });
  const started = Date.now();
  const response = await post(server, { model: MODEL_NAME, messages: user(ENDLESS), temperature: 0, max_tokens: 3000 }, AbortSignal.timeout(20_000));
  const completion = (await response.json()) as OpenAI.ChatCompletion;
  const took = Date.now() - started;
  assert.equal(completion.choices[0]!.finish_reason, "length");
  assert.ok(completion.usage!.completion_tokens >= 1 && completion.usage!.completion_tokens < 3000, `${completion.usage!.completion_tokens} tokens`);
  assert.ok(took < 3000, `the answer took ${took} ms under a 0.5 s limit`);
  const stream = openStream(server, { messages: user(ENDLESS), max_tokens: 3000 });
  const end = await stream.done;
  assert.equal(end.finishReason, "length");
  assert.ok(end.contentChunks < 3000);
});

/**
 * POSTs `size` bytes with Node's http client (Content-Length, or chunked); resolves to the status
 * once the whole body is sent and the answer read, rejects on any socket error (ECONNRESET, EPIPE).
 */
function postBytes(server: ApiServer, size: number, chunked: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { "content-type": "application/json" };
    if (!chunked) headers["content-length"] = size;
    let status = 0;
    let sent = false;
    const settle = () => status && sent && resolve(status);
    const req = httpRequest(`${server.url}/v1/chat/completions`, { method: "POST", headers, agent: false }, (res) => {
      res.resume();
      res.on("end", () => {
        status = res.statusCode!;
        settle();
      });
    });
    req.on("error", reject);
    req.on("finish", () => {
      sent = true;
      settle();
    });
    const piece = Buffer.alloc(1 << 20, "x");
    let left = size;
    const write = (): void => {
      while (left > 0) {
        const part = left >= piece.length ? piece : piece.subarray(0, left);
        left -= part.length;
        if (!req.write(part)) return void req.once("drain", write);
      }
      req.end();
    };
    write();
  });
}

test("bodies over 1 MiB get 413 at every size (2 MB, 50 MB, chunked), never a reset connection", async () => {
  const server = await serve();
  assert.equal(await postBytes(server, 2_000_000, false), 413);
  assert.equal(await postBytes(server, 50_000_000, false), 413);
  assert.equal(await postBytes(server, 2_000_000, true), 413);
  assert.equal((await fetch(`${server.url}/v1/models`)).status, 200);
});

test("a client that aborts mid-upload is logged in one line, without a stack trace", async () => {
  const lines: string[] = [];
  const server = await serve({ log: (message) => lines.push(message) });
  const socket = connect(server.port, "127.0.0.1");
  await new Promise((resolve) => socket.once("connect", resolve));
  socket.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"model": "${MODEL_NAME}", "messages": [`);
  await sleep(100);
  socket.destroy();
  for (let i = 0; i < 50 && lines.length === 0; i++) await sleep(20);
  assert.equal(lines.length, 1, JSON.stringify(lines));
  assert.doesNotMatch(lines[0]!, /\n|\bat .*:\d+:\d+/);
  assert.match(lines[0]!, /closed its connection during the upload .*of 100000 bytes/);
});

// --- the scheduler alone -------------------------------------------------------------------------

/** A step-wise job that records each of its steps in `log` and returns after `steps` of them. */
function* recorder(name: string, steps: number, log: string[], closed: string[] = []): Generator<void, string> {
  try {
    for (let i = 0; i < steps; i++) {
      log.push(name);
      yield;
    }
    return name;
  } finally {
    closed.push(name);
  }
}

const job = (start: () => Generator<unknown, string>, seats = 1, startBy = Infinity, abandoned = () => false) => ({ seats, startBy, abandoned, start });

test("scheduler: every running job steps once per tick, in arrival order; a waiting job starts when seats free up", async () => {
  const log: string[] = [];
  const scheduler = new Scheduler(2, 4);
  const results = await Promise.all([
    scheduler.submit(job(() => recorder("a", 3, log))),
    scheduler.submit(job(() => recorder("b", 2, log))),
    scheduler.submit(job(() => recorder("c", 2, log), 2)),
  ]);
  assert.deepEqual(results, ["a", "b", "c"]);
  // c needs both seats, so it starts after a and b are done.
  assert.deepEqual(log, ["a", "b", "a", "b", "a", "c", "c"]);
});

test("scheduler: a full queue and a job past its start deadline are refused; abandoned jobs are closed", async () => {
  const log: string[] = [];
  const closed: string[] = [];
  const scheduler = new Scheduler(1, 1);
  let leave = false;
  const endless = scheduler.submit(job(() => recorder("endless", Infinity, log, closed), 1, Infinity, () => leave));
  const late = scheduler.submit(job(() => recorder("late", 1, log), 1, Date.now() + 30));
  await assert.rejects(scheduler.submit(job(() => recorder("full", 1, log))), (error: unknown) => error instanceof OverloadedError && error.status === 503);
  await assert.rejects(late, (error: unknown) => error instanceof OverloadedError && /time limit/.test(error.message));
  leave = true;
  assert.equal(await endless, undefined);
  assert.deepEqual(closed, ["endless"]);
  assert.ok(!log.includes("late") && !log.includes("full"));
  assert.deepEqual(scheduler.load, { running: 0, waiting: 0 });
});

// --- settings and the memory budget -------------------------------------------------------------

test("limits come from API_MAX_CONCURRENT (else LLaMA-Factory's MAX_CONCURRENT), API_MAX_QUEUE, API_REQUEST_TIMEOUT", () => {
  assert.deepEqual(limitsFromEnv({}), { maxSequences: 4, maxWaiting: 32, requestTimeoutSeconds: 600 });
  assert.deepEqual(limitsFromEnv({ API_MAX_CONCURRENT: "2", MAX_CONCURRENT: "9", API_MAX_QUEUE: "0", API_REQUEST_TIMEOUT: "2.5" }), {
    maxSequences: 2,
    maxWaiting: 0,
    requestTimeoutSeconds: 2.5,
  });
  assert.equal(limitsFromEnv({ MAX_CONCURRENT: "3" }).maxSequences, 3);
  assert.throws(() => limitsFromEnv({ API_MAX_CONCURRENT: "0" }), /API_MAX_CONCURRENT must be an integer >= 1; got "0"/);
  assert.throws(() => limitsFromEnv({ API_MAX_QUEUE: "lots" }), /API_MAX_QUEUE must be an integer >= 0/);
  assert.throws(() => limitsFromEnv({ API_REQUEST_TIMEOUT: "0" }), /API_REQUEST_TIMEOUT must be a number of seconds > 0/);
});

test("memory budget: the README's Qwen2.5-0.5B example, float32 at its 32768-token context", () => {
  const qwen = normalizeConfig({ model_type: "qwen2", vocab_size: 151936, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, max_position_embeddings: 32768 });
  const budget = memoryBudget(qwen, "float32", 32768);
  assert.equal(budget.kvCachePerSequence, 768 * 2 ** 20); // 2 · 24 layers · 2 kv heads · 64 · 32768 · 4 bytes
  assert.equal(budget.prefillStep(1), 14 * 32768 * 4 * (4 * 128 + 2 * 64));
  assert.equal(budget.logitsPerSequence, 151936 * 32);
  assert.equal(requestBytes(budget, 1), 1_984_573_440); // 1.8 GiB
  assert.equal(serverBytes(budget, 4), 5_119_721_472); // 4.8 GiB
  assert.equal(memoryBudget(qwen, "bfloat16", 32768).kvCachePerSequence, 384 * 2 ** 20);
});
