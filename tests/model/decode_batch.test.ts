// Continuous batching (src/model/decode_batch.ts): sequences that join and leave a running batch
// at different steps, each with its own settings, decode in shared forward passes over their own
// KV caches and get, at temperature 0, the very tokens `generate` gives each of them alone.
import { test } from "node:test";
import assert from "node:assert/strict";
import { KVCache, RowCaches } from "../../src/model/cache.ts";
import type { ForwardOptions } from "../../src/model/causal_lm.ts";
import { DecodeBatch, type DecodeSequence } from "../../src/model/decode_batch.ts";
import { type GenerateOptions, generate } from "../../src/model/generation.ts";
import { loadModel } from "../../src/model/loader.ts";
import { INVARIANT_ROWS, type Tensor, batchInvariant, liveTensors, manualSeed, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

// Qwen2 (q/k/v bias). Row widths are multiples of 16, as in every released model: libtorch's
// elementwise kernels (silu's exp) take a scalar path for the last elements of a tensor whose size
// is not, so a lone row could round its tail otherwise than the same row inside a batch. (The row
// kernel's own remainders are checked in tests/torch/rows_linear.test.ts.)
const SHAPE = { model_type: "qwen2", vocab_size: 304, hidden_size: 80, intermediate_size: 144, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 256, use_sliding_window: false };

function prompts(count: number): number[][] {
  let state = 12345;
  const next = () => (state = (state * 1103515245 + 12345) % 2 ** 31);
  return Array.from({ length: count }, (_, i) => Array.from({ length: 3 + ((i * 7) % 38) }, () => 3 + (next() % 300)));
}

/** Each sequence's options: different budgets, penalties and stop tokens; prompts fed 8 tokens per chunk. */
function optionsFor(i: number): GenerateOptions {
  return {
    doSample: false,
    maxNewTokens: 4 + ((i * 5) % 17),
    repetitionPenalty: i % 3 === 0 ? 1.3 : 1,
    eosTokenId: i % 4 === 0 ? [2, 50 + i] : [2],
    prefillChunk: 8,
  };
}

test("a row's logits in a batched decode step equal, bit for bit, its logits decoded alone (batch-invariant linear layers)", () => {
  const model = loadModel(makeTinyModel(SHAPE));
  const all = prompts(INVARIANT_ROWS);
  const prefilled = () =>
    all.map((prompt) => {
      const cache = new KVCache(model.decoderLayers.length, { capacity: 64 });
      noGrad(() => tidy(() => void batchInvariant(() => model.forward(tensor([prompt]), { cache, logitsToKeep: 1 }))));
      return cache;
    });
  const [together, apart] = [prefilled(), prefilled()];
  const next = all.map((_, i) => 7 + i);
  for (const rows of [INVARIANT_ROWS, 5]) {
    const batched = noGrad(() =>
      tidy(() => {
        const ids = tensor(next.slice(0, rows).map((token) => [token]));
        const positions = tensor(together.slice(0, rows).map((cache) => [cache.length]));
        const logits = batchInvariant(() => model.forward(ids, { positionIds: positions, cache: new RowCaches(together.slice(0, rows)), logitsToKeep: 1 }));
        return logits.toArray() as number[][][];
      }),
    );
    for (let i = 0; i < rows; i++) {
      const single = noGrad(() => tidy(() => batchInvariant(() => model.forward(tensor([[next[i]!]]), { cache: apart[i]!, logitsToKeep: 1 })).toArray() as number[][][]));
      assert.deepEqual(batched[i], single[0], `row ${i} of ${rows}`);
    }
  }
  for (const cache of [...together, ...apart]) cache.dispose();
  model.dispose();
});

test("sequences joining and leaving a running batch get, greedy, exactly generate's tokens alone; decode steps share one forward", () => {
  const model = loadModel(makeTinyModel(SHAPE));
  const all = prompts(24);
  const alone = all.map((prompt, i) => generate(model, [prompt], optionsFor(i)));

  // Watch the forward passes: rows per batched decode step.
  const forward = model.forward.bind(model);
  const batchedRows: number[] = [];
  model.forward = (ids: Tensor, options?: ForwardOptions) => {
    if (options?.cache instanceof RowCaches) batchedRows.push(ids.shape[0]!);
    return forward(ids, options);
  };

  const before = liveTensors();
  manualSeed(3);
  const batch = new DecodeBatch(model, { prefillTokensPerStep: 64 });
  const joined: { index: number; sequence: DecodeSequence }[] = [];
  const join = (from: number, to: number) => {
    for (let i = from; i < to; i++) joined.push({ index: i, sequence: batch.add(all[i]!, optionsFor(i)) });
  };
  // A sampled sequence runs beside the greedy ones with its own settings.
  const sampled = batch.add(all[0]!, { doSample: true, temperature: 0.7, topK: 20, maxNewTokens: 12, eosTokenId: [2] });
  join(0, 6);
  let leftEarly: DecodeSequence | null = null;
  for (let step = 0; batch.busy; step++) {
    if (step === 3) join(6, 24); // 18 more join a running batch: more than one forward's rows
    if (step === 5) {
      leftEarly = joined[1]!.sequence; // a client gone: its sequence leaves mid-answer
      leftEarly.close();
    }
    batch.step();
    assert.ok(step < 500, "the batch finishes");
  }
  for (const { index, sequence } of joined) {
    if (sequence === leftEarly) continue;
    assert.equal(sequence.error, null);
    assert.deepEqual(sequence.tokens, alone[index]!.sequences[0], `sequence ${index}`);
    assert.equal(sequence.finishReason, alone[index]!.finishReasons[0], `sequence ${index}`);
  }
  assert.ok(leftEarly!.tokens.length < alone[1]!.sequences[0]!.length, "the closed sequence stopped");
  assert.ok(sampled.tokens.length > 0 && sampled.done);
  // Decode steps ran many sequences per forward, at most INVARIANT_ROWS each.
  assert.ok(Math.max(...batchedRows) === INVARIANT_ROWS, `rows per forward: ${batchedRows.join(",")}`);
  assert.ok(batchedRows.filter((rows) => rows > 1).length > 5);
  for (const { sequence } of joined) sequence.close();
  sampled.close();
  assert.equal(batch.size, 0);
  assert.equal(liveTensors(), before, "every KV cache freed");
  model.dispose();
});

test("a sliding window that becomes active, or dynamic RoPE, decodes that sequence alone (still generate's tokens)", () => {
  const model = loadModel(makeTinyModel({ ...SHAPE, use_sliding_window: true, sliding_window: 12 }));
  const all = prompts(4).map((prompt) => prompt.slice(0, 6));
  const options: GenerateOptions = { doSample: false, maxNewTokens: 10, eosTokenId: [], prefillChunk: 8 };
  const alone = all.map((prompt) => generate(model, [prompt], options).sequences[0]);
  const batch = new DecodeBatch(model);
  const sequences = all.map((prompt) => batch.add(prompt, options));
  assert.ok(sequences.every((sequence) => !sequence.batchable), "prompt + answer pass the window");
  while (batch.busy) batch.step();
  assert.deepEqual(sequences.map((sequence) => sequence.tokens), alone);
  for (const sequence of sequences) sequence.close();
  model.dispose();
});

test("settings generate refuses are refused when a sequence joins; beam search is not batched", () => {
  const model = loadModel(makeTinyModel(SHAPE));
  const batch = new DecodeBatch(model);
  assert.throws(() => batch.add([5, 6], { doSample: true, temperature: 0 }), /temperature must be > 0/);
  assert.throws(() => batch.add([5, 6], { numBeams: 2 }), /beam search/);
  assert.throws(() => batch.add([], {}), /no tokens/);
  assert.equal(batch.size, 0);
  model.dispose();
});
