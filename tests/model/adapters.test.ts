// Adapters (LoRA/DoRA, freeze, LLaMA Pro) on tiny random checkpoints: closed forms, merge
// equivalence, PEFT file layout, and a PyTorch reference of PEFT's formula
// (tests/reference/lora_reference.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../src/errors.ts";
import { normalizeConfig } from "../../src/model/config.ts";
import { loadModel } from "../../src/model/loader.ts";
import { architectureFor } from "../../src/model/registry.ts";
import { checkpointedBackward } from "../../src/model/patches/checkpointing.ts";
import type { CausalLM } from "../../src/model/registry.ts";
import {
  LoraLinear,
  applyLora,
  findAllLinearModules,
  loadLoraAdapter,
  loraLayers,
  appliedLoraConfig,
  mergeLora,
  saveLoraAdapter,
  savePissaConverted,
} from "../../src/model/adapters/index.ts";
import { applyFreeze, freezeModuleChoices } from "../../src/model/adapters/freeze.ts";
import { applyFinetuning, printParamStatus } from "../../src/model/adapters/index.ts";
import { expandCheckpoint, expandLayers } from "../../src/model/adapters/llama_pro.ts";
import { Linear, type Tensor, linear, liveTensors, manualSeed, noGrad, openSafetensors, randn, saveSafetensors, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";
import { assertClose, torchReference } from "../torch/torch-reference.ts";
import type { LlamaForCausalLM } from "../../src/model/models/llama.ts";

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;

const IDS = [
  [5, 17, 42, 8, 91, 3, 60, 22],
  [9, 9, 33, 70, 2, 45, 18, 81],
];

function logits(model: CausalLM): Float32Array {
  return tidy(() => noGrad(() => model.eval().forward(tensor(IDS)).data() as Float32Array));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** Gives every LoRA B (and DoRA magnitude) random values so the adapter changes the output. */
function randomizeLora(model: CausalLM, seed = 1): void {
  manualSeed(seed);
  noGrad(() => {
    for (const [, layer] of loraLayers(model)) {
      layer.lora_B.weight.normal_(0, 0.3);
      layer.lora_magnitude_vector?.mul_(1.1);
    }
  });
}

function tempFolder(): string {
  return mkdtempSync(join(tmpdir(), "lmf-adapter-"));
}

// --- LoRA ----------------------------------------------------------------------------------------

for (const useRslora of [false, true]) {
  test(`LoraLinear forward equals x·Wᵀ + b + scaling·(x·Aᵀ)·Bᵀ (use_rslora=${useRslora})`, () => {
    manualSeed(0);
    const base = new Linear(8, 6);
    const layer = new LoraLinear(base, { rank: 4, alpha: 16, useRslora });
    assert.equal(layer.scaling, useRslora ? 16 / 2 : 16 / 4);
    noGrad(() => layer.lora_B.weight.normal_(0, 1));
    const diff = tidy(() => {
      const x = randn([2, 3, 8]);
      const expected = linear(x, base.weight, base.bias)
        .add(x.matmul(layer.lora_A.weight.t()).matmul(layer.lora_B.weight.t()).mul(layer.scaling));
      return noGrad(() => layer.forward(x).sub(expected).abs().max().item());
    });
    assert.ok(diff < 1e-5, `max diff ${diff}`);
    layer.dispose();
  });
}

test("LoRA dropout acts on the LoRA path's input, only in training", () => {
  manualSeed(0);
  const layer = new LoraLinear(new Linear(8, 6), { rank: 2, dropout: 1 });
  noGrad(() => layer.lora_B.weight.normal_(0, 1));
  const [trainDiff, evalDiff] = tidy(() => {
    const x = randn([4, 8]);
    const base = layer.base_layer.forward(x);
    const training = noGrad(() => layer.train().forward(x));
    const evaluating = noGrad(() => layer.eval().forward(x));
    return [training.sub(base).abs().max().item(), evaluating.sub(base).abs().max().item()];
  });
  assert.equal(trainDiff, 0, "p = 1 drops the whole LoRA input while training");
  assert.ok(evalDiff > 1e-3, "at eval the LoRA path is whole");
  layer.dispose();
});

test("applyLora: B = 0 leaves the model output unchanged; merge equals the unmerged model", () => {
  const folder = makeTinyModel();
  const model = loadModel(folder);
  const before = logits(model);
  applyLora(model, { targets: ["all"], rank: 4, alpha: 8 });
  assert.equal(loraLayers(model).length, 7 * 2);
  assert.ok(maxAbsDiff(logits(model), before) === 0);
  randomizeLora(model);
  const unmerged = logits(model);
  assert.ok(maxAbsDiff(unmerged, before) > 1e-3, "the adapter changes the output");
  mergeLora(model);
  assert.equal(loraLayers(model).length, 0);
  assert.ok((model as LlamaForCausalLM).model.layers[0]!.self_attn.q_proj instanceof Linear);
  assert.ok(!((model as LlamaForCausalLM).model.layers[0]!.self_attn.q_proj instanceof LoraLinear));
  assert.ok(maxAbsDiff(logits(model), unmerged) <= 1e-5, `merge diff ${maxAbsDiff(logits(model), unmerged)}`);
  model.dispose();
});

test("lora_target all = every Linear but lm_head; only LoRA weights train, r·(in+out) each", () => {
  const model = loadModel(makeTinyModel());
  assert.deepEqual(findAllLinearModules(model).sort(), ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]);
  const rank = 4;
  applyLora(model, { targets: ["all"], rank });
  const trainable = model.namedParameters({ trainableOnly: true });
  assert.ok(trainable.every(([name]) => /\.lora_[AB]\.weight$/.test(name)), trainable.map(([n]) => n).join(","));
  const expected = loraLayers(model).reduce((sum, [, layer]) => sum + rank * (layer.inFeatures + layer.outFeatures), 0);
  // Tiny Llama per layer: q 32+32, k 32+16, v 32+16, o 32+32, gate/up 32+64, down 64+32.
  assert.equal(expected, 2 * rank * (64 + 48 + 48 + 64 + 96 + 96 + 96));
  assert.equal(model.numParameters({ trainableOnly: true }), expected);
  model.dispose();
});

test("lora_target q_proj,v_proj wraps exactly those; a target matching nothing is a UserError listing the names", () => {
  const model = loadModel(makeTinyModel());
  applyLora(model, { targets: ["q_proj", "v_proj"], rank: 2 });
  assert.deepEqual(
    loraLayers(model).map(([name]) => name),
    ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"],
  );
  const fresh = loadModel(makeTinyModel());
  assert.throws(
    () => applyLora(fresh, { targets: ["qproj"], rank: 2 }),
    (error: unknown) => error instanceof UserError && /qproj/.test(error.message) && /q_proj/.test(error.message) && /down_proj/.test(error.message),
  );
  assert.throws(() => applyLora(fresh, { targets: ["mlp"], rank: 2 }), (error: unknown) => error instanceof UserError && /only Linear/.test(error.message));
  assert.throws(
    () => applyLora(fresh, { targets: ["q_proj"], rank: 4096, pissaInit: true }),
    (error: unknown) => error instanceof UserError && /lora_rank 4096 exceeds the smaller side/.test(error.message),
  );
  model.dispose();
  fresh.dispose();
});

test("saveLoraAdapter writes PEFT keys and config; loading into a fresh model gives identical outputs", () => {
  const baseFolder = makeTinyModel();
  const model = loadModel(baseFolder);
  applyLora(model, { targets: ["q_proj", "v_proj", "down_proj"], rank: 4, alpha: 16, dropout: 0.1, additionalTarget: ["lm_head"] });
  randomizeLora(model);
  noGrad(() => (model as LlamaForCausalLM).lm_head.weight.mul_(1.5));
  const expected = logits(model);
  const adapterFolder = tempFolder();
  saveLoraAdapter(model, adapterFolder, null, { baseModelNameOrPath: baseFolder });

  const config = JSON.parse(readFileSync(join(adapterFolder, "adapter_config.json"), "utf8"));
  assert.equal(config.peft_type, "LORA");
  assert.equal(config.task_type, "CAUSAL_LM");
  assert.equal(config.r, 4);
  assert.equal(config.lora_alpha, 16);
  assert.equal(config.lora_dropout, 0.1);
  assert.deepEqual(config.target_modules, ["q_proj", "v_proj", "down_proj"]);
  assert.equal(config.bias, "none");
  assert.equal(config.use_rslora, false);
  assert.equal(config.use_dora, false);
  assert.deepEqual(config.modules_to_save, ["lm_head"]);
  assert.equal(config.base_model_name_or_path, baseFolder);
  assert.equal(config.fan_in_fan_out, false);
  assert.equal(config.init_lora_weights, true);
  assert.equal(config.inference_mode, true);

  const reader = openSafetensors(join(adapterFolder, "adapter_model.safetensors"));
  const names = reader.names().sort();
  assert.equal(names.length, 2 * 3 * 2 + 1);
  assert.ok(names.includes("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  assert.ok(names.includes("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
  assert.ok(names.includes("base_model.model.lm_head.weight"));
  assert.ok(names.every((name) => name.startsWith("base_model.model.") && !name.includes("default") && !name.includes("base_layer")));
  assert.deepEqual(reader.info("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight").shape, [4, 64]);
  assert.deepEqual(reader.info("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight").shape, [32, 4]);
  assert.equal(reader.metadata.format, "pt");
  reader.close();

  const fresh = loadModel(baseFolder);
  loadLoraAdapter(fresh, adapterFolder);
  assert.equal(fresh.numParameters({ trainableOnly: true }), 0, "loaded for inference: frozen");
  assert.ok(maxAbsDiff(logits(fresh), expected) === 0);
  const resumed = loadModel(baseFolder);
  loadLoraAdapter(resumed, adapterFolder, { trainable: true });
  assert.ok(resumed.namedParameters({ trainableOnly: true }).some(([name]) => name === "lm_head.weight"));
  model.dispose();
  fresh.dispose();
  resumed.dispose();
});

/** One target layer's output through the PyTorch reference of PEFT's formula. */
function referenceLayer(baseFolder: string, adapterFolder: string, moduleName: string, x: number[][]): number[] {
  const out = execFileSync("/usr/bin/python3", ["tests/reference/lora_reference.py"], {
    input: JSON.stringify({ base: baseFolder, adapter: adapterFolder, module: moduleName, x }),
    maxBuffer: 1 << 26,
  });
  return JSON.parse(out.toString()).y;
}

for (const variant of [{ useRslora: false, useDora: false }, { useRslora: true, useDora: false }, { useRslora: false, useDora: true }]) {
  const label = `rslora=${variant.useRslora} dora=${variant.useDora}`;
  test(`a target layer matches the PyTorch reference of PEFT's formula (${label})`, { skip: !hasTorch && "python3-torch not installed" }, () => {
    const baseFolder = makeTinyModel({ attention_bias: true });
    const model = loadModel(baseFolder);
    applyLora(model, { targets: ["o_proj", "up_proj"], rank: 4, alpha: 8, ...variant });
    randomizeLora(model);
    const adapterFolder = tempFolder();
    saveLoraAdapter(model, adapterFolder);
    manualSeed(3);
    for (const moduleName of ["model.layers.1.self_attn.o_proj", "model.layers.0.mlp.up_proj"]) {
      const layer = model.getSubmodule(moduleName) as LoraLinear;
      const x = tidy(() => randn([5, layer.inFeatures]).toArray() as number[][]);
      const ours = tidy(() => noGrad(() => layer.forward(tensor(x)).data() as Float32Array));
      const theirs = referenceLayer(baseFolder, adapterFolder, moduleName, x);
      assert.ok(maxAbsDiff(ours, theirs) <= 1e-5, `${moduleName}: max diff ${maxAbsDiff(ours, theirs)}`);
    }
    model.dispose();
  });
}

test("DoRA: magnitude starts at the row norms of W, B = 0 changes nothing, merge equals unmerged, save/load round-trips", () => {
  const baseFolder = makeTinyModel();
  const model = loadModel(baseFolder);
  const before = logits(model);
  applyLora(model, { targets: ["all"], rank: 4, useDora: true });
  const [, first] = loraLayers(model)[0]!;
  const normDiff = tidy(() => first.lora_magnitude_vector!.sub((first.base_layer as Linear).weight.norm(2, 1)).abs().max().item());
  assert.ok(normDiff < 1e-6);
  assert.ok(maxAbsDiff(logits(model), before) <= 1e-5);
  randomizeLora(model);
  const unmerged = logits(model);
  const adapterFolder = tempFolder();
  saveLoraAdapter(model, adapterFolder);
  const names = openSafetensors(join(adapterFolder, "adapter_model.safetensors")).names();
  assert.ok(names.includes("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"));
  const fresh = loadModel(baseFolder);
  loadLoraAdapter(fresh, adapterFolder);
  assert.ok(maxAbsDiff(logits(fresh), unmerged) === 0);
  mergeLora(model);
  assert.ok(maxAbsDiff(logits(model), unmerged) <= 1e-5, `merge diff ${maxAbsDiff(logits(model), unmerged)}`);
  model.dispose();
  fresh.dispose();
});

test("a PEFT adapter written by hand from the spec loads (adapter name in keys, regex target_modules)", () => {
  const baseFolder = makeTinyModel();
  const adapterFolder = tempFolder();
  const rank = 2;
  manualSeed(5);
  const state: Record<string, Tensor> = {};
  for (const layerIndex of [0, 1]) {
    const prefix = `base_model.model.model.layers.${layerIndex}.self_attn.k_proj`;
    state[`${prefix}.lora_A.default.weight`] = randn([rank, 32]);
    state[`${prefix}.lora_B.default.weight`] = randn([16, rank]);
  }
  saveSafetensors(join(adapterFolder, "adapter_model.safetensors"), state, { format: "pt" });
  writeFileSync(
    join(adapterFolder, "adapter_config.json"),
    JSON.stringify({ peft_type: "LORA", task_type: "CAUSAL_LM", r: rank, lora_alpha: 4, target_modules: ".*\\.k_proj", lora_dropout: 0.05 }),
  );
  const model = loadModel(baseFolder);
  loadLoraAdapter(model, adapterFolder);
  const layer = model.getSubmodule("model.layers.1.self_attn.k_proj") as LoraLinear;
  assert.ok(layer instanceof LoraLinear);
  assert.equal(layer.scaling, 2);
  assert.ok(tidy(() => layer.lora_B.weight.equal(state["base_model.model.model.layers.1.self_attn.k_proj.lora_B.default.weight"]!)));
  for (const t of Object.values(state)) t.dispose();
  model.dispose();
});

test("several adapters apply one after another: merge the first, load the second", () => {
  const baseFolder = makeTinyModel();
  const first = loadModel(baseFolder);
  applyLora(first, { targets: ["q_proj"], rank: 2 });
  randomizeLora(first, 7);
  const firstFolder = tempFolder();
  saveLoraAdapter(first, firstFolder);
  mergeLora(first);
  applyLora(first, { targets: ["down_proj"], rank: 2 });
  randomizeLora(first, 8);
  const secondFolder = tempFolder();
  saveLoraAdapter(first, secondFolder);
  const expected = logits(first);

  const model = loadModel(baseFolder);
  loadLoraAdapter(model, firstFolder);
  assert.throws(() => loadLoraAdapter(model, secondFolder), /already carries a LoRA adapter/);
  mergeLora(model);
  loadLoraAdapter(model, secondFolder);
  assert.ok(maxAbsDiff(logits(model), expected) <= 1e-6);
  first.dispose();
  model.dispose();
});

test("LoRA gradients match finite differences through the whole tiny model", () => {
  // float64 weights, but RMSNorm computes in float32 (as HF does), so the loss carries float32
  // rounding (~1e-6 here): a larger step and a tolerance above that noise.
  const model = loadModel(makeTinyModel({ num_hidden_layers: 1 }));
  model.to("float64");
  applyLora(model, { targets: ["v_proj"], rank: 2, dtype: "float64" });
  randomizeLora(model);
  const layer = model.getSubmodule("model.layers.0.self_attn.v_proj") as LoraLinear;
  const ids = tensor(IDS);
  const loss = (): number => tidy(() => noGrad(() => model.forward(ids).logSoftmax(-1).select(2, 3).sum().item()));
  tidy(() => {
    model.forward(ids).logSoftmax(-1).select(2, 3).sum().backward();
  });
  const step = 1e-2;
  for (const weight of [layer.lora_A.weight, layer.lora_B.weight]) {
    const grad = weight.grad!.data() as Float64Array;
    for (const index of [0, 5, weight.numel - 1]) {
      const flat = weight.view(-1);
      const original = flat.select(0, index).item();
      noGrad(() => flat.select(0, index).fill_(original + step));
      const plus = loss();
      noGrad(() => flat.select(0, index).fill_(original - step));
      const minus = loss();
      noGrad(() => flat.select(0, index).fill_(original));
      flat.dispose();
      const numeric = (plus - minus) / (2 * step);
      assert.ok(Math.abs(numeric - grad[index]!) <= 1e-3 + 1e-2 * Math.abs(numeric), `index ${index}: ${numeric} vs ${grad[index]}`);
    }
  }
  ids.dispose();
  model.dispose();
});

// --- freeze --------------------------------------------------------------------------------------

function trainableNames(model: CausalLM): string[] {
  return model.namedParameters({ trainableOnly: true }).map(([name]) => name);
}

const LAYER_PARAMS = [
  "self_attn.q_proj.weight",
  "self_attn.k_proj.weight",
  "self_attn.v_proj.weight",
  "self_attn.o_proj.weight",
  "mlp.gate_proj.weight",
  "mlp.up_proj.weight",
  "mlp.down_proj.weight",
  "input_layernorm.weight",
  "post_attention_layernorm.weight",
];

function layerParams(id: number, filter: (name: string) => boolean = () => true): string[] {
  return LAYER_PARAMS.filter(filter).map((name) => `model.layers.${id}.${name}`);
}

test("freeze: n > 0 trains the last n layers, n < 0 the first |n|, modules and extra modules as named", () => {
  const folder = makeTinyModel({ num_hidden_layers: 4 });
  const model = loadModel(folder);
  applyFreeze(model, { trainableLayers: 1 });
  assert.deepEqual(trainableNames(model), layerParams(3));
  applyFreeze(model, { trainableLayers: 2 });
  assert.deepEqual(trainableNames(model), [...layerParams(2), ...layerParams(3)]);
  applyFreeze(model, { trainableLayers: -1 });
  assert.deepEqual(trainableNames(model), layerParams(0));
  applyFreeze(model, { trainableLayers: -2, trainableModules: ["mlp"] });
  assert.deepEqual(trainableNames(model), [...layerParams(0, (n) => n.startsWith("mlp.")), ...layerParams(1, (n) => n.startsWith("mlp."))]);
  applyFreeze(model, { trainableLayers: 1, trainableModules: ["self_attn", "input_layernorm"], extraModules: ["embed_tokens", "lm_head"] });
  assert.deepEqual(trainableNames(model), [
    "model.embed_tokens.weight",
    ...layerParams(3, (n) => n.startsWith("self_attn.") || n.startsWith("input_layernorm")),
    "lm_head.weight",
  ]);
  assert.deepEqual(freezeModuleChoices(model).hidden.sort(), ["input_layernorm", "mlp", "post_attention_layernorm", "self_attn"]);
  assert.deepEqual(freezeModuleChoices(model).nonHidden.sort(), ["embed_tokens", "lm_head", "norm"]);
  assert.throws(
    () => applyFreeze(model, { trainableLayers: 1, trainableModules: ["attn"] }),
    (error: unknown) => error instanceof UserError && /Module attn is not found/.test(error.message) && /self_attn/.test(error.message),
  );
  assert.throws(
    () => applyFreeze(model, { trainableLayers: 1, extraModules: ["embed"] }),
    (error: unknown) => error instanceof UserError && /embed_tokens/.test(error.message),
  );
  model.dispose();
});

// --- LLaMA Pro -----------------------------------------------------------------------------------

const FAMILY_BASE = { vocab_size: 96, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128 };
/** One tiny config per family whose layers differ by kind or by names (experts, fused projections, MLA). */
const EXPANDABLE: [string, Record<string, unknown>][] = [
  ["gemma2 (sliding window on even layers)", { model_type: "gemma2", head_dim: 8, sliding_window: 3, query_pre_attn_scalar: 12 }],
  ["gemma3_text (every 2nd layer global)", { model_type: "gemma3_text", head_dim: 8, sliding_window: 3, sliding_window_pattern: 2, rope_local_base_freq: 100 }],
  ["phi3 (fused qkv_proj, gate_up_proj)", { model_type: "phi3", original_max_position_embeddings: 128 }],
  ["glm4 (post norms)", { model_type: "glm4", head_dim: 8 }],
  ["mixtral (experts' w2)", { model_type: "mixtral", intermediate_size: 24, num_local_experts: 4, num_experts_per_tok: 2 }],
  ["qwen2_moe (a dense layer in mlp_only_layers, shared expert)", { model_type: "qwen2_moe", moe_intermediate_size: 16, shared_expert_intermediate_size: 24, num_experts: 4, num_experts_per_tok: 2, mlp_only_layers: [1] }],
  [
    "deepseek_v2 (MLA, first_k_dense_replace 1)",
    { model_type: "deepseek_v2", num_key_value_heads: 4, moe_intermediate_size: 12, q_lora_rank: null, kv_lora_rank: 16, qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 6, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2, first_k_dense_replace: 1, topk_method: "greedy" },
  ],
];

test("LLaMA Pro keeps every family's output: the copies add nothing and each layer keeps its kind (sliding or global, dense or sparse)", () => {
  for (const [name, overrides] of EXPANDABLE) {
    const config = normalizeConfig({ ...FAMILY_BASE, ...overrides });
    manualSeed(3);
    const model = architectureFor(config).build(config, { init: "hf" });
    // Non-zero norm weights and biases, so a copied block that were not the identity would show.
    noGrad(() => {
      for (const [, parameter] of model.namedParameters()) if (parameter.shape.length === 1) parameter.copy_(randn(parameter.shape).mul(0.5).add(1));
    });
    const before = logits(model);
    const expanded = expandLayers(model, { numExpandedLayers: 2 });
    assert.equal(expanded.decoderLayers.length, 6, name);
    const diff = maxAbsDiff(logits(expanded), before);
    assert.ok(diff <= 1e-5, `${name}: logits moved by ${diff}`);
    model.dispose();
    expanded.dispose();
  }
});

test("LLaMA Pro: expansion adds identity blocks (same outputs), names them, and only they train", () => {
  const folder = makeTinyModel({ num_hidden_layers: 4 });
  const model = loadModel(folder);
  const before = logits(model);
  const expanded = expandLayers(model, { numExpandedLayers: 2 });
  assert.equal(expanded.config.num_hidden_layers, 6);
  assert.equal((expanded as LlamaForCausalLM).model.layers.length, 6);
  assert.ok(maxAbsDiff(logits(expanded), before) <= 1e-6, `diff ${maxAbsDiff(logits(expanded), before)}`);
  // Layers 0 1 [1'] 2 3 [3']: the copies sit at 2 and 5, with o_proj/down_proj zero.
  assert.ok(tidy(() => (expanded as LlamaForCausalLM).model.layers[2]!.self_attn.o_proj.weight.abs().sum().item()) === 0);
  assert.ok(tidy(() => (expanded as LlamaForCausalLM).model.layers[5]!.mlp.down_proj.weight.abs().sum().item()) === 0);
  assert.ok(tidy(() => (expanded as LlamaForCausalLM).model.layers[5]!.self_attn.q_proj.weight.equal((model as LlamaForCausalLM).model.layers[3]!.self_attn.q_proj.weight)));
  assert.ok(tidy(() => (expanded as LlamaForCausalLM).model.layers[4]!.mlp.up_proj.weight.equal((model as LlamaForCausalLM).model.layers[3]!.mlp.up_proj.weight)));
  assert.throws(() => expandLayers(model, { numExpandedLayers: 3 }), /divisible/);

  applyFinetuning(expanded, { finetuningType: "freeze", freezeTrainableLayers: 2, useLlamaPro: true });
  assert.deepEqual(trainableNames(expanded), [...layerParams(2), ...layerParams(5)]);
  applyFinetuning(expanded, { finetuningType: "lora", loraTarget: ["q_proj", "v_proj"], loraRank: 2, freezeTrainableLayers: 2, useLlamaPro: true });
  assert.deepEqual(
    loraLayers(expanded).map(([name]) => name),
    ["model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.v_proj", "model.layers.5.self_attn.q_proj", "model.layers.5.self_attn.v_proj"],
  );
  assert.ok(trainableNames(expanded).every((name) => /^model\.layers\.[25]\..*lora_[AB]/.test(name)));

  const outputDir = tempFolder();
  const written = expandCheckpoint(folder, outputDir, { numExpandedLayers: 4 });
  assert.deepEqual(written, { numLayers: 8, freezeTrainableLayers: 4 });
  const reloaded = loadModel(outputDir);
  assert.equal(reloaded.config.num_hidden_layers, 8);
  assert.ok(maxAbsDiff(logits(reloaded), before) <= 1e-6);
  model.dispose();
  expanded.dispose();
  reloaded.dispose();
});

// --- dispatch and report -------------------------------------------------------------------------

test("applyFinetuning: full, freeze, lora (merge earlier adapters, resume the last) and the parameter report", () => {
  const folder = makeTinyModel();
  const model = loadModel(folder);
  const all = model.numParameters();
  assert.equal(applyFinetuning(model, { finetuningType: "full" }).trainableParams, all);
  assert.equal(applyFinetuning(model, { finetuningType: "full", isTrainable: false }).trainableParams, 0);
  const frozen = applyFinetuning(model, { finetuningType: "freeze", freezeTrainableLayers: 1, freezeTrainableModules: ["mlp"] });
  assert.equal(frozen.trainableParams, 3 * 32 * 64);
  const lines: string[] = [];
  printParamStatus(model, (line) => lines.push(line));
  assert.equal(lines.length, model.namedParameters().length + 1);
  assert.equal(lines[0], "name: model.embed_tokens.weight, dtype: torch.float32, device: cpu, trainable: False");
  const percent = ((100 * 3 * 32 * 64) / all).toFixed(4);
  assert.equal(lines.at(-1), `trainable params: ${(3 * 32 * 64).toLocaleString("en-US")} || all params: ${all.toLocaleString("en-US")} || trainable%: ${percent}`);

  const created = applyFinetuning(model, { finetuningType: "lora", loraRank: 4, loraTarget: ["all"] });
  assert.equal(created.loraConfig!.lora_alpha, 8, "lora_alpha defaults to 2 x rank");
  randomizeLora(model, 11);
  const firstFolder = tempFolder();
  saveLoraAdapter(model, firstFolder);
  mergeLora(model);
  applyFinetuning(model, { finetuningType: "lora", loraRank: 2, loraTarget: ["o_proj"] });
  randomizeLora(model, 12);
  const secondFolder = tempFolder();
  saveLoraAdapter(model, secondFolder);
  const expected = logits(model);

  const resumed = loadModel(folder);
  const result = applyFinetuning(resumed, { finetuningType: "lora", adapterNameOrPath: [firstFolder, secondFolder] });
  assert.equal(result.loraConfig!.r, 2);
  assert.equal(result.trainableParams, 2 * 2 * (32 + 32), "the last adapter is resumed, trainable");
  assert.ok(maxAbsDiff(logits(resumed), expected) <= 1e-5);
  const inference = loadModel(folder);
  const merged = applyFinetuning(inference, { finetuningType: "lora", adapterNameOrPath: [firstFolder, secondFolder], isTrainable: false });
  assert.equal(merged.trainableParams, 0);
  assert.equal(loraLayers(inference).length, 0, "at inference every adapter is merged");
  assert.ok(maxAbsDiff(logits(inference), expected) <= 1e-5);
  assert.throws(() => applyFinetuning(inference, { finetuningType: "full", useLlamaPro: true }), /only valid for Freeze or LoRA/);
  model.dispose();
  resumed.dispose();
  inference.dispose();
});

test("LoRA leaks no tensors across training steps and merging frees the adapter (tied lm_head stays valid)", () => {
  const model = loadModel(makeTinyModel({ model_type: "qwen2", tie_word_embeddings: true, use_sliding_window: false }));
  applyLora(model, { targets: ["q_proj", "lm_head"], rank: 2, dropout: 0.1, useDora: true });
  const ids = tensor(IDS);
  const step = (): void =>
    tidy(() => {
      model.train().forward(ids).logSoftmax(-1).select(2, 3).sum().backward();
      model.zeroGrad();
    });
  step();
  const live = liveTensors();
  for (let i = 0; i < 3; i++) step();
  assert.equal(liveTensors(), live);
  randomizeLora(model);
  const unmerged = logits(model);
  const loraTensors = loraLayers(model).length * 3; // A, B and the DoRA magnitude per layer
  mergeLora(model);
  // Each layer frees A, B and the magnitude; its base weight (and bias) are replaced one for one,
  // except the tied head, whose old weight is still the embedding table.
  assert.equal(liveTensors(), live - loraTensors + 1);
  assert.ok(!(model as LlamaForCausalLM).model.embed_tokens.weight.isDisposed);
  assert.ok(maxAbsDiff(logits(model), unmerged) <= 1e-5);
  ids.dispose();
  model.dispose();
});

test("float32 LoRA weights on a bfloat16 model: the output keeps the model's dtype and matches the float32 closed form", () => {
  const model = loadModel(makeTinyModel(), { dtype: "bfloat16" });
  applyFinetuning(model, { finetuningType: "lora", loraTarget: ["v_proj"], loraRank: 2, loraDtype: "float32" });
  randomizeLora(model);
  const layer = model.getSubmodule("model.layers.0.self_attn.v_proj") as LoraLinear;
  assert.equal(layer.lora_A.weight.dtype, "float32");
  assert.equal((layer.base_layer as Linear).weight.dtype, "bfloat16");
  const diff = tidy(() =>
    noGrad(() => {
      const x = randn([3, 32]).to("bfloat16");
      const out = layer.forward(x);
      assert.equal(out.dtype, "bfloat16");
      const expected = layer.base_layer.forward(x).to("float32")
        .add(x.to("float32").matmul(layer.lora_A.weight.t()).matmul(layer.lora_B.weight.t()).mul(layer.scaling));
      return out.to("float32").sub(expected).abs().max().item();
    }),
  );
  assert.ok(diff < 0.05, `bf16 rounding only: ${diff}`);
  assert.equal(logits(model).length, 2 * 8 * 96);
  model.dispose();
});

function checkpointingMatchesPlainBackward(additionalTarget: string[] | null): void {
  const model = loadModel(makeTinyModel());
  applyLora(model, { targets: ["all"], rank: 2, dropout: 0.3, additionalTarget });
  randomizeLora(model);
  model.train();
  const ids = tensor(IDS);
  const lossOf = (output: Tensor): Tensor => output.logSoftmax(-1).select(2, 3).sum();
  manualSeed(21);
  tidy(() => lossOf(model.forward(ids)).backward());
  const plain = model.parameters({ trainableOnly: true }).map((weight) => weight.grad!.toFlatArray());
  model.zeroGrad();
  manualSeed(21);
  checkpointedBackward(model, ids, (hidden) => lossOf(model.logits(hidden)));
  const recomputed = model.parameters({ trainableOnly: true }).map((weight) => weight.grad!.toFlatArray());
  plain.forEach((grad, index) => assert.ok(maxAbsDiff(grad, recomputed[index]!) <= 1e-5, `parameter ${index}`));
  ids.dispose();
  model.dispose();
}

test("gradient checkpointing through LoRA layers with dropout gives the plain backward's gradients", () => {
  checkpointingMatchesPlainBackward(["embed_tokens"]);
});

test("gradient checkpointing with LoRA and a frozen embedding", () => {
  checkpointingMatchesPlainBackward(null);
});

// --- PiSSA ---------------------------------------------------------------------------------------

/** Moves every LoRA A and B away from its initial values, as training does. */
function perturbLora(model: CausalLM, seed = 3): void {
  manualSeed(seed);
  noGrad(() => {
    for (const [, layer] of loraLayers(model)) {
      tidy(() => {
        layer.lora_A.weight.add_(randn(layer.lora_A.weight.shape).mul(0.05));
        layer.lora_B.weight.add_(randn(layer.lora_B.weight.shape).mul(0.05));
      });
    }
  });
}

test("PiSSA initialisation equals PEFT's pissa_init (full and fast SVD) as computed by PyTorch", { skip: !hasTorch && "python3-torch not installed" }, () => {
  manualSeed(2);
  const base = new Linear(12, 10, { bias: false });
  const original = tidy(() => base.weight.toFlatArray());
  for (const niter of [null, 3]) {
    const reference = torchReference<{ pissa: number[][]; pissa_niter: number[][] }>({
      mode: "svd",
      values: original,
      shape: [10, 12],
      rank: 3,
      niter: 3,
      seed: 9,
      scaling: 16 / 3,
    });
    const copy = new Linear(12, 10, { bias: false, init: "empty" });
    tidy(() => noGrad(() => copy.weight.copy_(tensor(original).view(10, 12))));
    const layer = new LoraLinear(copy, { rank: 3, alpha: 16 });
    manualSeed(9); // svd_lowrank's draw, as the reference seeds it
    layer.initPissa(niter);
    const [A, B, residual] = niter === null ? reference.pissa : reference.pissa_niter;
    tidy(() => {
      assertClose(layer.lora_A.weight.toFlatArray(), A!, 1e-4, 1e-5, `lora_A (niter ${niter})`);
      assertClose(layer.lora_B.weight.toFlatArray(), B!, 1e-4, 1e-5, `lora_B (niter ${niter})`);
      assertClose((layer.base_layer as Linear).weight.toFlatArray(), residual!, 1e-4, 1e-5, `residual base weight (niter ${niter})`);
    });
    layer.dispose();
  }
  base.dispose();
});

test("PiSSA: the model's output is unchanged at the start; a full-SVD adapter reloads onto a fresh base, a fast-SVD one is refused", () => {
  const folder = makeTinyModel();
  for (const pissaIter of [-1, 4]) {
    const model = loadModel(folder);
    const before = logits(model);
    manualSeed(4);
    applyFinetuning(model, { finetuningType: "lora", loraRank: 4, loraTarget: ["all"], pissaInit: true, pissaIter });
    assert.ok(maxAbsDiff(logits(model), before) < 1e-5, `PiSSA changed the output by ${maxAbsDiff(logits(model), before)}`);
    const expected = pissaIter === -1 ? "pissa" : "pissa_niter_4";
    assert.equal(appliedLoraConfig(model)!.init_lora_weights, expected);
    perturbLora(model);
    const trained = logits(model);
    const adapter = tempFolder();
    saveLoraAdapter(model, adapter);
    assert.equal(JSON.parse(readFileSync(join(adapter, "adapter_config.json"), "utf8")).init_lora_weights, expected);
    const fresh = loadModel(folder);
    if (pissaIter === -1) {
      // PEFT recomputes the residual base from the full SVD, then loads A and B.
      loadLoraAdapter(fresh, adapter);
      assert.ok(maxAbsDiff(logits(fresh), trained) < 1e-5, `reloaded PiSSA differs by ${maxAbsDiff(logits(fresh), trained)}`);
    } else {
      assert.throws(() => loadLoraAdapter(fresh, adapter), (error: unknown) => error instanceof UserError && /pissa_niter_4/.test(error.message) && /pissa_converted/.test(error.fix ?? ""));
    }
    fresh.dispose();
    model.dispose();
  }
});

test("pissa_convert: the converted rank-2r adapter on the original base computes the trained PiSSA model", () => {
  const folder = makeTinyModel();
  const model = loadModel(folder);
  manualSeed(6);
  applyFinetuning(model, { finetuningType: "lora", loraRank: 2, loraAlpha: 8, loraTarget: ["q_proj", "down_proj"], pissaInit: true, pissaIter: 2 });
  const initial = tempFolder();
  saveLoraAdapter(model, initial, { ...appliedLoraConfig(model)!, init_lora_weights: true });
  perturbLora(model);
  const trained = logits(model);
  const converted = tempFolder();
  savePissaConverted(model, converted, initial);
  const config = JSON.parse(readFileSync(join(converted, "adapter_config.json"), "utf8"));
  assert.deepEqual([config.r, config.lora_alpha, config.init_lora_weights], [4, 16, true]);
  const fresh = loadModel(folder); // the original weights, not the residual
  loadLoraAdapter(fresh, converted);
  assert.ok(maxAbsDiff(logits(fresh), trained) < 1e-5, `converted adapter differs by ${maxAbsDiff(logits(fresh), trained)}`);
  // Merged into the original weights it is the same model again.
  mergeLora(fresh);
  assert.ok(maxAbsDiff(logits(fresh), trained) < 1e-5);
  fresh.dispose();
  model.dispose();
});
