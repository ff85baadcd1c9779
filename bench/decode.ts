// Greedy decoding, lmfactory's generate (KV cache) against llama.cpp (node-llama-cpp, CPU) on the
// same weights (our f32 GGUF export), batch 1, prompt 128, 128 new tokens, same threads: prefill
// time and decode tokens/s, median of several runs alternating the two. Writes bench/results/decode.json.
// Usage: node --import tsx bench/decode.ts [--quick]
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { exportGguf } from "../src/export/gguf/export.ts";
import { syntheticTokenizer } from "../src/export/gguf/tokenizer.ts";
import { normalizeConfig } from "../src/model/config.ts";
import { generateStream } from "../src/model/generation.ts";
import { LlamaForCausalLM } from "../src/model/models/llama.ts";
import * as T from "../src/torch/index.ts";
import { THREADS, llamaConfig, median } from "./common.ts";

const QUICK = process.argv.includes("--quick");
// ~0.1B Llama (12 x 768, GQA 12 q / 4 kv heads, MLP 3072) with a 32k vocabulary: 153M parameters,
// 104M of them in the decoder layers.
const SHAPE = { hidden: 768, layers: 12, heads: 12, kvHeads: 4, intermediate: 3072, vocab: 32000 };
const PROMPT = 128;
const NEW = QUICK ? 32 : 128;
const RUNS = QUICK ? 2 : 3;

interface Run {
  prefill_s: number;
  decode_tokens_per_s: number;
  tokens: number[];
}

/** Ours: the first yielded token covers prefill (+ one sample); the rest are decode steps. */
function ours(model: LlamaForCausalLM, prompt: number[]): Run {
  const tokens: number[] = [];
  const started = performance.now();
  let firstAt = 0;
  for (const token of generateStream(model, prompt, { maxNewTokens: NEW, doSample: false, eosTokenId: [] })) {
    if (!tokens.length) firstAt = performance.now();
    tokens.push(token);
  }
  const ended = performance.now();
  return { prefill_s: (firstAt - started) / 1000, decode_tokens_per_s: (NEW - 1) / ((ended - firstAt) / 1000), tokens };
}

async function main(): Promise<void> {
  const nlc = await import("node-llama-cpp");
  type Token = import("node-llama-cpp").Token;
  const folder = "bench/results/tmp/decode";
  mkdirSync(folder, { recursive: true });
  const config = normalizeConfig(llamaConfig(SHAPE));
  T.manualSeed(0);
  const model = new LlamaForCausalLM(config, {}, { init: "hf" });
  model.requiresGrad_(false);
  const ggufPath = join(folder, "model-f32.gguf");
  exportGguf(model, syntheticTokenizer(SHAPE.vocab, { bosTokenId: 1, eosTokenId: 2 }), ggufPath, { type: "f32" });
  const params = model.numParameters();

  const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error, progressLogs: false });
  const llamaModel = await llama.loadModel({ modelPath: ggufPath, gpuLayers: 0 });
  const context = await llamaModel.createContext({ contextSize: 512, batchSize: 512, threads: THREADS, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
  const sequence = context.getSequence();
  const next = { generateNext: { token: true } } as const;

  /** llama.cpp: one evaluate call for the prompt, then one call per token (greedy in C++). */
  async function theirs(prompt: number[]): Promise<Run> {
    await sequence.clearHistory();
    const tokens: number[] = [];
    const started = performance.now();
    let result = (await sequence.controlledEvaluate([...prompt.slice(0, -1).map((id) => id as Token), [prompt.at(-1)! as Token, next]])).at(-1)!.next;
    const firstAt = performance.now();
    tokens.push(result.token!);
    while (tokens.length < NEW) {
      result = (await sequence.controlledEvaluate([[tokens.at(-1)! as Token, next]])).at(-1)!.next;
      tokens.push(result.token!);
    }
    const ended = performance.now();
    return { prefill_s: (firstAt - started) / 1000, decode_tokens_per_s: (NEW - 1) / ((ended - firstAt) / 1000), tokens };
  }

  let seed = 7;
  const prompt = Array.from({ length: PROMPT }, () => 3 + ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % (SHAPE.vocab - 3)));
  const lmf: Run[] = [];
  const cpp: Run[] = [];
  // One untimed warm-up each (page faults on the weights, thread pools), then alternate.
  ours(model, prompt);
  await theirs(prompt);
  for (let r = 0; r < RUNS; r++) {
    lmf.push(ours(model, prompt));
    cpp.push(await theirs(prompt));
  }
  const agree = lmf[0]!.tokens.findIndex((t, i) => t !== cpp[0]!.tokens[i]);
  const row = {
    params,
    lmf: { prefill_s: median(lmf.map((r) => r.prefill_s)), decode_tokens_per_s: median(lmf.map((r) => r.decode_tokens_per_s)) },
    llama_cpp: { prefill_s: median(cpp.map((r) => r.prefill_s)), decode_tokens_per_s: median(cpp.map((r) => r.decode_tokens_per_s)) },
    greedy_tokens_identical: agree === -1 ? NEW : agree,
    load: loadavg()[0],
  };
  console.log(`Llama ${SHAPE.layers}x${SHAPE.hidden} (${(params / 1e6).toFixed(0)}M params, GQA ${SHAPE.heads}/${SHAPE.kvHeads}, vocab ${SHAPE.vocab}), f32, ${THREADS} threads, prompt ${PROMPT}, ${NEW} new tokens, median of ${RUNS}`);
  console.log(`             prefill s   decode tok/s`);
  console.log(`lmfactory    ${row.lmf.prefill_s.toFixed(3).padStart(9)}   ${row.lmf.decode_tokens_per_s.toFixed(1).padStart(12)}`);
  console.log(`llama.cpp    ${row.llama_cpp.prefill_s.toFixed(3).padStart(9)}   ${row.llama_cpp.decode_tokens_per_s.toFixed(1).padStart(12)}`);
  console.log(
    `ratio lmf/llama.cpp: decode tok/s ${(row.lmf.decode_tokens_per_s / row.llama_cpp.decode_tokens_per_s).toFixed(2)}, prefill time ${(row.lmf.prefill_s / row.llama_cpp.prefill_s).toFixed(2)}; ` +
      `greedy paths identical for ${row.greedy_tokens_identical}/${NEW} tokens; load ${row.load!.toFixed(2)}`,
  );
  writeFileSync(
    "bench/results/decode.json",
    JSON.stringify({ shape: SHAPE, prompt: PROMPT, newTokens: NEW, runs: RUNS, threads: THREADS, quick: QUICK, row, lmfRuns: lmf.map(({ tokens: _t, ...r }) => r), llamaCppRuns: cpp.map(({ tokens: _t, ...r }) => r) }, null, 2) + "\n",
  );
  await context.dispose();
  await llamaModel.dispose();
  await llama.dispose();
  model.dispose();
  rmSync(folder, { recursive: true, force: true });
}

await main();
