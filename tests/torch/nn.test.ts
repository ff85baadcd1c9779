// nn: Module traversal in HF names, state dicts, Linear / Embedding / RMSNorm / Dropout and
// clipGradNorm, against hand computations and (where python3-torch exists) PyTorch itself.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Dropout,
  Embedding,
  Linear,
  Module,
  RMSNorm,
  type Tensor,
  cat,
  clipGradNorm,
  liveTensors,
  manualSeed,
  noGrad,
  ones,
  randn,
  tensor,
  tidy,
  zeros,
} from "../../src/torch/index.ts";
import { near } from "./op-helpers.ts";
import { assertClose, hasTorch, torchReference } from "./torch-reference.ts";

class Attention extends Module {
  q_proj = new Linear(4, 4, { bias: false });
  o_proj = new Linear(4, 4, { bias: false });
}
class Mlp extends Module {
  down_proj = new Linear(6, 4);
}
class DecoderLayer extends Module {
  self_attn = new Attention();
  mlp = new Mlp();
  input_layernorm = new RMSNorm(4);
}
class Inner extends Module {
  embed_tokens = new Embedding(10, 4, { paddingIdx: 0 });
  layers = [new DecoderLayer(), new DecoderLayer()];
  norm = new RMSNorm(4);
  _cache: Tensor | null = null;
  constructor() {
    super();
    this.registerBuffer("inv_freq", ones([2]), false);
    this.registerBuffer("position_ids", zeros([3], { dtype: "int64" }));
  }
}
class TinyForCausalLM extends Module {
  model = new Inner();
  lm_head = new Linear(4, 10, { bias: false });
}

const PARAMETER_NAMES = [
  "model.embed_tokens.weight",
  ...[0, 1].flatMap((i) => [
    `model.layers.${i}.self_attn.q_proj.weight`,
    `model.layers.${i}.self_attn.o_proj.weight`,
    `model.layers.${i}.mlp.down_proj.weight`,
    `model.layers.${i}.mlp.down_proj.bias`,
    `model.layers.${i}.input_layernorm.weight`,
  ]),
  "model.norm.weight",
  "lm_head.weight",
];

test("Module finds parameters, buffers and children under HF dotted names", () => {
  const model = new TinyForCausalLM();
  // Properties starting with "_" are private state, never parameters.
  const cache = ones([1]);
  model.model._cache = cache;
  assert.deepEqual(model.namedParameters().map(([name]) => name), PARAMETER_NAMES);
  assert.equal(model.parameters().length, PARAMETER_NAMES.length);
  assert.deepEqual(model.namedBuffers().map(([name]) => name), ["model.inv_freq", "model.position_ids"]);
  // The non-persistent buffer (like HF's rotary inv_freq) is not saved; as in torch, a module's own
  // tensors come before its children's.
  assert.deepEqual(Object.keys(model.stateDict()), ["model.position_ids", ...PARAMETER_NAMES]);
  assert.ok(model.namedModules().some(([name]) => name === "model.layers.1.self_attn.q_proj"));
  assert.equal(model.namedModules()[0]![0], "");
  assert.equal(model.getSubmodule("model.layers.1.self_attn.q_proj"), model.model.layers[1]!.self_attn.q_proj);
  assert.throws(() => model.getSubmodule("model.layers.7.mlp"), /no submodule "model\.layers\.7"/);
  assert.throws(() => model.getSubmodule("model.norm.weight"), /is a Tensor, not a Module/);

  // 10*4 + 2*(16 + 16 + 24 + 4 + 4) + 4 + 40
  assert.equal(model.numParameters(), 40 + 2 * 64 + 4 + 40);
  model.model.embed_tokens.weight.requiresGrad_(false);
  assert.equal(model.numParameters({ trainableOnly: true }), 2 * 64 + 4 + 40);
  model.requiresGrad_(false);
  assert.equal(model.numParameters({ trainableOnly: true }), 0);
  model.dispose();
  cache.dispose();
});

test("setSubmodule swaps a child by name, in objects and in arrays", () => {
  const model = new TinyForCausalLM();
  const replacement = new Linear(4, 4, { bias: true });
  const previous = model.setSubmodule("model.layers.0.self_attn.q_proj", replacement);
  assert.equal(model.model.layers[0]!.self_attn.q_proj, replacement);
  assert.ok(model.namedParameters().some(([name]) => name === "model.layers.0.self_attn.q_proj.bias"));
  const layer = new DecoderLayer();
  const oldLayer = model.setSubmodule("model.layers.1", layer);
  assert.equal(model.model.layers[1], layer);
  assert.throws(() => model.setSubmodule("model.norm.weight", layer), /not a Module/);
  previous.dispose();
  oldLayer.dispose();
  model.dispose();
});

test("tied weights are one parameter under two state dict keys; train/eval, to() and dispose", () => {
  const before = liveTensors();
  const model = new TinyForCausalLM();
  model.lm_head.weight.dispose();
  model.lm_head.weight = model.model.embed_tokens.weight;
  assert.equal(model.parameters().length, PARAMETER_NAMES.length - 1);
  assert.ok("lm_head.weight" in model.stateDict());

  model.eval();
  assert.ok(model.modules().every((module) => module.training === false));
  model.train();
  assert.ok(model.model.layers[1]!.mlp.training);

  model.to("float64");
  assert.equal(model.lm_head.weight, model.model.embed_tokens.weight);
  assert.equal(model.model.norm.weight.dtype, "float64");
  assert.equal(model.model.norm.weight.requiresGrad, true);
  assert.equal((model.model as unknown as { position_ids: Tensor }).position_ids.dtype, "int64");
  model.dispose();
  assert.equal(liveTensors(), before);
});

test("stateDict / loadStateDict round trip copies in place", () => {
  manualSeed(1);
  const source = new TinyForCausalLM();
  manualSeed(2);
  const target = new TinyForCausalLM();
  const targetWeight = target.model.layers[1]!.mlp.down_proj.weight;
  const result = target.loadStateDict(source.stateDict());
  assert.deepEqual(result, { missingKeys: [], unexpectedKeys: [] });
  assert.equal(target.model.layers[1]!.mlp.down_proj.weight, targetWeight, "the parameter object is kept");
  for (const [name, value] of Object.entries(source.stateDict())) {
    assert.ok(value.equal(target.stateDict()[name]!), name);
  }
  assert.equal(targetWeight.requiresGrad, true);
  source.dispose();
  target.dispose();
});

test("loadStateDict reports missing, unexpected, shape and dtype problems clearly", () => {
  const model = new TinyForCausalLM();
  const dict = { ...model.stateDict() };
  delete dict["model.norm.weight"];
  const extra = ones([4]);
  dict["model.extra.weight"] = extra;
  assert.throws(() => model.loadStateDict(dict), (error: Error) => {
    assert.match(error.message, /Error\(s\) in loading state dict for TinyForCausalLM/);
    assert.match(error.message, /Missing key\(s\): "model\.norm\.weight"/);
    assert.match(error.message, /Unexpected key\(s\): "model\.extra\.weight"/);
    return true;
  });
  assert.deepEqual(model.loadStateDict(dict, { strict: false }), {
    missingKeys: ["model.norm.weight"],
    unexpectedKeys: ["model.extra.weight"],
  });

  const wrongShape = zeros([5, 4]);
  assert.throws(
    () => model.loadStateDict({ "lm_head.weight": wrongShape }, { strict: false }),
    /size mismatch for "lm_head\.weight": copying a tensor of shape \[5, 4\], the shape in the module is \[10, 4\]/,
  );
  const wrongDtype = zeros([10, 4], { dtype: "bfloat16" });
  assert.throws(() => model.loadStateDict({ "lm_head.weight": wrongDtype }, { strict: false }), /dtype mismatch for "lm_head\.weight": the tensor is bfloat16/);
  model.loadStateDict({ "lm_head.weight": wrongDtype }, { strict: false, allowDtypeCast: true });
  assert.equal(model.lm_head.weight.dtype, "float32");
  assert.equal(tidy(() => model.lm_head.weight.abs().sum().item()), 0);
  for (const t of [extra, wrongShape, wrongDtype]) t.dispose();
  model.dispose();
});

test("RMSNorm matches the closed form, computing in float32 and casting back to the activations' dtype", () => {
  const norm = new RMSNorm(4, { eps: 1e-5 });
  const weight = [0.5, 1, 2, -1];
  noGrad(() => tidy(() => norm.weight.copy_(tensor(weight, { dtype: "float32" }))));
  const rows = [
    [1, 2, 3, 4],
    [-0.5, 0.25, 0, 2],
  ];
  const expected = rows.flatMap((row) => {
    const meanSquare = row.reduce((s, v) => s + v * v, 0) / row.length;
    return row.map((v, i) => (v / Math.sqrt(meanSquare + 1e-5)) * weight[i]!);
  });
  tidy(() => {
    const out = norm.forward(tensor(rows, { dtype: "float32" }));
    assert.deepEqual(out.shape, [2, 4]);
    assertClose(out.toFlatArray(), expected, 1e-6, 1e-7, "rmsnorm");
    const halfOut = norm.forward(tensor(rows, { dtype: "bfloat16" }));
    // HF would promote to float32 here and rely on autocast downstream; without autocast an upcast
    // norm hands the next layer the activations' own dtype, scaled in float32.
    assert.equal(halfOut.dtype, "bfloat16", "float32 (upcast) weight on bf16 activations returns bf16");
    assertClose(halfOut.toFlatArray(), expected, 1e-2, 1e-2, "rmsnorm bf16");
  });
  norm.to("bfloat16");
  tidy(() => assert.equal(norm.forward(tensor(rows, { dtype: "bfloat16" })).dtype, "bfloat16"));
  norm.dispose();
});

test("Linear computes x @ W.T + b by hand, and initNormal zeroes the bias", () => {
  const layer = new Linear(3, 2);
  tidy(() =>
    layer.loadStateDict({
      weight: tensor([[1, 2, 3], [-1, 0.5, 0]], { dtype: "float32" }),
      bias: tensor([0.25, -2], { dtype: "float32" }),
    }),
  );
  tidy(() => {
    const out = layer.forward(tensor([[1, 1, 1], [2, -1, 0.5]], { dtype: "float32" }));
    // [1+2+3+0.25, -1+0.5-2], [2-2+1.5+0.25, -2-0.5-2]
    assert.deepEqual(out.toArray(), [[6.25, -2.5], [1.75, -4.5]]);
  });
  layer.initNormal(0.02);
  tidy(() => {
    assert.equal(layer.bias!.abs().sum().item(), 0);
    const std = layer.weight.float().pow(2).mean().sqrt().item();
    assert.ok(std > 0 && std < 0.1, `std ${std}`);
  });
  assert.equal(new Linear(3, 2, { bias: false }).bias, null);
  layer.dispose();
});

test("Linear on a single row (decoding one token) gives the batched result and the same gradients", () => {
  manualSeed(3);
  const layer = new Linear(5, 4, { dtype: "float64" });
  tidy(() => {
    const rows = randn([3, 1, 5], { dtype: "float64" }); // three single-row inputs
    const batched = layer.forward(rows.view(1, 3, 5)); // [1, 3, 4]: the general path
    for (let i = 0; i < 3; i++) {
      const row = rows.select(0, i); // [1, 5]
      near(layer.forward(row), batched.select(1, i).toArray(), 1e-12);
      near(layer.forward(row.view(1, 1, 5)), batched.select(1, i).view(1, 1, 4).toArray(), 1e-12);
      near(layer.forward(row.view(5)), batched.select(1, i).view(4).toArray(), 1e-12);
    }
    // Gradients of weight, bias and input through the single-row path equal the batched ones.
    const x = randn([1, 1, 5], { dtype: "float64" }).requiresGrad_(true);
    layer.forward(x).pow(2).sum().backward();
    const [gw, gb, gx] = [layer.weight.grad!.toArray(), layer.bias!.grad!.toArray(), x.grad!.toArray()];
    layer.zeroGrad();
    const x2 = cat([x.detach(), zeros([1, 1, 5], { dtype: "float64" })], 1).requiresGrad_(true); // two rows, the second zero
    layer.forward(x2).select(1, 0).pow(2).sum().backward();
    near(layer.weight.grad!, gw, 1e-12);
    near(layer.bias!.grad!, gb, 1e-12);
    near(x2.grad!.slice(1, 0, 1), gx, 1e-12);
  });
  layer.dispose();
});

test("Embedding looks rows up and keeps the padding row at zero; Dropout obeys training", () => {
  const table = new Embedding(5, 3, { paddingIdx: 1 });
  tidy(() => {
    assert.deepEqual(table.weight.select(0, 1).toArray(), [0, 0, 0]);
    const rows = table.forward(tensor([[2, 1]]));
    assert.deepEqual(rows.shape, [1, 2, 3]);
    assert.deepEqual(rows.select(1, 0).select(0, 0).toArray(), table.weight.select(0, 2).toArray());
  });
  const drop = new Dropout(0.5);
  tidy(() => {
    const x = ones([1000]);
    const trained = drop.forward(x);
    const zerosDropped = trained.eq(0).sum().item();
    assert.ok(zerosDropped > 350 && zerosDropped < 650, `${zerosDropped} dropped`);
    assert.equal(trained.max().item(), 2);
    drop.eval();
    assert.equal(drop.forward(x), x);
  });
  table.dispose();
});

test("clipGradNorm matches a hand computation (2-norm, inf-norm, no clip below the limit)", () => {
  const a = zeros([2], { requiresGrad: true });
  const b = zeros([1], { requiresGrad: true });
  const setGrads = () =>
    tidy(() => {
      a.grad = tensor([3, 4], { dtype: "float32" });
      b.grad = tensor([12], { dtype: "float32" });
    });
  const grads = () => tidy(() => [...a.grad!.toFlatArray(), ...b.grad!.toFlatArray()]);

  setGrads();
  const total = clipGradNorm([a, b], 1);
  assertClose([total], [13], 1e-7, 0, "total");
  const scale = 1 / (13 + 1e-6);
  assertClose(grads(), [3 * scale, 4 * scale, 12 * scale], 1e-6, 0, "clipped");

  setGrads();
  assertClose([clipGradNorm([a, b], 100)], [13], 1e-7, 0, "total");
  assert.deepEqual(grads(), [3, 4, 12]);

  setGrads();
  assertClose([clipGradNorm([a, b], 6, Infinity)], [12], 1e-7, 0, "inf total");
  assertClose(grads(), [3 * (6 / 12), 4 * (6 / 12), 6], 1e-6, 0, "inf clipped");

  const none = zeros([1], { requiresGrad: true });
  assert.equal(clipGradNorm([none], 1), 0);
  for (const t of [a, b, none]) t.dispose();
});

test("clipGradNorm and the Linear/Embedding initialisers match PyTorch", (t) => {
  if (!hasTorch) return t.skip("python3-torch not installed");
  const grads = [
    [0.3, -1.2, 2.5, 0.01],
    [-4, 0.75],
    [1e-3, 2, -3, 0.5, 0.25],
  ];
  for (const normType of [2, 1, Infinity]) {
    const reference = torchReference<{ total: number; grads: number[][] }>({
      mode: "clip",
      grads,
      max_norm: 1.5,
      norm_type: normType === Infinity ? "inf" : normType,
    });
    const params = grads.map((g) => zeros([g.length], { requiresGrad: true }));
    tidy(() => params.forEach((p, i) => (p.grad = tensor(grads[i]!, { dtype: "float32" }))));
    const total = clipGradNorm(params, 1.5, normType);
    assertClose([total], [reference.total], 1e-6, 0, `total (p=${normType})`);
    params.forEach((p, i) => tidy(() => assertClose(p.grad!.toFlatArray(), reference.grads[i]!, 1e-6, 1e-9, `grad ${i} (p=${normType})`)));
    for (const p of params) p.dispose();
  }

  const reference = torchReference<{ linear_weight: number[]; linear_bias: number[]; embedding_weight: number[] }>({
    mode: "init",
    seed: 1234,
    in: 5,
    out: 3,
    vocab: 6,
    dim: 4,
    padding_idx: 2,
  });
  manualSeed(1234);
  const linear = new Linear(5, 3);
  const table = new Embedding(6, 4, { paddingIdx: 2 });
  tidy(() => {
    assertClose(linear.weight.toFlatArray(), reference.linear_weight, 0, 0, "Linear weight");
    assertClose(linear.bias!.toFlatArray(), reference.linear_bias, 0, 0, "Linear bias");
    assertClose(table.weight.toFlatArray(), reference.embedding_weight, 0, 0, "Embedding weight");
  });
  linear.dispose();
  table.dispose();
});
