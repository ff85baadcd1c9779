// Model patches: the attention kernel switch, LongLoRA S²-Attn against LLaMA-Factory's formula,
// RoPE scaling for a longer context, upcast logits.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { contextLength, loadConfig, normalizeConfig } from "../../src/model/config.ts";
import { loadModel } from "../../src/model/loader.ts";
import { patchConfig } from "../../src/model/patches/config.ts";
import { applyShiftedSparseAttention, shiftedSparseAttention } from "../../src/model/patches/longlora.ts";
import { architectureFor } from "../../src/model/registry.ts";
import { manualSeed, noGrad, randn, tensor, tidy } from "../../src/torch/index.ts";
import { TINY_LLAMA, makeTinyModel } from "../fixtures/tiny_model.ts";

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;

test("S²-Attn matches LLaMA-Factory's shifted group attention", { skip: !hasTorch && "python3-torch not installed" }, () => {
  manualSeed(5);
  const [B, H, KV, T, D] = [2, 4, 2, 16, 8];
  tidy(() => {
    const q = randn([B, H, T, D], { dtype: "float64" });
    const k = randn([B, KV, T, D], { dtype: "float64" });
    const v = randn([B, KV, T, D], { dtype: "float64" });
    const ours = shiftedSparseAttention(q, k, v, null, 0.25).toFlatArray();
    const out = execFileSync("/usr/bin/python3", ["tests/reference/longlora_reference.py"], {
      input: JSON.stringify({ q: q.toFlatArray(), k: k.toFlatArray(), v: v.toFlatArray(), shape: [B, H, T, D], kv_heads: KV, ratio: 0.25 }),
    });
    const theirs: number[] = JSON.parse(out.toString()).out;
    const worst = Math.max(...ours.map((x, i) => Math.abs(x - theirs[i]!)));
    assert.ok(worst < 1e-10, `max diff ${worst}`);
  });
});

test("shift_attn changes training attention only, and only for llama", () => {
  const folder = makeTinyModel();
  const config = loadConfig(folder);
  assert.match(patchConfig(config, { shiftAttn: true, training: true }).join("\n"), /group size ratio 0.25/);
  const model = architectureFor(config).build(config, { init: "empty" });
  assert.equal(applyShiftedSparseAttention(model, config.group_size_ratio!), config.num_hidden_layers);
  model.loadStateDict(loadModel(folder).stateDict());
  const plain = loadModel(folder);
  const ids = tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3]]);
  tidy(() =>
    noGrad(() => {
      model.eval();
      assert.ok(model.forward(ids).allclose(plain.forward(ids), 1e-5, 1e-6), "eval mode must use full attention");
      model.train();
      assert.ok(!model.forward(ids).allclose(plain.forward(ids), 1e-3, 1e-4), "training must use S²-Attn");
    }),
  );
  const qwen = normalizeConfig({ ...TINY_LLAMA, model_type: "qwen2" });
  assert.match(patchConfig(qwen, { shiftAttn: true, training: true }).join("\n"), /supports model_type llama only/);
  assert.equal(qwen.group_size_ratio, undefined);
});

test("flash_attn: disabled composes attention, fa2 falls back to sdpa with a notice; both equal", () => {
  const folder = makeTinyModel();
  const eager = loadConfig(folder);
  patchConfig(eager, { flashAttn: "disabled" });
  assert.equal(eager._attn_implementation, "eager");
  const fused = loadConfig(folder);
  assert.match(patchConfig(fused, { flashAttn: "fa2" }).join("\n"), /not part of this engine/);
  assert.equal(fused._attn_implementation, "sdpa");
  const weights = loadModel(folder);
  const [a, b] = [eager, fused].map((config) => {
    const model = architectureFor(config).build(config, { init: "empty" });
    model.loadStateDict(weights.stateDict());
    return model;
  });
  const ids = tensor([[7, 8, 9, 10, 11, 12]]);
  tidy(() => noGrad(() => assert.ok(a!.forward(ids).allclose(b!.forward(ids), 1e-5, 1e-6))));
});

test("rope_scaling follows LLaMA-Factory: factor from the needed length in training, 2 at inference", () => {
  const base = () => normalizeConfig({ ...TINY_LLAMA, max_position_embeddings: 128 });
  const train = base();
  patchConfig(train, { ropeScaling: "llama3", modelMaxLength: 300, training: true });
  assert.deepEqual(train.rope_scaling, { rope_type: "llama3", factor: 3, original_max_position_embeddings: 128, low_freq_factor: 1, high_freq_factor: 4 });
  assert.equal(train.max_position_embeddings, 384);
  const short = base();
  assert.match(patchConfig(short, { ropeScaling: "linear", modelMaxLength: 100, training: true }).join("\n"), /not applied/);
  assert.equal(short.rope_scaling ?? null, null);
  const infer = base();
  patchConfig(infer, { ropeScaling: "dynamic", training: false });
  assert.deepEqual(infer.rope_scaling, { rope_type: "dynamic", factor: 2, original_max_position_embeddings: 128 });
});

test("contextLength: max_position_embeddings, yarn's original length × factor, what rope_scaling sets", () => {
  const config = (extra: Record<string, unknown>) => normalizeConfig({ ...TINY_LLAMA, max_position_embeddings: 32768, ...extra });
  assert.equal(contextLength(config({})), 32768);
  // Qwen2.5 / Qwen3 as their model cards extend them; yarn without the original length scales max_position_embeddings (transformers).
  assert.equal(contextLength(config({ rope_scaling: { type: "yarn", factor: 4, original_max_position_embeddings: 32768 } })), 131072);
  assert.equal(contextLength(config({ max_position_embeddings: 40960, rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 32768 } })), 131072);
  assert.equal(contextLength(config({ rope_scaling: { rope_type: "yarn", factor: 2 } })), 65536);
  // Llama 3.2's config states its extended length; factor 32 × 8192 would overstate it.
  const llama32 = { rope_type: "llama3", factor: 32, original_max_position_embeddings: 8192, low_freq_factor: 1, high_freq_factor: 4 };
  assert.equal(contextLength(config({ max_position_embeddings: 131072, rope_scaling: llama32 })), 131072);
  // At inference LLaMA-Factory's patch doubles the length, whatever the type.
  for (const ropeScaling of ["linear", "dynamic", "yarn", "llama3"] as const) {
    const patched = normalizeConfig({ ...TINY_LLAMA, max_position_embeddings: 128 });
    patchConfig(patched, { ropeScaling, training: false });
    assert.equal(contextLength(patched), 256, ropeScaling);
  }
});

test("upcast_lmhead_output gives float32 logits from bfloat16 weights", () => {
  const model = loadModel(makeTinyModel(), { dtype: "bfloat16" });
  const ids = tensor([[1, 2, 3]]);
  tidy(() => {
    assert.equal(model.forward(ids).dtype, "bfloat16");
    model.upcastLogits = true;
    assert.equal(model.forward(ids).dtype, "float32");
  });
});
