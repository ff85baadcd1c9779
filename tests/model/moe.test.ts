// Mixtral, Qwen2-MoE and Qwen3-MoE against an independent PyTorch implementation of transformers'
// semantics (tests/reference/moe_reference.py: the per-expert loop, load_balancing_loss_func) on
// checkpoints that reference wrote: logits, the auxiliary loss, training gradients, gradient
// checkpointing with the auxiliary loss, finite differences and decoding with the cache.
import { test } from "node:test";
import assert from "node:assert/strict";
import { applyFreeze, freezeModuleChoices } from "../../src/model/adapters/freeze.ts";
import { applyLora } from "../../src/model/adapters/lora.ts";
import { KVCache } from "../../src/model/cache.ts";
import type { CausalLM } from "../../src/model/causal_lm.ts";
import { loadModel } from "../../src/model/loader.ts";
import { checkpointedBackward } from "../../src/model/patches/checkpointing.ts";
import { patchConfig } from "../../src/model/patches/config.ts";
import { type Tensor, cat, crossEntropy, full, liveTensors, manualSeed, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { modelGradcheck, probeLike } from "../fixtures/model_gradcheck.ts";
import { hasTorch, maxAbsDiff, referenceModel } from "../fixtures/reference_model.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const skip = !hasTorch && "python3-torch not installed";

const BASE = { vocab_size: 96, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128 };
const MIXTRAL = { ...BASE, model_type: "mixtral", intermediate_size: 24, num_local_experts: 8, num_experts_per_tok: 2 };
const QWEN2_MOE = {
  ...BASE,
  model_type: "qwen2_moe",
  num_hidden_layers: 3,
  intermediate_size: 40,
  moe_intermediate_size: 16,
  shared_expert_intermediate_size: 24,
  num_experts: 6,
  num_experts_per_tok: 3,
  mlp_only_layers: [1],
};
const QWEN3_MOE = { ...BASE, model_type: "qwen3_moe", head_dim: 16, intermediate_size: 40, moe_intermediate_size: 16, num_experts: 8, num_experts_per_tok: 2, norm_topk_prob: true };

const IDS = [
  [5, 17, 42, 8, 91, 3, 60, 22, 11, 7, 50, 61],
  [9, 9, 33, 70, 2, 45, 18, 81, 64, 30, 12, 88],
];
const MASK = [
  [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
];
const LABELS = [
  [-100, -100, -100, 8, 91, 3, 60, 22, 11, 7, 50, 61],
  [9, 9, 33, 70, 2, 45, 18, 81, 64, 30, 12, 88],
];

const FAMILIES: [string, Record<string, unknown>][] = [
  ["mixtral (top-2 of 8, GQA)", MIXTRAL],
  ["mixtral with a sliding window", { ...MIXTRAL, sliding_window: 5 }],
  ["qwen2_moe (shared expert and its gate, top-3 not renormalised, a dense layer from mlp_only_layers)", QWEN2_MOE],
  ["qwen2_moe with decoder_sparse_step 2 and norm_topk_prob", { ...QWEN2_MOE, mlp_only_layers: [], decoder_sparse_step: 2, norm_topk_prob: true }],
  ["qwen3_moe (q/k norms, head_dim, top-2 renormalised)", QWEN3_MOE],
];

/** The CE loss of transformers' ForCausalLMLoss (mean over the shifted labels that count). */
function lmLoss(logits: Tensor, labels: Tensor): Tensor {
  const [B, V] = [logits.shape[0]!, logits.shape[2]!];
  const shifted = cat([labels.slice(1, 1), full([B, 1], -100, { dtype: "int64" })], 1);
  return crossEntropy(logits.reshape(-1, V), shifted.reshape(-1), { ignoreIndex: -100 });
}

function expertParameters(model: CausalLM, pattern: RegExp): [string, Tensor][] {
  return model.namedParameters().filter(([name]) => pattern.test(name));
}

for (const [name, config] of FAMILIES) {
  test(`${name}: logits match the PyTorch reference, and the routing uses every expert`, { skip }, () => {
    const reference = referenceModel("moe_reference.py", config, { input_ids: IDS });
    const model = loadModel(reference.folder);
    const probe = probeLike([2, 12, 96]).to("float32");
    const ours = tidy(() => {
      const logits = model.forward(tensor(IDS));
      logits.mul(probe).sum().backward();
      return logits.toFlatArray();
    });
    assert.ok(maxAbsDiff(ours, reference.logits) < 1e-5, `max diff ${maxAbsDiff(ours, reference.logits)}`);
    // Every expert of every sparse layer was routed some token: its weights got a gradient.
    const experts = expertParameters(model, /experts\.\d+\.(w1|gate_proj)\.weight$/);
    assert.ok(experts.length >= 6);
    for (const [param, weight] of experts) assert.ok(weight.grad && tidy(() => weight.grad!.abs().sum().item()) > 0, `${param} got no token`);
    probe.dispose();
    model.dispose();
  });
}

for (const [name, config] of [FAMILIES[0]!, FAMILIES[2]!, FAMILIES[4]!]) {
  test(`${name}: the auxiliary loss and the training gradients (LM loss + coef x aux) match the reference, with padding`, { skip }, () => {
    const withAux = { ...config, output_router_logits: true, router_aux_loss_coef: 0.05 };
    const grads = ["model.layers.0.self_attn.q_proj.weight", "model.norm.weight", "model.embed_tokens.weight"];
    const block = config.model_type === "mixtral" ? "block_sparse_moe" : "mlp";
    grads.push(`model.layers.0.${block}.gate.weight`, `model.layers.0.${block}.experts.1.${config.model_type === "mixtral" ? "w2" : "down_proj"}.weight`);
    if (config.model_type === "qwen2_moe") grads.push("model.layers.2.mlp.shared_expert_gate.weight", "model.layers.1.mlp.up_proj.weight");
    const reference = referenceModel("moe_reference.py", withAux, { input_ids: IDS, attention_mask: MASK, labels: LABELS, grads });
    const model = loadModel(reference.folder);
    model.config.output_router_logits = true;
    const [aux, loss] = tidy(() => {
      const logits = model.forward(tensor(IDS), { attentionMask: tensor(MASK) });
      const auxiliary = model.auxiliaryLoss()!;
      const total = lmLoss(logits, tensor(LABELS)).add(auxiliary);
      total.backward();
      return [auxiliary.item(), total.item()];
    });
    assert.ok(Math.abs(aux - 0.05 * reference.aux_loss!) < 1e-6, `aux ${aux} vs ${0.05 * reference.aux_loss!}`);
    assert.ok(Math.abs(loss - reference.loss!) < 1e-5, `loss ${loss} vs ${reference.loss}`);
    const params = Object.fromEntries(model.namedParameters());
    for (const param of grads) {
      const ours = tidy(() => params[param]!.grad!.toFlatArray());
      assert.ok(maxAbsDiff(ours, reference.grads![param]!) < 1e-5, `${param}: max grad diff ${maxAbsDiff(ours, reference.grads![param]!)}`);
    }
    model.dispose();
  });
}

test("the auxiliary loss is off unless output_router_logits is set (as LLaMA-Factory sets it for training with moe_aux_loss_coef)", { skip }, () => {
  const reference = referenceModel("moe_reference.py", MIXTRAL, { input_ids: IDS });
  assert.equal(reference.aux_loss, undefined);
  const model = loadModel(reference.folder);
  tidy(() => noGrad(() => model.forward(tensor(IDS))));
  assert.equal(model.auxiliaryLoss(), null);
  model.dispose();
});

test("gradient checkpointing with the auxiliary loss gives the plain backward's loss and gradients, leaving no tensors", { skip }, () => {
  const model = loadModel(referenceModel("moe_reference.py", { ...QWEN2_MOE, output_router_logits: true, router_aux_loss_coef: 0.1 }, { input_ids: IDS }).folder);
  const [ids, mask, labels] = [tensor(IDS), tensor(MASK), tensor(LABELS)];
  const lossOf = (hidden: Tensor) => lmLoss(model.logits(hidden), labels).add(model.auxiliaryLoss()!);
  const plain = tidy(() => {
    const loss = lossOf(model.hiddenStates(ids, { attentionMask: mask }));
    loss.backward();
    return loss.item();
  });
  const plainGrads = model.namedParameters().map(([name, p]) => [name, p.grad ? tidy(() => p.grad!.toFlatArray()) : null] as const);
  model.zeroGrad();
  const before = liveTensors();
  const checkpointed = tidy(() => checkpointedBackward(model, ids, lossOf, { attentionMask: mask }));
  assert.ok(Math.abs(checkpointed - plain) < 1e-6, `loss ${checkpointed} vs ${plain}`);
  const params = Object.fromEntries(model.namedParameters());
  for (const [name, expected] of plainGrads) {
    if (!expected) continue;
    const got = tidy(() => params[name]!.grad!.toFlatArray());
    assert.ok(maxAbsDiff(got, expected) < 1e-6, `${name}: max grad diff ${maxAbsDiff(got, expected)}`);
  }
  // Without the auxiliary loss's per-layer part the router would get a different gradient.
  assert.ok(tidy(() => params["model.layers.0.mlp.gate.weight"]!.grad!.abs().sum().item()) > 0);
  model.zeroGrad();
  assert.ok(liveTensors() <= before + 4, `live tensors ${liveTensors()} vs ${before}`);
  for (const t of [ids, mask, labels]) t.dispose();
  model.dispose();
});

test("mixtral and qwen3_moe: gradients of logits and auxiliary loss agree with finite differences (float64)", { skip }, () => {
  for (const config of [MIXTRAL, QWEN3_MOE]) {
    const ids = [IDS[0]!.slice(0, 7)];
    const model = loadModel(referenceModel("moe_reference.py", { ...config, num_hidden_layers: 1 }, { input_ids: ids }).folder, { dtype: "float64" });
    model.config.output_router_logits = true;
    manualSeed(3);
    const probe = probeLike([1, 7, 96]);
    const input = tensor(ids);
    const block = config.model_type === "mixtral" ? "block_sparse_moe" : "mlp";
    const expert = config.model_type === "mixtral" ? "w1" : "gate_proj";
    const names = [`model.layers.0.${block}.gate.weight`, `model.layers.0.${block}.experts.0.${expert}.weight`, "model.layers.0.self_attn.v_proj.weight", "model.layers.0.post_attention_layernorm.weight"];
    modelGradcheck(model, names, () => model.forward(input).mul(probe).sum().add(model.auxiliaryLoss()!.mul(100)), { perParameter: 4 });
    probe.dispose();
    input.dispose();
    model.dispose();
  }
});

test("mixtral: decoding with the KV cache gives the full forward's logits", { skip }, () => {
  const model = loadModel(referenceModel("moe_reference.py", { ...MIXTRAL, sliding_window: 5 }, { input_ids: IDS }).folder);
  const ids = tensor([IDS[0]!]);
  const full = tidy(() => noGrad(() => model.forward(ids).toFlatArray()));
  const cache = new KVCache(model.config.num_hidden_layers);
  const stepwise = tidy(() =>
    noGrad(() => {
      const steps = [model.forward(ids.slice(1, 0, 4), { cache })];
      for (let t = 4; t < 12; t++) steps.push(model.forward(ids.slice(1, t, t + 1), { cache }));
      return cat(steps, 1).toFlatArray();
    }),
  );
  assert.ok(maxAbsDiff(full, stepwise) < 1e-5, `max diff ${maxAbsDiff(full, stepwise)}`);
  cache.dispose();
  ids.dispose();
  model.dispose();
});

test("freeze by layer trains whole layers of a mixture of experts (not expert N of every layer), and LoRA wraps experts by name", () => {
  const model = loadModel(makeTinyModel({ ...MIXTRAL, num_local_experts: 4, num_hidden_layers: 3 }));
  const trainable = () => model.namedParameters({ trainableOnly: true }).map(([name]) => name);
  applyFreeze(model, { trainableLayers: -2 });
  assert.ok(trainable().every((name) => /^model\.layers\.[01]\./.test(name)), trainable().filter((name) => !/^model\.layers\.[01]\./.test(name)).join(", "));
  assert.equal(trainable().length, 2 * (4 + 1 + 4 * 3 + 2));
  assert.deepEqual(freezeModuleChoices(model).hidden.sort(), ["block_sparse_moe", "input_layernorm", "post_attention_layernorm", "self_attn"]);
  applyFreeze(model, { trainableLayers: 1, trainableModules: ["block_sparse_moe"] });
  assert.deepEqual(trainable(), model.namedParameters().map(([name]) => name).filter((name) => name.startsWith("model.layers.2.block_sparse_moe.")));
  model.requiresGrad_(true);
  applyLora(model, { targets: ["w1", "w3", "q_proj"], rank: 2 });
  const lora = trainable();
  assert.equal(lora.length, 3 * (4 * 2 + 1) * 2);
  assert.ok(lora.includes("model.layers.1.block_sparse_moe.experts.3.w1.lora_A.weight"));
  model.dispose();
});

test("moe_aux_loss_coef switches the router loss on for training only, for the model types that have it", () => {
  const config = () => ({ model_type: "qwen3_moe", router_aux_loss_coef: 0.001 }) as unknown as Parameters<typeof patchConfig>[0];
  const training = config();
  assert.match(patchConfig(training, { training: true, moeAuxLossCoef: 0.02 }).join("\n"), /weight 0.02/);
  assert.equal(training.output_router_logits, true);
  assert.equal(training.router_aux_loss_coef, 0.02);
  const inference = config();
  assert.match(patchConfig(inference, { training: false, moeAuxLossCoef: 0.02 }).join("\n"), /training only/);
  assert.equal(inference.output_router_logits, undefined);
  const deepseek = config();
  deepseek.model_type = "deepseek_v2";
  assert.match(patchConfig(deepseek, { training: true, moeAuxLossCoef: 0.03 }).join("\n"), /aux_loss_alpha/);
  assert.equal(deepseek.aux_loss_alpha, 0.03);
  const dense = config();
  dense.model_type = "llama";
  assert.match(patchConfig(dense, { training: true, moeAuxLossCoef: 0.02 }).join("\n"), /no router auxiliary loss/);
  assert.equal(dense.output_router_logits, undefined);
});
