// Gradient checkpointing gives the same loss and gradients as the plain backward pass.
import { test } from "node:test";
import assert from "node:assert/strict";
import { loadModel } from "../../src/model/loader.ts";
import { checkpointedBackward } from "../../src/model/patches/checkpointing.ts";
import { type Tensor, crossEntropy, liveTensors, manualSeed, rand, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

// The loss draws one random number (as dropout in the head would), so the RNG stream after the
// step tells whether recomputation disturbed it.
function lossOf(labels: Tensor) {
  return (logits: Tensor) =>
    crossEntropy(logits.slice(1, 0, -1).reshape(-1, logits.shape[2]!), labels.slice(1, 1).reshape(-1)).add(rand([1]).mul(0).sum());
}

test("checkpointed backward matches the plain backward, leaves no tensors behind and keeps the RNG stream", () => {
  const model = loadModel(makeTinyModel({ model_type: "qwen2", tie_word_embeddings: true, use_sliding_window: false }));
  const ids = tensor([
    [5, 17, 42, 8, 91, 3, 60, 22],
    [9, 9, 33, 70, 2, 45, 18, 81],
  ]);
  const mask = tensor([
    [0, 0, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1],
  ]);

  manualSeed(7);
  const [plainLoss, plainNextDraw] = tidy(() => {
    const loss = lossOf(ids)(model.forward(ids, { attentionMask: mask }));
    loss.backward();
    return [loss.item(), rand([1]).item()];
  });
  const plainGrads = model.namedParameters().map(([name, p]) => [name, tidy(() => p.grad!.data() as Float32Array)] as const);
  model.zeroGrad();

  const before = liveTensors();
  manualSeed(7);
  const nextDraw = tidy(() => {
    const loss = checkpointedBackward(model, ids, (hidden) => lossOf(ids)(model.logits(hidden)), { attentionMask: mask });
    assert.ok(Math.abs(loss - plainLoss) < 1e-6, `loss ${loss} vs ${plainLoss}`);
    return rand([1]).item();
  });
  for (const [name, expected] of plainGrads) {
    const got = tidy(() => model.getSubmodule("").stateDict()[name]!.grad!.data() as Float32Array);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]!));
    assert.ok(worst < 1e-6, `${name}: max grad diff ${worst}`);
  }
  model.zeroGrad();
  assert.equal(liveTensors(), before);
  assert.equal(nextDraw, plainNextDraw);
  ids.dispose();
  mask.dispose();
  model.dispose();
});
