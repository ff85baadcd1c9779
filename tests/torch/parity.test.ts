// Op parity with PyTorch on the same libtorch: tests/reference/ops_reference.py (python3-torch)
// computes crossEntropy with label smoothing, attention (causal, masked, grouped-query heads),
// tanh-GELU, logsumexp, var and softmax on the same float64 inputs; results agree within 1e-6.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import {
  type NestedArray,
  type Tensor,
  crossEntropy,
  manualSeed,
  randint,
  randn,
  scaledDotProductAttention,
  tensor,
  tidy,
} from "../../src/torch/index.ts";
import { hasTorch } from "./torch-reference.ts";
import { near } from "./op-helpers.ts";

const SCRIPT = fileURLToPath(new URL("../reference/ops_reference.py", import.meta.url));

test("ops agree with PyTorch within 1e-6", (t) => {
  if (!hasTorch) return t.skip("python3-torch not installed");
  tidy(() => {
    manualSeed(31);
    const f64 = (shape: number[]) => randn(shape, { dtype: "float64" });
    const logits = f64([6, 5]).mul(3);
    const target = randint(0, 5, [6]).maskedFill(tensor([false, true, false, false, true, false]), -100);
    const [q, k, v] = [f64([2, 4, 5, 3]), f64([2, 2, 5, 3]), f64([2, 2, 5, 3])];
    const mask = f64([5, 5]);
    const x = f64([3, 7]).mul(4);
    const cases: { request: object; ours: Tensor }[] = [];
    for (const reduction of ["mean", "sum", "none"] as const) {
      cases.push({
        request: { op: "cross_entropy", logits: logits.toArray(), target: target.toArray(), ignore_index: -100, reduction, label_smoothing: 0.15 },
        ours: crossEntropy(logits, target, { reduction, labelSmoothing: 0.15 }),
      });
    }
    const qkv = { q: q.toArray(), k: k.toArray(), v: v.toArray() };
    cases.push({ request: { op: "sdpa", ...qkv, causal: true }, ours: scaledDotProductAttention(q, k, v, { isCausal: true }) });
    cases.push({ request: { op: "sdpa", ...qkv, causal: false }, ours: scaledDotProductAttention(q, k, v) });
    cases.push({ request: { op: "sdpa", ...qkv, causal: false, mask: mask.toArray() }, ours: scaledDotProductAttention(q, k, v, { mask }) });
    const [q2] = [q.slice(2, 3)];
    cases.push({ request: { op: "sdpa", ...qkv, q: q2.toArray(), causal: true }, ours: scaledDotProductAttention(q2, k, v, { isCausal: true }) });
    cases.push({ request: { op: "gelu", x: x.toArray(), approximate: "tanh" }, ours: x.gelu("tanh") });
    cases.push({ request: { op: "gelu", x: x.toArray(), approximate: "none" }, ours: x.gelu() });
    cases.push({ request: { op: "logsumexp", x: x.toArray(), dim: 1, keepdim: false }, ours: x.logsumexp(1) });
    cases.push({ request: { op: "logsumexp", x: x.toArray(), dim: [0, 1], keepdim: true }, ours: x.logsumexp([0, 1], true) });
    cases.push({ request: { op: "var", x: x.toArray(), dim: 1, unbiased: true, keepdim: false }, ours: x.var(1) });
    cases.push({ request: { op: "var", x: x.toArray(), dim: 0, unbiased: false, keepdim: true }, ours: x.var(0, { unbiased: false, keepdim: true }) });
    cases.push({ request: { op: "softmax", x: x.toArray(), dim: -1 }, ours: x.softmax(-1) });
    cases.push({ request: { op: "softmax", x: x.toArray(), dim: 0 }, ours: x.softmax(0) });
    cases.push({ request: { op: "log_softmax", x: x.toArray(), dim: -1 }, ours: x.logSoftmax(-1) });

    const output = execFileSync("/usr/bin/python3", [SCRIPT], {
      input: JSON.stringify(cases.map((c) => c.request)),
      encoding: "utf8",
      maxBuffer: 16 << 20,
    });
    const expected = JSON.parse(output) as number[][];
    assert.equal(expected.length, cases.length);
    cases.forEach((c, i) => {
      const ours = c.ours.toFlatArray();
      assert.equal(ours.length, expected[i]!.length, `case ${i} size`);
      near(ours as NestedArray, expected[i]!, 1e-6, `${(c.request as { op: string }).op} case ${i}`);
    });
  });
});
