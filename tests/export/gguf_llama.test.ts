// Llama-family GGUF export (src/export/gguf/llama.ts) against llama.cpp (through node-llama-cpp, CPU)
// on tiny random Llama, Qwen2 and Qwen3 checkpoints: next-token probabilities and greedy continuations.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportGguf } from "../../src/export/gguf/llama.ts";
import { syntheticTokenizer } from "../../src/export/gguf/tokenizer.ts";
import { generate } from "../../src/model/generation.ts";
import { loadModel } from "../../src/model/loader.ts";
import type { CausalLM } from "../../src/model/registry.ts";
import { manualSeed, noGrad, randn, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const workDir = mkdtempSync(join(tmpdir(), "lmf-gguf-"));
process.on("exit", () => rmSync(workDir, { recursive: true, force: true }));


type NodeLlamaCpp = typeof import("node-llama-cpp");
type Llama = Awaited<ReturnType<NodeLlamaCpp["getLlama"]>>;
let nlc: NodeLlamaCpp | null = null;
let llama: Llama | null = null;
let unavailable = "";

before(async () => {
  try {
    nlc = await import("node-llama-cpp");
    llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error, progressLogs: false });
  } catch (error) {
    unavailable = `node-llama-cpp cannot load on this machine: ${(error as Error).message.split("\n")[0]}`;
  }
});
after(async () => {
  await llama?.dispose();
});

const PROMPT = [1, 17, 42, 8, 91, 33, 5, 60, 27];
const STEPS = 16;
const THREADS = 2;

/** Norm weights and biases start at 1 and 0 under HF init; random values make them count. */
function randomizeVectors(model: CausalLM, seed: number): void {
  manualSeed(seed);
  const updates = Object.fromEntries(
    model
      .namedParameters()
      .filter(([, p]) => p.ndim === 1)
      .map(([name, p]) => [name, tidy(() => randn([p.shape[0]!]).mul(0.3).add(name.endsWith("norm.weight") ? 1 : 0))]),
  );
  model.loadStateDict(updates, { strict: false });
  for (const t of Object.values(updates)) t.dispose();
}

function softmax(logits: ArrayLike<number>): number[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

/** Our next-token probabilities after `ids` (one full forward, float32). */
function ourProbabilities(model: CausalLM, ids: number[]): number[] {
  const logits = tidy(() => noGrad(() => model.forward(tensor([ids])).select(1, ids.length - 1).select(0, 0).to("float32").toFlatArray()));
  return softmax(logits);
}

/** llama.cpp's greedy continuation with the full next-token distribution at every step. */
async function llamaCppGreedy(modelPath: string, vocabSize: number, prompt: number[], steps: number, kvType: "F32" | "F16") {
  type Token = import("node-llama-cpp").Token;
  type Item = import("node-llama-cpp").ControlledEvaluateInputItem;
  const llamaModel = await llama!.loadModel({ modelPath, gpuLayers: 0 });
  const context = await llamaModel.createContext({
    contextSize: 64,
    batchSize: 64,
    threads: THREADS,
    flashAttention: false,
    experimentalKvCacheKeyType: kvType,
    experimentalKvCacheValueType: kvType,
  });
  try {
    const sequence = context.getSequence();
    const next = { generateNext: { token: true, probabilities: true } } as const;
    let input: Item[] = [...prompt.slice(0, -1).map((id) => id as Token), [prompt.at(-1)! as Token, next]];
    const tokens: number[] = [];
    const distributions: number[][] = [];
    for (let step = 0; step < steps; step++) {
      const result = (await sequence.controlledEvaluate(input)).at(-1)!.next;
      const distribution = new Array<number>(vocabSize).fill(0);
      for (const [token, probability] of result.probabilities!) distribution[token] = probability;
      distributions.push(distribution);
      tokens.push(result.token!);
      input = [[result.token!, next]];
    }
    return { tokens, distributions };
  } finally {
    await context.dispose();
    await llamaModel.dispose();
  }
}

const CASES = [
  { label: "llama (GQA 4 q / 2 kv heads)", overrides: {} },
  {
    label: "qwen2 (q/k/v biases, rope_theta 1e6)",
    overrides: { model_type: "qwen2", architectures: ["Qwen2ForCausalLM"], attention_bias: false, rope_theta: 1e6 },
  },
  {
    label: "qwen3 (q/k norm, head_dim 16 != hidden/heads, tied embeddings)",
    overrides: { model_type: "qwen3", architectures: ["Qwen3ForCausalLM"], head_dim: 16, tie_word_embeddings: true },
  },
  {
    label: "llama with llama3 rope scaling (rope_freqs.weight)",
    overrides: {
      rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
    },
  },
];

for (const [index, { label, overrides }] of CASES.entries()) {
  test(`GGUF f32/f16 vs llama.cpp: ${label}`, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const model = loadModel(makeTinyModel(overrides, index));
    randomizeVectors(model, 100 + index);
    const config = model.config;
    const tokenizer = syntheticTokenizer(config.vocab_size, { bosTokenId: 1, eosTokenId: 2, padTokenId: 0 });
    const f32Path = join(workDir, `case${index}-f32.gguf`);
    const f16Path = join(workDir, `case${index}-f16.gguf`);
    exportGguf(model, tokenizer, f32Path, { type: "f32" });
    exportGguf(model, tokenizer, f16Path, { type: "f16" });

    // The file as an independent reader sees it: llama.cpp's names, metadata, ggml dims.
    const info = await nlc!.readGgufFileInfo(f32Path, { readTensorInfo: true });
    const names = new Set(info.fullTensorInfo!.map((tensorInfo) => tensorInfo.name));
    const arch = config.model_type === "qwen2" || config.model_type === "qwen3" ? config.model_type : "llama";
    assert.equal((info.metadata.general as { architecture: string }).architecture, arch);
    assert.equal(names.has("output.weight"), !config.tie_word_embeddings);
    assert.equal(names.has("blk.0.attn_q.bias"), config.model_type === "qwen2");
    assert.equal(names.has("blk.1.attn_k_norm.weight"), config.model_type === "qwen3");
    const qInfo = info.fullTensorInfo!.find((tensorInfo) => tensorInfo.name === "blk.0.attn_q.weight")!;
    assert.deepEqual(qInfo.dimensions.map(Number), [config.hidden_size, config.num_attention_heads * config.head_dim]);

    // f32: next-token distributions along the greedy path and the path itself.
    const ours = generate(model, [PROMPT], { maxNewTokens: STEPS, doSample: false, eosTokenId: [] }).sequences[0]!;
    const theirs = await llamaCppGreedy(f32Path, config.vocab_size, PROMPT, STEPS, "F32");
    let maxDiff = 0;
    theirs.distributions.forEach((distribution, step) => {
      const mine = ourProbabilities(model, [...PROMPT, ...ours.slice(0, step)]);
      mine.forEach((p, token) => (maxDiff = Math.max(maxDiff, Math.abs(p - distribution[token]!))));
    });
    t.diagnostic(`f32: max |p_ours - p_llama.cpp| over ${STEPS} steps x ${config.vocab_size} tokens = ${maxDiff.toExponential(2)}`);
    assert.deepEqual(theirs.tokens, ours, "greedy continuation");
    assert.ok(maxDiff < 1e-5, `f32 probabilities differ by ${maxDiff}`);

    // f16: 2-D weights rounded to half precision (and an f16 KV cache): the same greedy path, and
    // distributions within what the rounding explains.
    const half = await llamaCppGreedy(f16Path, config.vocab_size, PROMPT, STEPS, "F16");
    let halfDiff = 0;
    half.distributions.forEach((distribution, step) => {
      const mine = ourProbabilities(model, [...PROMPT, ...ours.slice(0, step)]);
      mine.forEach((p, token) => (halfDiff = Math.max(halfDiff, Math.abs(p - distribution[token]!))));
    });
    t.diagnostic(`f16: max |p_ours(f32) - p_llama.cpp(f16)| over ${STEPS} steps = ${halfDiff.toExponential(2)}`);
    assert.deepEqual(half.tokens, ours, "greedy continuation from the f16 file");
    assert.ok(halfDiff < 2e-3, `f16 probabilities differ by ${halfDiff}`);
    model.dispose();
  });
}

test("GGUF export: a zero o_proj bias is dropped for qwen2 (llama.cpp has none); a non-zero one is a clear error", async (t) => {
  if (unavailable) return t.skip(unavailable);
  // Our qwen2 defaults (attention_bias: true) give o_proj a bias that HF init leaves at zero.
  const model = loadModel(makeTinyModel({ model_type: "qwen2", architectures: ["Qwen2ForCausalLM"] }, 7));
  const tokenizer = syntheticTokenizer(model.config.vocab_size, { bosTokenId: 1, eosTokenId: 2 });
  const path = join(workDir, "qwen2-zero-bias.gguf");
  exportGguf(model, tokenizer, path);
  const info = await nlc!.readGgufFileInfo(path, { readTensorInfo: true });
  assert.ok(!info.fullTensorInfo!.some((tensorInfo) => tensorInfo.name.endsWith("attn_output.bias")));
  const loaded = await llama!.loadModel({ modelPath: path, gpuLayers: 0 });
  await loaded.dispose();
  const name = "model.layers.0.self_attn.o_proj.bias";
  if (model.stateDict()[name]) {
    const bias = tidy(() => randn([model.config.hidden_size]));
    model.loadStateDict({ [name]: bias }, { strict: false });
    bias.dispose();
    assert.throws(() => exportGguf(model, tokenizer, path), /llama\.cpp's qwen2 has no "blk\.0\.attn_output\.bias"/);
  }
  model.dispose();
});

