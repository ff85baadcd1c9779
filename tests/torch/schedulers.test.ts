// LR schedulers: every transformers.get_scheduler name against values worked out by hand from HF's
// formulas (transformers/optimization.py) at warmup boundaries and inside each phase, the LambdaLR
// stepping convention, state save/load, warmup_steps/warmup_ratio, and the errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SGD, type SchedulerKwargs, type Tensor, getScheduler, tensor, warmupSteps } from "../../src/torch/index.ts";

function withOptimizer<T>(lr: number, fn: (optimizer: SGD) => T): T {
  const param: Tensor = tensor([1], { dtype: "float32", requiresGrad: true });
  try {
    return fn(new SGD([param], { lr }));
  } finally {
    param.dispose();
  }
}

/** The group lr at steps 0..last (construction gives step 0; each `step()` advances one). */
function lrs(name: string, last: number, options: { warmup?: number; total?: number; kwargs?: SchedulerKwargs; lr?: number }): number[] {
  return withOptimizer(options.lr ?? 0.1, (optimizer) => {
    const scheduler = getScheduler(name, optimizer, {
      numWarmupSteps: options.warmup,
      numTrainingSteps: options.total,
      schedulerSpecificKwargs: options.kwargs,
    });
    const out = [optimizer.paramGroups[0]!.lr];
    for (let step = 1; step <= last; step++) {
      scheduler.step();
      out.push(optimizer.paramGroups[0]!.lr);
      assert.equal(scheduler.getLastLr()[0], optimizer.paramGroups[0]!.lr);
    }
    return out;
  });
}

function expectAt(actual: number[], expected: Record<number, number>, what: string): void {
  for (const [step, value] of Object.entries(expected)) {
    const got = actual[Number(step)]!;
    assert.ok(Math.abs(got - value) <= 1e-12 + 1e-9 * Math.abs(value), `${what} at step ${step}: got ${got}, expected ${value}`);
  }
}

test("linear: warmup 0 -> lr over 2 steps, then down to 0 at the last step", () => {
  const values = lrs("linear", 11, { warmup: 2, total: 10 });
  expectAt(values, { 0: 0, 1: 0.05, 2: 0.1, 3: 0.0875, 4: 0.075, 6: 0.05, 9: 0.0125, 10: 0, 11: 0 }, "linear");
  expectAt(lrs("linear", 4, { warmup: 0, total: 4 }), { 0: 0.1, 1: 0.075, 4: 0 }, "linear without warmup");
});

test("constant and constant_with_warmup", () => {
  expectAt(lrs("constant", 5, {}), { 0: 0.1, 5: 0.1 }, "constant");
  expectAt(lrs("constant_with_warmup", 6, { warmup: 4 }), { 0: 0, 1: 0.025, 2: 0.05, 3: 0.075, 4: 0.1, 6: 0.1 }, "constant_with_warmup");
});

test("cosine: half a cosine after warmup, past the end it rises again as HF's does", () => {
  const values = lrs("cosine", 12, { warmup: 2, total: 10 });
  // step 4: progress 1/4, 0.5 * (1 + cos(pi/4)) = 0.853553390593...; step 12: 0.5 * (1 + cos(5pi/4)).
  expectAt(values, { 0: 0, 1: 0.05, 2: 0.1, 4: 0.0853553390593274, 6: 0.05, 8: 0.0146446609406726, 10: 0, 12: 0.0146446609406726 }, "cosine");
  expectAt(lrs("cosine", 8, { warmup: 0, total: 8, kwargs: { num_cycles: 1 } }), { 0: 0.1, 2: 0.05, 4: 0, 6: 0.05, 8: 0.1 }, "cosine num_cycles=1");
});

test("cosine_with_restarts: num_cycles hard restarts, 0 from the last step on", () => {
  const values = lrs("cosine_with_restarts", 11, { warmup: 2, total: 10, kwargs: { num_cycles: 2 } });
  expectAt(values, { 1: 0.05, 2: 0.1, 4: 0.05, 5: 0.0146446609406726, 6: 0.1, 7: 0.0853553390593274, 10: 0, 11: 0 }, "cosine_with_restarts");
  expectAt(lrs("cosine_with_restarts", 10, { warmup: 2, total: 10 }), { 6: 0.05 }, "one cycle by default");
});

test("polynomial: from lr to lr_end with the power, then lr_end", () => {
  const values = lrs("polynomial", 12, { warmup: 2, total: 10, kwargs: { lr_end: 0.01, power: 2 } });
  // step 6: pct_remaining 1/2 -> (0.1 - 0.01) * 0.25 + 0.01 = 0.0325
  expectAt(values, { 0: 0, 1: 0.05, 2: 0.1, 6: 0.0325, 8: 0.015625, 10: 0.01, 12: 0.01 }, "polynomial");
  // Defaults: lr_end 1e-7, power 1 -> linear to 1e-7.
  expectAt(lrs("polynomial", 4, { warmup: 0, total: 4 }), { 2: (0.1 - 1e-7) * 0.5 + 1e-7, 4: 1e-7 }, "polynomial defaults");
  assert.throws(() => lrs("polynomial", 1, { warmup: 0, total: 4, kwargs: { lr_end: 0.2 } }), /lr_end \(0\.2\) must be smaller than initial lr \(0\.1\)/);
});

test("inverse_sqrt: timescale defaults to the warmup, else 10000", () => {
  expectAt(lrs("inverse_sqrt", 16, { warmup: 4 }), { 2: 0.05, 4: 0.1, 9: 0.1 / 1.5, 16: 0.05 }, "inverse_sqrt warmup 4");
  expectAt(lrs("inverse_sqrt", 30, { warmup: 0, kwargs: { timescale: 10 } }), { 0: 0.1, 30: 0.05 }, "inverse_sqrt timescale 10");
  withOptimizer(0.1, (optimizer) => {
    const scheduler = getScheduler("inverse_sqrt", optimizer, { numWarmupSteps: 0 });
    assert.equal(scheduler.factorAt(30_000), 0.5);
  });
});

test("cosine_with_min_lr: the cosine ends at min_lr (or min_lr_rate * lr)", () => {
  expectAt(lrs("cosine_with_min_lr", 10, { warmup: 2, total: 10, kwargs: { min_lr_rate: 0.1 } }), { 1: 0.05, 2: 0.1, 6: 0.055, 10: 0.01 }, "min_lr_rate");
  expectAt(lrs("cosine_with_min_lr", 10, { warmup: 2, total: 10, kwargs: { min_lr: 0.02 } }), { 6: 0.06, 10: 0.02 }, "min_lr");
  assert.throws(() => lrs("cosine_with_min_lr", 1, { warmup: 2, total: 10 }), /One of min_lr or min_lr_rate should be set/);
  assert.throws(() => lrs("cosine_with_min_lr", 1, { warmup: 2, total: 10, kwargs: { min_lr: 1, min_lr_rate: 0.1 } }), /Only one of/);
});

test("warmup_stable_decay: warmup, a flat stage, a decay, then min_lr_ratio", () => {
  const values = lrs("warmup_stable_decay", 12, { warmup: 2, total: 10, kwargs: { num_decay_steps: 4, min_lr_ratio: 0.1 } });
  // Warmup starts at min_lr_ratio; stable 10 - 2 - 4 = 4 steps; cosine decay over 4.
  expectAt(values, { 0: 0.01, 1: 0.055, 2: 0.1, 5: 0.1, 6: 0.1, 8: 0.055, 10: 0.01, 12: 0.01 }, "wsd");
  const shaped = lrs("warmup_stable_decay", 8, {
    warmup: 2,
    kwargs: { num_decay_steps: 4, num_stable_steps: 2, warmup_type: "cosine", decay_type: "1-sqrt" },
  });
  // cosine warmup at 1/2: 0.5 * (1 - cos(pi/2)) = 0.5; 1-sqrt decay at 1/4: 1 - 0.5 = 0.5.
  expectAt(shaped, { 1: 0.05, 3: 0.1, 5: 0.05, 8: 0 }, "wsd shapes");
  assert.throws(() => lrs("warmup_stable_decay", 1, { warmup: 2, kwargs: { num_decay_steps: 4 } }), /Either num_training_steps or num_stable_steps/);
});

test("two groups scale by the same factor from their own lr", () => {
  const a = tensor([1], { dtype: "float32", requiresGrad: true });
  const b = tensor([1], { dtype: "float32", requiresGrad: true });
  const optimizer = new SGD([{ params: [a] }, { params: [b], lr: 0.4 }], { lr: 0.1 });
  const scheduler = getScheduler("linear", optimizer, { numWarmupSteps: 2, numTrainingSteps: 10 });
  scheduler.step();
  assert.deepEqual(scheduler.getLastLr(), [0.05, 0.2]);
  assert.deepEqual(scheduler.baseLrs, [0.1, 0.4]);
  a.dispose();
  b.dispose();
});

test("scheduler state saves as JSON and resumes at the same step", () => {
  withOptimizer(0.1, (optimizer) => {
    const scheduler = getScheduler("cosine", optimizer, { numWarmupSteps: 3, numTrainingSteps: 20 });
    for (let i = 0; i < 7; i++) scheduler.step();
    const saved = JSON.parse(JSON.stringify(scheduler.stateDict()));
    assert.equal(saved.last_epoch, 7);
    withOptimizer(0.1, (fresh) => {
      const resumed = getScheduler("cosine", fresh, { numWarmupSteps: 3, numTrainingSteps: 20 });
      resumed.loadStateDict(saved);
      assert.equal(fresh.paramGroups[0]!.lr, optimizer.paramGroups[0]!.lr);
      scheduler.step();
      resumed.step();
      assert.equal(fresh.paramGroups[0]!.lr, optimizer.paramGroups[0]!.lr);
    });
  });
});

test("get_scheduler errors name the problem", () => {
  assert.throws(() => lrs("cosine_annealing", 1, {}), /unknown lr_scheduler_type "cosine_annealing"; known: linear, cosine/);
  assert.throws(() => lrs("linear", 1, { total: 10 }), /linear requires `num_warmup_steps`/);
  assert.throws(() => lrs("cosine", 1, { warmup: 1 }), /cosine requires `num_training_steps`/);
  assert.throws(() => lrs("linear", 1, { warmup: 1, total: 10, kwargs: { num_cycles: 2 } }), /"num_cycles" not accepted by "linear" \(it takes none\)/);
});

test("warmupSteps: warmup_steps when set, else ceil(warmup_ratio * total)", () => {
  assert.equal(warmupSteps(100, { warmupRatio: 0.03 }), 3);
  assert.equal(warmupSteps(101, { warmupRatio: 0.03 }), 4);
  assert.equal(warmupSteps(100, { warmupSteps: 5, warmupRatio: 0.5 }), 5);
  assert.equal(warmupSteps(100, { warmupSteps: 0, warmupRatio: 0.1 }), 10);
  assert.equal(warmupSteps(100, { warmupSteps: 0.25 }), 25);
  assert.equal(warmupSteps(100, {}), 0);
});
