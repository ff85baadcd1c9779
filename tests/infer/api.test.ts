// `lmf api` end to end: a real server on an ephemeral loopback port over a tiny random chat model,
// driven by the official `openai` client (and raw fetch for malformed requests). Greedy answers
// must equal ChatModel.chat, streams must concatenate to them, and 20 concurrent clients must get
// the sequential answers.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import type { Message } from "../../src/data/types.ts";
import { buildChoice } from "../../src/infer/api/completions.ts";
import { type ApiServer, createApiServer } from "../../src/infer/api/server.ts";
import { ChatModel } from "../../src/infer/chat_model.ts";
import { makeTinyChatModel } from "../fixtures/tiny_model.ts";

const MODEL_NAME = "tiny-test";
const API_KEY = "sk-test-key";
const MAX_TOKENS = 10;
const MAX_BODY_BYTES = 16 * 1024;

// A context long enough for the tool prompt (about 630 tokens with the qwen template).
const tinyChatModel = (): string => makeTinyChatModel({ max_position_embeddings: 1024 });

// The qwen template renders tools (Hermes-style <tool_call> blocks), so the tool path is exercised.
const chat = ChatModel.load({ modelNameOrPath: tinyChatModel(), template: "qwen" });
let server: ApiServer;
let client: OpenAI;

before(async () => {
  server = await createApiServer(chat, { host: "127.0.0.1", port: 0, apiKey: API_KEY, modelName: MODEL_NAME, maxBodyBytes: MAX_BODY_BYTES });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 120_000 });
});

after(async () => {
  await server.close();
  chat.dispose();
});

const GREEDY = { doSample: false, maxNewTokens: MAX_TOKENS };

function greedyAnswer(messages: Message[], system?: string) {
  return chat.chat([messages], GREEDY, system)[0]!;
}

async function streamed(messages: OpenAI.ChatCompletionMessageParam[], extra: Partial<OpenAI.ChatCompletionCreateParamsStreaming> = {}) {
  const stream = await client.chat.completions.create({ model: MODEL_NAME, messages, temperature: 0, max_tokens: MAX_TOKENS, stream: true, ...extra });
  const chunks: OpenAI.ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("");
  return { chunks, text };
}

async function rawPost(body: string, headers: Record<string, string> = {}): Promise<{ status: number; body: { error: Record<string, unknown> } }> {
  const response = await fetch(`${server.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${API_KEY}`, ...headers },
    body,
  });
  return { status: response.status, body: (await response.json()) as { error: Record<string, unknown> } };
}

function assertOpenAiError(result: { status: number; body: { error: Record<string, unknown> } }, status: number, pattern: RegExp): void {
  assert.equal(result.status, status, JSON.stringify(result.body));
  const { error } = result.body;
  assert.equal(typeof error.message, "string");
  assert.match(error.message as string, pattern);
  assert.equal(error.type, "invalid_request_error");
  assert.ok("param" in error && "code" in error, "error has param and code");
}

test("non-streamed greedy answer equals ChatModel.chat, with usage counts", async () => {
  const system = "You are a test.";
  const messages: Message[] = [
    { role: "user", content: "Hello there" },
    { role: "assistant", content: "Hi." },
    { role: "user", content: "Who are you?" },
  ];
  const expected = greedyAnswer(messages, system);
  const completion = await client.chat.completions.create({
    model: MODEL_NAME,
    messages: [{ role: "system", content: system }, ...(messages as OpenAI.ChatCompletionMessageParam[])],
    temperature: 0,
    max_tokens: MAX_TOKENS,
  });
  assert.equal(completion.object, "chat.completion");
  assert.equal(completion.model, MODEL_NAME);
  assert.equal(completion.choices.length, 1);
  assert.equal(completion.choices[0]!.message.content, expected.text);
  assert.equal(completion.choices[0]!.finish_reason, expected.finishReason);
  assert.deepEqual(completion.usage && { ...completion.usage }, {
    prompt_tokens: chat.promptIds(messages, system).length,
    completion_tokens: expected.completionTokens,
    total_tokens: expected.promptTokens + expected.completionTokens,
  });
  // max_completion_tokens is the newer name of max_tokens.
  const newer = await client.chat.completions.create({ model: MODEL_NAME, messages: [{ role: "user", content: "Who are you?" }], temperature: 0, max_completion_tokens: MAX_TOKENS });
  assert.equal(newer.choices[0]!.message.content, greedyAnswer([{ role: "user", content: "Who are you?" }]).text);
});

test("streamed chunks: a role delta, content deltas, a finish chunk; they concatenate to the answer", async () => {
  const messages: Message[] = [{ role: "user", content: "Tell me a story." }];
  const expected = greedyAnswer(messages);
  const { chunks, text } = await streamed(messages as OpenAI.ChatCompletionMessageParam[], { stream_options: { include_usage: true } });
  assert.equal(text, expected.text);
  assert.deepEqual(chunks[0]!.choices[0]!.delta, { role: "assistant", content: "" });
  assert.ok(chunks.every((chunk) => chunk.object === "chat.completion.chunk" && chunk.id === chunks[0]!.id));
  const finish = chunks.find((chunk) => chunk.choices[0]?.finish_reason);
  assert.equal(finish?.choices[0]!.finish_reason, expected.finishReason);
  const usage = chunks.at(-1)!.usage;
  assert.deepEqual(usage && { ...usage }, {
    prompt_tokens: expected.promptTokens,
    completion_tokens: expected.completionTokens,
    total_tokens: expected.promptTokens + expected.completionTokens,
  });
});

test("n: 2 gives two sampled choices in one response", async () => {
  const completion = await client.chat.completions.create({ model: MODEL_NAME, messages: [{ role: "user", content: "Pick a word." }], n: 2, max_tokens: 4 });
  assert.deepEqual(completion.choices.map((choice) => choice.index), [0, 1]);
  for (const choice of completion.choices) assert.equal(typeof choice.message.content, "string");
  assert.ok(completion.usage!.completion_tokens >= 2 && completion.usage!.completion_tokens <= 8);
});

test("stop strings cut the answer at the first stop string, streamed or not, with equal usage", async () => {
  const messages: Message[] = [{ role: "user", content: "Count for me." }];
  const full = chat.chat([messages], { doSample: false, maxNewTokens: 24 })[0]!.text;
  assert.ok(full.length >= 6, `the tiny model's answer is long enough to cut: ${JSON.stringify(full)}`);
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 2);
  const expected = full.slice(0, full.indexOf(stop));
  const request = { model: MODEL_NAME, messages: messages as OpenAI.ChatCompletionMessageParam[], temperature: 0, max_tokens: 24, stop: [stop, "\u0000never"] };
  const completion = await client.chat.completions.create(request);
  assert.equal(completion.choices[0]!.message.content, expected);
  assert.equal(completion.choices[0]!.finish_reason, "stop");
  const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  let text = "";
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? "";
    usage = chunk.usage ?? usage;
  }
  assert.equal(text, expected);
  assert.equal(usage!.completion_tokens, completion.usage!.completion_tokens);
  assert.ok(completion.usage!.completion_tokens < 24 || full.indexOf(stop) === full.length - 2);
});

test("GET /v1/models lists the served model name", async () => {
  const models = [];
  for await (const model of client.models.list()) models.push(model);
  assert.deepEqual(models.map((model) => [model.id, model.object, model.owned_by]), [[MODEL_NAME, "model", "owner"]]);
});

test("auth: a missing or wrong bearer key gets 401 in OpenAI's error shape", async () => {
  const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (error: unknown) => error instanceof OpenAI.AuthenticationError && error.status === 401);
  await assert.rejects(
    wrong.chat.completions.create({ model: MODEL_NAME, messages: [{ role: "user", content: "hi" }] }),
    (error: unknown) => error instanceof OpenAI.AuthenticationError,
  );
  const missing = await fetch(`${server.url}/v1/models`);
  assertOpenAiError({ status: missing.status, body: (await missing.json()) as { error: Record<string, unknown> } }, 401, /Invalid API key/);
  const body = JSON.stringify({ model: MODEL_NAME, messages: [{ role: "user", content: "hi" }] });
  assertOpenAiError(await rawPost(body, { authorization: "Bearer nope" }), 401, /Invalid API key/);
});

test("malformed requests each get one 4xx in OpenAI's error shape, and the server keeps serving", async () => {
  const user = { role: "user", content: "hi" };
  const assistant = { role: "assistant", content: "hello" };
  const post = (body: unknown) => rawPost(JSON.stringify(body));
  assertOpenAiError(await rawPost("{not json"), 400, /parse the JSON/);
  assertOpenAiError(await rawPost("[1, 2]"), 400, /JSON object/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [] }), 400, /non-empty list/);
  assertOpenAiError(await post({ model: MODEL_NAME }), 400, /messages/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [user, user, user] }), 400, /Invalid role/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [user, assistant] }), 400, /u\/a\/u\/a\/u/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [assistant] }), 400, /Invalid role/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [user, { role: "system", content: "late" }, user] }), 400, /Invalid role/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [{ role: "user", content: 5 }] }), 400, /content/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [user], temperature: "hot" }), 400, /temperature/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [user], n: 0 }), 400, /'n'/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [user], max_tokens: 1.5 }), 400, /max_tokens/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [user], stop: [""] }), 400, /stop/);
  assertOpenAiError(await post({ model: MODEL_NAME, messages: [user], stream: true, n: 2 }), 400, /multiple/);
  assertOpenAiError(await post({ model: "gpt-4o", messages: [user] }), 404, /does not exist/);
  const oversized = { model: MODEL_NAME, messages: [{ role: "user", content: "x".repeat(MAX_BODY_BYTES * 2) }] };
  assertOpenAiError(await post(oversized), 413, /larger than/);
  const wrongMethod = await fetch(`${server.url}/v1/chat/completions`, { headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(wrongMethod.status, 405);
  const unknownPath = await fetch(`${server.url}/v1/completions`, { method: "POST", body: "{}" });
  assert.equal(unknownPath.status, 404);
  // The official client surfaces the same errors as typed exceptions.
  await assert.rejects(
    client.chat.completions.create({ model: MODEL_NAME, messages: [{ role: "assistant", content: "x" }] }),
    (error: unknown) => error instanceof OpenAI.BadRequestError && /Invalid role/.test(error.message),
  );
  const models = await client.models.list();
  assert.equal(models.data.length, 1, "still serving after bad input");
});

const WEATHER_TOOL: OpenAI.ChatCompletionTool = {
  type: "function",
  function: { name: "get_weather", description: "Weather of a city", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } },
};

test("tools: a tool-call round trip renders the tools, the call and its result with the template", async () => {
  const messages: OpenAI.ChatCompletionMessageParam[] = [
    { role: "user", content: "Weather in Paris?" },
    { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } }] },
    { role: "tool", tool_call_id: "call_1", content: '{"temperature": 21}' },
  ];
  const completion = await client.chat.completions.create({ model: MODEL_NAME, messages, tools: [WEATHER_TOOL], temperature: 0, max_tokens: MAX_TOKENS });
  const templateMessages: Message[] = [
    { role: "user", content: "Weather in Paris?" },
    { role: "function", content: JSON.stringify([{ name: "get_weather", arguments: { city: "Paris" } }]) },
    { role: "observation", content: '{"temperature": 21}' },
  ];
  const prompt = chat.promptIds(templateMessages, undefined, JSON.stringify([WEATHER_TOOL.function]));
  assert.equal(completion.usage!.prompt_tokens, prompt.length);
  const promptText = chat.tokenizer.decode(prompt, { skipSpecialTokens: false });
  assert.match(promptText, /"name": "get_weather"/);
  assert.match(promptText, /<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "Paris"\}\}\n<\/tool_call>/);
  assert.match(promptText, /<tool_response>\n\{"temperature": 21\}\n<\/tool_response>/);
  // A random tiny model does not write a tool call, so its answer is plain content here.
  const choice = completion.choices[0]!;
  assert.ok(choice.finish_reason === "tool_calls" ? choice.message.tool_calls!.length > 0 : typeof choice.message.content === "string");
  assertOpenAiError(
    await rawPost(JSON.stringify({ model: MODEL_NAME, messages: [{ role: "user", content: "hi" }], tools: [WEATHER_TOOL], stream: true })),
    400,
    /Cannot stream function calls/,
  );
});

test("tools: a model answer the template parses as function calls becomes tool_calls (response builder)", () => {
  const extract = (text: string) => chat.template.extractTool(text);
  const answer = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
  const choice = buildChoice(0, answer, "stop", true, extract);
  assert.equal(choice.finish_reason, "tool_calls");
  assert.equal(choice.message.content, null);
  assert.equal(choice.message.tool_calls!.length, 1);
  const call = choice.message.tool_calls![0]!;
  assert.match(call.id, /^call_[0-9a-f]{32}$/);
  assert.deepEqual({ type: call.type, ...call.function }, { type: "function", name: "get_weather", arguments: '{"city": "Paris"}' });
  assert.deepEqual(buildChoice(1, "It is sunny.", "length", true, extract).message, { role: "assistant", content: "It is sunny." });
  assert.deepEqual(buildChoice(0, answer, "stop", false, extract).message, { role: "assistant", content: answer });
});

test("concurrency: 20 clients at once (half streaming) all get the sequential answers", async () => {
  const questions = Array.from({ length: 20 }, (_, i) => `Question number ${i}?`);
  const sequential = questions.map((question) => greedyAnswer([{ role: "user", content: question }]).text);
  const answers = await Promise.all(
    questions.map(async (question, i) => {
      const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: question }];
      if (i % 2 === 1) return (await streamed(messages)).text;
      const completion = await client.chat.completions.create({ model: MODEL_NAME, messages, temperature: 0, max_tokens: MAX_TOKENS });
      return completion.choices[0]!.message.content;
    }),
  );
  assert.deepEqual(answers, sequential);
});

test("lmf api starts from the command line, answers /v1/models with the key, and stops on SIGINT", async () => {
  const { spawn, spawnSync } = await import("node:child_process");
  const folder = tinyChatModel();
  const child = spawn(process.execPath, ["bin/lmf.mjs", "api", "--model_name_or_path", folder, "--template", "chatml"], {
    env: { ...process.env, API_PORT: "0", API_KEY: "sk-cli", API_MODEL_NAME: "tiny" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let startup = "";
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (chunk) => {
      startup += chunk;
      const found = /at (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(startup);
      if (found) resolve(found[1]!);
    });
    child.once("exit", (code) => reject(new Error(`lmf api exited with ${code}`)));
  });
  assert.match(startup, /context 1024 tokens; up to 4 sequences at once .*memory beyond the weights: at most \d+ MiB for one request/);
  const denied = await fetch(`${url}/v1/models`);
  assert.equal(denied.status, 401);
  const models = await (await fetch(`${url}/v1/models`, { headers: { authorization: "Bearer sk-cli" } })).json();
  assert.equal(models.data[0].id, "tiny");
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  child.kill("SIGINT");
  assert.equal(await exited, 0);
  // A bad limit is one clear error before the model loads.
  const bad = spawnSync(process.execPath, ["bin/lmf.mjs", "api", "--model_name_or_path", folder, "--template", "chatml"], { env: { ...process.env, API_PORT: "0", API_MAX_CONCURRENT: "none" }, encoding: "utf8" });
  assert.equal(bad.status, 1);
  assert.equal(bad.stderr.trim(), 'error: environment: API_MAX_CONCURRENT must be an integer >= 1; got "none" (e.g. API_MAX_CONCURRENT=4)');
});
