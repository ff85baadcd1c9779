// Continuous batching (Orca's iteration-level scheduling, as vLLM and llama.cpp's server run it):
// sequences join a running batch and leave it between steps. One `step()` feeds prompt chunks to
// the sequences still reading their prompts (up to a token budget, oldest first) and one token of
// every decoding sequence in a single forward pass, each row attending to its own KV cache
// (RowCaches: nothing is copied when rows come and go). Each sequence keeps its own settings
// (greedy or sampling, penalties, stop tokens, token budget, time limit). Forward passes run under
// `batchInvariant`, and a sequence's prefill is the one `generate` runs, so greedy decoding gives
// each sequence the tokens `generate` gives it alone, whatever runs beside it.
import { UserError } from "../errors.ts";
import { INVARIANT_ROWS, batchInvariant, noGrad, tensor, tidy } from "../torch/index.ts";
import { KVCache, RowCaches } from "./cache.ts";
import { type CausalLM, modelDevice } from "./causal_lm.ts";
import { type FinishReason, type GenerateOptions, type Settings, nextTokens, prefillChunkable, resolveSettings } from "./generation.ts";

/** One sequence of the batch: its new tokens as they come (stop token included, as `generate`). */
export class DecodeSequence {
  readonly tokens: number[] = [];
  finishReason: FinishReason | null = null;
  /** Set when a step failed for this sequence (it is finished then); the caller reports it. */
  error: unknown = null;
  /** Prompt + new tokens, for the repetition penalty. */
  readonly history: number[];
  /** Prompt tokens already in the cache. */
  fed = 0;
  cache: KVCache | null;

  constructor(
    private readonly batch: DecodeBatch,
    readonly prompt: number[],
    readonly settings: Settings,
    numLayers: number,
    /** Decoded with other rows in one forward (else alone: an active sliding window, dynamic RoPE). */
    readonly batchable: boolean,
  ) {
    this.history = [...prompt];
    this.cache = new KVCache(numLayers, { capacity: prompt.length + settings.budget });
  }

  get done(): boolean {
    return this.finishReason !== null;
  }

  /** Decoding: the prompt is in the cache and the last token is still to be fed. */
  get decoding(): boolean {
    return !this.done && this.fed === this.prompt.length;
  }

  /** Leaves the batch (finished or not) and frees the cache. Idempotent. */
  close(): void {
    this.finish(this.finishReason ?? "length");
    this.batch.remove(this);
  }

  /** @internal Ends the sequence and frees its cache. */
  finish(reason: FinishReason): void {
    this.finishReason ??= reason;
    this.cache?.dispose();
    this.cache = null;
  }

  /** @internal Takes a chosen token: stop token or budget reached ends the sequence, as in `generate`. */
  accept(token: number): void {
    this.tokens.push(token);
    this.history.push(token);
    if (this.settings.stopTokens.has(token)) this.finish("stop");
    else if (this.tokens.length >= this.settings.budget || Date.now() > this.settings.deadline) this.finish("length");
  }
}

export interface DecodeBatchOptions {
  /** Prompt tokens fed per step over all joining sequences (vLLM's per-step token budget). */
  prefillTokensPerStep?: number;
}

export class DecodeBatch {
  private readonly sequences: DecodeSequence[] = [];
  private readonly prefillTokensPerStep: number;

  constructor(
    readonly model: CausalLM,
    options: DecodeBatchOptions = {},
  ) {
    this.prefillTokensPerStep = options.prefillTokensPerStep ?? 128;
  }

  /** Sequences in the batch, finished or not, until they are closed. */
  get size(): number {
    return this.sequences.length;
  }

  /** Whether a step has work: a sequence still reading its prompt or decoding. */
  get busy(): boolean {
    return this.sequences.some((sequence) => !sequence.done);
  }

  /**
   * Adds a sequence; it is prefilled and decoded by the next steps. Throws a UserError for settings
   * `generate` refuses; beam search is not batched (run `generateSteps` for it).
   */
  add(prompt: number[], options: GenerateOptions): DecodeSequence {
    const settings = resolveSettings([prompt], options);
    if (settings.numBeams > 1) throw new UserError("continuous batching does not run beam search", undefined, "use generateSteps for num_beams > 1");
    const window = this.model.config.sliding_window;
    const batchable = !!this.model.perRowCaches && prefillChunkable(this.model) && (window === null || prompt.length + settings.budget <= window);
    const sequence = new DecodeSequence(this, prompt, settings, this.model.decoderLayers.length, batchable);
    if (settings.budget === 0) sequence.finish("length");
    this.sequences.push(sequence);
    return sequence;
  }

  /** @internal */
  remove(sequence: DecodeSequence): void {
    const index = this.sequences.indexOf(sequence);
    if (index !== -1) this.sequences.splice(index, 1);
  }

  /**
   * One step: prompt chunks for joining sequences (oldest first, while the token budget lasts; the
   * last chunk gives a sequence its first token), then one token for each sequence that was
   * decoding before this step, in forwards of at most INVARIANT_ROWS rows.
   */
  step(): void {
    const decoding = this.sequences.filter((sequence) => sequence.decoding);
    let budget = this.prefillTokensPerStep;
    for (const sequence of this.sequences) {
      if (budget <= 0) break;
      if (sequence.done || sequence.decoding) continue;
      budget -= this.guarded([sequence], () => this.prefill(sequence));
    }
    const alone = decoding.filter((sequence) => !sequence.batchable);
    const together = decoding.filter((sequence) => sequence.batchable);
    for (const sequence of alone) this.guarded([sequence], () => this.decode([sequence]));
    for (let start = 0; start < together.length; start += INVARIANT_ROWS) {
      const group = together.slice(start, start + INVARIANT_ROWS);
      this.guarded(group, () => this.decode(group));
    }
  }

  /** Runs `work`; a failure finishes the sequences it concerned (with the error) instead of all. */
  private guarded(sequences: DecodeSequence[], work: () => number | void): number {
    try {
      return work() ?? 0;
    } catch (error) {
      for (const sequence of sequences) {
        sequence.error = error;
        sequence.finish("length");
      }
      return 0;
    }
  }

  /**
   * One prompt chunk, as generate's prefill: all but the last chunk fill the cache; the last is fed
   * with the logits kept, and gives the first token. Returns the tokens fed.
   */
  private prefill(sequence: DecodeSequence): number {
    const { prompt, settings } = sequence;
    const device = modelDevice(this.model);
    const chunk = prefillChunkable(this.model) ? settings.prefillChunk : Infinity;
    const remaining = prompt.length - sequence.fed;
    if (remaining > chunk) {
      const ids = prompt.slice(sequence.fed, sequence.fed + chunk);
      tidy(() => noGrad(() => void batchInvariant(() => this.model.forward(tensor([ids], { dtype: "int64", device }), { cache: sequence.cache, logitsToKeep: 1 }))));
      sequence.fed += chunk;
      if (Date.now() > settings.deadline) sequence.finish("length");
      return chunk;
    }
    const ids = prompt.slice(sequence.fed);
    const [token] = tidy(() =>
      noGrad(() => {
        const logits = batchInvariant(() => this.model.forward(tensor([ids], { dtype: "int64", device }), { cache: sequence.cache, logitsToKeep: 1 }));
        return nextTokens(logits, [sequence.history], settings);
      }),
    );
    sequence.fed = prompt.length;
    sequence.accept(token!);
    return ids.length;
  }

  /** One token for each sequence of `group`: a forward of [G, 1] over their own caches. */
  private decode(group: DecodeSequence[]): void {
    const device = modelDevice(this.model);
    const last = (sequence: DecodeSequence) => sequence.history[sequence.history.length - 1]!;
    const tokens = tidy(() =>
      noGrad(() => {
        const ids = tensor(group.map((sequence) => [last(sequence)]), { dtype: "int64", device });
        let logits;
        if (group.length === 1 && !group[0]!.batchable) {
          // Alone, exactly as generate's decode step (its mask for a sliding window, its RoPE).
          logits = batchInvariant(() => this.model.forward(ids, { cache: group[0]!.cache, logitsToKeep: 1 }));
        } else {
          const positions = tensor(group.map((sequence) => [sequence.cache!.length]), { dtype: "int64", device });
          const cache = new RowCaches(group.map((sequence) => sequence.cache!));
          logits = batchInvariant(() => this.model.forward(ids, { positionIds: positions, cache, logitsToKeep: 1 })); // [G, 1, V]
        }
        // Row by row, each with its own settings and history, as generate scores a batch of one.
        return group.map((sequence, i) => nextTokens(logits.narrow(0, i, 1), [sequence.history], sequence.settings)[0]!);
      }),
    );
    group.forEach((sequence, i) => sequence.accept(tokens[i]!));
  }
}
