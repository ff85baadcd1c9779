// Finite-difference gradient checks (central differences in float64) for the differentiable ops
// a Llama forward uses, and the error path for bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  attentionComposed,
  crossEntropy,
  embedding,
  linear,
  liveTensors,
  manualSeed,
  scaledDotProductAttention,
  tensor,
  tidy,
  zeros,
} from "../../src/torch/index.ts";
import { gradcheck } from "./op-helpers.ts";

test("finite differences agree with autograd", () => {
  manualSeed(3);
  gradcheck("matmul", (a, b) => a!.matmul(b!), [[3, 4], [4, 2]]);
  gradcheck("linear", (x, w, b) => linear(x!, w!, b!), [[2, 3], [4, 3], [4]]);
  gradcheck("softmax", (x) => x!.softmax(-1), [[2, 5]]);
  gradcheck("logSoftmax", (x) => x!.logSoftmax(-1), [[2, 5]]);
  gradcheck("silu", (x) => x!.silu(), [[6]]);
  gradcheck("gelu", (x) => x!.gelu(), [[6]]);
  gradcheck("gelu tanh", (x) => x!.gelu("tanh"), [[6]]);
  gradcheck("rsqrt", (x) => x!.abs().add(0.5).rsqrt(), [[5]]);
  gradcheck("pow", (x) => x!.abs().add(0.1).pow(1.7), [[5]]);
  gradcheck("sum/mean", (x) => x!.sum(1, true).add(x!.mean(0)), [[3, 3]]);
  gradcheck("logsumexp", (x) => x!.logsumexp(-1), [[3, 4]]);
  gradcheck("norm", (x) => x!.norm(2, -1), [[3, 4]]);
  gradcheck("gather", (x) => x!.gather(1, tensor([[0, 2], [1, 1]])), [[2, 3]]);
  gradcheck("embedding", (w) => embedding(w!, tensor([[0, 2, 2], [1, 0, 3]])), [[4, 3]]);
  gradcheck(
    "crossEntropy with ignore_index and label smoothing",
    (x) => crossEntropy(x!, tensor([1, -100, 3, 0]), { labelSmoothing: 0.1 }),
    [[4, 5]],
  );
});

test("attention gradients: fused causal, additive mask, grouped-query heads", () => {
  manualSeed(4);
  gradcheck("sdpa causal GQA", (q, k, v) => scaledDotProductAttention(q!, k!, v!, { isCausal: true }), [[1, 4, 3, 2], [1, 2, 3, 2], [1, 2, 3, 2]]);
  gradcheck("composed causal", (q, k, v) => attentionComposed(q!, k!, v!, { isCausal: true }), [[1, 2, 3, 2], [1, 2, 3, 2], [1, 2, 3, 2]]);
  const mask = tensor([[0, -1e9, 0], [0, 0, -1e9], [0, 0, 0]], { dtype: "float64" });
  gradcheck("sdpa additive mask", (q, k, v) => scaledDotProductAttention(q!, k!, v!, { mask }), [[1, 2, 3, 2], [1, 2, 3, 2], [1, 2, 3, 2]]);
  mask.dispose();
});

test("bad input throws an error naming the op and shapes, and the process carries on", () => {
  const before = liveTensors();
  const a = zeros([2, 3]);
  const cases: [() => unknown, RegExp][] = [
    [() => a.matmul(zeros([2, 3])), /Error: matmul\(self: \[2, 3\] Float cpu, other: \[2, 3\] Float cpu\): mat1 and mat2 shapes cannot be multiplied/],
    [() => a.view(4, 2), /Error: view\(self: \[2, 3\] Float cpu\): shape '\[4, 2\]' is invalid/],
    [() => a.indexSelect(0, tensor([0.5])), /Error: index_select\(self: \[2, 3\] Float cpu, index: \[1\] Float cpu\)/],
    [() => a.to("cuda"), /Error: to_device\(self: \[2, 3\] Float cpu\)/],
    [() => a.to("gpu:0"), /unknown device 'gpu:0'/],
    [() => a.item(), /item\(\): tensor of shape \[2,3\] has 6 elements/],
  ];
  // Each case inside tidy: a failed op must not leak the tensors made before it.
  for (const [run, expected] of cases) assert.throws(() => tidy(run), expected);
  const disposed = zeros([1]);
  disposed.dispose();
  assert.throws(() => disposed.add(1), /tensor used after dispose/);
  disposed.dispose();
  assert.deepEqual(tidy(() => a.add(1).sum().item()), 6);
  a.dispose();
  assert.equal(liveTensors(), before);
});
