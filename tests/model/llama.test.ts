// The Llama family against an independent PyTorch implementation on the same weights
// (tests/reference/llama_reference.py), through the real checkpoint loader.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { loadModel } from "../../src/model/loader.ts";
import { KVCache } from "../../src/model/cache.ts";
import { cat, liveTensors, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";
import { near } from "../torch/op-helpers.ts";

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;

function reference(folder: string, inputIds: number[][], attentionMask: number[][] | null): number[] {
  const out = execFileSync("/usr/bin/python3", ["tests/reference/llama_reference.py"], {
    input: JSON.stringify({ folder, input_ids: inputIds, attention_mask: attentionMask }),
    maxBuffer: 1 << 28,
  });
  return JSON.parse(out.toString()).logits;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

const IDS = [
  [5, 17, 42, 8, 91, 3, 60, 22, 11, 7],
  [9, 9, 33, 70, 2, 45, 18, 81, 64, 30],
];

const VARIANTS: [string, Record<string, unknown>][] = [
  ["llama (GQA)", {}],
  ["llama3 rope scaling", { rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } }],
  ["linear rope scaling", { rope_scaling: { type: "linear", factor: 2 } }],
  ["yarn rope scaling", { rope_scaling: { rope_type: "yarn", factor: 4, original_max_position_embeddings: 32 } }],
  ["mistral sliding window", { model_type: "mistral", sliding_window: 4 }],
  ["qwen2 (qkv bias, tied embeddings)", { model_type: "qwen2", tie_word_embeddings: true, use_sliding_window: false }],
  ["qwen3 (q/k norm, head_dim)", { model_type: "qwen3", head_dim: 16, use_sliding_window: false }],
];

for (const [name, overrides] of VARIANTS) {
  test(`${name}: logits match the PyTorch reference`, { skip: !hasTorch && "python3-torch not installed" }, () => {
    const folder = makeTinyModel(overrides);
    const model = loadModel(folder);
    const ours = tidy(() => noGrad(() => model.forward(tensor(IDS)).data() as Float32Array));
    const theirs = reference(folder, IDS, null);
    assert.ok(maxAbsDiff(ours, theirs) < 1e-5, `max diff ${maxAbsDiff(ours, theirs)}`);
    model.dispose();
  });
}

test("left padding with an attention mask matches the reference", { skip: !hasTorch && "python3-torch not installed" }, () => {
  const folder = makeTinyModel();
  const model = loadModel(folder);
  const mask = [
    [0, 0, 0, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  ];
  const ours = tidy(() => noGrad(() => model.forward(tensor(IDS), { attentionMask: tensor(mask) }).data() as Float32Array));
  const theirs = reference(folder, IDS, mask);
  // Compare only the real (unpadded) positions, whose outputs are used.
  const V = 96;
  for (let b = 0; b < 2; b++) {
    for (let t = 0; t < 10; t++) {
      if (!mask[b]![t]) continue;
      const at = (b * 10 + t) * V;
      assert.ok(maxAbsDiff(ours.subarray(at, at + V), theirs.slice(at, at + V)) < 1e-5, `b=${b} t=${t}`);
    }
  }
  model.dispose();
});

test("decoding with the KV cache gives the same logits as the full forward, without leaks", () => {
  const folder = makeTinyModel({ model_type: "mistral", sliding_window: 6 });
  const model = loadModel(folder);
  const ids = tensor([IDS[0]!]);
  const full = tidy(() => noGrad(() => model.forward(ids).data() as Float32Array));
  const cache = new KVCache(model.config.num_hidden_layers);
  const before = liveTensors();
  const stepwise = tidy(() =>
    noGrad(() => {
      const prefill = model.forward(ids.slice(1, 0, 4), { cache });
      const steps = [prefill];
      for (let t = 4; t < 10; t++) steps.push(model.forward(ids.slice(1, t, t + 1), { cache }));
      return cat(steps, 1).data() as Float32Array;
    }),
  );
  assert.ok(maxAbsDiff(full, stepwise) < 1e-5, `max diff ${maxAbsDiff(full, stepwise)}`);
  assert.equal(cache.length, 10);
  cache.dispose();
  assert.equal(liveTensors(), before);
  ids.dispose();
  model.dispose();
});

test("the KV cache writes in place within its capacity, grows past it, and reorders rows; logitsToKeep", () => {
  const model = loadModel(makeTinyModel());
  const ids = tensor([IDS[0]!, [...IDS[0]!].reverse()]); // two rows
  const T = ids.shape[1]!;
  const full = tidy(() => noGrad(() => model.forward(ids).toArray() as number[][][]));
  // The last position only, as generation asks for it.
  tidy(() => noGrad(() => near(model.forward(ids, { logitsToKeep: 1 }), full.map((row) => [row[T - 1]!]), 1e-6)));
  for (const capacity of [T, 3]) {
    // capacity T: every step writes into the first buffers; capacity 3: the buffers grow twice.
    const cache = new KVCache(model.config.num_hidden_layers, { capacity });
    const before = liveTensors();
    tidy(() =>
      noGrad(() => {
        model.forward(ids.slice(1, 0, 2), { cache });
        for (let t = 2; t < T; t++) {
          const step = model.forward(ids.slice(1, t, t + 1), { cache }); // [2, 1, V]
          near(step, full.map((row) => [row[t]!]), 1e-5, `capacity ${capacity}, position ${t}`);
        }
      }),
    );
    assert.equal(cache.length, T);
    assert.equal(liveTensors(), before + 2 * model.config.num_hidden_layers, "the cache holds only its own buffers");
    // Reordered rows (beam search): row 1 then row 0 continue as each other's history.
    cache.reorder([1, 0]);
    tidy(() =>
      noGrad(() => {
        const next = tensor([[IDS[0]![0]!], [IDS[0]![1]!]]);
        const swapped = model.forward(next, { cache }).toArray() as number[][][];
        const alone = (row: number[], token: number) => model.forward(tensor([[...row, token]]), { logitsToKeep: 1 }).toArray() as number[][][];
        near(swapped[0]!, alone([...IDS[0]!].reverse(), IDS[0]![0]!)[0]!, 1e-5, "row 0 after reorder");
        near(swapped[1]!, alone(IDS[0]!, IDS[0]![1]!)[0]!, 1e-5, "row 1 after reorder");
      }),
    );
    cache.dispose();
  }
  ids.dispose();
  model.dispose();
});

test("Qwen2 has q/k/v biases and no o_proj bias, as a real Qwen2 checkpoint", () => {
  const model = loadModel(makeTinyModel({ model_type: "qwen2", use_sliding_window: false }));
  const names = model.namedParameters().map(([name]) => name);
  assert.ok(names.includes("model.layers.0.self_attn.q_proj.bias"));
  assert.ok(names.includes("model.layers.0.self_attn.v_proj.bias"));
  assert.ok(!names.includes("model.layers.0.self_attn.o_proj.bias"));
  model.dispose();
});

test("neat packing: each packed example gives the logits it gives alone", () => {
  const model = loadModel(makeTinyModel());
  const first = [5, 17, 42, 8, 91];
  const second = [9, 33, 70, 2];
  tidy(() =>
    noGrad(() => {
      const packed = model.forward(tensor([[...first, ...second, 0]]), {
        attentionMask: tensor([[1, 1, 1, 1, 1, 2, 2, 2, 2, 0]]),
        positionIds: tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 0]]),
      });
      const alone = [model.forward(tensor([first])), model.forward(tensor([second]))];
      assert.ok(packed.slice(1, 0, 5).allclose(alone[0]!, 1e-5, 1e-6), "first example");
      assert.ok(packed.slice(1, 5, 9).allclose(alone[1]!, 1e-5, 1e-6), "second example");
    }),
  );
  model.dispose();
});
