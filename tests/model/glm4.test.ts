// GLM-4 (0414 layout, model_type glm4) against an independent PyTorch implementation of
// transformers' semantics (tests/reference/glm4_reference.py) on checkpoints that reference wrote.
import { test } from "node:test";
import assert from "node:assert/strict";
import { KVCache } from "../../src/model/cache.ts";
import { loadModel } from "../../src/model/loader.ts";
import { cat, manualSeed, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { modelGradcheck, probeLike } from "../fixtures/model_gradcheck.ts";
import { hasTorch, maxAbsDiff, referenceModel } from "../fixtures/reference_model.ts";

const skip = !hasTorch && "python3-torch not installed";

const TINY = {
  model_type: "glm4",
  vocab_size: 96,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  max_position_embeddings: 128,
};

const IDS = [
  [5, 17, 42, 8, 91, 3, 60, 22, 11, 7],
  [9, 9, 33, 70, 2, 45, 18, 81, 64, 30],
];

const VARIANTS: [string, Record<string, unknown>][] = [
  ["glm4 (GQA, q/k/v bias, partial rotary 0.5 interleaved, post-norms, fused gate_up)", {}],
  ["glm4 with full rotary and a wider head", { partial_rotary_factor: 1.0, head_dim: 12 }],
  ["glm4 without attention bias, rotary 0.25", { attention_bias: false, partial_rotary_factor: 0.25, head_dim: 16 }],
];

for (const [name, overrides] of VARIANTS) {
  test(`${name}: logits match the PyTorch reference`, { skip }, () => {
    const reference = referenceModel("glm4_reference.py", { ...TINY, ...overrides }, { input_ids: IDS });
    const model = loadModel(reference.folder);
    const ours = tidy(() => noGrad(() => model.forward(tensor(IDS)).toFlatArray()));
    assert.ok(maxAbsDiff(ours, reference.logits) < 1e-5, `max diff ${maxAbsDiff(ours, reference.logits)}`);
    model.dispose();
  });
}

test("glm4 with left padding matches the reference on the real positions", { skip }, () => {
  const mask = [
    [0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  ];
  const reference = referenceModel("glm4_reference.py", TINY, { input_ids: IDS, attention_mask: mask });
  const model = loadModel(reference.folder);
  const ours = tidy(() => noGrad(() => model.forward(tensor(IDS), { attentionMask: tensor(mask) }).toFlatArray()));
  const V = TINY.vocab_size;
  for (let b = 0; b < 2; b++) {
    for (let t = 0; t < 10; t++) {
      if (!mask[b]![t]) continue;
      const at = (b * 10 + t) * V;
      assert.ok(maxAbsDiff(ours.slice(at, at + V), reference.logits.slice(at, at + V)) < 1e-5, `b=${b} t=${t}`);
    }
  }
  model.dispose();
});

test("glm4: decoding with the KV cache gives the full forward's logits", { skip }, () => {
  const model = loadModel(referenceModel("glm4_reference.py", TINY, { input_ids: IDS }).folder);
  const ids = tensor([IDS[1]!]);
  const full = tidy(() => noGrad(() => model.forward(ids).toFlatArray()));
  const cache = new KVCache(model.config.num_hidden_layers);
  const stepwise = tidy(() =>
    noGrad(() => {
      const steps = [model.forward(ids.slice(1, 0, 5), { cache })];
      for (let t = 5; t < 10; t++) steps.push(model.forward(ids.slice(1, t, t + 1), { cache }));
      return cat(steps, 1).toFlatArray();
    }),
  );
  assert.ok(maxAbsDiff(full, stepwise) < 1e-5, `max diff ${maxAbsDiff(full, stepwise)}`);
  cache.dispose();
  ids.dispose();
  model.dispose();
});

test("glm4: gradients agree with finite differences (float64)", { skip }, () => {
  const ids = [IDS[0]!.slice(0, 6)];
  const model = loadModel(referenceModel("glm4_reference.py", TINY, { input_ids: ids }).folder, { dtype: "float64" });
  manualSeed(4);
  const probe = probeLike([1, 6, TINY.vocab_size]);
  const input = tensor(ids);
  const names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.bias", "model.layers.0.post_self_attn_layernorm.weight", "model.layers.1.mlp.gate_up_proj.weight", "model.layers.1.post_mlp_layernorm.weight"];
  modelGradcheck(model, names, () => model.forward(input).mul(probe).sum(), { perParameter: 4 });
  probe.dispose();
  input.dispose();
  model.dispose();
});
