// autocast(fn) as torch.autocast("cpu", dtype=torch.bfloat16): which ops it casts (libtorch's lists,
// reached from the addon's ops), float32 gradients for float32 weights, nesting and restore on
// throw, the weight-cast cache dropped at the end of a scope, and attention and RoPE in float32
// where transformers keeps them so.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  attentionComposed,
  autocast,
  autocastState,
  crossEntropy,
  linear,
  manualSeed,
  noGrad,
  randn,
  scaledDotProductAttention,
  tensor,
  tidy,
} from "../../src/torch/index.ts";
import { RotaryEmbedding } from "../../src/model/rope.ts";
import { normalizeConfig } from "../../src/model/config.ts";

test("inside autocast, linear and matmul run in bfloat16 and cross_entropy in float32; outside, float32", () => {
  manualSeed(0);
  tidy(() => {
    const x = randn([4, 8]);
    const w = randn([6, 8]);
    assert.equal(linear(x, w).dtype, "float32");
    autocast(() => {
      assert.deepEqual(autocastState("cpu"), { enabled: true, dtype: "bfloat16" });
      assert.equal(linear(x, w).dtype, "bfloat16");
      assert.equal(x.matmul(w.transpose(0, 1)).dtype, "bfloat16");
      // The same values as casting by hand: the inputs are rounded to bfloat16, then multiplied.
      const byHand = noGrad(() => linear(x.to("bfloat16"), w.to("bfloat16")));
      assert.deepEqual(linear(x, w).toArray(), byHand.to("float32").toArray());
      assert.equal(crossEntropy(linear(x, w), tensor([0, 1, 2, 3])).dtype, "float32");
      // Elementwise ops are not on the lists: float32 stays float32.
      assert.equal(x.add(x).dtype, "float32");
    });
    assert.equal(linear(x, w).dtype, "float32");
    assert.equal(autocastState("cpu").enabled, false);
  });
});

test("a float32 weight used under autocast gets a float32 gradient equal to the hand-cast computation's", () => {
  manualSeed(1);
  tidy(() => {
    const x = randn([5, 8]);
    const w = randn([3, 8]).requiresGrad_(true);
    autocast(() => linear(x, w).to("float32").square().sum()).backward();
    const viaAutocast = w.grad!;
    assert.equal(viaAutocast.dtype, "float32");
    const w2 = w.detach().requiresGrad_(true);
    linear(x.to("bfloat16"), w2.to("bfloat16")).to("float32").square().sum().backward();
    assert.deepEqual(viaAutocast.toArray(), w2.grad!.toArray());
  });
});

test("nested scopes restore the outer state, enabled: false turns it off inside, and a throw restores it", () => {
  tidy(() => {
    const x = randn([2, 4]);
    const w = randn([3, 4]);
    autocast(() => {
      autocast(() => assert.equal(linear(x, w).dtype, "float32"), { enabled: false });
      assert.equal(linear(x, w).dtype, "bfloat16");
      assert.throws(() => autocast(() => { throw new Error("inside"); }, { enabled: false }), /inside/);
      assert.equal(linear(x, w).dtype, "bfloat16");
    });
    assert.throws(() => autocast(() => { throw new Error("outside"); }), /outside/);
    assert.equal(autocastState("cpu").enabled, false);
  });
});

test("the bfloat16 copy of a trainable weight is cached within a scope and dropped at its end", () => {
  tidy(() => {
    const x = tensor([[1, 1]], { dtype: "float32" });
    const w = tensor([[1, 2]], { dtype: "float32" }).requiresGrad_(true);
    assert.deepEqual(autocast(() => linear(x, w)).to("float32").toArray(), [[3]]);
    // An optimizer step between two scopes (two training steps) is seen by the next one.
    noGrad(() => w.mul_(2));
    assert.deepEqual(autocast(() => linear(x, w)).to("float32").toArray(), [[6]]);
  });
});

test("attention under autocast takes its softmax in float32, as transformers' eager attention", () => {
  manualSeed(2);
  tidy(() => {
    const [q, k] = [randn([1, 2, 6, 8]), randn([1, 2, 6, 8])];
    const v = randn([1, 2, 6, 8]);
    // The reference: scores rounded to bfloat16 (autocast's matmul), then float32 softmax.
    const scores = q.to("bfloat16").matmul(k.to("bfloat16").transpose(-2, -1)).mul(1 / Math.sqrt(8));
    const causal = scores.to("float32").add(tensor(Array.from({ length: 6 }, (_, i) => Array.from({ length: 6 }, (_, j) => (j > i ? -Infinity : 0)))));
    const expected = causal.softmax(-1).to("bfloat16").matmul(v.to("bfloat16")).to("float32");
    for (const attend of [scaledDotProductAttention, attentionComposed]) {
      const got = autocast(() => attend(q, k, v, { isCausal: true })).to("float32");
      assert.deepEqual(got.toArray(), expected.toArray(), attend.name);
    }
  });
});

test("RoPE's cos and sin are computed in float32 under autocast (HF disables autocast there)", () => {
  const config = normalizeConfig({ model_type: "llama", hidden_size: 64, num_attention_heads: 1, num_hidden_layers: 1, intermediate_size: 8, vocab_size: 8, max_position_embeddings: 4096 });
  const rope = new RotaryEmbedding(config);
  tidy(() => {
    const positions = tensor([[0, 1000, 4000]]);
    const plain = rope.forward(positions);
    const cast = autocast(() => rope.forward(positions));
    assert.equal(cast.cos.dtype, "float32");
    assert.deepEqual(cast.cos.toArray(), plain.cos.toArray());
    assert.deepEqual(cast.sin.toArray(), plain.sin.toArray());
  });
  rope.dispose();
});
