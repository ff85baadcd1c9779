// DeepSeek-V2 / V2-Lite (model_type deepseek_v2) against an independent PyTorch implementation of
// DeepSeek's own modeling code (tests/reference/deepseek_v2_reference.py) on checkpoints that
// reference wrote: MLA, YaRN, routing (greedy and group-limited), shared experts, the balance loss.
import { test } from "node:test";
import assert from "node:assert/strict";
import { KVCache } from "../../src/model/cache.ts";
import { loadModel } from "../../src/model/loader.ts";
import { checkpointedBackward } from "../../src/model/patches/checkpointing.ts";
import { type Tensor, cat, crossEntropy, full, manualSeed, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { modelGradcheck, probeLike } from "../fixtures/model_gradcheck.ts";
import { hasTorch, maxAbsDiff, referenceModel } from "../fixtures/reference_model.ts";

const skip = !hasTorch && "python3-torch not installed";

/** DeepSeek-V2-Lite's shape in miniature: q without LoRA, a dense first layer, 2 shared + 8 routed experts, top-3. */
const LITE = {
  model_type: "deepseek_v2",
  vocab_size: 96,
  hidden_size: 32,
  intermediate_size: 48,
  moe_intermediate_size: 12,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 4,
  max_position_embeddings: 128,
  q_lora_rank: null,
  kv_lora_rank: 16,
  qk_nope_head_dim: 8,
  qk_rope_head_dim: 4,
  v_head_dim: 6,
  n_routed_experts: 8,
  n_shared_experts: 2,
  num_experts_per_tok: 3,
  first_k_dense_replace: 1,
  routed_scaling_factor: 1.0,
  topk_method: "greedy",
};
const YARN = { rope_scaling: { type: "yarn", factor: 40, original_max_position_embeddings: 4, beta_fast: 32, beta_slow: 1, mscale: 0.707, mscale_all_dim: 0.707 } };
/** DeepSeek-V2's: q through q_lora_rank, grouped routing, renormalised top-k. */
const FULL = { ...LITE, q_lora_rank: 12, topk_method: "group_limited_greedy", n_group: 4, topk_group: 2, norm_topk_prob: true, routed_scaling_factor: 16 };

const IDS = [
  [5, 17, 42, 8, 91, 3, 60, 22, 11, 7],
  [9, 9, 33, 70, 2, 45, 18, 81, 64, 30],
];
const LABELS = IDS.map((row) => row.map((id, t) => (t < 2 ? -100 : id)));

const VARIANTS: [string, Record<string, unknown>][] = [
  ["V2-Lite layout (MLA without q LoRA, dense first layer, shared experts, greedy top-3)", LITE],
  ["V2-Lite with YaRN (mscale on cos/sin and mscale² on the softmax scale)", { ...LITE, ...YARN }],
  ["V2 layout (q LoRA, group-limited routing, norm_topk_prob)", FULL],
  ["routed_scaling_factor without renormalisation, every layer sparse", { ...LITE, first_k_dense_replace: 0, routed_scaling_factor: 2.5 }],
];

for (const [name, config] of VARIANTS) {
  test(`deepseek_v2 ${name}: logits match the PyTorch reference`, { skip }, () => {
    const reference = referenceModel("deepseek_v2_reference.py", config, { input_ids: IDS });
    const model = loadModel(reference.folder);
    const ours = tidy(() => noGrad(() => model.forward(tensor(IDS)).toFlatArray()));
    assert.ok(maxAbsDiff(ours, reference.logits) < 1e-5, `max diff ${maxAbsDiff(ours, reference.logits)}`);
    model.dispose();
  });
}

function lmLoss(logits: Tensor, labels: Tensor): Tensor {
  const [B, V] = [logits.shape[0]!, logits.shape[2]!];
  const shifted = cat([labels.slice(1, 1), full([B, 1], -100, { dtype: "int64" })], 1);
  return crossEntropy(logits.reshape(-1, V), shifted.reshape(-1), { ignoreIndex: -100 });
}

for (const [name, config] of [["seq_aux", { ...FULL, aux_loss_alpha: 0.01 }], ["token-level aux", { ...LITE, aux_loss_alpha: 0.02, seq_aux: false }]] as const) {
  test(`deepseek_v2 training (${name}): the balance loss and the gradients of LM loss + balance loss match the reference`, { skip }, () => {
    const grads = ["model.layers.1.mlp.gate.weight", "model.layers.2.mlp.experts.5.up_proj.weight", "model.layers.1.mlp.shared_experts.down_proj.weight", "model.layers.0.self_attn.kv_b_proj.weight", "model.layers.2.self_attn.kv_a_proj_with_mqa.weight"];
    if (config.q_lora_rank) grads.push("model.layers.0.self_attn.q_a_layernorm.weight");
    const reference = referenceModel("deepseek_v2_reference.py", config, { input_ids: IDS, labels: LABELS, grads, train: true });
    const model = loadModel(reference.folder);
    model.train();
    const [aux, loss] = tidy(() => {
      const logits = model.forward(tensor(IDS));
      const balance = model.auxiliaryLoss()!;
      const total = lmLoss(logits, tensor(LABELS)).add(balance);
      total.backward();
      return [balance.item(), total.item()];
    });
    assert.ok(Math.abs(aux - reference.aux_loss!) < 1e-7, `aux ${aux} vs ${reference.aux_loss}`);
    assert.ok(Math.abs(loss - reference.loss!) < 1e-5, `loss ${loss} vs ${reference.loss}`);
    const params = Object.fromEntries(model.namedParameters());
    for (const param of grads) {
      const ours = tidy(() => params[param]!.grad!.toFlatArray());
      assert.ok(maxAbsDiff(ours, reference.grads![param]!) < 1e-5, `${param}: max grad diff ${maxAbsDiff(ours, reference.grads![param]!)}`);
    }
    // At inference no balance loss is collected, as DeepSeek's gate computes it in training only.
    model.eval();
    tidy(() => noGrad(() => model.forward(tensor(IDS))));
    assert.equal(model.auxiliaryLoss(), null);
    model.dispose();
  });
}

test("deepseek_v2: gradient checkpointing with the balance loss equals the plain backward", { skip }, () => {
  const model = loadModel(referenceModel("deepseek_v2_reference.py", { ...LITE, aux_loss_alpha: 0.05 }, { input_ids: IDS }).folder);
  model.train();
  const [ids, labels] = [tensor(IDS), tensor(LABELS)];
  const lossOf = (hidden: Tensor) => lmLoss(model.logits(hidden), labels).add(model.auxiliaryLoss()!);
  const plain = tidy(() => {
    const loss = lossOf(model.hiddenStates(ids));
    loss.backward();
    return loss.item();
  });
  const plainGrads = model.namedParameters().map(([name, p]) => [name, p.grad ? tidy(() => p.grad!.toFlatArray()) : null] as const);
  model.zeroGrad();
  const checkpointed = tidy(() => checkpointedBackward(model, ids, lossOf));
  assert.ok(Math.abs(checkpointed - plain) < 1e-6);
  const params = Object.fromEntries(model.namedParameters());
  for (const [name, expected] of plainGrads) {
    if (expected) assert.ok(maxAbsDiff(tidy(() => params[name]!.grad!.toFlatArray()), expected) < 1e-6, name);
  }
  ids.dispose();
  labels.dispose();
  model.dispose();
});

test("deepseek_v2: decoding with the KV cache (values narrower than keys) gives the full forward's logits", { skip }, () => {
  const model = loadModel(referenceModel("deepseek_v2_reference.py", { ...LITE, ...YARN }, { input_ids: IDS }).folder);
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

test("deepseek_v2: gradients agree with finite differences (float64)", { skip }, () => {
  const ids = [IDS[0]!.slice(0, 6)];
  const model = loadModel(referenceModel("deepseek_v2_reference.py", { ...FULL, ...YARN, num_hidden_layers: 2 }, { input_ids: ids }).folder, { dtype: "float64" });
  model.train();
  manualSeed(5);
  const probe = probeLike([1, 6, 96]);
  const input = tensor(ids);
  const names = ["model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "model.layers.0.self_attn.kv_a_layernorm.weight", "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.2.gate_proj.weight", "model.layers.1.mlp.shared_experts.up_proj.weight"];
  modelGradcheck(model, names, () => model.forward(input).mul(probe).sum().add(model.auxiliaryLoss()!.mul(100)), { perParameter: 4 });
  probe.dispose();
  input.dispose();
  model.dispose();
});
