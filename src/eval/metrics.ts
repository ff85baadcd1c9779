// Generation metrics for SFT `do_predict` with `predict_with_generate`: LLaMA-Factory's
// `ComputeSimilarity` (train/sft/metric.py): ROUGE-1/2/L F as `rouge_chinese.Rouge().get_scores`
// computes them on word-segmented text, and character-level BLEU-4 as NLTK's `sentence_bleu` with
// `SmoothingFunction().method3`; plus the `generated_predictions.jsonl` writer of its workflow.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** The metric names LLaMA-Factory's trainer reports after `predict` (its keys with the `predict_` prefix). */
export interface SimilarityMetrics {
  "predict_rouge-1": number;
  "predict_rouge-2": number;
  "predict_rouge-l": number;
  "predict_bleu-4": number;
}

export interface RougeScores {
  rouge1: number;
  rouge2: number;
  rougeL: number;
}

// Python's str.split() / str.rstrip() whitespace (str.isspace), which differs from JS `\s`:
// Python counts U+001C..U+001F and U+0085, JS counts U+FEFF instead.
const PYTHON_WHITESPACE_RUN = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/u;
const PYTHON_TRAILING_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/u;

function pythonSplit(text: string): string[] {
  return text.split(PYTHON_WHITESPACE_RUN).filter((part) => part.length > 0);
}

// ---------------------------------------------------------------------------------------------
// Word segmentation (LLaMA-Factory: `list(jieba.cut(text))`, default accurate mode with HMM).
//
// jieba first cuts text into blocks of [\u4E00-\u9FD5a-zA-Z0-9+#&._%-]; inside a block, Chinese is
// cut by its dictionary (DAG + max-probability route, HMM for unknown words) and runs of ASCII
// letters/digits stay one token (`[a-zA-Z0-9]+(\.\d+)?%?`, e.g. "hello", "3.14", "50%"), every other
// character of a block is its own token; outside blocks every character (punctuation, accented or
// Cyrillic letters, kana, whitespace) is its own token.
// Here Intl.Segmenter (ICU word break, which uses ICU's CJK dictionary for Han text) gives the word
// boundaries; a segment holding any jieba-Han character (U+4E00..U+9FD5) is kept whole as the
// Chinese word, and the text between such segments is re-cut by jieba's non-Chinese rule above, so
// English, numbers and punctuation tokenize as jieba does ("it's" -> it ' s, "e.g." -> e . g .,
// "3.14", "50%", "C++" -> C + +).
// Where it can differ from jieba: the Chinese dictionary (ICU's vs jieba's dict.txt + HMM: e.g.
// new words, names, and ambiguous splits can land differently), jieba dictionary entries that mix
// ASCII and Han ("T恤", "A股" are one jieba word, two ICU segments), and text in scripts ICU segments
// by dictionary or as words (Japanese kana, Thai: jieba cuts them per character, as we do only
// where the segment has no Han character — kana-Han mixes stay whole here).
// ---------------------------------------------------------------------------------------------

const JIEBA_HAN = /[\u4E00-\u9FD5]/u;
const JIEBA_ASCII_RUN = /[a-zA-Z0-9]+(?:\.\d+)?%?/uy;
const wordSegmenter = new Intl.Segmenter("zh", { granularity: "word" });

function cutLikeJiebaOutsideChinese(segment: string, out: string[]): void {
  let position = 0;
  while (position < segment.length) {
    JIEBA_ASCII_RUN.lastIndex = position;
    const run = JIEBA_ASCII_RUN.exec(segment);
    if (run) {
      out.push(run[0]);
      position += run[0].length;
    } else {
      const character = String.fromCodePoint(segment.codePointAt(position)!);
      out.push(character);
      position += character.length;
    }
  }
}

/** Words of `text` the way the metric sees them (see the notes above on jieba). Whitespace stays as tokens, as in jieba. */
export function segmentWords(text: string): string[] {
  const words: string[] = [];
  // Consecutive non-Han segments are re-cut together, since ICU splits "50%" where jieba does not.
  let nonChinese = "";
  for (const { segment } of wordSegmenter.segment(text)) {
    if (JIEBA_HAN.test(segment)) {
      cutLikeJiebaOutsideChinese(nonChinese, words);
      nonChinese = "";
      words.push(segment);
    } else {
      nonChinese += segment;
    }
  }
  cutLikeJiebaOutsideChinese(nonChinese, words);
  return words;
}

// ---------------------------------------------------------------------------------------------
// ROUGE as rouge_chinese 1.0.x `Rouge().get_scores(hyp, ref)` (metrics rouge-1, rouge-2, rouge-l;
// exclusive=True) computes it on `" ".join(words)`:
//  - each side is cut into sentences by `cut_sent` (after 。！？? / six dots / two ellipses), each
//    sentence whitespace-normalized (`" ".join(s.split())`), then all sentences' words flattened
//    with `split(" ")`;
//  - ROUGE-N: the *sets* of distinct n-grams (exclusive=True), overlap = |H ∩ R|,
//    p = overlap/|H|, r = overlap/|R| (0 when the set is empty);
//  - ROUGE-L: rouge_chinese's `rouge_l_summary_level` is plain LCS over the flattened word lists
//    (not the union-LCS of pltrdy/rouge): p = lcs/len(hyp), r = lcs/len(ref);
//  - f = 2 * ((p * r) / (p + r + 1e-8)) for both: F1 with an epsilon, no beta/alpha.
// ---------------------------------------------------------------------------------------------

function cutSentences(paragraph: string): string[] {
  const marked = paragraph
    .replace(/([。！？?])([^”’])/gu, "$1\n$2")
    .replace(/(\.{6})([^”’])/gu, "$1\n$2")
    .replace(/(…{2})([^”’])/gu, "$1\n$2")
    .replace(/([。！？?][”’])([^，。！？?])/gu, "$1\n$2")
    .replace(PYTHON_TRAILING_WHITESPACE, "");
  return marked.split("\n");
}

function rougeWords(text: string): string[] {
  const sentences = cutSentences(text)
    .filter((sentence) => sentence.length > 0)
    .map((sentence) => pythonSplit(sentence).join(" "));
  return sentences.flatMap((sentence) => sentence.split(" "));
}

function distinctNgrams(words: string[], n: number): Set<string> {
  const ngrams = new Set<string>();
  // Words never contain " " (they come from split(" ")), so joining with " " keeps n-grams distinct.
  for (let start = 0; start + n <= words.length; start++) ngrams.add(words.slice(start, start + n).join(" "));
  return ngrams;
}

function f1WithEpsilon(precision: number, recall: number): number {
  return 2.0 * ((precision * recall) / (precision + recall + 1e-8));
}

function rougeN(hypothesisWords: string[], referenceWords: string[], n: number): number {
  const hypothesisNgrams = distinctNgrams(hypothesisWords, n);
  const referenceNgrams = distinctNgrams(referenceWords, n);
  let overlap = 0;
  for (const ngram of hypothesisNgrams) if (referenceNgrams.has(ngram)) overlap++;
  const precision = hypothesisNgrams.size === 0 ? 0.0 : overlap / hypothesisNgrams.size;
  const recall = referenceNgrams.size === 0 ? 0.0 : overlap / referenceNgrams.size;
  return f1WithEpsilon(precision, recall);
}

function longestCommonSubsequenceLength(a: string[], b: string[]): number {
  let previous = new Array<number>(b.length + 1).fill(0);
  let current = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      current[j] = a[i - 1] === b[j - 1] ? previous[j - 1]! + 1 : Math.max(previous[j]!, current[j - 1]!);
    }
    [previous, current] = [current, previous];
  }
  return previous[b.length]!;
}

function rougeL(hypothesisWords: string[], referenceWords: string[]): number {
  const lcs = longestCommonSubsequenceLength(referenceWords, hypothesisWords);
  return f1WithEpsilon(lcs / hypothesisWords.length, lcs / referenceWords.length);
}

/**
 * ROUGE-1/2/L F-scores (0..1) of a hypothesis against a reference, both given as words; 0 for all
 * three when either side has no non-whitespace word (LLaMA-Factory's special case, which spares
 * rouge_chinese its "Hypothesis is empty" error).
 */
export function rougeScores(hypothesisWords: string[], referenceWords: string[]): RougeScores {
  const hypothesisText = hypothesisWords.join(" ");
  const referenceText = referenceWords.join(" ");
  if (pythonSplit(hypothesisText).length === 0 || pythonSplit(referenceText).length === 0) {
    return { rouge1: 0.0, rouge2: 0.0, rougeL: 0.0 };
  }
  const hypothesis = rougeWords(hypothesisText);
  const reference = rougeWords(referenceText);
  return {
    rouge1: rougeN(hypothesis, reference, 1),
    rouge2: rougeN(hypothesis, reference, 2),
    rougeL: rougeL(hypothesis, reference),
  };
}

// ---------------------------------------------------------------------------------------------
// BLEU-4 as NLTK (3.8+) `sentence_bleu([reference], hypothesis, smoothing_function=method3)`:
//  - modified precision p_n = Σ_g min(count_hyp(g), count_ref(g)) / max(1, Σ_g count_hyp(g)) over
//    the hypothesis n-grams g, n = 1..4, kept as an unreduced fraction;
//  - if the unigram numerator is 0 the score is 0 (before smoothing);
//  - method3 (NIST geometric smoothing): the k-th order whose numerator is 0 (k = 1, 2, ...)
//    becomes 1 / (2^k * denominator);
//  - brevity penalty with the single reference: 1 if c > r, 0 if c == 0, else exp(1 - r/c);
//  - BLEU = BP * exp(fsum(0.25 * ln p_n)), fsum being Python's exactly rounded sum.
// ---------------------------------------------------------------------------------------------

function ngramCounts(tokens: string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  // Tokens can be any string, so n-grams are keyed by JSON of the token slice.
  for (let start = 0; start + n <= tokens.length; start++) {
    const key = JSON.stringify(tokens.slice(start, start + n));
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

function modifiedPrecision(reference: string[], hypothesis: string[], n: number): { numerator: number; denominator: number } {
  const hypothesisCounts = ngramCounts(hypothesis, n);
  const referenceCounts = ngramCounts(reference, n);
  let numerator = 0;
  let total = 0;
  for (const [ngram, count] of hypothesisCounts) {
    numerator += Math.min(count, referenceCounts.get(ngram) ?? 0);
    total += count;
  }
  return { numerator, denominator: Math.max(1, total) };
}

function brevityPenalty(referenceLength: number, hypothesisLength: number): number {
  if (hypothesisLength > referenceLength) return 1;
  if (hypothesisLength === 0) return 0;
  return Math.exp(1 - referenceLength / hypothesisLength);
}

/** Python's math.fsum: Shewchuk's exact partials, then a correctly rounded total. */
export function pythonFsum(values: number[]): number {
  const partials: number[] = [];
  for (let x of values) {
    let kept = 0;
    for (let y of partials) {
      if (Math.abs(x) < Math.abs(y)) [x, y] = [y, x];
      const high = x + y;
      const low = y - (high - x);
      if (low !== 0) partials[kept++] = low;
      x = high;
    }
    partials.length = kept;
    partials.push(x);
  }
  let n = partials.length;
  if (n === 0) return 0;
  n -= 1;
  let high = partials[n]!;
  let low = 0;
  while (n > 0) {
    const x = high;
    n -= 1;
    const y = partials[n]!;
    high = x + y;
    low = y - (high - x);
    if (low !== 0) break;
  }
  // Round half-even across the remaining partials, as CPython does.
  if (n > 0 && ((low < 0 && partials[n - 1]! < 0) || (low > 0 && partials[n - 1]! > 0))) {
    const doubled = low * 2;
    const candidate = high + doubled;
    if (doubled === candidate - high) high = candidate;
  }
  return high;
}

/** Sentence BLEU-4 (0..1) of hypothesis tokens against one reference, NLTK smoothing method3. */
export function sentenceBleu4(referenceTokens: string[], hypothesisTokens: string[]): number {
  const precisions = [1, 2, 3, 4].map((n) => modifiedPrecision(referenceTokens, hypothesisTokens, n));
  if (precisions[0]!.numerator === 0) return 0;
  let zeroOrder = 1;
  const smoothed = precisions.map(({ numerator, denominator }) => {
    if (numerator !== 0) return numerator / denominator;
    return 1 / (2 ** zeroOrder++ * denominator);
  });
  const logSum = pythonFsum(smoothed.map((precision) => 0.25 * Math.log(precision)));
  return brevityPenalty(referenceTokens.length, hypothesisTokens.length) * Math.exp(logSum);
}

// ---------------------------------------------------------------------------------------------
// ComputeSimilarity: per example each score ×100 and `round(·, 4)` (Python's round: exact decimal
// value, ties to even), then `np.mean` over examples (numpy's pairwise summation / count).
// ---------------------------------------------------------------------------------------------

/** Python's round(x, 4) for finite x: toFixed is exact except that it breaks exact ties upward. */
export function pythonRound4(x: number): number {
  const exact = Math.abs(x).toFixed(100);
  const point = exact.indexOf(".");
  const beyond = exact.slice(point + 5);
  if (/^50*$/.test(beyond)) {
    const lastKept = Number(exact[point + 4]);
    const truncated = Number(exact.slice(0, point + 5));
    // On an exact tie Python keeps an even last digit; toFixed would always round up.
    const rounded = lastKept % 2 === 0 ? truncated : Number(Math.abs(x).toFixed(4));
    return Math.sign(x) * rounded;
  }
  return Number(x.toFixed(4));
}

// numpy's pairwise_sum for float64 (8-way unrolled blocks of up to 128, halving above that).
function numpyPairwiseSum(values: number[], start: number, count: number): number {
  if (count < 8) {
    let sum = -0.0;
    for (let i = 0; i < count; i++) sum += values[start + i]!;
    return sum;
  }
  if (count <= 128) {
    const lanes = values.slice(start, start + 8);
    let i = 8;
    for (; i < count - (count % 8); i += 8) for (let lane = 0; lane < 8; lane++) lanes[lane]! += values[start + i + lane]!;
    let sum = ((lanes[0]! + lanes[1]!) + (lanes[2]! + lanes[3]!)) + ((lanes[4]! + lanes[5]!) + (lanes[6]! + lanes[7]!));
    for (; i < count; i++) sum += values[start + i]!;
    return sum;
  }
  let half = Math.floor(count / 2);
  half -= half % 8;
  return numpyPairwiseSum(values, start, half) + numpyPairwiseSum(values, start + half, count - half);
}

/** np.mean of a float64 list (NaN for an empty one, as numpy gives). */
export function numpyMean(values: number[]): number {
  if (values.length === 0) return NaN;
  return (0.0 + numpyPairwiseSum(values, 0, values.length)) / values.length;
}

/** One example's scores, ×100 and rounded as LLaMA-Factory stores them. */
export function exampleSimilarity(prediction: string, label: string): { rouge1: number; rouge2: number; rougeL: number; bleu4: number } {
  const rouge = rougeScores(segmentWords(prediction), segmentWords(label));
  // BLEU runs on characters: Python's list(str) is a list of code points.
  const bleu = sentenceBleu4(Array.from(label), Array.from(prediction));
  return {
    rouge1: pythonRound4(rouge.rouge1 * 100),
    rouge2: pythonRound4(rouge.rouge2 * 100),
    rougeL: pythonRound4(rouge.rougeL * 100),
    bleu4: pythonRound4(bleu * 100),
  };
}

/** LLaMA-Factory's ComputeSimilarity over decoded predictions and labels, with the predict_ keys. */
export function computeSimilarity(predictions: string[], labels: string[]): SimilarityMetrics {
  if (predictions.length !== labels.length) {
    throw new Error(`computeSimilarity: ${predictions.length} predictions but ${labels.length} labels`);
  }
  const perExample = predictions.map((prediction, i) => exampleSimilarity(prediction, labels[i]!));
  return {
    "predict_rouge-1": numpyMean(perExample.map((scores) => scores.rouge1)),
    "predict_rouge-2": numpyMean(perExample.map((scores) => scores.rouge2)),
    "predict_rouge-l": numpyMean(perExample.map((scores) => scores.rougeL)),
    "predict_bleu-4": numpyMean(perExample.map((scores) => scores.bleu4)),
  };
}

export interface GeneratedPrediction {
  prompt: string;
  predict: string;
  label: string;
}

/**
 * Writes `<outputDir>/generated_predictions.jsonl` byte-for-byte as LLaMA-Factory's
 * `json.dumps({...}, ensure_ascii=False)` lines: raw UTF-8, Python's ", " and ": " separators.
 * Returns the file path.
 */
export function writeGeneratedPredictions(outputDir: string, rows: GeneratedPrediction[]): string {
  mkdirSync(outputDir, { recursive: true });
  const path = join(outputDir, "generated_predictions.jsonl");
  // JSON.stringify escapes strings exactly as Python's json with ensure_ascii=False does.
  const lines = rows.map(
    (row) =>
      `{"prompt": ${JSON.stringify(row.prompt)}, "predict": ${JSON.stringify(row.predict)}, "label": ${JSON.stringify(row.label)}}\n`,
  );
  writeFileSync(path, lines.join(""), "utf8");
  return path;
}
