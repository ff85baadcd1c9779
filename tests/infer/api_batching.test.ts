// `lmf api` decodes concurrent requests together (continuous batching): 16 streaming clients of the
// official `openai` client, with their own max_tokens, beside sampled ones, get at temperature 0
// exactly what the single-request path (ChatModel.chat, `generate` alone) answers, while the
// server's decode steps carry many of them in one forward pass.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { type ApiServer, createApiServer } from "../../src/infer/api/server.ts";
import { ChatModel } from "../../src/infer/chat_model.ts";
import { RowCaches } from "../../src/model/cache.ts";
import type { ForwardOptions } from "../../src/model/causal_lm.ts";
import type { Tensor } from "../../src/torch/index.ts";
import { makeTinyChatModel } from "../fixtures/tiny_model.ts";

const MODEL_NAME = "tiny-batch";
// Row widths that are multiples of 16, as in released models (see tests/model/decode_batch.test.ts).
const chat = ChatModel.load({ modelNameOrPath: makeTinyChatModel({ hidden_size: 80, intermediate_size: 144, max_position_embeddings: 512 }), template: "qwen" });
let server: ApiServer;
let client: OpenAI;
const rowsPerBatchedStep: number[] = [];

before(async () => {
  const forward = chat.model.forward.bind(chat.model);
  chat.model.forward = (ids: Tensor, options?: ForwardOptions) => {
    if (options?.cache instanceof RowCaches) rowsPerBatchedStep.push(ids.shape[0]!);
    return forward(ids, options);
  };
  server = await createApiServer(chat, { host: "127.0.0.1", port: 0, modelName: MODEL_NAME, limits: { maxSequences: 20 } });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "none", maxRetries: 0, timeout: 300_000 });
});

after(async () => {
  await server.close();
  chat.dispose();
});

async function stream(question: string, maxTokens: number, temperature: number): Promise<string> {
  const response = await client.chat.completions.create({ model: MODEL_NAME, messages: [{ role: "user", content: question }], temperature, max_tokens: maxTokens, stream: true });
  let text = "";
  for await (const chunk of response) text += chunk.choices[0]?.delta.content ?? "";
  return text;
}

test("16 concurrent streaming clients at temperature 0 get exactly the single-request answers, decoded together", async () => {
  const questions = Array.from({ length: 16 }, (_, i) => `Tell me about the number ${i}${"!".repeat(i % 5)}`);
  const budget = (i: number) => 6 + ((i * 3) % 13);
  const single = questions.map((question, i) => chat.chat([[{ role: "user", content: question }]], { doSample: false, maxNewTokens: budget(i) })[0]!.text);
  const [greedy] = await Promise.all([
    Promise.all(questions.map((question, i) => stream(question, budget(i), 0))),
    // Sampled requests in the same batch, with their own settings.
    Promise.all([0, 1, 2].map((i) => stream(`Sample ${i}`, 8, 0.9))),
  ]);
  assert.deepEqual(greedy, single);
  assert.ok(Math.max(...rowsPerBatchedStep) >= 8, `rows per decode step: ${rowsPerBatchedStep.join(",")}`);
});
