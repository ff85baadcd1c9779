// Generation (src/model/generation.ts, src/model/logits_process.ts) on a tiny random checkpoint:
// against naive loops of full forwards written here, hand-computed warper outputs, the closed-form
// repetition penalty, and a PyTorch greedy loop (tests/reference/greedy_reference.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { generate, generateSteps, generateStream, loadGenerationConfig } from "../../src/model/generation.ts";
import { applyRepetitionPenalty, applyTemperature, applyTopK, applyTopP } from "../../src/model/logits_process.ts";
import { loadModel } from "../../src/model/loader.ts";
import { liveTensors, manualSeed, noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;
const folder = makeTinyModel();
const model = loadModel(folder);
const NO_EOS = { eosTokenId: [] as number[], padTokenId: 0 };
const PROMPTS = [
  [1, 17, 42, 8, 91],
  [1, 9, 33],
  [1, 70, 5, 45, 18, 81, 64],
];

/** Last-position logits [V] of one full forward over `ids` (no cache, no padding). */
function lastLogits(ids: number[]): number[] {
  return tidy(() => noGrad(() => model.forward(tensor([ids])).select(1, ids.length - 1).select(0, 0).toFlatArray()));
}

function argmax(values: number[]): number {
  return values.reduce((best, v, i) => (v > values[best]! ? i : best), 0);
}

/** Greedy decoding written out: a full forward per step and argmax of the last position. */
function naiveGreedy(prompt: number[], steps: number): number[] {
  const ids = [...prompt];
  for (let i = 0; i < steps; i++) ids.push(argmax(lastLogits(ids)));
  return ids.slice(prompt.length);
}

/** Sum of log-probs of `continuation` after `prompt`, divided by length ^ lengthPenalty. */
function sequenceScore(prompt: number[], continuation: number[], lengthPenalty: number): number {
  const ids = [...prompt, ...continuation];
  const logprobs = tidy(() => noGrad(() => model.forward(tensor([ids])).logSoftmax(-1).select(0, 0).toArray())) as number[][];
  let sum = 0;
  continuation.forEach((token, i) => (sum += logprobs[prompt.length - 1 + i]![token]!));
  return sum / continuation.length ** lengthPenalty;
}

function assertClose(actual: number[], expected: number[], tolerance = 1e-6): void {
  assert.equal(actual.length, expected.length);
  actual.forEach((a, i) => {
    const e = expected[i]!;
    if (a === e) return;
    assert.ok(Math.abs(a - e) <= tolerance, `at ${i}: ${a} vs ${e}`);
  });
}

test("greedy with the KV cache equals greedy without it and a naive loop of full forwards", () => {
  const withCache = generate(model, [PROMPTS[0]!], { maxNewTokens: 12, ...NO_EOS });
  const withoutCache = generate(model, [PROMPTS[0]!], { maxNewTokens: 12, useKvCache: false, ...NO_EOS });
  const naive = naiveGreedy(PROMPTS[0]!, 12);
  assert.deepEqual(withCache.sequences[0], naive);
  assert.deepEqual(withoutCache.sequences[0], naive);
  assert.deepEqual(withCache.finishReasons, ["length"]);
  // The tiny model must not be degenerate, or the comparison proves little.
  assert.ok(new Set(naive).size > 2, `greedy output ${naive}`);
});

test("a left-padded batch gives each prompt what it gets alone, with and without the cache", () => {
  const alone = PROMPTS.map((prompt) => generate(model, [prompt], { maxNewTokens: 10, ...NO_EOS }).sequences[0]!);
  for (const useKvCache of [true, false]) {
    const batched = generate(model, PROMPTS, { maxNewTokens: 10, useKvCache, ...NO_EOS });
    assert.deepEqual(batched.sequences, alone);
    assert.deepEqual(batched.finishReasons, ["length", "length", "length"]);
  }
});

test("a row that stops is padded while the others continue", () => {
  const alone = PROMPTS.map((prompt) => generate(model, [prompt], { maxNewTokens: 10, ...NO_EOS }).sequences[0]!);
  // A stop token that the first prompt produces at its 3rd step and the others produce later or never.
  const stop = alone[0]![2]!;
  const expected = alone.map((row) => (row.includes(stop) ? row.slice(0, row.indexOf(stop) + 1) : row));
  const batched = generate(model, PROMPTS, { maxNewTokens: 10, eosTokenId: [stop], padTokenId: 0 });
  assert.deepEqual(batched.sequences, expected);
  assert.deepEqual(
    batched.finishReasons,
    expected.map((row) => (row.includes(stop) ? "stop" : "length")),
  );
  assert.equal(batched.sequences[0]!.length, 3);
  assert.equal(batched.finishReasons[0], "stop");
});

test("stopping: eos (number or list), maxNewTokens, maxLength, and maxNewTokens winning", () => {
  const greedy = naiveGreedy(PROMPTS[0]!, 6);
  const eos = greedy[3]!;
  const cut = greedy.indexOf(eos) + 1;
  const single = generate(model, [PROMPTS[0]!], { maxNewTokens: 6, eosTokenId: eos });
  assert.deepEqual(single.sequences[0], greedy.slice(0, cut));
  assert.deepEqual(single.finishReasons, ["stop"]);
  const listed = generate(model, [PROMPTS[0]!], { maxNewTokens: 6, eosTokenId: [95, eos] });
  assert.deepEqual(listed.sequences[0], greedy.slice(0, cut));
  const byNew = generate(model, [PROMPTS[0]!], { maxNewTokens: 5, ...NO_EOS });
  assert.deepEqual(byNew.sequences[0], greedy.slice(0, 5));
  assert.deepEqual(byNew.finishReasons, ["length"]);
  const byLength = generate(model, [PROMPTS[0]!], { maxLength: PROMPTS[0]!.length + 4, ...NO_EOS });
  assert.deepEqual(byLength.sequences[0], greedy.slice(0, 4));
  const both = generate(model, [PROMPTS[0]!], { maxNewTokens: 2, maxLength: 100, ...NO_EOS });
  assert.deepEqual(both.sequences[0], greedy.slice(0, 2));
  // HF's default max_length is 20 tokens in total.
  assert.equal(generate(model, [PROMPTS[0]!], NO_EOS).sequences[0]!.length, 20 - PROMPTS[0]!.length);
});

test("temperature, top-k and top-p match hand-computed results", () => {
  tidy(() => {
    const logits = tensor([[1, 2, 3, 0.5, -1]], { dtype: "float32" });
    assertClose(applyTemperature(logits, 2).toFlatArray(), [0.5, 1, 1.5, 0.25, -0.5]);
    assert.deepEqual(applyTopK(logits, 2).toFlatArray(), [-Infinity, 2, 3, -Infinity, -Infinity]);
    // Ties with the k-th score are kept, as HF's `scores < kth` does.
    assert.deepEqual(applyTopK(tensor([[1, 2, 2, 0]], { dtype: "float32" }), 1).toFlatArray(), [-Infinity, 2, 2, -Infinity]);
    // k larger than the vocabulary keeps everything.
    assert.deepEqual(applyTopK(logits, 50).toFlatArray(), [1, 2, 3, 0.5, -1]);
    // probs 0.5, 0.3, 0.15, 0.05: ascending cumulative 0.05, 0.2, 0.5, 1; top_p 0.75 drops those ≤ 0.25.
    const probs = [0.5, 0.3, 0.15, 0.05];
    const logProbs = tensor([probs.map(Math.log)], { dtype: "float32" });
    const kept = applyTopP(logProbs, 0.75).toFlatArray();
    assert.deepEqual(kept.map(Number.isFinite), [true, true, false, false]);
    assertClose(kept.slice(0, 2), probs.slice(0, 2).map(Math.log));
    // A tiny top_p still keeps the most likely token (min_tokens_to_keep = 1).
    assert.deepEqual(applyTopP(logProbs, 0.01).toFlatArray().map(Number.isFinite), [true, false, false, false]);
    assert.deepEqual(applyTopP(logProbs, 1).toFlatArray().map(Number.isFinite), [true, true, true, true]);
    // Rows are independent.
    const two = tensor([probs.map(Math.log), [...probs].reverse().map(Math.log)], { dtype: "float32" });
    assert.deepEqual(applyTopP(two, 0.75).toFlatArray().map(Number.isFinite), [true, true, false, false, false, false, true, true]);
  });
});

test("repetition penalty divides positive and multiplies negative scores of seen tokens", () => {
  tidy(() => {
    const logits = tensor([[2, -2, 1, 0.5], [2, -2, 1, 0.5]], { dtype: "float32" });
    const penalized = applyRepetitionPenalty(logits, [[0, 1, 1], [3]], 2).toFlatArray();
    assertClose(penalized, [1, -4, 1, 0.5, 2, -2, 1, 0.25]);
    assert.deepEqual(applyRepetitionPenalty(logits, [[0], [1]], 1).toFlatArray(), logits.toFlatArray());
  });
  // In generation: greedy under the penalty equals a naive loop applying the closed form.
  const penalty = 1.8;
  const prompt = PROMPTS[1]!;
  const ids = [...prompt];
  for (let i = 0; i < 8; i++) {
    const seen = new Set(ids);
    const scores = lastLogits(ids).map((s, token) => (seen.has(token) ? (s < 0 ? s * penalty : s / penalty) : s));
    ids.push(argmax(scores));
  }
  const ours = generate(model, [prompt], { maxNewTokens: 8, repetitionPenalty: penalty, ...NO_EOS });
  assert.deepEqual(ours.sequences[0], ids.slice(prompt.length));
});

test("sampling is reproducible under manualSeed and never leaves the top k", () => {
  const options = { doSample: true, topK: 3, temperature: 0.9, maxNewTokens: 16, ...NO_EOS };
  manualSeed(123);
  const first = generate(model, PROMPTS, options);
  manualSeed(123);
  const second = generate(model, PROMPTS, options);
  assert.deepEqual(first.sequences, second.sequences);
  manualSeed(123);
  const streamed = [...generateStream(model, PROMPTS[0]!, options)];
  assert.equal(streamed.length, 16);
  PROMPTS.forEach((prompt, b) => {
    const ids = [...prompt];
    for (const token of first.sequences[b]!) {
      const scores = lastLogits(ids);
      const kth = [...scores].sort((x, y) => y - x)[2]!;
      assert.ok(scores[token]! >= kth, `token ${token} is outside the top 3`);
      ids.push(token);
    }
  });
  // Sampling explores: over all rows it does not just reproduce greedy.
  const greedy = generate(model, PROMPTS, { maxNewTokens: 16, ...NO_EOS });
  assert.notDeepEqual(first.sequences, greedy.sequences);
  // top_k = 1 sampling is greedy.
  const topOne = generate(model, PROMPTS, { ...options, topK: 1 });
  assert.deepEqual(topOne.sequences, greedy.sequences);
  // So is sampling with a top_p so small that only the most likely token survives.
  const nucleus = generate(model, PROMPTS, { ...options, topK: 0, topP: 1e-6 });
  assert.deepEqual(nucleus.sequences, greedy.sequences);
});

test("streaming yields the same tokens as generate and returns the finish reason", () => {
  const greedy = generate(model, [PROMPTS[2]!], { maxNewTokens: 7, ...NO_EOS });
  const stream = generateStream(model, PROMPTS[2]!, { maxNewTokens: 7, ...NO_EOS });
  const tokens: number[] = [];
  let next = stream.next();
  while (!next.done) {
    tokens.push(next.value);
    next = stream.next();
  }
  assert.deepEqual(tokens, greedy.sequences[0]);
  assert.equal(next.value, "length");
  const eos = tokens[1]!;
  assert.deepEqual([...generateStream(model, PROMPTS[2]!, { maxNewTokens: 7, eosTokenId: eos })], tokens.slice(0, tokens.indexOf(eos) + 1));
});

test("generateSteps runs one model step per next() and returns what generate returns", () => {
  let forwards = 0;
  const counted = new Proxy(model, { get: (target, key) => (key === "forward" ? (...args: Parameters<typeof model.forward>) => (forwards++, target.forward(...args)) : Reflect.get(target, key)) });
  const expected = generate(model, PROMPTS, { maxNewTokens: 6, ...NO_EOS });
  const steps = generateSteps(counted, PROMPTS, { maxNewTokens: 6, ...NO_EOS });
  const yielded: (number[] | null)[] = [];
  let next = steps.next();
  while (!next.done) {
    assert.equal(forwards, yielded.length + 1, "one forward per step");
    yielded.push(next.value);
    next = steps.next();
  }
  assert.deepEqual(next.value, expected);
  assert.deepEqual(
    yielded,
    expected.sequences[0]!.map((_, step) => expected.sequences.map((row) => row[step]!)),
  );
});

test("chunked prefill: the prompt in pieces gives greedy, sampled and beam answers equal to one prefill", () => {
  const long = Array.from({ length: 40 }, (_, i) => 1 + ((i * 37) % 95));
  const whole = generate(model, [long, long], { maxNewTokens: 8, ...NO_EOS });
  for (const prefillChunk of [1, 7, 16, 39, 40, 64]) {
    const steps = generateSteps(model, [long, long], { maxNewTokens: 8, prefillChunk, ...NO_EOS });
    let chunks = 0;
    let next = steps.next();
    for (; !next.done; next = steps.next()) if (next.value === null) chunks++;
    assert.deepEqual(next.value, whole, `prefillChunk ${prefillChunk}`);
    assert.equal(chunks, Math.ceil(long.length / prefillChunk) - 1, "all but the last piece are steps of their own");
  }
  assert.deepEqual(naiveGreedy(long, 8), whole.sequences[0]);
  manualSeed(3);
  const sampled = generate(model, [long], { maxNewTokens: 8, doSample: true, topK: 10, ...NO_EOS });
  manualSeed(3);
  assert.deepEqual(generate(model, [long], { maxNewTokens: 8, doSample: true, topK: 10, prefillChunk: 9, ...NO_EOS }), sampled);
  const beam = generate(model, [long], { maxNewTokens: 6, numBeams: 3, ...NO_EOS });
  const chunkedBeam = generate(model, [long], { maxNewTokens: 6, numBeams: 3, prefillChunk: 9, ...NO_EOS });
  assert.deepEqual(chunkedBeam.sequences, beam.sequences);
  assert.ok(Math.abs(chunkedBeam.scores![0]! - beam.scores![0]!) < 1e-5);
  assert.throws(() => generate(model, [long], { prefillChunk: 0 }), /prefillChunk must be a positive integer/);
});

test("maxTime (HF max_time) ends generation after the step in progress, as the token budget does", () => {
  const greedy = generate(model, [PROMPTS[0]!], { maxNewTokens: 8, ...NO_EOS });
  const timed = generate(model, [PROMPTS[0]!], { maxNewTokens: 8, maxTime: 0, timeOrigin: Date.now() - 1, ...NO_EOS });
  assert.deepEqual(timed, { sequences: [greedy.sequences[0]!.slice(0, 1)], finishReasons: ["length"] });
  assert.deepEqual(generate(model, [PROMPTS[0]!], { maxNewTokens: 8, maxTime: 60, ...NO_EOS }), greedy);
  // Beam search then finishes with its open beams, scored by their length so far.
  const beam = generate(model, [PROMPTS[0]!], { maxNewTokens: 8, numBeams: 3, maxTime: 0, timeOrigin: Date.now() - 1, ...NO_EOS });
  assert.equal(beam.sequences[0]!.length, 1);
  assert.deepEqual(beam.finishReasons, ["length"]);
  assert.ok(Math.abs(sequenceScore(PROMPTS[0]!, beam.sequences[0]!, 1) - beam.scores![0]!) < 1e-4);
});

test("beam search: one beam is greedy; more beams score at least as well as greedy", () => {
  const greedy = generate(model, [PROMPTS[0]!], { maxNewTokens: 8, ...NO_EOS });
  assert.deepEqual(generate(model, [PROMPTS[0]!], { maxNewTokens: 8, numBeams: 1, ...NO_EOS }).sequences, greedy.sequences);
  for (const lengthPenalty of [1, 0.5, 2]) {
    for (const prompt of PROMPTS) {
      const greedyTokens = generate(model, [prompt], { maxNewTokens: 8, ...NO_EOS }).sequences[0]!;
      const beam = generate(model, [prompt], { maxNewTokens: 8, numBeams: 4, lengthPenalty, ...NO_EOS });
      const noCache = generate(model, [prompt], { maxNewTokens: 8, numBeams: 4, lengthPenalty, useKvCache: false, ...NO_EOS });
      assert.deepEqual(noCache.sequences, beam.sequences);
      const beamScore = sequenceScore(prompt, beam.sequences[0]!, lengthPenalty);
      assert.ok(Math.abs(beamScore - beam.scores![0]!) < 1e-4, `reported ${beam.scores![0]} vs recomputed ${beamScore}`);
      assert.ok(beamScore >= sequenceScore(prompt, greedyTokens, lengthPenalty) - 1e-5);
    }
  }
});

test("beam search with stop tokens returns finished hypotheses scored by their own length", () => {
  for (const prompt of PROMPTS) {
    const unconstrained = generate(model, [prompt], { maxNewTokens: 6, numBeams: 3, ...NO_EOS }).sequences[0]!;
    // Make a token that the best beam produces a stop token: the search must be able to end there.
    const eos = unconstrained[2]!;
    const beam = generate(model, [prompt], { maxNewTokens: 6, numBeams: 3, eosTokenId: eos, lengthPenalty: 1 });
    const tokens = beam.sequences[0]!;
    assert.ok(tokens.length >= 1 && tokens.length <= 6);
    assert.equal(tokens.indexOf(eos), tokens.includes(eos) ? tokens.length - 1 : -1);
    assert.equal(beam.finishReasons[0], tokens.includes(eos) ? "stop" : "length");
    assert.ok(Math.abs(sequenceScore(prompt, tokens, 1) - beam.scores![0]!) < 1e-4);
  }
});

test("generation leaves no tensor behind, including a stream left early", () => {
  generate(model, PROMPTS, { maxNewTokens: 2, ...NO_EOS });
  const before = liveTensors();
  generate(model, PROMPTS, { maxNewTokens: 6, ...NO_EOS });
  generate(model, PROMPTS, { maxNewTokens: 6, useKvCache: false, repetitionPenalty: 1.3, ...NO_EOS });
  manualSeed(1);
  generate(model, PROMPTS, { maxNewTokens: 6, doSample: true, topK: 5, topP: 0.9, temperature: 0.7, ...NO_EOS });
  generate(model, [PROMPTS[0]!], { maxNewTokens: 6, numBeams: 3, repetitionPenalty: 1.2, ...NO_EOS });
  for (const token of generateStream(model, PROMPTS[1]!, { maxNewTokens: 6, ...NO_EOS })) {
    if (token >= 0) break;
  }
  generate(model, [PROMPTS[2]!], { maxNewTokens: 3, prefillChunk: 2, numBeams: 2, ...NO_EOS });
  // A step-wise generation closed mid-prefill and mid-decoding, as the API does for a client that left.
  for (const stepsTaken of [1, 5]) {
    const steps = generateSteps(model, [PROMPTS[2]!], { maxNewTokens: 6, prefillChunk: 2, ...NO_EOS });
    for (let i = 0; i < stepsTaken; i++) steps.next();
    steps.return({ sequences: [], finishReasons: [] });
  }
  assert.equal(liveTensors(), before);
});

test("bad requests give one clear error", () => {
  assert.throws(() => generate(model, [[]], NO_EOS), /prompt has no tokens/);
  assert.throws(() => generate(model, [[1, 2]], { numBeams: 2, doSample: true }), /beam sampling/);
  assert.throws(() => generate(model, [[1, 2]], { doSample: true, temperature: 0 }), /temperature must be > 0/);
  assert.throws(() => generate(model, [[1, 2]], { doSample: true, topP: 0 }), /top_p/);
});

test("loadGenerationConfig reads generation_config.json with HF defaults and config.json fallbacks", () => {
  const bare = makeTinyModel();
  const defaults = loadGenerationConfig(bare);
  assert.deepEqual(defaults.eosTokenId, [2]);
  assert.equal(defaults.bosTokenId, 1);
  assert.equal(defaults.padTokenId, null);
  assert.equal(defaults.doSample, false);
  assert.equal(defaults.temperature, 1);
  assert.equal(defaults.topP, 1);
  assert.equal(defaults.topK, 50);
  assert.equal(defaults.maxLength, 20);
  assert.equal(defaults.maxNewTokens, null);
  writeFileSync(
    join(bare, "generation_config.json"),
    JSON.stringify({ eos_token_id: [2, 7], pad_token_id: 0, do_sample: true, temperature: 0.6, top_p: 0.9, top_k: 20, repetition_penalty: 1.1, max_new_tokens: 64 }),
  );
  const read = loadGenerationConfig(bare);
  assert.deepEqual(read.eosTokenId, [2, 7]);
  assert.equal(read.padTokenId, 0);
  assert.equal(read.doSample, true);
  assert.equal(read.temperature, 0.6);
  assert.equal(read.topP, 0.9);
  assert.equal(read.topK, 20);
  assert.equal(read.repetitionPenalty, 1.1);
  assert.equal(read.maxNewTokens, 64);
  writeFileSync(join(bare, "generation_config.json"), "{ not json");
  assert.throws(() => loadGenerationConfig(bare), /generation_config\.json/);
});

test("greedy token ids match a PyTorch greedy loop", { skip: !hasTorch && "python3-torch not installed" }, () => {
  const out = execFileSync("/usr/bin/python3", ["tests/reference/greedy_reference.py"], {
    input: JSON.stringify({ folder, input_ids: PROMPTS, steps: 10 }),
  });
  const reference = JSON.parse(out.toString()).tokens as number[][];
  assert.deepEqual(generate(model, PROMPTS, { maxNewTokens: 10, ...NO_EOS }).sequences, reference);
});
