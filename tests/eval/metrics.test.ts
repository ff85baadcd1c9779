// Generation metrics against hand-computed values of LLaMA-Factory's ComputeSimilarity: NLTK
// sentence BLEU-4 with smoothing method3 on characters, rouge_chinese ROUGE-1/2/L F on words.
// No Python is available here, so each expected number is worked out in the comments.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  computeSimilarity,
  exampleSimilarity,
  numpyMean,
  pythonFsum,
  pythonRound4,
  rougeScores,
  segmentWords,
  sentenceBleu4,
  writeGeneratedPredictions,
} from "../../src/eval/metrics.ts";

const chars = (text: string) => Array.from(text);

test("BLEU-4: identical strings give 1 (100 after scaling)", () => {
  // Every p_n = 1 and c == r so BP = exp(1 - 8/8) = 1.
  assert.equal(sentenceBleu4(chars("abcdefgh"), chars("abcdefgh")), 1);
  assert.equal(exampleSimilarity("abcdefgh", "abcdefgh").bleu4, 100);
});

test("BLEU-4: no shared character gives 0 before any smoothing (NLTK returns early)", () => {
  // p_1 numerator is 0 -> sentence_bleu returns 0; method3 is never reached.
  assert.equal(sentenceBleu4(chars("wxyz"), chars("abcd")), 0);
  assert.equal(sentenceBleu4(chars("abcd"), []), 0);
  assert.equal(sentenceBleu4([], chars("abcd")), 0);
});

test("BLEU-4: one smoothed order, no brevity penalty", () => {
  // hyp "abcx", ref "abcd":
  //   1-grams a b c x      -> 3 clipped matches / 4
  //   2-grams ab bc cx     -> 2 / 3
  //   3-grams abc bcx      -> 1 / 2
  //   4-grams abcx         -> 0 / 1 -> method3, first zero order (k=1): 1 / (2^1 * 1) = 1/2
  //   c = r = 4 -> BP = exp(0) = 1
  //   BLEU = (3/4 * 2/3 * 1/2 * 1/2)^(1/4) = (1/8)^(1/4) = 2^(-3/4) = 0.5946035575013605
  assert.ok(Math.abs(sentenceBleu4(chars("abcd"), chars("abcx")) - 2 ** -0.75) < 1e-15);
  // ×100 = 59.46035575... -> round(., 4) = 59.4604
  assert.equal(exampleSimilarity("abcx", "abcd").bleu4, 59.4604);
});

test("BLEU-4: short hypothesis, two smoothed orders with denominator 1, brevity penalty", () => {
  // hyp "ab", ref "abcd":
  //   p1 = 2/2, p2 = 1/1
  //   p3: no 3-gram in hyp -> 0 / max(1, 0) = 0/1 -> k=1: 1/(2*1) = 1/2
  //   p4: 0/1 -> k=2: 1/(4*1) = 1/4
  //   c = 2 < r = 4 -> BP = exp(1 - 4/2) = e^-1
  //   BLEU = e^-1 * (1 * 1 * 1/2 * 1/4)^(1/4) = e^-1 * 2^(-3/4) = 0.218742424452152...
  const expected = Math.exp(-1) * 2 ** -0.75;
  assert.ok(Math.abs(sentenceBleu4(chars("abcd"), chars("ab")) - expected) < 1e-15);
  assert.equal(exampleSimilarity("ab", "abcd").bleu4, 21.8742);
});

test("BLEU-4: clipped counts and smoothing that divides by the n-gram count (small value)", () => {
  // hyp "aaaa", ref "ab":
  //   p1: 'a' ×4 in hyp, ×1 in ref -> clipped 1 / 4
  //   p2: 'aa' ×3, none in ref -> 0/3 -> k=1: 1/(2*3) = 1/6
  //   p3: 'aaa' ×2             -> 0/2 -> k=2: 1/(4*2) = 1/8
  //   p4: 'aaaa' ×1            -> 0/1 -> k=3: 1/(8*1) = 1/8
  //   c = 4 > r = 2 -> BP = 1
  //   BLEU = (1/4 * 1/6 * 1/8 * 1/8)^(1/4) = (1/1536)^(1/4) = 0.159735776061568...
  assert.ok(Math.abs(sentenceBleu4(chars("ab"), chars("aaaa")) - 1536 ** -0.25) < 1e-15);
  // ×100 = 15.97357760... -> 15.9736
  assert.equal(exampleSimilarity("aaaa", "ab").bleu4, 15.9736);
});

test("BLEU-4 runs on characters, so Chinese is scored per character", () => {
  // hyp "我爱北京" (4 chars) is a prefix of ref "我爱北京天安门" (7 chars): every p_n = 1,
  // BP = exp(1 - 7/4) = exp(-0.75) = 0.4723665527410147 -> 47.2367
  assert.equal(sentenceBleu4(chars("我爱北京天安门"), chars("我爱北京")), Math.exp(-0.75));
  assert.equal(exampleSimilarity("我爱北京", "我爱北京天安门").bleu4, 47.2367);
});

test("ROUGE-N counts distinct n-grams (rouge_chinese exclusive=True), ROUGE-L counts every word", () => {
  // hyp: the cat the cat sat (5 words), ref: the cat sat on the mat (6 words)
  // ROUGE-1 sets: H = {the, cat, sat} (3), R = {the, cat, sat, on, mat} (5), overlap 3
  //   p = 1, r = 3/5, f = 2 * (0.6 / (1.6 + 1e-8)) = 0.74999999531 -> 74.9999995 -> 75
  // ROUGE-2 sets: H = {the cat, cat the, cat sat} (3), R = {the cat, cat sat, sat on, on the, the mat} (5)
  //   overlap {the cat, cat sat} = 2 -> p = 2/3, r = 2/5, f = 2*(4/15)/(16/15) = 0.5 -> 50
  // ROUGE-L: LCS("the cat sat on the mat", "the cat the cat sat") = 3 ("the cat sat")
  //   p = 3/5 (all 5 hyp words), r = 3/6, f = 2 * 0.3 / 1.1 = 0.545454... -> 54.5455
  const words = (text: string) => text.split(" ");
  const scores = rougeScores(words("the cat the cat sat"), words("the cat sat on the mat"));
  assert.ok(Math.abs(scores.rouge1 - 2 * (0.6 / (1.6 + 1e-8))) < 1e-15);
  assert.ok(Math.abs(scores.rouge2 - 2 * ((2 / 3) * (2 / 5)) / (2 / 3 + 2 / 5 + 1e-8)) < 1e-15);
  assert.ok(Math.abs(scores.rougeL - 2 * (0.3 / (1.1 + 1e-8))) < 1e-15);
  const example = exampleSimilarity("the cat the cat sat", "the cat sat on the mat");
  assert.deepEqual([example.rouge1, example.rouge2, example.rougeL], [75, 50, 54.5455]);
});

test("ROUGE on Chinese uses Intl.Segmenter words, not characters", () => {
  assert.deepEqual(segmentWords("我爱北京天安门"), ["我", "爱", "北京", "天安门"]);
  // hyp words 我 爱 北京 天安门, ref words 我 爱 北京
  // ROUGE-1: overlap 3, p = 3/4, r = 1, f = 2*0.75/1.75 = 0.857142... -> 85.7143
  //   (on characters it would be p = 4/7, r = 1 -> 72.7273)
  // ROUGE-2: H = {我 爱, 爱 北京, 北京 天安门}, R = {我 爱, 爱 北京} -> p = 2/3, r = 1, f = 0.8 -> 80
  // ROUGE-L: LCS 3 -> same p, r as ROUGE-1 -> 85.7143
  const example = exampleSimilarity("我爱北京天安门", "我爱北京");
  assert.deepEqual([example.rouge1, example.rouge2, example.rougeL], [85.7143, 80, 85.7143]);
});

test("segmentation cuts non-Chinese text the way jieba does", () => {
  assert.deepEqual(segmentWords("it's e.g. 3.14 C++ café 50%"), [
    "it", "'", "s", " ", "e", ".", "g", ".", " ", "3.14", " ", "C", "+", "+", " ", "caf", "é", " ", "50%",
  ]);
  assert.deepEqual(segmentWords("今天天气很好。我们去公园吧！"), ["今天", "天气", "很好", "。", "我们", "去", "公园", "吧", "！"]);
});

test("an empty or blank prediction scores 0 on ROUGE (LLaMA-Factory's special case) and on BLEU", () => {
  assert.deepEqual(exampleSimilarity("", "我爱北京"), { rouge1: 0, rouge2: 0, rougeL: 0, bleu4: 0 });
  assert.deepEqual(rougeScores(segmentWords("  \n "), segmentWords("abc")), { rouge1: 0, rouge2: 0, rougeL: 0 });
  assert.deepEqual(rougeScores(segmentWords("abc"), segmentWords("")), { rouge1: 0, rouge2: 0, rougeL: 0 });
});

test("computeSimilarity rounds each example to 4 decimals, then takes the mean, under predict_ keys", () => {
  // Example 1: "abcx" vs "abcd": one word each, different -> ROUGE 0/0/0; BLEU 59.4604 (above).
  // Example 2: "abcdefgh" vs itself, a single word: ROUGE-1 f = 2*(1/(2+1e-8)) -> 99.9999995 -> 100,
  //   ROUGE-2 has no bigram on either side -> p = r = 0 -> 0, ROUGE-L 100, BLEU 100.
  const metrics = computeSimilarity(["abcx", "abcdefgh"], ["abcd", "abcdefgh"]);
  assert.deepEqual(metrics, {
    "predict_rouge-1": 50,
    "predict_rouge-2": 0,
    "predict_rouge-l": 50,
    "predict_bleu-4": (59.4604 + 100) / 2,
  });
  assert.throws(() => computeSimilarity(["a"], []));
});

test("Python's round, math.fsum and numpy's pairwise mean are reproduced", () => {
  // 0.03125 and 0.09375 are exact binary ties at 4 decimals: Python rounds them half-to-even.
  assert.equal(pythonRound4(0.03125), 0.0312);
  assert.equal(pythonRound4(0.09375), 0.0938);
  assert.equal(pythonRound4(59.46035575013605), 59.4604);
  assert.equal(pythonFsum([1e100, 1, -1e100]), 1);
  // numpy sums 10 × 0.1 pairwise to exactly 1.0 (a left-to-right sum gives 0.9999999999999999).
  assert.equal(numpyMean(new Array<number>(10).fill(0.1)), 0.1);
});

test("generated_predictions.jsonl is Python json.dumps(ensure_ascii=False) per line, raw UTF-8", () => {
  const dir = mkdtempSync(join(tmpdir(), "lmf-predictions-"));
  const rows = [
    { prompt: "用户：你好\n助手：", predict: "你好！有什么\"可以\"帮你？", label: "你好 😀" },
    { prompt: "tab\there", predict: "", label: "back\\slash" },
  ];
  const path = writeGeneratedPredictions(dir, rows);
  assert.equal(path, join(dir, "generated_predictions.jsonl"));
  const text = readFileSync(path, "utf8");
  assert.equal(
    text.split("\n")[0],
    '{"prompt": "用户：你好\\n助手：", "predict": "你好！有什么\\"可以\\"帮你？", "label": "你好 😀"}',
  );
  // Non-ASCII stays raw UTF-8 bytes, never \uXXXX escapes.
  assert.ok(!text.includes("\\u"));
  assert.ok(readFileSync(path).includes(Buffer.from("你好 😀", "utf8")));
  const lines = text.split("\n");
  assert.equal(lines.pop(), "");
  assert.deepEqual(lines.map((line) => JSON.parse(line)), rows);
});
