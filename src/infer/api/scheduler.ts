// The API server's generation scheduler. Each tick (one turn of the event loop, setImmediate) every
// running request's step-wise generator advances once, taking what the last model step gave it
// (streaming it out) or joining the batch, and then one model step runs for all of them together
// (`modelStep`: the continuous batch's step; requests that run their own steps, beam search, do so
// in their turn). Requests join between ticks and leave as they finish, and other connections are
// served between ticks. At most `maxSequences` sequences generate at once (a request with n
// choices is n of them, each with its KV cache); up to `maxWaiting` requests wait in arrival
// order; past that, and for a request that could not start within its time limit, the answer is
// 503 with Retry-After.
import { ApiError } from "./protocol.ts";

/** 503 "try again later", with the seconds a client should wait (the Retry-After header). */
export class OverloadedError extends ApiError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(503, message, null, "server_overloaded");
  }
}

export interface Job<T> {
  /** Sequences generated at once (the request's n). */
  seats: number;
  /** Date.now() past which a job that is still waiting gets a 503 instead of starting. */
  startBy: number;
  /** True once the client is gone: a waiting job is dropped, a running one closed (which frees its cache). */
  abandoned: () => boolean;
  /** The work, one step per `next()` (between the model steps of the batch); made when the job starts. */
  start: () => Generator<unknown, T>;
}

interface Entry {
  job: Job<unknown>;
  steps: Generator<unknown, unknown> | null;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** Seconds a client is asked to wait before retrying a request the server had no room for. */
const RETRY_AFTER_SECONDS = 1;

export class Scheduler {
  private readonly waiting: Entry[] = [];
  private readonly running: Entry[] = [];
  private busySeats = 0;
  private wakeScheduled = false;
  private stopped = false;

  constructor(
    readonly maxSequences: number,
    readonly maxWaiting: number,
    /** The batch's model step, run once per tick after the jobs' steps. */
    private readonly modelStep: () => void = () => {},
  ) {}

  /** Runs `job` when there is room; resolves to its result, or undefined when its client went away. */
  submit<T>(job: Job<T>): Promise<T | undefined> {
    if (job.seats > this.maxSequences) throw new Error(`a job of ${job.seats} sequences never fits in ${this.maxSequences}`);
    return new Promise<T | undefined>((resolve, reject) => {
      const entry: Entry = { job, steps: null, resolve: resolve as (value: unknown) => void, reject };
      this.sweep();
      if (this.stopped) {
        reject(new OverloadedError("The server is shutting down.", RETRY_AFTER_SECONDS));
      } else if (this.waiting.length === 0 && this.busySeats + job.seats <= this.maxSequences) {
        this.begin(entry);
      } else if (this.waiting.length < this.maxWaiting) {
        this.waiting.push(entry);
      } else {
        reject(
          new OverloadedError(
            `The server is overloaded: ${this.running.length} requests are generating and ${this.waiting.length} are waiting (API_MAX_QUEUE=${this.maxWaiting}). Please retry after a short wait.`,
            RETRY_AFTER_SECONDS,
          ),
        );
      }
      this.wake();
    });
  }

  /** Requests generating now and waiting to start. */
  get load(): { running: number; waiting: number } {
    return { running: this.running.length, waiting: this.waiting.length };
  }

  /** Closes every running job (freeing its cache) and refuses the waiting ones; for server shutdown. */
  stop(): void {
    this.stopped = true;
    for (const entry of this.waiting.splice(0)) entry.reject(new OverloadedError("The server is shutting down.", RETRY_AFTER_SECONDS));
    for (const entry of [...this.running]) this.end(entry, () => entry.resolve(undefined), true);
  }

  private begin(entry: Entry): void {
    entry.steps = entry.job.start();
    this.running.push(entry);
    this.busySeats += entry.job.seats;
  }

  /** Removes a running entry, closing its generator when it did not finish; then settles it. */
  private end(entry: Entry, settle: () => void, close: boolean): void {
    this.running.splice(this.running.indexOf(entry), 1);
    this.busySeats -= entry.job.seats;
    if (close) {
      try {
        entry.steps?.return(undefined);
      } catch {
        // Closing only frees memory; a failure there must not stop the other requests.
      }
    }
    settle();
  }

  /** Drops waiting jobs whose client left and answers 503 to those past their start deadline. */
  private sweep(): void {
    const now = Date.now();
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const entry = this.waiting[i]!;
      if (entry.job.abandoned()) {
        this.waiting.splice(i, 1);
        entry.resolve(undefined);
      } else if (now > entry.job.startBy) {
        this.waiting.splice(i, 1);
        entry.reject(new OverloadedError("The server was too busy to start your request within its time limit (API_REQUEST_TIMEOUT). Please retry after a short wait.", RETRY_AFTER_SECONDS));
      }
    }
  }

  /** Starts the waiting jobs that fit, in arrival order. */
  private admit(): void {
    this.sweep();
    // First come, first served: a large request at the head is not overtaken by smaller ones.
    while (this.waiting.length > 0 && this.busySeats + this.waiting[0]!.job.seats <= this.maxSequences) this.begin(this.waiting.shift()!);
  }

  private wake(): void {
    if (this.wakeScheduled || this.stopped || (this.running.length === 0 && this.waiting.length === 0)) return;
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      this.step();
      this.wake();
    });
  }

  /** One tick: every running job's step in arrival order, then the batch's model step. */
  private step(): void {
    this.admit();
    for (const entry of [...this.running]) {
      if (entry.job.abandoned()) {
        this.end(entry, () => entry.resolve(undefined), true);
        continue;
      }
      let next: IteratorResult<unknown, unknown>;
      try {
        next = entry.steps!.next();
      } catch (error) {
        this.end(entry, () => entry.reject(error), false);
        continue;
      }
      if (next.done) this.end(entry, () => entry.resolve(next.value), false);
    }
    if (this.running.length > 0) this.modelStep();
  }
}
