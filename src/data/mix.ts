// Mixing, resampling and splitting of aligned datasets, after LLaMA-Factory's `data/data_utils.py`
// (merge_dataset, split_dataset) and the Hugging Face `datasets` functions it calls:
// `interleave_datasets` (first_exhausted / all_exhausted / all_exhausted_without_replacement),
// `train_test_split`, and for streams `IterableDataset.shuffle(buffer_size)`, `take` and `skip`.
// Shuffles are seeded and reproducible, but use our own generator, not numpy's bit stream.
import { UserError } from "../errors.ts";

export type MixStrategy = "concat" | "interleave_under" | "interleave_over" | "interleave_once";
export type StoppingStrategy = "first_exhausted" | "all_exhausted" | "all_exhausted_without_replacement";

export const MIX_STRATEGIES: readonly MixStrategy[] = ["concat", "interleave_under", "interleave_over", "interleave_once"];

const STOPPING: Record<Exclude<MixStrategy, "concat">, StoppingStrategy> = {
  interleave_under: "first_exhausted",
  interleave_over: "all_exhausted",
  interleave_once: "all_exhausted_without_replacement",
};

/** A seeded generator (xoshiro128**, seeded through splitmix32): same seed, same sequence. */
export class SeededRandom {
  private state: Uint32Array;

  constructor(seed: number) {
    let mix = seed >>> 0;
    const splitmix = (): number => {
      mix = (mix + 0x9e3779b9) >>> 0;
      let z = mix;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.state = new Uint32Array([splitmix(), splitmix(), splitmix(), splitmix()]);
  }

  nextUint32(): number {
    const s = this.state;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 0x100000000;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }

  permutation(n: number): number[] {
    return this.shuffle(Array.from({ length: n }, (_, index) => index));
  }

  /** An index drawn with the given probabilities (which sum to 1). */
  choice(probs: readonly number[]): number {
    const draw = this.next();
    let cumulative = 0;
    for (let index = 0; index < probs.length; index++) {
      cumulative += probs[index]!;
      if (draw < cumulative) return index;
    }
    return probs.length - 1;
  }
}

function rotl(value: number, shift: number): number {
  return ((value << shift) | (value >>> (32 - shift))) >>> 0;
}

/** Checks `interleave_probs` against the datasets, as LLaMA-Factory's DataArguments do. */
export function checkInterleaveProbs(probs: readonly number[] | null | undefined, datasetCount: number, strategy: MixStrategy): number[] | null {
  if (probs === null || probs === undefined || probs.length === 0) return null;
  if (strategy === "concat") throw new UserError("interleave_probs is only valid for interleaved mixing", "interleave_probs", "set mix_strategy: interleave_under (or interleave_over / interleave_once), or remove interleave_probs");
  if (probs.length !== datasetCount) {
    throw new UserError(`${probs.length} interleave_probs for ${datasetCount} datasets`, "interleave_probs", "the length of dataset and interleave_probs should be identical: one probability per dataset");
  }
  if (probs.some((prob) => !(Number.isFinite(prob) && prob >= 0))) throw new UserError(`interleave_probs must be non-negative numbers, got ${probs.join(",")}`, "interleave_probs", "e.g. interleave_probs: 0.7,0.3");
  const sum = probs.reduce((a, b) => a + b, 0);
  if (Math.abs(sum - 1) > 1e-6) throw new UserError(`interleave_probs sum to ${sum}, not 1`, "interleave_probs", "make the probabilities add up to 1, e.g. 0.7,0.3");
  return [...probs];
}

/** LLaMA-Factory's `merge_dataset` for in-memory datasets. */
export function mergeDatasets<T>(datasets: readonly (readonly T[])[], options: { strategy: MixStrategy; probs?: readonly number[] | null; seed: number }): T[] {
  if (datasets.length === 1) return [...datasets[0]!];
  if (options.strategy === "concat") return datasets.flat() as T[];
  const probs = checkInterleaveProbs(options.probs, datasets.length, options.strategy);
  return interleave(datasets, { probs, seed: options.seed, stopping: STOPPING[options.strategy] });
}

/** Hugging Face `interleave_datasets` on map-style datasets (`_interleave_map_style_datasets`). */
export function interleave<T>(datasets: readonly (readonly T[])[], options: { probs: readonly number[] | null; seed: number; stopping: StoppingStrategy }): T[] {
  const lengths = datasets.map((dataset) => dataset.length);
  if (lengths.some((length) => length === 0)) throw new UserError("cannot interleave an empty dataset", "mix_strategy", "remove the empty dataset or use mix_strategy: concat");
  const out: T[] = [];
  if (options.probs === null) {
    // Round robin: one example of each dataset in turn.
    const rounds = options.stopping === "first_exhausted" ? Math.min(...lengths) : Math.max(...lengths);
    for (let index = 0; index < rounds; index++) {
      datasets.forEach((dataset, source) => {
        if (options.stopping === "all_exhausted") out.push(dataset[index % lengths[source]!]!);
        else if (index < lengths[source]!) out.push(dataset[index]!);
      });
    }
    return out;
  }
  const rng = new SeededRandom(options.seed);
  const current = datasets.map(() => 0);
  const exhausted = datasets.map(() => false);
  const withoutReplacement = options.stopping === "all_exhausted_without_replacement";
  const stop = (): boolean => (options.stopping === "first_exhausted" ? exhausted.some(Boolean) : exhausted.every(Boolean));
  while (!stop()) {
    const source = withoutReplacement ? rng.choice(renormalised(options.probs, exhausted)) : rng.choice(options.probs);
    if (withoutReplacement && exhausted[source]) continue;
    out.push(datasets[source]![current[source]!]!);
    current[source]!++;
    if (current[source]! >= lengths[source]!) {
      exhausted[source] = true;
      current[source] = 0;
    }
  }
  return out;
}

function renormalised(probs: readonly number[], exhausted: readonly boolean[]): number[] {
  const kept = probs.map((prob, index) => (exhausted[index] ? 0 : prob));
  const sum = kept.reduce((a, b) => a + b, 0);
  return sum > 0 ? kept.map((prob) => prob / sum) : kept.map((_, index) => (exhausted[index] ? 0 : 1 / exhausted.filter((done) => !done).length));
}

/** LLaMA-Factory's `num_samples`: a random permutation, then sampling with replacement for the rest. */
export function resample<T>(items: readonly T[], count: number, seed: number): T[] {
  if (items.length === 0) return [];
  const rng = new SeededRandom(seed);
  const indices = rng.permutation(items.length).slice(0, count);
  while (indices.length < count) indices.push(rng.int(items.length));
  return indices.map((index) => items[index]!);
}

/** The number of validation examples `val_size` asks for: a fraction in (0, 1) or a count. */
export function validationCount(valSize: number, total: number | null): number {
  if (!(valSize > 1e-6)) return 0;
  if (valSize < 1) {
    if (total === null) throw new UserError(`a fractional val_size (${valSize}) needs the dataset's length`, "val_size", "streaming mode should have an integer val size, e.g. val_size: 500");
    return Math.ceil(valSize * total);
  }
  if (!Number.isInteger(valSize)) throw new UserError(`val_size ${valSize} is neither a fraction in (0, 1) nor a whole count`, "val_size", "e.g. val_size: 0.1 or val_size: 500");
  return valSize;
}

/** Hugging Face `train_test_split(test_size, seed)`: a seeded permutation, the first part evaluates. */
export function trainTestSplit<T>(items: readonly T[], valSize: number, seed: number): { train: T[]; eval: T[] } {
  const evalCount = validationCount(valSize, items.length);
  if (evalCount >= items.length) {
    throw new UserError(
      `val_size ${valSize} takes ${evalCount} of ${items.length} examples, leaving none to train on`,
      "val_size",
      `use a smaller val_size (a fraction, or a count below ${items.length})`,
    );
  }
  const order = new SeededRandom(seed).permutation(items.length);
  return { eval: order.slice(0, evalCount).map((index) => items[index]!), train: order.slice(evalCount).map((index) => items[index]!) };
}

/** A re-iterable stream: each iteration reads its sources again, in the same order. */
export type Stream<T> = AsyncIterable<T>;

function stream<T>(open: () => AsyncIterator<T>): Stream<T> {
  return { [Symbol.asyncIterator]: open };
}

export function concatStreams<T>(sources: readonly Stream<T>[]): Stream<T> {
  return stream(async function* () {
    for (const source of sources) yield* source;
  });
}

/** `IterableDataset.shuffle(buffer_size, seed)`: a random slot of a full buffer is yielded and refilled. */
export function shuffleStream<T>(source: Stream<T>, bufferSize: number, seed: number): Stream<T> {
  return stream(async function* () {
    const rng = new SeededRandom(seed);
    const buffer: T[] = [];
    for await (const item of source) {
      if (buffer.length < bufferSize) {
        buffer.push(item);
        continue;
      }
      const slot = rng.int(bufferSize);
      yield buffer[slot]!;
      buffer[slot] = item;
    }
    yield* rng.shuffle(buffer);
  });
}

export function takeStream<T>(source: Stream<T>, count: number): Stream<T> {
  return stream(async function* () {
    if (count <= 0) return;
    let taken = 0;
    for await (const item of source) {
      yield item;
      if (++taken >= count) return;
    }
  });
}

export function skipStream<T>(source: Stream<T>, count: number): Stream<T> {
  return stream(async function* () {
    let seen = 0;
    for await (const item of source) if (seen++ >= count) yield item;
  });
}

/**
 * Hugging Face's interleave of iterable datasets, with one item of look-ahead per source so a
 * source counts as exhausted as soon as its last item is taken (the map-style semantics above):
 * first_exhausted then stops, all_exhausted restarts the source until every source has run out
 * once, all_exhausted_without_replacement stops drawing from it.
 */
export function interleaveStreams<T>(sources: readonly Stream<T>[], options: { probs: readonly number[] | null; seed: number; stopping: StoppingStrategy }): Stream<T> {
  return stream(async function* () {
    const rng = new SeededRandom(options.seed);
    const iterators = sources.map((source) => source[Symbol.asyncIterator]());
    const pending = await Promise.all(iterators.map((iterator) => iterator.next()));
    if (pending.some((next) => next.done)) throw new UserError("cannot interleave an empty dataset", "mix_strategy", "remove the empty dataset or use mix_strategy: concat");
    const exhausted = sources.map(() => false);
    const withoutReplacement = options.stopping === "all_exhausted_without_replacement";
    const stop = (): boolean => (options.stopping === "first_exhausted" ? exhausted.some(Boolean) : exhausted.every(Boolean));
    let turn = 0;
    try {
      // Round robin finishes its round before stopping, as the map-style version counts whole rounds.
      while (!(stop() && (options.probs !== null || turn % sources.length === 0))) {
        let source: number;
        if (options.probs === null) {
          source = turn++ % sources.length;
        } else source = rng.choice(withoutReplacement ? renormalised(options.probs, exhausted) : options.probs);
        if ((withoutReplacement || options.stopping === "first_exhausted") && exhausted[source]) continue;
        yield pending[source]!.value as T;
        pending[source] = await iterators[source]!.next();
        if (!pending[source]!.done) continue;
        exhausted[source] = true;
        if (options.stopping === "all_exhausted") {
          iterators[source] = sources[source]![Symbol.asyncIterator]();
          pending[source] = await iterators[source]!.next();
        }
      }
    } finally {
      await Promise.all(iterators.map((iterator) => iterator.return?.()));
    }
  });
}

/** LLaMA-Factory's `merge_dataset` for streams (concat reads the datasets one after another). */
export function mergeStreams<T>(sources: readonly Stream<T>[], options: { strategy: MixStrategy; probs?: readonly number[] | null; seed: number }): Stream<T> {
  if (sources.length === 1) return sources[0]!;
  if (options.strategy === "concat") return concatStreams(sources);
  const probs = checkInterleaveProbs(options.probs, sources.length, options.strategy);
  return interleaveStreams(sources, { probs, seed: options.seed, stopping: STOPPING[options.strategy] });
}
