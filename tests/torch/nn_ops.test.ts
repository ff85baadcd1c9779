// Linear algebra and the nn ops a Llama step uses: matmul/mm/bmm/linear/baddbmm, softmax and
// logSoftmax, crossEntropy (ignore_index, every reduction, label smoothing, class weights),
// dropout, topk/sort/multinomial, mseLoss and attention, against closed forms written out here.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  attentionComposed,
  crossEntropy,
  dropout,
  linear,
  manualSeed,
  mseLoss,
  ones,
  randn,
  scaledDotProductAttention,
  tensor,
  tidy,
} from "../../src/torch/index.ts";
import { near } from "./op-helpers.ts";

test("matmul (2-d, batched, vector), mm, bmm, linear, baddbmm", () => {
  tidy(() => {
    const a = tensor([[1, 2, 3], [4, 5, 6]], { dtype: "float32" });
    const b = tensor([[1, 0], [0, 1], [2, -1]], { dtype: "float32" });
    assert.deepEqual(a.matmul(b).toArray(), [[7, -1], [16, -1]]);
    assert.deepEqual(a.mm(b).toArray(), [[7, -1], [16, -1]]);
    assert.deepEqual(a.matmul(tensor([1, 1, 1], { dtype: "float32" })).toArray(), [6, 15]);
    // [2, 2, 3] @ [3, 2] broadcasts the matrix over the batch.
    const batch = a.unsqueeze(0).expand(2, 2, 3).mul(tensor([1, 2], { dtype: "float32" }).view(2, 1, 1));
    assert.deepEqual(batch.matmul(b).toArray(), [[[7, -1], [16, -1]], [[14, -2], [32, -2]]]);
    assert.deepEqual(batch.bmm(b.unsqueeze(0).expand(2, 3, 2)).toArray(), [[[7, -1], [16, -1]], [[14, -2], [32, -2]]]);
    // linear: x @ W.T + bias, W [out, in].
    const w = b.t();
    assert.deepEqual(linear(a, w, tensor([10, 20], { dtype: "float32" })).toArray(), [[17, 19], [26, 19]]);
    assert.deepEqual(linear(a, w).toArray(), [[7, -1], [16, -1]]);
    assert.deepEqual(linear(a.unsqueeze(0), w, null).shape, [1, 2, 2]);
    // baddbmm: beta * self + alpha * (b1 @ b2)
    const self = ones([1, 2, 2]);
    assert.deepEqual(self.baddbmm(a.unsqueeze(0), b.unsqueeze(0), 0.5, 2).toArray(), [[[14.5, -1.5], [32.5, -1.5]]]);
    // bf16 matmul works on CPU (Llama weights in bf16).
    near(a.to("bfloat16").matmul(b.to("bfloat16")), [[7, -1], [16, -1]]);
  });
});

test("softmax and logSoftmax along any dim, stable for large logits", () => {
  tidy(() => {
    const x = tensor([[1, 2, 3], [0, 0, 1000]], { dtype: "float64" });
    const e = [Math.exp(1), Math.exp(2), Math.exp(3)];
    const z = e[0]! + e[1]! + e[2]!;
    near(x.softmax(-1), [[e[0]! / z, e[1]! / z, e[2]! / z], [0, 0, 1]], 1e-12);
    near(x.logSoftmax(1), [[1 - Math.log(z), 2 - Math.log(z), 3 - Math.log(z)], [-1000, -1000, 0]], 1e-12);
    const col = tensor([[0, 1], [Math.log(3), 1]], { dtype: "float64" }).softmax(0);
    near(col, [[0.25, 0.5], [0.75, 0.5]], 1e-12);
    near(tensor([1, 2, 3], { dtype: "float32" }).softmax(0).sum(), 1, 1e-6);
  });
});

/** Cross-entropy of one row by hand: -(1-ε)·log p[target] - ε/C·Σ log p. */
function ceRow(row: number[], target: number, smoothing = 0): number {
  const lse = Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
  const logp = row.map((v) => v - lse);
  const smooth = -logp.reduce((s, v) => s + v, 0) / row.length;
  return (1 - smoothing) * -logp[target]! + smoothing * smooth;
}

test("crossEntropy: ignore_index, none/sum/mean, label smoothing, class weights, [N, C, T] layout", () => {
  tidy(() => {
    const rows = [
      [1, 2, 3],
      [0.5, -1, 0],
      [2, 2, -2],
      [0, 0, 0],
    ];
    const logits = tensor(rows, { dtype: "float64" });
    const target = tensor([2, -100, 0, 1]);
    const per = [ceRow(rows[0]!, 2), 0, ceRow(rows[2]!, 0), ceRow(rows[3]!, 1)];
    near(crossEntropy(logits, target, { reduction: "none" }), per, 1e-12);
    near(crossEntropy(logits, target, { reduction: "sum" }), per[0]! + per[2]! + per[3]!, 1e-12);
    // mean divides by the non-ignored count (3), not N (4).
    near(crossEntropy(logits, target), (per[0]! + per[2]! + per[3]!) / 3, 1e-12);
    near(crossEntropy(logits, tensor([2, 1, 0, 1]), { ignoreIndex: 1 }), (per[0]! + per[2]!) / 2, 1e-12);

    const eps = 0.1;
    const smoothed = [ceRow(rows[0]!, 2, eps), 0, ceRow(rows[2]!, 0, eps), ceRow(rows[3]!, 1, eps)];
    near(crossEntropy(logits, target, { labelSmoothing: eps, reduction: "none" }), smoothed, 1e-12);
    near(crossEntropy(logits, target, { labelSmoothing: eps, reduction: "sum" }), smoothed[0]! + smoothed[2]! + smoothed[3]!, 1e-12);
    near(crossEntropy(logits, target, { labelSmoothing: eps }), (smoothed[0]! + smoothed[2]! + smoothed[3]!) / 3, 1e-12);

    // Class weights: mean is Σ w[t]·loss / Σ w[t] over the kept rows.
    const w = [1, 2, 0.5];
    const weighted = crossEntropy(logits, target, { weight: tensor(w, { dtype: "float64" }) });
    near(weighted, (w[2]! * per[0]! + w[0]! * per[2]! + w[1]! * per[3]!) / (w[2]! + w[0]! + w[1]!), 1e-12);

    // [N, C, T] logits with [N, T] targets: the class dim is 1.
    const seq = logits.t().unsqueeze(0); // [1, 3, 4]
    near(crossEntropy(seq, target.unsqueeze(0), { reduction: "none" }), [per], 1e-12);
  });
});

test("dropout: identity in eval, zeros or 1/(1-p) scaling in training, seeded", () => {
  tidy(() => {
    const x = ones([20000], { dtype: "float64" });
    assert.equal(dropout(x, 0.3, false), x);
    assert.equal(dropout(x, 0, true), x);
    manualSeed(5);
    const y = dropout(x, 0.3, true);
    const values = new Set(y.toFlatArray().map((v) => v.toFixed(12)));
    assert.deepEqual([...values].sort(), [(0).toFixed(12), (1 / 0.7).toFixed(12)].sort());
    const kept = y.ne(0).sum().item() / 20000;
    assert.ok(Math.abs(kept - 0.7) < 5 * Math.sqrt(0.21 / 20000), `kept share ${kept}`);
    // The expectation is preserved.
    near(y.mean(), 1, 5 * Math.sqrt(0.3 / 0.7 / 20000));
    manualSeed(5);
    assert.ok(dropout(x, 0.3, true).equal(y));
    assert.equal(dropout(x, 1, true).sum().item(), 0);
  });
});

test("topk, sort, cumsum, multinomial", () => {
  tidy(() => {
    const x = tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]], { dtype: "float32" });
    const top = x.topk(2);
    assert.deepEqual(top.values.toArray(), [[5, 4], [9, 6]]);
    assert.deepEqual(top.indices.toArray(), [[4, 2], [0, 2]]);
    const low = x.topk(2, -1, false);
    assert.deepEqual(low.values.toArray(), [[1, 1], [2, 3]]);
    const col = x.topk(1, 0);
    assert.deepEqual(col.indices.toArray(), [[1, 1, 1, 1, 0]]);
    const asc = x.sort();
    assert.deepEqual(asc.values.toArray(), [[1, 1, 3, 4, 5], [2, 3, 5, 6, 9]]);
    const desc = x.sort(1, true);
    assert.deepEqual(desc.values.toArray(), [[5, 4, 3, 1, 1], [9, 6, 5, 3, 2]]);
    assert.deepEqual(desc.indices.select(0, 1).toArray(), [0, 2, 3, 4, 1]);
    assert.deepEqual(x.cumsum(-1).select(0, 0).toArray(), [3, 4, 8, 9, 14]);

    // Zero-probability classes are never drawn; without replacement each index at most once.
    manualSeed(0);
    const probs = tensor([[0, 0.5, 0, 0.5], [0, 0, 1, 0]], { dtype: "float32" });
    const draws = probs.multinomial(50, true);
    assert.deepEqual(draws.shape, [2, 50]);
    for (const v of draws.select(0, 0).toFlatArray()) assert.ok(v === 1 || v === 3);
    assert.deepEqual(new Set(draws.select(0, 1).toFlatArray()), new Set([2]));
    const unique = tensor([0.1, 0.2, 0.3, 0.4], { dtype: "float32" }).multinomial(4, false).toFlatArray();
    assert.deepEqual([...unique].sort(), [0, 1, 2, 3]);
    // Frequencies follow the probabilities.
    manualSeed(1);
    const many = tensor([0.2, 0.8], { dtype: "float64" }).multinomial(20000, true);
    const share = many.sum().item() / 20000;
    assert.ok(Math.abs(share - 0.8) < 5 * Math.sqrt(0.16 / 20000), `share ${share}`);
  });
});

test("mseLoss reductions", () => {
  tidy(() => {
    const a = tensor([1, 2, 3], { dtype: "float64" });
    const b = tensor([1, 0, 6], { dtype: "float64" });
    near(mseLoss(a, b), 13 / 3, 1e-12);
    near(mseLoss(a, b, "sum"), 13);
    near(mseLoss(a, b, "none"), [0, 4, 9]);
  });
});

test("attention: closed form for one query, causal rows, additive and bool masks agree", () => {
  tidy(() => {
    // One query over two keys: weights softmax(q·k / sqrt(D)).
    const q = tensor([[[[1, 0]]]], { dtype: "float64" }); // [1, 1, 1, 2]
    const k = tensor([[[[2, 0], [0, 2]]]], { dtype: "float64" });
    const v = tensor([[[[1, 10], [3, 30]]]], { dtype: "float64" });
    const w0 = Math.exp(2 / Math.SQRT2);
    const w1 = 1;
    const expected = [(w0 * 1 + w1 * 3) / (w0 + w1), (w0 * 10 + w1 * 30) / (w0 + w1)];
    near(scaledDotProductAttention(q, k, v), [[[expected]]], 1e-12);
    near(attentionComposed(q, k, v), [[[expected]]], 1e-12);
    near(attentionComposed(q, k, v, { scale: 1 }), [[[[(Math.exp(2) + 3) / (Math.exp(2) + 1), (10 * Math.exp(2) + 30) / (Math.exp(2) + 1)]]]], 1e-12);

    manualSeed(2);
    const [Q, K, V] = [randn([2, 2, 4, 3], { dtype: "float64" }), randn([2, 2, 4, 3], { dtype: "float64" }), randn([2, 2, 4, 3], { dtype: "float64" })];
    const causal = scaledDotProductAttention(Q, K, V, { isCausal: true });
    // The first query sees only the first key: its output is V's first row.
    near(causal.select(2, 0), V.select(2, 0).toArray(), 1e-12);
    near(causal, attentionComposed(Q, K, V, { isCausal: true }).toArray(), 1e-12);
    const keep = tensor([[true, false, false, false], [true, true, false, false], [true, true, true, false], [true, true, true, true]]);
    const additive = tensor([[0, -Infinity, -Infinity, -Infinity], [0, 0, -Infinity, -Infinity], [0, 0, 0, -Infinity], [0, 0, 0, 0]], { dtype: "float64" });
    near(scaledDotProductAttention(Q, K, V, { mask: keep }), causal.toArray(), 1e-12);
    near(scaledDotProductAttention(Q, K, V, { mask: additive }), causal.toArray(), 1e-12);
    // With a cache the 2 queries are the last 2 of 4 positions.
    const last = scaledDotProductAttention(Q.slice(2, 2), K, V, { isCausal: true });
    near(last, causal.slice(2, 2).toArray(), 1e-12);
    // Grouped-query heads: 4 query heads over 2 key/value heads equal repeated heads.
    const Q4 = randn([1, 4, 3, 2], { dtype: "float64" });
    const [K2, V2] = [randn([1, 2, 3, 2], { dtype: "float64" }), randn([1, 2, 3, 2], { dtype: "float64" })];
    const gqa = scaledDotProductAttention(Q4, K2, V2, { isCausal: true });
    const repeated = attentionComposed(Q4, K2.repeatInterleave(2, 1), V2.repeatInterleave(2, 1), { isCausal: true });
    near(gqa, repeated.toArray(), 1e-12);
    near(gqa.select(1, 1), attentionComposed(Q4.slice(1, 1, 2), K2.slice(1, 0, 1), V2.slice(1, 0, 1), { isCausal: true }).select(1, 0).toArray(), 1e-12);
    assert.throws(() => scaledDotProductAttention(randn([1, 3, 2, 2]), randn([1, 2, 2, 2]), randn([1, 2, 2, 2])), /3 query heads are not a multiple of 2/);
  });
});

test("attention: one query (decoding) over grouped heads equals repeated heads, with a shared mask, causal or not", () => {
  tidy(() => {
    manualSeed(5);
    // 6 query heads over 2 key/value heads, one query against 5 cached positions.
    const q = randn([2, 6, 1, 4], { dtype: "float64" });
    const [k, v] = [randn([2, 2, 5, 4], { dtype: "float64" }), randn([2, 2, 5, 4], { dtype: "float64" })];
    const [kRepeated, vRepeated] = [k.repeatInterleave(3, 1), v.repeatInterleave(3, 1)];
    const expected = attentionComposed(q, kRepeated, vRepeated).toArray(); // every head on its own
    for (const attend of [scaledDotProductAttention, attentionComposed]) {
      near(attend(q, k, v), expected, 1e-12);
      // The single query is the last position: causality hides nothing.
      near(attend(q, k, v, { isCausal: true }), expected, 1e-12);
    }
    // A padding mask shared by the heads ([B, 1, 1, S]): row 0 hides its first two keys.
    const mask = tensor([[[[-Infinity, -Infinity, 0, 0, 0]]], [[[0, 0, 0, 0, 0]]]], { dtype: "float64" });
    const masked = attentionComposed(q, kRepeated, vRepeated, { mask }).toArray();
    near(scaledDotProductAttention(q, k, v, { mask }), masked, 1e-12);
    near(attentionComposed(q, k, v, { mask }), masked, 1e-12);
    // Equal head counts with causality take the same path: still the plain formula.
    const q2 = randn([1, 2, 1, 4], { dtype: "float64" });
    near(scaledDotProductAttention(q2, k.slice(0, 0, 1), v.slice(0, 0, 1), { isCausal: true }), attentionComposed(q2, k.slice(0, 0, 1), v.slice(0, 0, 1)).toArray(), 1e-12);
  });
});
