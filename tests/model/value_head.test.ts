// The value head (reward models, PPO) and resize_vocab.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel } from "../../src/model/loader.ts";
import { resizeTokenEmbeddings } from "../../src/model/patches/embedding.ts";
import { CausalLMWithValueHead, loadValueHead, saveValueHead } from "../../src/model/value_head.ts";
import { linear, manualSeed, noGrad, openSafetensors, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";
import type { LlamaForCausalLM } from "../../src/model/models/llama.ts";

test("value head: v = summary(hidden) per position, saved and loaded under TRL's names", () => {
  const folder = makeTinyModel();
  manualSeed(1);
  const model = new CausalLMWithValueHead(loadModel(folder), { initStrategy: "normal" }).eval();
  const ids = tensor([[4, 8, 15, 16, 23, 42]]);
  tidy(() =>
    noGrad(() => {
      const { logits, values } = model.forward(ids);
      assert.deepEqual(values.shape, [1, 6]);
      assert.ok(logits.allclose(model.pretrained_model.forward(ids)));
      const hidden = model.pretrained_model.hiddenStates(ids);
      const expected = linear(hidden, model.v_head.summary.weight, model.v_head.summary.bias).squeeze(-1);
      assert.ok(values.allclose(expected, 1e-6, 1e-7));
    }),
  );
  const out = mkdtempSync(join(tmpdir(), "lmf-vhead-"));
  saveValueHead(model, out);
  const reader = openSafetensors(join(out, "value_head.safetensors"));
  assert.deepEqual(reader.names().sort(), ["v_head.summary.bias", "v_head.summary.weight"]);
  assert.deepEqual(reader.info("v_head.summary.weight").shape, [1, 32]);
  reader.close();
  const fresh = new CausalLMWithValueHead(loadModel(folder)).eval();
  assert.equal(loadValueHead(fresh, out), true);
  assert.equal(loadValueHead(fresh, folder), false);
  tidy(() => noGrad(() => assert.ok(fresh.forward(ids).values.allclose(model.forward(ids).values))));
});

test("resize_vocab pads to a multiple of 64 with noisy-mean rows and keeps old rows and outputs", () => {
  for (const tied of [false, true]) {
    const model = loadModel(makeTinyModel({ tie_word_embeddings: tied }));
    const before = tidy(() => (model as LlamaForCausalLM).model.embed_tokens.weight.clone());
    const ids = tensor([[1, 2, 3, 95]]);
    const logitsBefore = tidy(() => noGrad(() => model.forward(ids).clone()));
    manualSeed(3);
    assert.equal(resizeTokenEmbeddings(model, 100), 128);
    assert.equal(resizeTokenEmbeddings(model, 100), 128, "a vocabulary that fits is left alone");
    assert.equal(model.config.vocab_size, 128);
    const weight = (model as LlamaForCausalLM).model.embed_tokens.weight;
    assert.deepEqual(weight.shape, [128, 32]);
    assert.deepEqual((model as LlamaForCausalLM).lm_head.weight.shape, [128, 32]);
    assert.equal((model as LlamaForCausalLM).lm_head.weight === weight, tied);
    tidy(() => {
      assert.ok(weight.slice(0, 0, 96).equal(before));
      // New rows scatter around the old mean with std 1/sqrt(32) ≈ 0.18.
      const offsets = weight.slice(0, 96).sub(before.mean(0, true));
      const std = offsets.pow(2).mean().sqrt().item();
      assert.ok(std > 0.12 && std < 0.24, `std ${std}`);
      const logitsAfter = noGrad(() => model.forward(ids));
      assert.ok(logitsAfter.slice(2, 0, 96).allclose(logitsBefore, 1e-5, 1e-6));
    });
    before.dispose();
    logitsBefore.dispose();
    model.dispose();
  }
});
