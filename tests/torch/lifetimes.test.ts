// Tensor lifetimes over a real training loop: a 2-layer MLP of our Linear modules trained with
// crossEntropy, backward, clipGradNorm, AdamW (HF decay groups), a linear schedule and zeroGrad,
// each step inside `tidy`. liveTensors() must stay flat for 200 steps, and the loss must drop.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  AdamW,
  Linear,
  Module,
  type Tensor,
  clipGradNorm,
  crossEntropy,
  decayParameterGroups,
  getScheduler,
  keep,
  liveTensors,
  manualSeed,
  randn,
  tidy,
} from "../../src/torch/index.ts";

class Mlp extends Module {
  fc1 = new Linear(8, 32);
  fc2 = new Linear(32, 4);

  /** x [N, 8] -> logits [N, 4] */
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.fc1.forward(x).relu());
  }
}

test("liveTensors() stays flat over 200 training steps and the MLP learns", () => {
  const start = liveTensors();
  manualSeed(0);
  const inputs = keep(randn([64, 8]));
  // Labels from a fixed random linear rule, so the task is learnable.
  const labels = keep(tidy(() => inputs.matmul(randn([8, 4])).argmax(-1)));
  const model = new Mlp();
  const optimizer = new AdamW(decayParameterGroups(model.namedParameters(), 0.01), { lr: 1e-2 });
  const scheduler = getScheduler("linear", optimizer, { numWarmupSteps: 10, numTrainingSteps: 200 });

  const losses: number[] = [];
  const live: number[] = [];
  for (let step = 0; step < 200; step++) {
    const loss = tidy(() => {
      const value = crossEntropy(model.forward(inputs), labels);
      value.backward();
      clipGradNorm(model.parameters(), 1.0);
      optimizer.step();
      scheduler.step();
      optimizer.zeroGrad();
      return value.item();
    });
    losses.push(loss);
    live.push(liveTensors());
  }
  // The optimizer state appears at the first step; from then on nothing may accumulate.
  assert.deepEqual(new Set(live.slice(1)), new Set([live[0]]), `live tensors drifted: ${live[0]} -> ${live.at(-1)}`);
  // 4 parameters, 2 inputs, and exp_avg + exp_avg_sq per parameter.
  assert.equal(live[0]! - start, 4 + 2 + 8);
  assert.ok(losses.at(-1)! < 0.5 * losses[0]!, `loss ${losses[0]} -> ${losses.at(-1)}`);

  optimizer.dispose();
  model.dispose();
  inputs.dispose();
  labels.dispose();
  assert.equal(liveTensors(), start);
});
