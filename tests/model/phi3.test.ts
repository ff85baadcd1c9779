// Phi-3 / Phi-3.5 / Phi-4 (model_type phi3) against an independent PyTorch implementation of
// transformers' semantics (tests/reference/phi3_reference.py) on checkpoints that reference wrote.
import { test } from "node:test";
import assert from "node:assert/strict";
import { applyLora } from "../../src/model/adapters/lora.ts";
import { KVCache } from "../../src/model/cache.ts";
import { loadModel } from "../../src/model/loader.ts";
import { cat, manualSeed, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { modelGradcheck, probeLike } from "../fixtures/model_gradcheck.ts";
import { hasTorch, maxAbsDiff, referenceModel } from "../fixtures/reference_model.ts";

const skip = !hasTorch && "python3-torch not installed";

const TINY = {
  model_type: "phi3",
  vocab_size: 96,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  original_max_position_embeddings: 64,
};

const IDS = [
  [5, 17, 42, 8, 91, 3, 60, 22, 11, 7],
  [9, 9, 33, 70, 2, 45, 18, 81, 64, 30],
];

/** LongRoPE with a pretrained context of 8 positions stretched to 32 (factor 4); rotary dim `dim`. */
function longrope(dim: number) {
  const short = Array.from({ length: dim / 2 }, (_, i) => 1 + 0.1 * i);
  const long = Array.from({ length: dim / 2 }, (_, i) => 1 + 0.7 * i);
  return { max_position_embeddings: 32, original_max_position_embeddings: 8, rope_scaling: { type: "longrope", short_factor: short, long_factor: long } };
}

const VARIANTS: [string, Record<string, unknown>, number[][]][] = [
  ["phi3 (fused qkv and gate_up, GQA)", {}, IDS],
  ["phi3 sliding window 4 (Phi-3-mini-4k's sliding_window)", { sliding_window: 4 }, IDS],
  ["phi3 LongRoPE past the pretrained context (long factors, attention factor)", longrope(8), IDS],
  ["phi3 LongRoPE within the pretrained context (short factors)", longrope(8), IDS.map((row) => row.slice(0, 6))],
  ["phi3 'su' scaling with partial rotary 0.5 (Phi-4-mini's partial_rotary_factor)", { ...longrope(4), partial_rotary_factor: 0.5, rope_scaling: { ...longrope(4).rope_scaling, type: "su" } }, IDS],
];

for (const [name, overrides, ids] of VARIANTS) {
  test(`${name}: logits match the PyTorch reference`, { skip }, () => {
    const reference = referenceModel("phi3_reference.py", { ...TINY, ...overrides }, { input_ids: ids });
    const model = loadModel(reference.folder);
    const ours = tidy(() => noGrad(() => model.forward(tensor(ids)).toFlatArray()));
    assert.ok(maxAbsDiff(ours, reference.logits) < 1e-5, `max diff ${maxAbsDiff(ours, reference.logits)}`);
    model.dispose();
  });
}

test("phi3: decoding with the KV cache gives the full forward's logits", { skip }, () => {
  const model = loadModel(referenceModel("phi3_reference.py", { ...TINY, sliding_window: 4, partial_rotary_factor: 0.5 }, { input_ids: IDS }).folder);
  const ids = tensor([IDS[0]!]);
  const full = tidy(() => noGrad(() => model.forward(ids).toFlatArray()));
  const cache = new KVCache(model.config.num_hidden_layers);
  const stepwise = tidy(() =>
    noGrad(() => {
      const steps = [model.forward(ids.slice(1, 0, 3), { cache })];
      for (let t = 3; t < 10; t++) steps.push(model.forward(ids.slice(1, t, t + 1), { cache }));
      return cat(steps, 1).toFlatArray();
    }),
  );
  assert.ok(maxAbsDiff(full, stepwise) < 1e-5, `max diff ${maxAbsDiff(full, stepwise)}`);
  cache.dispose();
  ids.dispose();
  model.dispose();
});

test("phi3: gradients agree with finite differences (float64), LongRoPE and partial rotary included", { skip }, () => {
  const ids = [IDS[0]!.slice(0, 9)];
  const config = { ...TINY, ...longrope(4), partial_rotary_factor: 0.5 };
  const model = loadModel(referenceModel("phi3_reference.py", config, { input_ids: ids }).folder, { dtype: "float64" });
  manualSeed(2);
  const probe = probeLike([1, 9, TINY.vocab_size]);
  const input = tensor(ids);
  const names = ["model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.self_attn.o_proj.weight", "model.layers.1.mlp.gate_up_proj.weight", "model.layers.1.input_layernorm.weight"];
  modelGradcheck(model, names, () => model.forward(input).mul(probe).sum(), { perParameter: 4 });
  probe.dispose();
  input.dispose();
  model.dispose();
});

test("phi3: LoRA targets the fused qkv_proj and gate_up_proj by their HF names", { skip }, () => {
  const model = loadModel(referenceModel("phi3_reference.py", TINY, { input_ids: IDS }).folder);
  const config = applyLora(model, { targets: ["qkv_proj", "gate_up_proj"], rank: 4 });
  assert.deepEqual(config.target_modules, ["qkv_proj", "gate_up_proj"]);
  const names = model.namedParameters({ trainableOnly: true }).map(([name]) => name);
  assert.ok(names.includes("model.layers.0.self_attn.qkv_proj.lora_A.weight"));
  assert.ok(names.includes("model.layers.1.mlp.gate_up_proj.lora_B.weight"));
  assert.equal(names.length, 2 * 2 * 2);
  model.dispose();
});
