// Llama-family GGUF export (src/export/gguf/llama.ts, export.ts) against llama.cpp (through node-llama-cpp, CPU)
// on tiny random Llama, Qwen2 and Qwen3 checkpoints: next-token probabilities and greedy continuations.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportGguf } from "../../src/export/gguf/export.ts";
import { syntheticTokenizer } from "../../src/export/gguf/tokenizer.ts";
import { loadModel } from "../../src/model/loader.ts";
import { randn, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";
import { type Llama, type NodeLlamaCpp, compareWithLlamaCpp, loadLlamaCpp, randomizeVectors } from "./llama_cpp.ts";

const workDir = mkdtempSync(join(tmpdir(), "lmf-gguf-"));
process.on("exit", () => rmSync(workDir, { recursive: true, force: true }));


let nlc: NodeLlamaCpp | null = null;
let llama: Llama | null = null;
let unavailable = "";

before(async () => {
  const loaded = await loadLlamaCpp();
  if ("unavailable" in loaded) unavailable = loaded.unavailable;
  else ({ nlc, llama } = loaded);
});
after(async () => {
  await llama?.dispose();
});

const PROMPT = [1, 17, 42, 8, 91, 33, 5, 60, 27];
const STEPS = 16;

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
    const full = await compareWithLlamaCpp(llama!, model, f32Path, PROMPT, STEPS, "F32");
    t.diagnostic(`f32: max |p_ours - p_llama.cpp| over ${STEPS} steps x ${config.vocab_size} tokens = ${full.maxDiff.toExponential(2)}`);
    assert.deepEqual(full.theirs, full.ours, "greedy continuation");
    assert.ok(full.maxDiff < 1e-5, `f32 probabilities differ by ${full.maxDiff}`);

    // f16: 2-D weights rounded to half precision (and an f16 KV cache): the same greedy path, and
    // distributions within what the rounding explains.
    const half = await compareWithLlamaCpp(llama!, model, f16Path, PROMPT, STEPS, "F16");
    t.diagnostic(`f16: max |p_ours(f32) - p_llama.cpp(f16)| over ${STEPS} steps = ${half.maxDiff.toExponential(2)}`);
    assert.deepEqual(half.theirs, half.ours, "greedy continuation from the f16 file");
    assert.ok(half.maxDiff < 2e-3, `f16 probabilities differ by ${half.maxDiff}`);
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

