// Autograd: finite-difference checks for the differentiable ops not covered by gradcheck.test.ts
// (attention variants, crossEntropy reductions, var, bmm/baddbmm, sigmoid/tanh), autogradGrad
// against .backward(), allowUnused, noGrad, enableGrad and detach.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  attentionComposed,
  autogradGrad,
  crossEntropy,
  enableGrad,
  isGradEnabled,
  linear,
  liveTensors,
  manualSeed,
  noGrad,
  ones,
  randn,
  scaledDotProductAttention,
  tensor,
  tidy,
} from "../../src/torch/index.ts";
import { gradcheck, near } from "./op-helpers.ts";

test("finite differences: attention variants", () => {
  manualSeed(21);
  const mask = tensor([[0, -2, 0], [0.5, 0, -1e9], [0, 0, 0]], { dtype: "float64" });
  const qkv = [[1, 2, 3, 2], [1, 2, 3, 2], [1, 2, 3, 2]];
  const gqa = [[1, 4, 3, 2], [1, 2, 3, 2], [1, 2, 3, 2]];
  gradcheck("sdpa causal", (q, k, v) => scaledDotProductAttention(q!, k!, v!, { isCausal: true }), qkv);
  gradcheck("sdpa plain", (q, k, v) => scaledDotProductAttention(q!, k!, v!), qkv);
  gradcheck("sdpa additive mask, GQA", (q, k, v) => scaledDotProductAttention(q!, k!, v!, { mask }), gqa);
  gradcheck("sdpa causal with cache (T < S)", (q, k, v) => scaledDotProductAttention(q!, k!, v!, { isCausal: true }), [[1, 2, 2, 2], [1, 2, 3, 2], [1, 2, 3, 2]]);
  gradcheck("composed additive mask", (q, k, v) => attentionComposed(q!, k!, v!, { mask }), qkv);
  gradcheck("composed causal GQA", (q, k, v) => attentionComposed(q!, k!, v!, { isCausal: true }), gqa);
  mask.dispose();
});

test("finite differences: losses, reductions and products", () => {
  manualSeed(22);
  gradcheck("crossEntropy mean", (x) => crossEntropy(x!, tensor([2, 0, 1])), [[3, 4]]);
  gradcheck("crossEntropy sum, ignore_index", (x) => crossEntropy(x!, tensor([2, -100, 1]), { reduction: "sum" }), [[3, 4]]);
  gradcheck("crossEntropy none, smoothing", (x) => crossEntropy(x!, tensor([3, 0]), { reduction: "none", labelSmoothing: 0.2 }), [[2, 4]]);
  gradcheck("var", (x) => x!.var(1), [[2, 4]]);
  gradcheck("norm all", (x) => x!.norm(), [[5]]);
  gradcheck("mean all, sum all", (x) => x!.mean().add(x!.sum().mul(0.5)), [[2, 2]]);
  gradcheck("bmm", (a, b) => a!.bmm(b!), [[2, 2, 3], [2, 3, 2]]);
  gradcheck("baddbmm", (s, a, b) => s!.baddbmm(a!, b!, 0.5, 2), [[2, 2, 2], [2, 2, 3], [2, 3, 2]]);
  gradcheck("linear no bias", (x, w) => linear(x!, w!), [[2, 3], [2, 3]]);
  gradcheck("sigmoid, tanh", (x) => x!.sigmoid().add(x!.tanh()), [[5]]);
  gradcheck("pow tensor", (x, e) => x!.abs().add(0.5).pow(e!), [[4], [4]]);
});

test("autogradGrad equals .backward() grads; allowUnused gives null; gradOutputs weight", () => {
  const before = liveTensors();
  tidy(() => {
    manualSeed(23);
    const x = randn([3, 4], { dtype: "float64" }).requiresGrad_(true);
    const w = randn([2, 4], { dtype: "float64" }).requiresGrad_(true);
    const unused = randn([2], { dtype: "float64" }).requiresGrad_(true);
    const loss = () => linear(x, w).silu().pow(2).sum();
    const [gx, gw, gu] = autogradGrad([loss()], [x, w, unused], [ones([], { dtype: "float64" })], { allowUnused: true });
    assert.equal(gu, null);
    assert.equal(x.grad, null, "autogradGrad does not accumulate into .grad");
    loss().backward();
    near(gx!, x.grad!.toArray(), 1e-12);
    near(gw!, w.grad!.toArray(), 1e-12);
    // Without allowUnused an unused input is an error naming the op.
    assert.throws(() => autogradGrad([loss()], [x, unused], [ones([], { dtype: "float64" })]), /autograd_grad\(\): One of the differentiated Tensors/);
    // gradOutputs weight the outputs: d(3·y)/dx = 3·dy/dx; two outputs add.
    const y = x.mul(x);
    const [g3] = autogradGrad([y], [x], [ones([3, 4], { dtype: "float64" }).mul(3)], { retainGraph: true });
    near(g3!, x.detach().mul(6).toArray(), 1e-12);
    const [g2] = autogradGrad([y, x.sum()], [x], [ones([3, 4], { dtype: "float64" }), ones([], { dtype: "float64" })]);
    near(g2!, x.detach().mul(2).add(1).toArray(), 1e-12);
    // backward(gradient) on a non-scalar output, and accumulation across two backward calls.
    const z = x.mul(2);
    z.backward(ones([3, 4], { dtype: "float64" }));
    near(x.grad!, gx!.add(2).toArray(), 1e-12);
    x.grad = null;
    assert.equal(x.grad, null);
  });
  assert.equal(liveTensors(), before);
});

test("noGrad stops recording, enableGrad resumes it, detach cuts the graph", () => {
  tidy(() => {
    const x = ones([2]).requiresGrad_(true);
    assert.equal(x.isLeaf, true);
    assert.equal(isGradEnabled(), true);
    const inside = noGrad(() => {
      assert.equal(isGradEnabled(), false);
      const y = x.mul(2);
      const z = enableGrad(() => x.mul(3));
      return { y, z };
    });
    assert.equal(isGradEnabled(), true);
    assert.equal(inside.y.requiresGrad, false);
    assert.equal(inside.z.requiresGrad, true);
    assert.equal(inside.z.isLeaf, false);
    // The mode is restored when the block throws.
    assert.throws(() => noGrad(() => { throw new Error("boom"); }), /boom/);
    assert.equal(isGradEnabled(), true);
    const d = x.mul(2).detach();
    assert.equal(d.requiresGrad, false);
    assert.equal(d.isLeaf, true);
    // detach shares storage: the value is the same, no gradient flows through it.
    const loss = x.mul(d).sum();
    loss.backward();
    assert.deepEqual(x.grad!.toArray(), [2, 2]);
    assert.throws(() => inside.y.sum().backward(), /backward\(output: \[\] Float cpu\): element 0 of tensors does not require grad/);
  });
});
