// GGUF export of the families beyond Llama (src/export/gguf/{gemma,phi3,qwen_moe,glm4,deepseek_v2,llama}.ts)
// against llama.cpp (node-llama-cpp, CPU) on tiny random checkpoints of each family: the file's
// architecture and tensor layout as an independent reader sees it, then next-token probabilities
// along the greedy path and the greedy continuation itself, from f32 and f16 files. Families or
// configurations llama.cpp cannot run as Hugging Face does are refused before anything is written.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportGguf, ggufRefusal } from "../../src/export/gguf/export.ts";
import { syntheticTokenizer } from "../../src/export/gguf/tokenizer.ts";
import { runExport } from "../../src/export/workflow.ts";
import { parseInferArgs } from "../../src/hparams/index.ts";
import { normalizeConfig } from "../../src/model/config.ts";
import { loadModel } from "../../src/model/loader.ts";
import { TINY_LLAMA, makeTinyChatModel, makeTinyModel } from "../fixtures/tiny_model.ts";
import { type Llama, type NodeLlamaCpp, compareWithLlamaCpp, loadLlamaCpp, randomizeVectors } from "./llama_cpp.ts";

const workDir = mkdtempSync(join(tmpdir(), "lmf-gguf-families-"));
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

const GEMMA = { head_dim: 8, query_pre_attn_scalar: 8, intermediate_size: 48 };
/** DeepSeek-V2-Lite's shape in miniature (tests/model/deepseek_v2.test.ts). */
const DEEPSEEK = {
  intermediate_size: 48, moe_intermediate_size: 12, num_hidden_layers: 3, num_key_value_heads: 4, q_lora_rank: null, kv_lora_rank: 16,
  qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 6, n_routed_experts: 8, n_shared_experts: 2, num_experts_per_tok: 3,
  first_k_dense_replace: 1, routed_scaling_factor: 1.0, topk_method: "greedy",
};
const MOE = { num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };

interface Case {
  label: string;
  overrides: Record<string, unknown>;
  arch: string;
  /** Tensors the file must hold (llama.cpp names) with their ggml dims. */
  tensors: Record<string, number[]>;
  /** Largest |p_ours - p_llama.cpp| allowed from the f32 file. */
  f32Tolerance: number;
}

// llama.cpp's CPU GELU (Gemma's GeGLU) looks its input up in a float16 table (GGML_GELU_FP16), so
// the Gemmas' f32 files agree to ~1e-4, not to float32 rounding.
const CASES: Case[] = [
  {
    label: "gemma (GeGLU, 1 + w norms, scaled embedding, tied)",
    overrides: { model_type: "gemma", ...GEMMA, tie_word_embeddings: true },
    arch: "gemma",
    tensors: { "blk.0.ffn_norm.weight": [32], "blk.1.ffn_gate.weight": [32, 48] },
    f32Tolerance: 5e-4,
  },
  {
    label: "gemma2 (window 4 on even layers, soft-capped attention 2 and logits 3, query_pre_attn_scalar 12 folded into q)",
    overrides: { model_type: "gemma2", ...GEMMA, tie_word_embeddings: true, query_pre_attn_scalar: 12, sliding_window: 4, attn_logit_softcapping: 2.0, final_logit_softcapping: 3.0 },
    arch: "gemma2",
    tensors: { "blk.0.post_attention_norm.weight": [32], "blk.0.post_ffw_norm.weight": [32], "blk.1.ffn_norm.weight": [32] },
    f32Tolerance: 5e-4,
  },
  {
    label: "gemma3_text (untied head, 6 layers: 5 sliding with window 4 and base 10000, 1 global with linear scaling 2, q/k norms)",
    overrides: { model_type: "gemma3_text", ...GEMMA, num_hidden_layers: 6, sliding_window: 4, rope_theta: 50000, rope_scaling: { rope_type: "linear", factor: 2 } },
    arch: "gemma3",
    tensors: { "blk.5.attn_q_norm.weight": [8], "blk.5.attn_k_norm.weight": [8], "blk.5.post_ffw_norm.weight": [32] },
    f32Tolerance: 5e-4,
  },
  {
    label: "phi3 (fused qkv and gate_up, partial rotary 0.5)",
    overrides: { model_type: "phi3", intermediate_size: 48, partial_rotary_factor: 0.5, original_max_position_embeddings: 128 },
    arch: "phi3",
    tensors: { "blk.0.attn_qkv.weight": [32, 64], "blk.0.ffn_up.weight": [32, 96], "blk.1.ffn_down.weight": [48, 32] },
    f32Tolerance: 1e-5,
  },
  {
    // llama.cpp picks the long factors when its context (padded to 256) exceeds the pretrained one.
    label: "phi3 LongRoPE (short factors within the pretrained context, attention factor of a 4x stretch)",
    overrides: {
      model_type: "phi3",
      intermediate_size: 48,
      max_position_embeddings: 2048,
      original_max_position_embeddings: 512,
      rope_scaling: { type: "longrope", short_factor: [1, 1.3, 1.9, 2.5], long_factor: [1, 2, 4, 8] },
    },
    arch: "phi3",
    tensors: { "rope_factors_short.weight": [4], "rope_factors_long.weight": [4] },
    f32Tolerance: 1e-5,
  },
  {
    label: "mixtral (llama with 8 experts, top-2, stacked ffn_*_exps)",
    overrides: { model_type: "mixtral", ...MOE, intermediate_size: 24, num_local_experts: 8, num_experts_per_tok: 2 },
    arch: "llama",
    tensors: { "blk.0.ffn_gate_inp.weight": [32, 8], "blk.0.ffn_gate_exps.weight": [32, 24, 8], "blk.1.ffn_down_exps.weight": [24, 32, 8] },
    f32Tolerance: 1e-5,
  },
  {
    label: "qwen2_moe (6 experts top-3 unnormalised, q/k/v biases, gated shared expert, tied head written out as llama.cpp requires)",
    overrides: { model_type: "qwen2_moe", ...MOE, tie_word_embeddings: true, intermediate_size: 40, moe_intermediate_size: 16, shared_expert_intermediate_size: 24, num_experts: 6, num_experts_per_tok: 3 },
    arch: "qwen2moe",
    tensors: { "blk.0.ffn_up_exps.weight": [32, 16, 6], "blk.0.ffn_gate_inp_shexp.weight": [32, 1], "blk.1.ffn_down_shexp.weight": [24, 32], "blk.0.attn_q.bias": [32], "output.weight": [32, 96] },
    f32Tolerance: 1e-5,
  },
  {
    label: "qwen3_moe (8 experts top-2 renormalised, q/k norms, head_dim 16)",
    overrides: { model_type: "qwen3_moe", ...MOE, head_dim: 16, intermediate_size: 40, moe_intermediate_size: 16, num_experts: 8, num_experts_per_tok: 2, norm_topk_prob: true },
    arch: "qwen3moe",
    tensors: { "blk.1.ffn_gate_exps.weight": [32, 16, 8], "blk.0.attn_k_norm.weight": [16], "blk.0.attn_q.weight": [32, 64] },
    f32Tolerance: 1e-5,
  },
  {
    label: "glm4 (q/k/v biases, interleaved partial rotary 0.5, post-norms, fused gate_up)",
    overrides: { model_type: "glm4", intermediate_size: 48, head_dim: 8 },
    arch: "glm4",
    tensors: { "blk.0.attn_q.bias": [32], "blk.0.post_attention_norm.weight": [32], "blk.0.post_ffw_norm.weight": [32], "blk.1.ffn_up.weight": [32, 96] },
    f32Tolerance: 1e-5,
  },
  {
    label: "deepseek_v2 as V2-Lite (MLA without q LoRA, YaRN with mscale = mscale_all_dim, a dense first layer, 2 shared + 8 routed top-3)",
    overrides: { model_type: "deepseek_v2", ...DEEPSEEK, rope_scaling: { type: "yarn", factor: 40, original_max_position_embeddings: 4, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 } },
    arch: "deepseek2",
    tensors: { "blk.0.attn_k_b.weight": [8, 16, 4], "blk.0.attn_v_b.weight": [16, 6, 4], "blk.0.attn_kv_a_mqa.weight": [32, 20], "blk.0.ffn_gate.weight": [32, 48], "blk.1.ffn_gate_exps.weight": [32, 12, 8], "blk.2.ffn_up_shexp.weight": [32, 24] },
    f32Tolerance: 1e-5,
  },
  {
    label: "deepseek_v2 with q LoRA and renormalised top-k",
    overrides: { model_type: "deepseek_v2", ...DEEPSEEK, q_lora_rank: 12, norm_topk_prob: true },
    arch: "deepseek2",
    tensors: { "blk.1.attn_q_a.weight": [32, 12], "blk.1.attn_q_a_norm.weight": [12], "blk.1.attn_q_b.weight": [12, 48] },
    f32Tolerance: 1e-5,
  },
];

for (const [index, { label, overrides, arch, tensors, f32Tolerance }] of CASES.entries()) {
  test(`GGUF f32/f16 vs llama.cpp: ${label}`, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const model = loadModel(makeTinyModel(overrides, 40 + index));
    randomizeVectors(model, 200 + index, model.config.model_type.startsWith("gemma") ? 0 : 1);
    const config = model.config;
    const tokenizer = syntheticTokenizer(config.vocab_size, { bosTokenId: 1, eosTokenId: 2, padTokenId: 0 });
    const f32Path = join(workDir, `case${index}-f32.gguf`);
    const f16Path = join(workDir, `case${index}-f16.gguf`);
    exportGguf(model, tokenizer, f32Path, { type: "f32" });
    exportGguf(model, tokenizer, f16Path, { type: "f16" });

    const info = await nlc!.readGgufFileInfo(f32Path, { readTensorInfo: true });
    assert.equal((info.metadata.general as { architecture: string }).architecture, arch);
    const dims = new Map(info.fullTensorInfo!.map((tensorInfo) => [tensorInfo.name, tensorInfo.dimensions.map(Number)]));
    for (const [name, expected] of Object.entries(tensors)) assert.deepEqual(dims.get(name), expected, name);
    assert.ok(![...dims.keys()].some((name) => /experts\.\d/.test(name)));

    const full = await compareWithLlamaCpp(llama!, model, f32Path, PROMPT, STEPS, "F32");
    t.diagnostic(`f32: max |p_ours - p_llama.cpp| over ${STEPS} steps x ${config.vocab_size} tokens = ${full.maxDiff.toExponential(2)}`);
    assert.deepEqual(full.theirs, full.ours, "greedy continuation");
    assert.ok(full.maxDiff < f32Tolerance, `f32 probabilities differ by ${full.maxDiff}`);

    const half = await compareWithLlamaCpp(llama!, model, f16Path, PROMPT, STEPS, "F16");
    t.diagnostic(`f16: max |p_ours(f32) - p_llama.cpp(f16)| over ${STEPS} steps = ${half.maxDiff.toExponential(2)}`);
    assert.deepEqual(half.theirs, half.ours, "greedy continuation from the f16 file");
    assert.ok(half.maxDiff < 2e-3, `f16 probabilities differ by ${half.maxDiff}`);

    // bf16 and q8_0 files load and decode; their bytes are llama-quantize's (gguf_export.test.ts), and
    // how far they move a tiny random model's distribution depends on the seed (up to ~0.2 seen).
    for (const type of ["bf16", "q8_0"] as const) {
      const path = join(workDir, `case${index}-${type}.gguf`);
      exportGguf(model, tokenizer, path, { type });
      const rounded = await compareWithLlamaCpp(llama!, model, path, PROMPT, 4, "F32");
      t.diagnostic(`${type}: max |p_ours(f32) - p_llama.cpp| over 4 steps = ${rounded.maxDiff.toExponential(2)}`);
      assert.ok(Number.isFinite(rounded.maxDiff) && rounded.theirs.length === 4);
    }
    model.dispose();
  });
}

const refused = (overrides: Record<string, unknown>, type: "f32" | "q4_k_m" = "f32") => ggufRefusal(normalizeConfig({ ...TINY_LLAMA, ...overrides }), type);

test("GGUF export refuses, with the reason, configurations llama.cpp's graph cannot reproduce", () => {
  assert.match(refused({ model_type: "falcon" })!, /does not support model_type 'falcon'; it supports llama, /);
  assert.match(refused({ model_type: "deepseek_v2", ...DEEPSEEK, topk_method: "group_limited_greedy", n_group: 4, topk_group: 2 })!, /group-limited routing/);
  assert.match(refused({ model_type: "deepseek_v2", ...DEEPSEEK, norm_topk_prob: true, routed_scaling_factor: 16 })!, /normalises and then scales/);
  assert.match(refused({ model_type: "deepseek_v2", ...DEEPSEEK, rope_scaling: { type: "yarn", factor: 4, mscale: 1, mscale_all_dim: 0.8 } })!, /mscale equal to mscale_all_dim/);
  assert.match(refused({ model_type: "gemma3_text", rope_local_base_freq: 100 })!, /RoPE base 10000 on sliding layers/);
  assert.match(refused({ model_type: "gemma3_text", sliding_window_pattern: 2 })!, /every 6th layer global/);
  assert.match(refused({ model_type: "gemma2", tie_word_embeddings: true, attn_logit_softcapping: null })!, /always soft-caps/);
  assert.match(refused({ model_type: "qwen2_moe", num_experts: 4, num_experts_per_tok: 2, mlp_only_layers: [1] })!, /dense MLP layers/);
  assert.match(refused({ model_type: "qwen3_moe", num_experts: 4, num_experts_per_tok: 2, norm_topk_prob: false })!, /renormalises/);
  assert.match(refused({ model_type: "qwen2_moe", num_experts: 4, num_experts_per_tok: 2 }, "q4_k_m")!, /only reproduced for the dense Llama family/);
  assert.match(refused({ model_type: "gemma2", tie_word_embeddings: false })!, /lm_head is untied/);
  assert.equal(refused({ model_type: "gemma2", tie_word_embeddings: true }), null);
  assert.match(refused({ model_type: "mixtral", num_local_experts: 4, num_experts_per_tok: 2 }, "q4_k_m")!, /only reproduced for the dense Llama family/);
  assert.equal(refused({ model_type: "llama" }, "q4_k_m"), null);
});

test("lmf export with export_format gguf refuses what llama.cpp cannot run before loading the model or writing anything", async () => {
  const folder = makeTinyChatModel({ model_type: "deepseek_v2", ...DEEPSEEK, topk_method: "group_limited_greedy", n_group: 4, topk_group: 2 });
  const dir = join(workDir, "deepseek-export");
  const args = parseInferArgs({ model_name_or_path: folder, template: "default", export_dir: dir, export_format: "gguf" }, { command: "export", onWarning: () => {} });
  await assert.rejects(runExport(args, { print: () => {} }), /group-limited routing/);
  assert.ok(!existsSync(dir), "nothing written");

  // A tokenizer neither llama.cpp vocabulary reproduces (byte fallback under a byte-level pre-tokenizer): refused up front too.
  const gemma = makeTinyChatModel({ model_type: "gemma2", ...GEMMA, tie_word_embeddings: true, sliding_window: 4, attn_logit_softcapping: 20.0, final_logit_softcapping: 10.0 });
  const tokenizerPath = join(gemma, "tokenizer.json");
  const json = JSON.parse(readFileSync(tokenizerPath, "utf8"));
  writeFileSync(tokenizerPath, JSON.stringify({ ...json, model: { ...json.model, byte_fallback: true } }));
  const spm = parseInferArgs({ model_name_or_path: gemma, template: "default", export_dir: dir, export_format: "gguf" }, { command: "export", onWarning: () => {} });
  await assert.rejects(runExport(spm, { print: () => {} }), /with byte fallback and a byte-level pre-tokenizer/);
  assert.ok(!existsSync(dir), "nothing written");
});

for (const [label, overrides] of [
  ["gemma2", { model_type: "gemma2", ...GEMMA, tie_word_embeddings: true, sliding_window: 4, attn_logit_softcapping: 20.0, final_logit_softcapping: 10.0 }],
  ["qwen3_moe", { model_type: "qwen3_moe", ...MOE, head_dim: 16, intermediate_size: 40, moe_intermediate_size: 16, num_experts: 4, num_experts_per_tok: 2, norm_topk_prob: true }],
] as [string, Record<string, unknown>][]) {
  test(`lmf export with export_format gguf writes a ${label} file llama.cpp runs as lmfactory does`, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const folder = makeTinyChatModel(overrides);
    const dir = join(workDir, `export-${label}`);
    const args = parseInferArgs({ model_name_or_path: folder, template: "default", export_dir: dir, export_format: "gguf", export_gguf_type: "f32" }, { command: "export", onWarning: () => {} });
    await runExport(args, { print: () => {} });
    const path = join(dir, "model-f32.gguf");
    assert.ok(existsSync(join(dir, "Modelfile")));
    const model = loadModel(folder);
    const result = await compareWithLlamaCpp(llama!, model, path, PROMPT, 4, "F32");
    t.diagnostic(`f32: max |p_ours - p_llama.cpp| over 4 steps = ${result.maxDiff.toExponential(2)}`);
    assert.deepEqual(result.theirs, result.ours);
    assert.ok(result.maxDiff < 5e-4);
    model.dispose();
  });
}
