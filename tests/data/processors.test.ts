// Stage processors and collators: LLaMA-Factory's infer_seqlen and collator golden vectors, exact
// label masks built from independently encoded text, cutoff truncation, packing lengths, and the
// pairwise / KTO / unsupervised / pre-training layouts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { getTemplate } from "../../src/data/templates/index.ts";
import { collateFeedback, collatePairwise, collateSupervised, neatPackingAllowed } from "../../src/data/processors/collator.ts";
import { processFeedback } from "../../src/data/processors/feedback.ts";
import { processPairwise } from "../../src/data/processors/pairwise.ts";
import { processPretrain } from "../../src/data/processors/pretrain.ts";
import { processPackedSupervised, processSupervised } from "../../src/data/processors/supervised.ts";
import { processUnsupervised } from "../../src/data/processors/unsupervised.ts";
import { greedyKnapsack, inferSeqlen } from "../../src/data/processors/utils.ts";
import { type AlignedExample, IGNORE_INDEX, type Message } from "../../src/data/types.ts";
import { QWEN3_TOKENIZER_DIR } from "../fixtures/tokenizers.ts";

const base = loadTokenizer(QWEN3_TOKENIZER_DIR);
const tokenizer = base.clone();
const qwen = getTemplate("qwen", tokenizer);
const enc = (text: string) => tokenizer.encode(text, { addSpecialTokens: false });
const masked = (ids: number[]) => ids.map(() => IGNORE_INDEX);

const user = (content: string): Message => ({ role: "user", content });
const assistant = (content: string): Message => ({ role: "assistant", content });
function sft(prompt: Message[], answer: string, system = "You are terse."): AlignedExample {
  return { _prompt: prompt, _response: [assistant(answer)], _system: system, _tools: "" };
}

const TWO_TURNS = sft([user("Hi!"), assistant("Hello."), user("2+2?")], "4");
const S1 = enc("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
const T1 = enc("Hello.<|im_end|>\n");
const S2 = enc("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
const T2 = enc("4<|im_end|>\n");

describe("infer_seqlen and greedy knapsack", () => {
  test("LLaMA-Factory's golden vectors", () => {
    const cases: Array<[number, number, number, [number, number]]> = [
      [3000, 2000, 1000, [600, 400]],
      [2000, 3000, 1000, [400, 600]],
      [1000, 100, 1000, [900, 100]],
      [100, 1000, 1000, [100, 900]],
      [100, 500, 1000, [100, 500]],
      [500, 100, 1000, [500, 100]],
      [10, 10, 1000, [10, 10]],
    ];
    for (const [source, target, cutoff, expected] of cases) assert.deepEqual(inferSeqlen(source, target, cutoff), expected);
  });

  test("reserved_label_len keeps at least that many answer tokens", () => {
    assert.deepEqual(inferSeqlen(3000, 2000, 1000, 500), [500, 500]);
  });

  test("bins take the largest length that still fits", () => {
    assert.deepEqual(greedyKnapsack([3, 5, 2, 9, 4], 10), [[9], [5, 4], [3, 2]]);
  });
});

describe("supervised", () => {
  test("labels: prompt masked, answers and their EOS trained", () => {
    const { rows, dropped } = processSupervised([TWO_TURNS], { template: qwen, tokenizer, cutoffLen: 1024 });
    assert.deepEqual(dropped, []);
    assert.deepEqual(rows[0]!.input_ids, [...S1, ...T1, ...S2, ...T2]);
    assert.deepEqual(rows[0]!.labels, [...masked(S1), ...T1, ...masked(S2), ...T2]);
    assert.deepEqual(rows[0]!.attention_mask, rows[0]!.input_ids.map(() => 1));
    assert.equal(T2[T2.length - 2], tokenizer.eosTokenId);
  });

  test("train_on_prompt trains everything; mask_history only the last answer", () => {
    const all = processSupervised([TWO_TURNS], { template: qwen, tokenizer, cutoffLen: 1024, trainOnPrompt: true }).rows[0]!;
    assert.deepEqual(all.labels, all.input_ids);
    const last = processSupervised([TWO_TURNS], { template: qwen, tokenizer, cutoffLen: 1024, maskHistory: true }).rows[0]!;
    assert.deepEqual(last.input_ids, [...S1, ...T1, ...S2, ...T2]);
    assert.deepEqual(last.labels, [...masked(S1), ...masked(T1), ...masked(S2), ...T2]);
  });

  test("efficient EOS: the EOS of an answer is taught at the next prompt's first token, and once at the end", () => {
    const glmTokenizer = base.clone();
    const falcon = getTemplate("falcon", glmTokenizer);
    const eos = glmTokenizer.eosTokenId!;
    const e = (text: string) => glmTokenizer.encode(text, { addSpecialTokens: false });
    const example = sft([user("Hi!"), assistant("Hello."), user("2+2?")], "4", "");
    const row = processSupervised([example], { template: falcon, tokenizer: glmTokenizer, cutoffLen: 1024 }).rows[0]!;
    const [s1, t1, s2, t2] = [e("User: Hi!\nFalcon:"), e("Hello.\n"), e("User: 2+2?\nFalcon:"), e("4\n")];
    assert.deepEqual(row.input_ids, [...s1, ...t1, ...s2, ...t2, eos]);
    assert.deepEqual(row.labels, [...masked(s1), ...t1, eos, ...masked(s2).slice(1), ...t2, eos]);
  });

  test("cutoff_len: each turn is split by infer_seqlen within what is left", () => {
    const cutoff = S1.length + 3;
    const row = processSupervised([TWO_TURNS], { template: qwen, tokenizer, cutoffLen: cutoff }).rows[0]!;
    const [sourceLen, targetLen] = inferSeqlen(S1.length, T1.length, cutoff);
    assert.equal(row.input_ids.length, sourceLen + targetLen);
    assert.ok(row.input_ids.length <= cutoff);
    assert.deepEqual(row.input_ids, [...S1.slice(0, sourceLen), ...T1.slice(0, targetLen)]);
  });

  test("invalid examples are dropped with a reason", () => {
    const even: AlignedExample = { _prompt: [user("a"), assistant("b")], _response: [assistant("c")], _system: "", _tools: "" };
    const none: AlignedExample = { _prompt: [user("a")], _response: [], _system: "", _tools: "" };
    const { rows, dropped } = processSupervised([even, TWO_TURNS, none], { template: qwen, tokenizer, cutoffLen: 1024 });
    assert.equal(rows.length, 1);
    assert.deepEqual(dropped.map((entry) => entry.index), [0, 2]);
  });
});

describe("packed supervised", () => {
  const short = sft([user("a")], "b", "");
  const shortLength = processSupervised([short], { template: qwen, tokenizer, cutoffLen: 1024 }).rows[0]!.input_ids.length;
  const twoLength = processSupervised([TWO_TURNS], { template: qwen, tokenizer, cutoffLen: 1024 }).rows[0]!.input_ids.length;

  test("rows are cutoff_len + 1 long; positions restart per example; long examples truncated to a bin of their own", () => {
    const cutoffLen = twoLength + shortLength;
    const long = sft([user("x".repeat(4000))], "y");
    const { rows, dropped } = processPackedSupervised([short, TWO_TURNS, short, long], { template: qwen, tokenizer, cutoffLen });
    assert.deepEqual(dropped, []);
    assert.equal(rows.length, 3);
    for (const row of rows) {
      assert.equal(row.input_ids.length, cutoffLen + 1);
      assert.equal(row.labels.length, cutoffLen + 1);
      assert.equal(row.position_ids.length, cutoffLen + 1);
      assert.ok(row.attention_mask.every((value) => value === 1));
    }
    // Bins: the truncated long example; the two-turn one with a short one; the other short one.
    assert.deepEqual(rows[0]!.position_ids.slice(cutoffLen - 1), [cutoffLen - 1, 0]);
    assert.deepEqual(rows[1]!.position_ids.slice(twoLength - 1, twoLength + 2), [twoLength - 1, 0, 1]);
    assert.equal(rows[1]!.input_ids[cutoffLen], tokenizer.padTokenId);
    assert.equal(rows[1]!.labels[cutoffLen], IGNORE_INDEX);
    assert.equal(rows[2]!.input_ids.filter((id) => id === tokenizer.padTokenId).length, cutoffLen + 1 - shortLength);
  });

  test("neat packing numbers the sub-sequences and masks padding", () => {
    const cutoffLen = 2 * shortLength + 3;
    const { rows } = processPackedSupervised([short, short], { template: qwen, tokenizer, cutoffLen, neatPacking: true });
    assert.equal(rows.length, 1);
    const expected = [...new Array(shortLength).fill(1), ...new Array(shortLength).fill(2), 0, 0, 0, 0];
    assert.deepEqual(rows[0]!.attention_mask, expected);
    assert.deepEqual(rows[0]!.sequence_boundaries, [0, shortLength, 2 * shortLength, cutoffLen + 1]);
    const allowed = neatPackingAllowed([1, 1, 2, 2, 0]);
    assert.deepEqual(allowed, [
      [true, false, false, false, false],
      [true, true, false, false, false],
      [false, false, true, false, false],
      [false, false, true, true, false],
      [false, false, false, false, false],
    ]);
  });
});

describe("other stages", () => {
  test("pretrain: EOS after each document, packed into cutoff_len blocks, remainder dropped", () => {
    const docs: AlignedExample[] = ["first document", "second one"].map((text) => ({ _prompt: [{ role: "user", content: text }], _response: [], _system: "", _tools: "" }));
    const all = [...enc("first document<|im_end|>"), ...enc("second one<|im_end|>")];
    const { rows } = processPretrain(docs, { tokenizer, cutoffLen: 3, packing: true });
    assert.equal(rows.length, Math.floor(all.length / 3));
    assert.deepEqual(rows.flatMap((row) => row.input_ids), all.slice(0, rows.length * 3));
    assert.deepEqual(rows[0]!.labels, rows[0]!.input_ids);
    const unpacked = processPretrain(docs, { tokenizer, cutoffLen: 3, packing: false }).rows;
    assert.deepEqual(unpacked.map((row) => row.input_ids), [enc("first document<|im_end|>").slice(0, 3), enc("second one<|im_end|>").slice(0, 3)]);
  });

  test("unsupervised: prompt with the generation prompt in, reference answer as labels", () => {
    const row = processUnsupervised([TWO_TURNS], { template: qwen, tokenizer, cutoffLen: 1024 }).rows[0]!;
    assert.deepEqual(row.input_ids, [...S1, ...T1, ...S2]);
    assert.deepEqual(row.labels, T2);
  });

  test("pairwise: shared prompt, both answers trained, one truncation budget", () => {
    const example: AlignedExample = { _prompt: [user("2+2?")], _response: [assistant("4"), assistant("five, I think")], _system: "You are terse.", _tools: "" };
    const row = processPairwise([example], { template: qwen, tokenizer, cutoffLen: 1024 }).rows[0]!;
    const prompt = enc("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
    const chosen = enc("4<|im_end|>\n");
    const rejected = enc("five, I think<|im_end|>\n");
    assert.deepEqual(row.chosen_input_ids, [...prompt, ...chosen]);
    assert.deepEqual(row.chosen_labels, [...masked(prompt), ...chosen]);
    assert.deepEqual(row.rejected_labels, [...masked(prompt), ...rejected]);
    const cut = processPairwise([example], { template: qwen, tokenizer, cutoffLen: prompt.length + 2 }).rows[0]!;
    const [sourceLen, targetLen] = inferSeqlen(prompt.length, rejected.length, prompt.length + 2);
    assert.equal(cut.chosen_input_ids.length, sourceLen + Math.min(targetLen, chosen.length));
    assert.equal(cut.rejected_input_ids.length, sourceLen + targetLen);
  });

  test("feedback (KTO): tags from which response is filled; KL completion from the previous example", () => {
    const good: AlignedExample = { _prompt: [user("2+2?")], _response: [assistant("4"), assistant("")], _system: "", _tools: "" };
    const bad: AlignedExample = { _prompt: [user("3+3?")], _response: [assistant(""), assistant("7")], _system: "", _tools: "" };
    const { rows } = processFeedback([good, bad], { template: qwen, tokenizer, cutoffLen: 1024 });
    assert.deepEqual(rows.map((row) => row.kto_tags), [true, false]);
    const sys = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";
    assert.equal(tokenizer.decode(rows[0]!.input_ids), `${sys}<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n`);
    assert.equal(tokenizer.decode(rows[0]!.kl_input_ids), `${sys}<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n7<|im_end|>\n`);
    assert.equal(tokenizer.decode(rows[1]!.kl_input_ids), `${sys}<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n`);
  });
});

describe("collators", () => {
  test("pad_to_multiple_of 8: LLaMA-Factory's collator vector", () => {
    const rows = [
      { input_ids: [0, 1, 2, 3, 4, 5], attention_mask: [1, 1, 1, 1, 1, 1], labels: [0, 1, 2, 3, 4, 5] },
      { input_ids: [6, 7], attention_mask: [1, 1], labels: [6, 7] },
    ];
    const batch = collateSupervised(rows, { padTokenId: 0, padToMultipleOf: 8 });
    assert.deepEqual(batch.input_ids, [[0, 1, 2, 3, 4, 5, 0, 0], [6, 7, 0, 0, 0, 0, 0, 0]]);
    assert.deepEqual(batch.attention_mask, [[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]]);
    assert.deepEqual(batch.labels, [[0, 1, 2, 3, 4, 5, -100, -100], [6, 7, -100, -100, -100, -100, -100, -100]]);
  });

  test("left padding, pad-id labels without ignore_pad_token_for_loss", () => {
    const batch = collateSupervised([{ input_ids: [5], attention_mask: [1], labels: [5] }, { input_ids: [6, 7], attention_mask: [1, 1], labels: [6, 7] }], {
      padTokenId: 9,
      labelPadTokenId: 9,
      paddingSide: "left",
    });
    assert.deepEqual(batch.input_ids, [[9, 5], [6, 7]]);
    assert.deepEqual(batch.attention_mask, [[0, 1], [1, 1]]);
    assert.deepEqual(batch.labels, [[9, 5], [6, 7]]);
  });

  test("pairwise batches put chosen rows first; KTO batches carry the KL rows", () => {
    const example: AlignedExample = { _prompt: [user("q")], _response: [assistant("a"), assistant("bb")], _system: "", _tools: "" };
    const pairs = processPairwise([example, example], { template: qwen, tokenizer, cutoffLen: 1024 }).rows;
    const batch = collatePairwise(pairs, { padTokenId: tokenizer.padTokenId! });
    assert.equal(batch.input_ids.length, 4);
    assert.deepEqual(batch.input_ids[0]!.slice(0, pairs[0]!.chosen_input_ids.length), pairs[0]!.chosen_input_ids);
    assert.deepEqual(batch.input_ids[2]!, pairs[0]!.rejected_input_ids);
    const kto: AlignedExample = { _prompt: [user("q")], _response: [assistant("a"), assistant("")], _system: "", _tools: "" };
    const feedback = collateFeedback(processFeedback([kto, kto], { template: qwen, tokenizer, cutoffLen: 1024 }).rows, { padTokenId: 0 });
    assert.equal(feedback.kl_input_ids.length, 2);
    assert.deepEqual(feedback.kto_tags, [true, true]);
  });
});
