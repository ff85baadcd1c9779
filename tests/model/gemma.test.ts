// The Gemma family (Gemma, Gemma 2, Gemma 3 text) against an independent PyTorch implementation of
// transformers' semantics (tests/reference/gemma_reference.py) on checkpoints that reference wrote.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KVCache } from "../../src/model/cache.ts";
import { loadModel } from "../../src/model/loader.ts";
import type { GemmaForCausalLM } from "../../src/model/models/gemma2.ts";
import { cat, manualSeed, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { modelGradcheck, probeLike } from "../fixtures/model_gradcheck.ts";
import { hasTorch, maxAbsDiff, referenceModel } from "../fixtures/reference_model.ts";

const skip = !hasTorch && "python3-torch not installed";

const TINY = {
  vocab_size: 96,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  max_position_embeddings: 128,
  query_pre_attn_scalar: 12,
};

const IDS = [
  [5, 17, 42, 8, 91, 3, 60, 22, 11, 7],
  [9, 9, 33, 70, 2, 45, 18, 81, 64, 30],
];

const VARIANTS: [string, Record<string, unknown>][] = [
  ["gemma (GeGLU, 1 + w norms, scaled embedding, tied)", { model_type: "gemma" }],
  ["gemma2 (GQA, sliding window 4 on even layers, soft-capped attention and logits)", { model_type: "gemma2", sliding_window: 4, attn_logit_softcapping: 2.0, final_logit_softcapping: 3.0 }],
  ["gemma2 with config.json defaults (softcaps 50 / 30, window 4096), untied head", { model_type: "gemma2", tie_word_embeddings: false }],
  [
    "gemma3_text (q/k norms, local RoPE base on sliding layers, linear-scaled global RoPE, pattern 2)",
    { model_type: "gemma3_text", sliding_window: 3, sliding_window_pattern: 2, rope_theta: 50000, rope_local_base_freq: 100, rope_scaling: { rope_type: "linear", factor: 4 } },
  ],
  ["gemma3_text with layer_types", { model_type: "gemma3_text", sliding_window: 5, layer_types: ["full_attention", "sliding_attention", "sliding_attention", "full_attention"] }],
];

for (const [name, overrides] of VARIANTS) {
  test(`${name}: logits match the PyTorch reference`, { skip }, () => {
    const reference = referenceModel("gemma_reference.py", { ...TINY, ...overrides }, { input_ids: IDS });
    const model = loadModel(reference.folder);
    const ours = tidy(() => noGrad(() => model.forward(tensor(IDS)).toFlatArray()));
    assert.ok(maxAbsDiff(ours, reference.logits) < 1e-5, `max diff ${maxAbsDiff(ours, reference.logits)}`);
    model.dispose();
  });
}

test("gemma2 with left padding matches the reference on the real positions", { skip }, () => {
  const mask = [
    [0, 0, 0, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  ];
  const reference = referenceModel("gemma_reference.py", { ...TINY, model_type: "gemma2", sliding_window: 4 }, { input_ids: IDS, attention_mask: mask });
  const model = loadModel(reference.folder);
  const ours = tidy(() => noGrad(() => model.forward(tensor(IDS), { attentionMask: tensor(mask) }).data() as Float64Array | Float32Array));
  const V = TINY.vocab_size;
  for (let b = 0; b < 2; b++) {
    for (let t = 0; t < 10; t++) {
      if (!mask[b]![t]) continue;
      const at = (b * 10 + t) * V;
      assert.ok(maxAbsDiff(ours.subarray(at, at + V), reference.logits.slice(at, at + V)) < 1e-5, `b=${b} t=${t}`);
    }
  }
  model.dispose();
});

test("gemma3_text: decoding with the KV cache gives the full forward's logits across the sliding window", { skip }, () => {
  const config = { ...TINY, model_type: "gemma3_text", sliding_window: 3, sliding_window_pattern: 2 };
  const model = loadModel(referenceModel("gemma_reference.py", config, { input_ids: IDS }).folder);
  const ids = tensor([IDS[0]!]);
  const full = tidy(() => noGrad(() => model.forward(ids).toFlatArray()));
  const cache = new KVCache(model.config.num_hidden_layers);
  const stepwise = tidy(() =>
    noGrad(() => {
      const steps = [model.forward(ids.slice(1, 0, 4), { cache })];
      for (let t = 4; t < 10; t++) steps.push(model.forward(ids.slice(1, t, t + 1), { cache }));
      return cat(steps, 1).toFlatArray();
    }),
  );
  assert.ok(maxAbsDiff(full, stepwise) < 1e-5, `max diff ${maxAbsDiff(full, stepwise)}`);
  cache.dispose();
  ids.dispose();
  model.dispose();
});

test("gemma2: the embedding is scaled by sqrt(hidden) rounded to the embedding dtype, as transformers does", { skip }, () => {
  const config = { ...TINY, model_type: "gemma2", hidden_size: 40, num_attention_heads: 4, head_dim: 10 };
  const folder = referenceModel("gemma_reference.py", config, { input_ids: IDS }).folder;
  const model = loadModel(folder, { dtype: "bfloat16" }) as GemmaForCausalLM;
  // sqrt(40) = 6.3245...; bfloat16 keeps 8 bits of mantissa: 6.3125.
  const ratio = tidy(() => noGrad(() => model.embed(tensor([[5]])).to("float32").div(model.model.embed_tokens.forward(tensor([[5]])).to("float32")).mean().item()));
  assert.ok(Math.abs(ratio - 6.3125) < 1e-2 && Math.abs(ratio - Math.sqrt(40)) > 5e-3, `ratio ${ratio}`);
  model.dispose();
});

test("gemma2 and gemma3_text: gradients agree with finite differences (float64)", { skip }, () => {
  for (const overrides of [
    { model_type: "gemma2", sliding_window: 3, attn_logit_softcapping: 2.0, final_logit_softcapping: 3.0, num_hidden_layers: 2 },
    { model_type: "gemma3_text", sliding_window: 3, sliding_window_pattern: 2, num_hidden_layers: 2 },
  ]) {
    const ids = [IDS[0]!.slice(0, 6)];
    const model = loadModel(referenceModel("gemma_reference.py", { ...TINY, ...overrides }, { input_ids: ids }).folder, { dtype: "float64" });
    manualSeed(1);
    const probe = probeLike([1, 6, TINY.vocab_size]);
    const input = tensor(ids);
    const names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.post_attention_layernorm.weight", "model.layers.1.mlp.gate_proj.weight", "model.norm.weight"];
    if (overrides.model_type === "gemma3_text") names.push("model.layers.0.self_attn.k_norm.weight");
    modelGradcheck(model, names, () => model.forward(input).mul(probe).sum());
    probe.dispose();
    input.dispose();
    model.dispose();
  }
});

test("a multimodal gemma3 checkpoint is refused with the text model to use", () => {
  assert.throws(() => loadModel(referenceModelFolderWithConfig({ model_type: "gemma3" })), /gemma3_text/);
});

function referenceModelFolderWithConfig(config: Record<string, unknown>): string {
  const folder = mkdtempSync(join(tmpdir(), "lmf-cfg-"));
  writeFileSync(join(folder, "config.json"), JSON.stringify({ ...TINY, ...config }));
  return folder;
}
