// Text generation for causal LMs, following transformers' generation/utils.py (GenerationMixin:
// greedy search, sampling, beam search with BeamSearchScorer/BeamHypotheses) and
// configuration_utils.py (GenerationConfig defaults). Prompts are left-padded into one batch with an
// attention mask; a KV cache gives one prefill then one token per step; each step is a `tidy` block.
// `generateSteps` runs one step per `next()`, so a server can interleave requests between steps.
// Forward passes run under `batchInvariant`, so a row's logits do not depend on its batch
// (decode_batch.ts, continuous batching, gives each sequence exactly what it gets here alone).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { type Tensor, batchInvariant, keep, noGrad, tensor, tidy } from "../torch/index.ts";
import { KVCache } from "./cache.ts";
import { type CausalLM, modelDevice } from "./causal_lm.ts";
import { applyRepetitionPenalty, warpForSampling } from "./logits_process.ts";

export interface GenerateOptions {
  /** New tokens at most; wins over `maxLength` when > 0 (as HF). */
  maxNewTokens?: number | null;
  /** Prompt (padded width) + new tokens at most, used when `maxNewTokens` is unset; HF default 20. */
  maxLength?: number;
  doSample?: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  numBeams?: number;
  /** Beam score = sum of log-probs / (new tokens) ^ lengthPenalty. */
  lengthPenalty?: number;
  /** BeamSearchScorer's early_stopping: true, false (HF default: a heuristic) or "never". */
  earlyStopping?: boolean | "never";
  /** Stop tokens: generation_config.json's eos ids plus the template's stop words. */
  eosTokenId?: number | number[] | null;
  /** Fills left padding and rows that already stopped; defaults to the first eos id, else 0. */
  padTokenId?: number | null;
  /** false recomputes the whole sequence each step (same output, slower). */
  useKvCache?: boolean;
  /**
   * Seconds after which no further step starts (HF's max_time / MaxTimeCriteria): unfinished rows
   * end with finish reason "length", and beam search finishes with its open beams, as at the token budget.
   */
  maxTime?: number | null;
  /** When `maxTime` starts counting, in ms since the epoch (MaxTimeCriteria's initial_timestamp); default: now. */
  timeOrigin?: number;
  /**
   * Feeds the prompt to the KV cache this many tokens per step (chunked prefill, as vLLM does), so
   * a step's attention scores span chunk × prompt positions instead of prompt², and each chunk is a
   * step of `generateSteps`. For an unpadded batch with the KV cache (greedy, sampling, beam search),
   * not with dynamic RoPE, whose frequencies follow the length of each forward; null feeds the whole
   * prompt at once, as HF.
   */
  prefillChunk?: number | null;
}

export type FinishReason = "stop" | "length";

export interface GenerateOutput {
  /** The new tokens of each prompt, stop token included, without padding. */
  sequences: number[][];
  finishReasons: FinishReason[];
  /** Beam search only: the best beam's score, sum of log-probs / length ^ lengthPenalty. */
  scores?: number[];
}

/** Generation settings resolved from GenerateOptions and the prompts. */
export interface Settings {
  budget: number;
  doSample: boolean;
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  numBeams: number;
  lengthPenalty: number;
  earlyStopping: boolean | "never";
  stopTokens: Set<number>;
  padTokenId: number;
  useKvCache: boolean;
  /** Date.now() past which no further step starts; Infinity without maxTime. */
  deadline: number;
  /** Prompt tokens per prefill step; Infinity for the whole prompt. */
  prefillChunk: number;
}

export function resolveSettings(prompts: number[][], options: GenerateOptions): Settings {
  if (prompts.length === 0) throw new UserError("generate: no prompts given");
  if (prompts.some((prompt) => prompt.length === 0)) {
    throw new UserError("generate: a prompt has no tokens", undefined, "start it with the BOS token or some text");
  }
  const width = Math.max(...prompts.map((prompt) => prompt.length));
  const maxNewTokens = options.maxNewTokens ?? 0;
  const budget = maxNewTokens > 0 ? maxNewTokens : (options.maxLength ?? 20) - width;
  const eos = options.eosTokenId ?? [];
  const stopTokens = new Set(Array.isArray(eos) ? eos : [eos]);
  const numBeams = options.numBeams ?? 1;
  const doSample = options.doSample ?? false;
  if (numBeams > 1 && doSample) {
    throw new UserError("generate: beam sampling (num_beams > 1 with do_sample) is not supported", undefined, "set do_sample: false or num_beams: 1");
  }
  const temperature = options.temperature ?? 1;
  const topP = options.topP ?? 1;
  if (doSample && !(temperature > 0)) {
    throw new UserError(`generate: temperature must be > 0 when sampling (got ${temperature})`, undefined, "set do_sample: false for greedy decoding");
  }
  if (doSample && !(topP > 0 && topP <= 1)) throw new UserError(`generate: top_p must be in (0, 1] (got ${topP})`);
  const prefillChunk = options.prefillChunk ?? Infinity;
  if (!(prefillChunk >= 1) || (prefillChunk !== Infinity && !Number.isInteger(prefillChunk))) {
    throw new UserError(`generate: prefillChunk must be a positive integer (got ${prefillChunk})`);
  }
  return {
    budget: Math.max(budget, 0),
    doSample,
    temperature,
    topP,
    topK: options.topK ?? 50,
    repetitionPenalty: options.repetitionPenalty ?? 1,
    numBeams,
    lengthPenalty: options.lengthPenalty ?? 1,
    earlyStopping: options.earlyStopping ?? false,
    stopTokens,
    padTokenId: options.padTokenId ?? [...stopTokens][0] ?? 0,
    useKvCache: options.useKvCache ?? true,
    deadline: options.maxTime != null ? (options.timeOrigin ?? Date.now()) + options.maxTime * 1000 : Infinity,
    prefillChunk,
  };
}

/**
 * Greedy or sampled decoding of a left-padded batch: yields each step's next token per row (the
 * pad token for rows that already stopped), or null for a prefill chunk, and returns each row's
 * finish reason.
 */
function* decodeSteps(model: CausalLM, prompts: number[][], settings: Settings): Generator<number[] | null, FinishReason[]> {
  const B = prompts.length;
  const width = Math.max(...prompts.map((prompt) => prompt.length));
  const device = modelDevice(model);
  // Left padding ends every prompt at the same column, so one new column per step serves all rows.
  const columns = prompts.map((prompt) => [...new Array<number>(width - prompt.length).fill(settings.padTokenId), ...prompt]);
  const mask = prompts.map((prompt) => [...new Array<number>(width - prompt.length).fill(0), ...new Array<number>(prompt.length).fill(1)]);
  // Without padding the mask changes nothing, and leaving it out lets attention use the causal kernel.
  const padded = prompts.some((prompt) => prompt.length < width);
  const history = prompts.map((prompt) => [...prompt]);
  const reasons: (FinishReason | null)[] = new Array(B).fill(null);
  const cache = settings.useKvCache ? new KVCache(model.decoderLayers.length, { capacity: width + settings.budget }) : null;
  try {
    if (cache && !padded && settings.budget > 0 && !(yield* prefillChunks(model, columns, cache, settings))) return reasons.map(() => "length");
    for (let step = 0; step < settings.budget; step++) {
      const chosen = tidy(() =>
        noGrad(() => {
          // With a cache, only what it does not hold yet: the prompt (or its last chunk), then the last token.
          const fresh = cache ? columns.map((row) => row.slice(cache.length)) : columns;
          const logits = batchInvariant(() =>
            model.forward(tensor(fresh, { dtype: "int64", device }), {
              attentionMask: padded ? tensor(mask, { dtype: "int64", device }) : null,
              cache,
              logitsToKeep: 1,
            }),
          ); // [B, 1, V]
          return nextTokens(logits, history, settings);
        }),
      );
      const tokens = chosen.map((token, b) => (reasons[b] ? settings.padTokenId : token));
      for (let b = 0; b < B; b++) {
        columns[b]!.push(tokens[b]!);
        mask[b]!.push(1);
        if (reasons[b]) continue;
        history[b]!.push(tokens[b]!);
        if (settings.stopTokens.has(tokens[b]!)) reasons[b] = "stop";
      }
      yield tokens;
      if (reasons.every(Boolean) || Date.now() > settings.deadline) break;
    }
  } finally {
    cache?.dispose();
  }
  return reasons.map((reason) => reason ?? "length");
}

/**
 * The next token of each row from the last position's logits [B, T, V]: scored in float32 (as HF,
 * whatever the model's dtype), repetition penalty over the row's history, then argmax or sampling.
 */
export function nextTokens(logits: Tensor, histories: number[][], settings: Settings): number[] {
  return tidy(() => {
    let scores = logits.select(1, logits.shape[1]! - 1).to("float32"); // [B, V]
    scores = applyRepetitionPenalty(scores, histories, settings.repetitionPenalty);
    if (!settings.doSample) return scores.argmax(-1).toFlatArray();
    scores = warpForSampling(scores, settings.temperature, settings.topK, settings.topP);
    return scores.softmax(-1).multinomial(1).view(histories.length).toFlatArray();
  });
}

/** Whether a prompt may be fed in chunks: dynamic RoPE sets its frequencies from each forward's length. */
export function prefillChunkable(model: CausalLM): boolean {
  return model.config.rope_scaling?.rope_type !== "dynamic";
}

/**
 * Chunked prefill of equal-length rows: feeds all but the last `prefillChunk` tokens into `cache`,
 * one forward per step (the caller's first step then feeds the rest and picks the first token).
 * Returns false when the time limit passed meanwhile.
 */
function* prefillChunks(model: CausalLM, rows: number[][], cache: KVCache, settings: Settings): Generator<null, boolean> {
  if (!prefillChunkable(model)) return true;
  const width = rows[0]!.length;
  const device = modelDevice(model);
  for (let start = 0; start + settings.prefillChunk < width; start += settings.prefillChunk) {
    const chunk = rows.map((row) => row.slice(start, start + settings.prefillChunk));
    tidy(() => noGrad(() => void batchInvariant(() => model.forward(tensor(chunk, { dtype: "int64", device }), { cache, logitsToKeep: 1 }))));
    yield null;
    if (Date.now() > settings.deadline) return false;
  }
  return true;
}

/** Generates continuations of a batch of prompts (token ids); returns only the new tokens. */
export function generate(model: CausalLM, inputIds: number[][], options: GenerateOptions = {}): GenerateOutput {
  const steps = generateSteps(model, inputIds, options);
  for (;;) {
    const next = steps.next();
    if (next.done) return next.value;
  }
}

/**
 * `generate` one model step per `next()`: each yields the token chosen for every row (the pad token
 * for rows that stopped), or null for a prefill chunk or a beam-search step; the return value is
 * generate's output. Closing it early frees the KV cache.
 */
export function* generateSteps(model: CausalLM, inputIds: number[][], options: GenerateOptions = {}): Generator<number[] | null, GenerateOutput> {
  const settings = resolveSettings(inputIds, options);
  if (settings.numBeams > 1) {
    // Each prompt is searched alone: a left-padded batch gives the same beams, so nothing is lost.
    const results: BeamResult[] = [];
    for (const prompt of inputIds) results.push(yield* beamSearch(model, prompt, settings));
    return {
      sequences: results.map((result) => result.tokens),
      finishReasons: results.map((result) => result.reason),
      scores: results.map((result) => result.score),
    };
  }
  const sequences: number[][] = inputIds.map(() => []);
  const steps = decodeSteps(model, inputIds, settings);
  const finished = new Array<boolean>(inputIds.length).fill(false);
  for (const tokens of steps) {
    tokens?.forEach((token, b) => {
      if (finished[b]) return;
      sequences[b]!.push(token);
      finished[b] = settings.stopTokens.has(token);
    });
    yield tokens;
  }
  return { sequences, finishReasons: finished.map((stopped) => (stopped ? "stop" : "length")) };
}

/**
 * Streams the new tokens of one prompt as they are chosen (for chat), stop token included; the
 * generator's return value is the finish reason. Leaving a `for…of` early frees the cache.
 */
export function* generateStream(model: CausalLM, prompt: number[], options: GenerateOptions = {}): Generator<number, FinishReason> {
  const settings = resolveSettings([prompt], options);
  if (settings.numBeams > 1) throw new UserError("streaming does not support beam search", undefined, "set num_beams: 1");
  const steps = decodeSteps(model, [prompt], settings);
  try {
    for (;;) {
      const next = steps.next();
      if (next.done) return next.value[0]!;
      if (next.value) yield next.value[0]!;
    }
  } finally {
    // A consumer that stops early reaches here; closing the steps frees their KV cache.
    steps.return([]);
  }
}

// --- beam search ---------------------------------------------------------------------------------

interface Hypothesis {
  tokens: number[];
  score: number;
}

/** BeamHypotheses: the `numBeams` best finished beams, with the worst score among them. */
class BeamHypotheses {
  readonly beams: Hypothesis[] = [];
  worstScore = 1e9;

  constructor(
    private readonly numBeams: number,
    private readonly lengthPenalty: number,
    private readonly earlyStopping: boolean | "never",
    private readonly maxNewTokens: number,
  ) {}

  add(tokens: number[], sumLogprobs: number, generatedLength: number): void {
    const score = sumLogprobs / generatedLength ** this.lengthPenalty;
    if (this.beams.length < this.numBeams || score > this.worstScore) {
      this.beams.push({ tokens, score });
      if (this.beams.length > this.numBeams) {
        const worst = this.beams.reduce((low, beam, i) => (beam.score < this.beams[low]!.score ? i : low), 0);
        this.beams.splice(worst, 1);
        this.worstScore = Math.min(...this.beams.map((beam) => beam.score));
      } else {
        this.worstScore = Math.min(score, this.worstScore);
      }
    }
  }

  /** Whether no open beam can beat the finished ones any more (HF is_done). */
  isDone(bestSumLogprobs: number, generatedLength: number): boolean {
    if (this.beams.length < this.numBeams) return false;
    if (this.earlyStopping === true) return true;
    const length = this.earlyStopping === "never" && this.lengthPenalty > 0 ? this.maxNewTokens : generatedLength;
    return this.worstScore >= bestSumLogprobs / length ** this.lengthPenalty;
  }
}

interface BeamResult {
  tokens: number[];
  reason: FinishReason;
  score: number;
}

/** Beam search for one prompt (BeamSearchScorer with batch 1), one step per `next()`; returns the best hypothesis. */
function* beamSearch(model: CausalLM, prompt: number[], settings: Settings): Generator<null, BeamResult> {
  const numBeams = settings.numBeams;
  const device = modelDevice(model);
  const V = model.config.vocab_size;
  let beams = new Array(numBeams).fill(null).map(() => [...prompt]);
  // Only the first beam is live at the start, so the first step does not pick one token numBeams times.
  let beamScores: number[] = beams.map((_, i) => (i === 0 ? 0 : -1e9));
  const finished = new BeamHypotheses(numBeams, settings.lengthPenalty, settings.earlyStopping, settings.budget);
  const candidateCount = Math.max(2, 1 + settings.stopTokens.size) * numBeams;
  const cache = settings.useKvCache ? new KVCache(model.decoderLayers.length, { capacity: prompt.length + settings.budget }) : null;
  let done = false;
  try {
    if (cache && settings.budget > 0 && !(yield* prefillChunks(model, beams, cache, settings))) return { tokens: [], reason: "length", score: 0 };
    for (let step = 0; step < settings.budget && !done; step++) {
      const generatedLength = step + 1; // new tokens once this step's token is appended
      const [values, indices] = tidy(() =>
        noGrad(() => {
          // With a cache, only what it does not hold yet: the prompt (or its last chunk), then each beam's last token.
          const fresh = cache ? beams.map((beam) => beam.slice(cache.length)) : beams;
          const logits = batchInvariant(() => model.forward(tensor(fresh, { dtype: "int64", device }), { cache, logitsToKeep: 1 })); // [N, 1, V]
          const logprobs = logits.select(1, logits.shape[1]! - 1).to("float32").logSoftmax(-1); // [N, V]
          // HF applies the processors to log-probs in beam search.
          const processed = applyRepetitionPenalty(logprobs, beams, settings.repetitionPenalty);
          const totals = processed.add(tensor(beamScores, { dtype: "float32", device }).view(numBeams, 1)).view(1, numBeams * V);
          const top = totals.topk(candidateCount, 1);
          return [top.values.toFlatArray(), top.indices.toFlatArray()];
        }),
      );
      const next: { source: number; token: number; score: number }[] = [];
      for (let rank = 0; rank < candidateCount && next.length < numBeams; rank++) {
        const source = Math.floor(indices[rank]! / V);
        const token = indices[rank]! % V;
        const score = values[rank]!;
        if (settings.stopTokens.has(token)) {
          // An eos below the top numBeams candidates is not a finished beam (HF).
          if (rank >= numBeams) continue;
          finished.add([...beams[source]!.slice(prompt.length), token], score, generatedLength);
        } else {
          next.push({ source, token, score });
        }
      }
      done = finished.isDone(Math.max(...values), generatedLength);
      cache?.reorder(next.map((beam) => beam.source));
      beams = next.map((beam) => [...beams[beam.source]!, beam.token]);
      beamScores = next.map((beam) => beam.score);
      yield null;
      if (Date.now() > settings.deadline) break;
    }
  } finally {
    cache?.dispose();
  }
  // finalize: open beams compete with the finished ones unless the search already settled.
  if (!done) beams.forEach((beam, i) => finished.add(beam.slice(prompt.length), beamScores[i]!, beam.length - prompt.length));
  if (finished.beams.length === 0) return { tokens: [], reason: "length", score: 0 };
  const best = finished.beams.reduce((top, beam) => (beam.score > top.score ? beam : top));
  const last = best.tokens[best.tokens.length - 1];
  return { tokens: best.tokens, reason: last !== undefined && settings.stopTokens.has(last) ? "stop" : "length", score: best.score };
}

// --- generation_config.json ----------------------------------------------------------------------

export interface GenerationConfig {
  bosTokenId: number | null;
  eosTokenId: number[];
  padTokenId: number | null;
  doSample: boolean;
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  numBeams: number;
  lengthPenalty: number;
  maxLength: number;
  maxNewTokens: number | null;
}

/**
 * Reads a model folder's generation_config.json with HF's GenerationConfig defaults; token ids
 * missing there come from config.json, as GenerationConfig.from_model_config does.
 */
export function loadGenerationConfig(folder: string): GenerationConfig {
  const read = (name: string): Record<string, unknown> => {
    const path = join(folder, name);
    if (!existsSync(path)) return {};
    try {
      return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    } catch (error) {
      throw new UserError(`cannot parse ${name}: ${(error as Error).message}`, path, "fix or delete the file");
    }
  };
  const model = read("config.json");
  const generation = read("generation_config.json");
  const pick = (key: string): unknown => generation[key] ?? model[key];
  const numberOr = <T>(value: unknown, fallback: T): number | T => (typeof value === "number" ? value : fallback);
  const eos = pick("eos_token_id");
  return {
    bosTokenId: numberOr(pick("bos_token_id"), null),
    eosTokenId: Array.isArray(eos) ? eos.filter((id): id is number => typeof id === "number") : typeof eos === "number" ? [eos] : [],
    padTokenId: numberOr(pick("pad_token_id"), null),
    doSample: generation.do_sample === true,
    temperature: numberOr(generation.temperature, 1),
    topP: numberOr(generation.top_p, 1),
    topK: numberOr(generation.top_k, 50),
    repetitionPenalty: numberOr(generation.repetition_penalty, 1),
    numBeams: numberOr(generation.num_beams, 1),
    lengthPenalty: numberOr(generation.length_penalty, 1),
    maxLength: numberOr(generation.max_length, 20),
    maxNewTokens: numberOr(generation.max_new_tokens, null),
  };
}
