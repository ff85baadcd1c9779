// Optimizers: AdamW and SGD against their update rules written out in plain JS numbers, and against
// torch.optim itself (python3-torch) over several steps with parameter groups and lr changes;
// state dict save/restore; the HF Trainer's no-decay grouping.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  AdamW,
  type Optimizer,
  type OptimizerStateDict,
  SGD,
  type Tensor,
  decayParameterGroups,
  isNoDecayParameter,
  liveTensors,
  noGrad,
  tensor,
  tidy,
} from "../../src/torch/index.ts";
import { assertClose, hasTorch, torchReference } from "./torch-reference.ts";

type Vector = number[];

function makeParams(values: Vector[]): Tensor[] {
  return values.map((v) => tensor(v, { dtype: "float32", requiresGrad: true }));
}

function setGrads(params: Tensor[], grads: (Vector | null)[]): void {
  tidy(() => {
    params.forEach((param, i) => {
      const grad = grads[i];
      param.grad = grad ? tensor(grad, { dtype: "float32" }).reshape(param.shape) : null;
    });
  });
}

const values = (t: Tensor): number[] => Array.from(t.data() as Float32Array);

// --- hand-computed references -------------------------------------------------------------------

const START: Vector[] = [[0.5, -1.0], [2.0]];
const GRADS: Vector[][] = [
  [[0.1, -0.2], [0.3]],
  [[-0.05, 0.4], [0.3]],
  [[0.2, 0.1], [-0.6]],
];

/** torch.optim.AdamW's update, one number at a time. */
function adamwByHand(start: Vector[], grads: Vector[][], lr: number, [beta1, beta2]: [number, number], eps: number, weightDecay: number): Vector[][] {
  const params = start.map((p) => [...p]);
  const m = start.map((p) => p.map(() => 0));
  const v = start.map((p) => p.map(() => 0));
  const history: Vector[][] = [];
  grads.forEach((stepGrads, s) => {
    const step = s + 1;
    params.forEach((p, i) =>
      p.forEach((_, j) => {
        const g = stepGrads[i]![j]!;
        p[j] = p[j]! * (1 - lr * weightDecay);
        m[i]![j] = beta1 * m[i]![j]! + (1 - beta1) * g;
        v[i]![j] = beta2 * v[i]![j]! + (1 - beta2) * g * g;
        const denom = Math.sqrt(v[i]![j]!) / Math.sqrt(1 - beta2 ** step) + eps;
        p[j] = p[j]! - (lr / (1 - beta1 ** step)) * (m[i]![j]! / denom);
      }),
    );
    history.push(params.map((p) => [...p]));
  });
  return history;
}

/** torch.optim.SGD's update, one number at a time. */
function sgdByHand(
  start: Vector[],
  grads: Vector[][],
  { lr, momentum, dampening, weightDecay, nesterov }: { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean },
): Vector[][] {
  const params = start.map((p) => [...p]);
  const buffers: (Vector | null)[] = start.map(() => null);
  const history: Vector[][] = [];
  for (const stepGrads of grads) {
    params.forEach((p, i) => {
      const d = p.map((value, j) => stepGrads[i]![j]! + weightDecay * value);
      let direction = d;
      if (momentum !== 0) {
        const buffer = buffers[i] ? buffers[i]!.map((b, j) => momentum * b + (1 - dampening) * d[j]!) : [...d];
        buffers[i] = buffer;
        direction = nesterov ? d.map((x, j) => x + momentum * buffer[j]!) : buffer;
      }
      p.forEach((value, j) => (p[j] = value - lr * direction[j]!));
    });
    history.push(params.map((p) => [...p]));
  }
  return history;
}

function runSteps(optimizer: Optimizer<{ lr: number }>, params: Tensor[], grads: Vector[][]): Vector[][] {
  return grads.map((stepGrads) => {
    setGrads(params, stepGrads);
    optimizer.step();
    optimizer.zeroGrad();
    return params.map(values);
  });
}

test("AdamW's first step moves each weight by lr (times its sign) after decoupled decay", () => {
  const params = makeParams(START);
  const optimizer = new AdamW(params, { lr: 0.01, weightDecay: 0.1 });
  setGrads(params, GRADS[0]!);
  optimizer.step();
  // Step 1: m_hat = g and sqrt(v_hat) = |g|, so p <- p(1 - lr*wd) - lr * g / (|g| + eps).
  assertClose(values(params[0]!), [0.5 * 0.999 - 0.01 * (0.1 / (0.1 + 1e-8)), -1 * 0.999 + 0.01 * (0.2 / (0.2 + 1e-8))], 1e-6, 0, "p0");
  assertClose(values(params[1]!), [2 * 0.999 - 0.01 * (0.3 / (0.3 + 1e-8))], 1e-6, 0, "p1");
  optimizer.dispose();
  for (const p of params) p.dispose();
});

test("AdamW matches its update written out by hand over 3 steps", () => {
  const params = makeParams(START);
  // A large eps so that where eps enters the denominator shows in the result.
  const optimizer = new AdamW(params, { lr: 0.01, betas: [0.8, 0.95], eps: 0.05, weightDecay: 0.1 });
  const ours = runSteps(optimizer, params, GRADS);
  const expected = adamwByHand(START, GRADS, 0.01, [0.8, 0.95], 0.05, 0.1);
  ours.forEach((step, s) => step.forEach((p, i) => assertClose(p, expected[s]![i]!, 1e-6, 1e-8, `step ${s + 1} param ${i}`)));
  optimizer.dispose();
  for (const p of params) p.dispose();
});

test("SGD matches its update written out by hand over 3 steps (momentum, dampening, decay, nesterov)", () => {
  const settings = [
    { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false },
    { lr: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0.01, nesterov: false },
    { lr: 0.05, momentum: 0.8, dampening: 0, weightDecay: 0.02, nesterov: true },
  ];
  for (const options of settings) {
    const params = makeParams(START);
    const optimizer = new SGD(params, options);
    const ours = runSteps(optimizer, params, GRADS);
    const expected = sgdByHand(START, GRADS, options);
    ours.forEach((step, s) => step.forEach((p, i) => assertClose(p, expected[s]![i]!, 1e-6, 1e-8, `${JSON.stringify(options)} step ${s + 1} param ${i}`)));
    optimizer.dispose();
    for (const p of params) p.dispose();
  }
  assert.throws(() => new SGD(makeParams([[1]]), { nesterov: true }), /Nesterov momentum requires a momentum and zero dampening/);
});

// --- against PyTorch ------------------------------------------------------------------------------

/** A small deterministic generator so the request is the same on every run. */
function sequence(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
}

interface Case {
  name: string;
  optimizer: "adamw" | "sgd";
  defaults: Record<string, unknown>;
  groups: Record<string, unknown>[];
  make: (params: Tensor[]) => Optimizer<{ lr: number }>;
}

const SHAPES = [[3, 4], [5], [2, 2, 2]];

const CASES: Case[] = [
  {
    name: "AdamW, two groups (decay / no decay)",
    optimizer: "adamw",
    defaults: { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.01 },
    groups: [{ params: [0, 2], weight_decay: 0.1 }, { params: [1], weight_decay: 0.0 }],
    make: (p) => new AdamW([{ params: [p[0]!, p[2]!], weightDecay: 0.1 }, { params: [p[1]!], weightDecay: 0 }], { lr: 1e-3 }),
  },
  {
    name: "AdamW amsgrad, maximize, custom betas",
    optimizer: "adamw",
    defaults: { lr: 3e-3, betas: [0.85, 0.99], eps: 1e-2, weight_decay: 0.05, amsgrad: true, maximize: true },
    groups: [{ params: [0, 1, 2] }],
    make: (p) => new AdamW(p, { lr: 3e-3, betas: [0.85, 0.99], eps: 1e-2, weightDecay: 0.05, amsgrad: true, maximize: true }),
  },
  {
    name: "SGD momentum, dampening, weight decay",
    optimizer: "sgd",
    defaults: { lr: 0.05, momentum: 0.9, dampening: 0.2, weight_decay: 0.01 },
    groups: [{ params: [0, 1] }, { params: [2], momentum: 0.5 }],
    make: (p) => new SGD([{ params: [p[0]!, p[1]!] }, { params: [p[2]!], momentum: 0.5 }], { lr: 0.05, momentum: 0.9, dampening: 0.2, weightDecay: 0.01 }),
  },
  {
    name: "SGD nesterov",
    optimizer: "sgd",
    defaults: { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.001 },
    groups: [{ params: [0, 1, 2] }],
    make: (p) => new SGD(p, { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.001 }),
  },
];

for (const testCase of CASES) {
  test(`${testCase.name} matches torch.optim over 5 steps`, (t) => {
    if (!hasTorch) return t.skip("python3-torch not installed");
    const random = sequence(testCase.name.length * 7919);
    const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
    const start = SHAPES.map((shape) => Array.from({ length: numel(shape) }, () => random() * 2));
    const steps = Array.from({ length: 5 }, (_, s) => ({
      // Parameter 1 has no gradient at step 3: torch skips it (no decay, no state change).
      grads: SHAPES.map((shape, i) => (s === 2 && i === 1 ? null : Array.from({ length: numel(shape) }, () => random()))),
      lrs: testCase.groups.map((_, g) => (testCase.defaults.lr as number) * (1 - 0.1 * s) * (g + 1)),
    }));
    const reference = torchReference<{ history: number[][][]; state: Record<string, number[]>; steps: Record<string, number> }>({
      mode: "optim",
      optimizer: testCase.optimizer,
      defaults: testCase.defaults,
      groups: testCase.groups,
      params: SHAPES.map((shape, i) => ({ shape, values: start[i] })),
      steps,
    });

    const params = SHAPES.map((shape, i) => tensor(start[i]!, { dtype: "float32", shape, requiresGrad: true }));
    const optimizer = testCase.make(params);
    steps.forEach((step, s) => {
      optimizer.paramGroups.forEach((group, g) => (group.lr = step.lrs[g]!));
      setGrads(params, step.grads);
      optimizer.step();
      params.forEach((p, i) => assertClose(values(p), reference.history[s]![i]!, 1e-6, 1e-7, `step ${s + 1} param ${i}`));
    });
    const { tensors, meta } = optimizer.stateDict();
    // State indices run over the groups in order, in torch and here alike.
    for (const [key, value] of Object.entries(reference.state)) {
      const [index, name] = key.split(".") as [string, string];
      assertClose(values(tensors[`state.${index}.${name}`]!), value, 1e-6, 1e-8, `state ${key}`);
    }
    for (const [index, step] of Object.entries(reference.steps)) assert.equal(meta.state[index]!.step, step, `step of ${index}`);
    optimizer.dispose();
    for (const p of params) p.dispose();
  });
}

// --- state, groups, lifetimes ---------------------------------------------------------------------

test("AdamW stateDict -> JSON + cloned tensors -> loadStateDict resumes exactly", () => {
  const before = liveTensors();
  const paramsA = makeParams(START);
  const paramsB = makeParams(START);
  const groupsOf = (p: Tensor[]) => [{ params: [p[0]!], weightDecay: 0.1 }, { params: [p[1]!], weightDecay: 0 }];
  const optimizerA = new AdamW(groupsOf(paramsA), { lr: 0.01 });
  runSteps(optimizerA, paramsA, GRADS.slice(0, 2));
  optimizerA.paramGroups[0]!.lr = 0.005;

  // What a checkpoint holds: JSON metadata and copies of the tensors.
  const saved = optimizerA.stateDict();
  assert.deepEqual(Object.keys(saved.tensors).sort(), ["state.0.exp_avg", "state.0.exp_avg_sq", "state.1.exp_avg", "state.1.exp_avg_sq"]);
  assert.deepEqual(saved.meta.param_groups.map((g) => g.params), [[0], [1]]);
  assert.equal(saved.meta.param_groups[0]!.weight_decay, 0.1);
  const restored: OptimizerStateDict = {
    meta: JSON.parse(JSON.stringify(saved.meta)),
    tensors: Object.fromEntries(Object.entries(saved.tensors).map(([k, v]) => [k, v.clone()])),
  };
  noGrad(() => paramsB.forEach((p, i) => p.copy_(paramsA[i]!)));

  const optimizerB = new AdamW(groupsOf(paramsB), { lr: 0.5 });
  optimizerB.loadStateDict(restored);
  for (const t of Object.values(restored.tensors)) t.dispose();
  assert.equal(optimizerB.paramGroups[0]!.lr, 0.005);
  assert.equal(optimizerB.paramGroups[1]!.weightDecay, 0);

  const nextA = runSteps(optimizerA, paramsA, GRADS.slice(2));
  const nextB = runSteps(optimizerB, paramsB, GRADS.slice(2));
  assert.deepEqual(nextB, nextA);

  assert.throws(() => new AdamW(paramsB, {}).loadStateDict(saved), /state dict has 2 parameter groups, the optimizer has 1/);
  for (const optimizer of [optimizerA, optimizerB]) optimizer.dispose();
  for (const p of [...paramsA, ...paramsB]) p.dispose();
  assert.equal(liveTensors(), before);
});

test("decayParameterGroups exempts biases and norm weights as the HF Trainer does", () => {
  const names = {
    "model.embed_tokens.weight": true,
    "model.layers.0.self_attn.q_proj.weight": true,
    "model.layers.0.self_attn.q_proj.bias": false,
    "model.layers.0.self_attn.q_norm.weight": false,
    "model.layers.0.input_layernorm.weight": false,
    "model.layers.0.post_attention_layernorm.weight": false,
    "model.norm.weight": false,
    "transformer.ln_f.weight": true,
    "lm_head.weight": true,
  };
  for (const [name, decays] of Object.entries(names)) assert.equal(isNoDecayParameter(name), !decays, name);
  const tensors = Object.keys(names).map(() => tensor([1], { dtype: "float32", requiresGrad: true }));
  tensors[1]!.requiresGrad_(false);
  const groups = decayParameterGroups(
    Object.keys(names).map((name, i) => [name, tensors[i]!] as [string, Tensor]),
    0.01,
  );
  assert.equal(groups[0]!.weightDecay, 0.01);
  assert.equal(groups[1]!.weightDecay, 0);
  assert.deepEqual([...groups[0]!.params], [tensors[0], tensors[7], tensors[8]]);
  assert.equal([...groups[1]!.params].length, 5);
  for (const t of tensors) t.dispose();
});

test("a step keeps only the optimizer state alive; bad hyper-parameters are clear errors", () => {
  const params = makeParams(START);
  const optimizer = new AdamW(params, { amsgrad: true });
  setGrads(params, GRADS[0]!);
  const before = liveTensors();
  optimizer.step();
  assert.equal(liveTensors(), before + 3 * params.length, "exp_avg, exp_avg_sq, max_exp_avg_sq per parameter");
  optimizer.step();
  optimizer.zeroGrad();
  assert.equal(liveTensors(), before + 3 * params.length);
  tidy(() => assert.equal(params[0]!.grad, null));
  optimizer.dispose();
  assert.equal(liveTensors(), before);
  assert.throws(() => new AdamW(params, { betas: [1, 0.9] }), /invalid beta parameter at index 0: 1/);
  assert.throws(() => new AdamW([{ params }, { params: [params[0]!] }]), /more than one parameter group/);
  assert.throws(() => new AdamW([]), /empty parameter list/);
  for (const p of params) p.dispose();
});
