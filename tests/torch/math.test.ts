// Elementwise math, comparisons, dtype conversion, in-place ops and reductions (with dims and
// keepdim), each against closed forms computed here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { tensor, tidy, zeros } from "../../src/torch/index.ts";
import { near } from "./op-helpers.ts";

const xs = [-2, -0.5, 0, 0.75, 3];
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const erf = (x: number) => {
  // Abramowitz–Stegun 7.1.26 is too coarse; integrate the series instead (|x| <= 3 here).
  let sum = 0;
  let term = x;
  for (let n = 0; n < 80; n++) {
    sum += term / (2 * n + 1);
    term *= (-x * x) / (n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
};

test("activations: silu, gelu (erf and tanh), sigmoid, tanh, relu, logSigmoid, softplus", () => {
  tidy(() => {
    const x = tensor(xs, { dtype: "float64" });
    near(x.silu(), xs.map((v) => v * sigmoid(v)), 1e-12);
    near(x.gelu(), xs.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2))), 1e-10);
    const c = Math.sqrt(2 / Math.PI);
    near(x.gelu("tanh"), xs.map((v) => 0.5 * v * (1 + Math.tanh(c * (v + 0.044715 * v ** 3)))), 1e-12);
    near(x.sigmoid(), xs.map(sigmoid), 1e-12);
    near(x.tanh(), xs.map(Math.tanh), 1e-12);
    near(x.relu(), xs.map((v) => Math.max(0, v)));
    near(x.logSigmoid(), xs.map((v) => Math.log(sigmoid(v))), 1e-12);
    near(x.softplus(), xs.map((v) => Math.log1p(Math.exp(v))), 1e-12);
    near(x.erf(), xs.map(erf), 1e-10);
    // float32 agrees to float32 precision.
    near(tensor(xs, { dtype: "float32" }).silu(), xs.map((v) => v * sigmoid(v)), 1e-6);
  });
});

test("arithmetic: add/sub with alpha, mul, div, rsub, pow, rsqrt, sqrt, exp, log, clamp, and broadcasting", () => {
  tidy(() => {
    const a = tensor([[1, 2], [3, 4]], { dtype: "float64" });
    const b = tensor([10, 20], { dtype: "float64" });
    assert.deepEqual(a.add(b).toArray(), [[11, 22], [13, 24]]);
    assert.deepEqual(a.add(b, 0.5).toArray(), [[6, 12], [8, 14]]);
    assert.deepEqual(a.add(1.5).toArray(), [[2.5, 3.5], [4.5, 5.5]]);
    assert.deepEqual(a.sub(b, 2).toArray(), [[-19, -38], [-17, -36]]);
    assert.deepEqual(a.sub(1).toArray(), [[0, 1], [2, 3]]);
    assert.deepEqual(a.rsub(10).toArray(), [[9, 8], [7, 6]]);
    assert.deepEqual(a.mul(b).toArray(), [[10, 40], [30, 80]]);
    assert.deepEqual(a.div(2).toArray(), [[0.5, 1], [1.5, 2]]);
    assert.deepEqual(b.div(a).toArray(), [[10, 10], [10 / 3, 5]]);
    assert.deepEqual(a.neg().abs().toArray(), a.toArray());
    assert.deepEqual(tensor([-3, 0, 2]).sign().toArray(), [-1, 0, 1]);
    near(a.pow(2), [[1, 4], [9, 16]]);
    near(a.pow(0.5), [[1, Math.SQRT2], [Math.sqrt(3), 2]], 1e-12);
    near(a.pow(tensor([2, 3], { dtype: "float64" })), [[1, 8], [9, 64]]);
    near(a.rsqrt(), [[1, 1 / Math.SQRT2], [1 / Math.sqrt(3), 0.5]], 1e-12);
    near(a.sqrt(), [[1, Math.SQRT2], [Math.sqrt(3), 2]], 1e-12);
    near(a.exp().log(), a.toArray(), 1e-12);
    near(a.log1p(), [[Math.log(2), Math.log(3)], [Math.log(4), Math.log(5)]], 1e-12);
    near(a.reciprocal(), [[1, 0.5], [1 / 3, 0.25]], 1e-12);
    near(a.square(), [[1, 4], [9, 16]]);
    near(a.sin(), [[Math.sin(1), Math.sin(2)], [Math.sin(3), Math.sin(4)]], 1e-12);
    near(a.cos(), [[Math.cos(1), Math.cos(2)], [Math.cos(3), Math.cos(4)]], 1e-12);
    assert.deepEqual(tensor([-1.5, 0.4, 2.5]).floor().toArray(), [-2, 0, 2]);
    assert.deepEqual(tensor([-1.5, 0.4, 2.5]).round().toArray(), [-2, 0, 2]); // half to even
    assert.deepEqual(a.clamp(1.5, 3.5).toArray(), [[1.5, 2], [3, 3.5]]);
    assert.deepEqual(a.clamp(null, 2).toArray(), [[1, 2], [2, 2]]);
    assert.deepEqual(a.clamp(3).toArray(), [[3, 3], [3, 4]]);
    assert.deepEqual(a.maximum(tensor([2, 2], { dtype: "float64" })).toArray(), [[2, 2], [3, 4]]);
    assert.deepEqual(a.minimum(tensor([2, 2], { dtype: "float64" })).toArray(), [[1, 2], [2, 2]]);
    assert.deepEqual(a.lerp(a.mul(3), 0.5).toArray(), [[2, 4], [6, 8]]);
  });
});

test("integer tensors stay integral under integral scalars, as in PyTorch", () => {
  tidy(() => {
    const i = tensor([-2, 0, 3]);
    assert.equal(i.add(1).dtype, "int64");
    assert.equal(i.mul(2).dtype, "int64");
    assert.deepEqual(i.pow(2).toArray(), [4, 0, 9]);
    assert.equal(i.pow(2).dtype, "int64");
    assert.deepEqual(i.clamp(-1, 1).toArray(), [-1, 0, 1]);
    assert.equal(i.clamp(-1, 1).dtype, "int64");
    // A fractional scalar promotes to the default float type.
    assert.equal(i.mul(0.5).dtype, "float32");
    assert.deepEqual(i.mul(0.5).toArray(), [-1, 0, 1.5]);
    assert.equal(i.div(2).dtype, "float32"); // true division
    const j = tensor([5, -5]);
    j.clamp_(-3, 3);
    assert.deepEqual(j.toArray(), [3, -3]);
  });
});

test("comparisons and logic", () => {
  tidy(() => {
    const a = tensor([1, 2, 3]);
    const b = tensor([3, 2, 1]);
    assert.deepEqual(a.eq(b).toArray(), [false, true, false]);
    assert.deepEqual(a.ne(2).toArray(), [true, false, true]);
    assert.deepEqual(a.lt(b).toArray(), [true, false, false]);
    assert.deepEqual(a.le(2).toArray(), [true, true, false]);
    assert.deepEqual(a.gt(b).toArray(), [false, false, true]);
    assert.deepEqual(a.ge(2).toArray(), [false, true, true]);
    assert.equal(a.eq(b).dtype, "bool");
    const p = tensor([true, true, false]);
    const q = tensor([true, false, false]);
    assert.deepEqual(p.logicalAnd(q).toArray(), [true, false, false]);
    assert.deepEqual(p.logicalOr(q).toArray(), [true, true, false]);
    assert.deepEqual(p.logicalNot().toArray(), [false, false, true]);
    assert.equal(p.any().item(), 1);
    assert.equal(p.all().item(), 0);
    const f = tensor([0, NaN, Infinity, -Infinity], { dtype: "float32" });
    assert.deepEqual(f.isnan().toArray(), [false, true, false, false]);
    assert.deepEqual(f.isinf().toArray(), [false, false, true, true]);
    const x = tensor([1, 2], { dtype: "float64" });
    assert.equal(x.allclose(x.add(1e-9)), true);
    assert.equal(x.allclose(x.add(1e-3)), false);
    assert.equal(x.equal(x.clone()), true);
    assert.equal(x.equal(x.add(1)), false);
  });
});

test("to(dtype) converts values; float, long, clone, detach", () => {
  tidy(() => {
    const x = tensor([-1.7, 0.2, 2.9], { dtype: "float64" });
    assert.deepEqual(x.to("int64").toArray(), [-1, 0, 2]); // truncation toward zero
    assert.deepEqual(x.to("bool").toArray(), [true, true, true]);
    assert.deepEqual(tensor([0, 3]).to("bool").toArray(), [false, true]);
    assert.deepEqual(tensor([true, false]).to("float32").toArray(), [1, 0]);
    assert.equal(x.float().dtype, "float32");
    assert.equal(x.long().dtype, "int64");
    assert.deepEqual(tensor([257]).to("uint8").toArray(), [1]);
    assert.equal(x.to("bfloat16").to("float64").select(0, 0).item(), -1.703125);
    assert.equal(x.to("cpu").device, "cpu");
    const c = x.clone();
    c.fill_(0);
    assert.deepEqual(x.toArray(), [-1.7, 0.2, 2.9]);
  });
});

test("in-place ops mutate and return this", () => {
  tidy(() => {
    const p = tensor([1, 2, 3], { dtype: "float64" });
    const g = tensor([0.5, -1, 2], { dtype: "float64" });
    assert.equal(p.add_(g), p);
    assert.deepEqual(p.toArray(), [1.5, 1, 5]);
    p.add_(g, -2);
    assert.deepEqual(p.toArray(), [0.5, 3, 1]);
    p.add_(1);
    p.sub_(g, 2);
    assert.deepEqual(p.toArray(), [0.5, 6, -2]);
    p.mul_(2).mul_(g);
    assert.deepEqual(p.toArray(), [0.5, -12, -8]);
    p.div_(2).div_(tensor([1, 2, 4], { dtype: "float64" }));
    assert.deepEqual(p.toArray(), [0.25, -3, -1]);
    // p += 2 * g * g; then p += 0.5 * g / (|g|+1)
    p.addcmul_(g, g, 2);
    assert.deepEqual(p.toArray(), [0.75, -1, 7]);
    p.addcdiv_(g, g.abs().add(1), 0.5);
    near(p, [0.75 + 0.5 * (0.5 / 1.5), -1 + 0.5 * (-1 / 2), 7 + 0.5 * (2 / 3)], 1e-12);
    p.lerp_(zeros([3], { dtype: "float64" }), 0.25);
    near(p, [0.75 * (0.75 + 0.5 / 3), 0.75 * -1.25, 0.75 * (7 + 1 / 3)], 1e-12);
    p.copy_(tensor([4, 9, 16], { dtype: "float32" })); // copy_ casts
    p.sqrt_();
    assert.deepEqual(p.toArray(), [2, 3, 4]);
    p.clamp_(2.5, null);
    assert.deepEqual(p.toArray(), [2.5, 3, 4]);
    p.maskedFill_(tensor([false, true, false]), -1);
    assert.deepEqual(p.toArray(), [2.5, -1, 4]);
    p.zero_();
    assert.deepEqual(p.toArray(), [0, 0, 0]);
    p.fill_(1.25);
    assert.deepEqual(p.toArray(), [1.25, 1.25, 1.25]);
  });
});

test("reductions over all elements, over dims, with keepdim", () => {
  tidy(() => {
    const m = tensor([[1, 5, 3], [4, 2, 6]], { dtype: "float64" });
    assert.equal(m.sum().item(), 21);
    assert.deepEqual(m.sum(0).toArray(), [5, 7, 9]);
    assert.deepEqual(m.sum(1, true).toArray(), [[9], [12]]);
    assert.deepEqual(m.sum([0, 1]).toArray(), 21);
    assert.equal(m.mean().item(), 3.5);
    assert.deepEqual(m.mean(-1).toArray(), [3, 4]);
    assert.deepEqual(m.mean(0, true).toArray(), [[2.5, 3.5, 4.5]]);
    assert.equal(m.max().item(), 6);
    assert.equal(m.min().item(), 1);
    assert.deepEqual(m.max(1).toArray(), [5, 6]);
    assert.deepEqual(m.max(0, true).toArray(), [[4, 5, 6]]);
    assert.deepEqual(m.min(1).toArray(), [1, 2]);
    assert.deepEqual(m.min(0, true).toArray(), [[1, 2, 3]]);
    const mx = m.maxWithIndices(1);
    assert.deepEqual([mx.values.toArray(), mx.indices.toArray()], [[5, 6], [1, 2]]);
    const mn = m.minWithIndices(0, true);
    assert.deepEqual([mn.values.toArray(), mn.indices.toArray()], [[[1, 2, 3]], [[0, 1, 0]]]);
    assert.deepEqual(m.amax([0, 1]).toArray(), 6);
    assert.deepEqual(m.argmax().toArray(), [1, 2]);
    assert.deepEqual(m.argmax(0, true).toArray(), [[1, 0, 1]]);
    assert.deepEqual(m.argmin(1).toArray(), [0, 1]);
    const lse = (row: number[]) => Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
    near(m.logsumexp(1), [lse([1, 5, 3]), lse([4, 2, 6])], 1e-12);
    near(m.logsumexp([0, 1]), lse([1, 5, 3, 4, 2, 6]), 1e-12);
    near(m.logsumexp(0, true), [[lse([1, 4]), lse([5, 2]), lse([3, 6])]], 1e-12);
    // logsumexp stays finite where exp overflows.
    near(tensor([1000, 1000], { dtype: "float64" }).logsumexp(0), 1000 + Math.log(2), 1e-12);
    near(m.norm(), Math.sqrt(1 + 25 + 9 + 16 + 4 + 36), 1e-12);
    near(m.norm(1, 1), [9, 12], 1e-12);
    near(m.norm(2, 0, true), [[Math.sqrt(17), Math.sqrt(29), Math.sqrt(45)]], 1e-12);
    near(m.norm(Infinity), 6);
    // var: unbiased divides by n-1, biased by n.
    near(m.var(1), [4, 4], 1e-12);
    near(m.var(1, { unbiased: false }), [8 / 3, 8 / 3], 1e-12);
    near(m.var(0, { keepdim: true }), [[4.5, 4.5, 4.5]], 1e-12);
    near(m.var([0, 1]), 17.5 / 5, 1e-12);
    assert.deepEqual(m.cumsum(1).toArray(), [[1, 6, 9], [4, 6, 12]]);
    assert.deepEqual(m.cumsum(0).toArray(), [[1, 5, 3], [5, 7, 9]]);
    // Integer sums promote to int64, as torch.sum does.
    assert.equal(tensor([1, 2], { dtype: "int32" }).sum().dtype, "int64");
  });
});
