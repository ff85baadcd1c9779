// What the trainer asks of data parallelism, one interface for one process and for W processes on
// c10d (torch.distributed with Gloo): which batches this rank reads, sums of numbers and
// gradients over the ranks, parameters sent from rank 0, objects gathered from every rank, and a
// barrier. A collective that fails (a worker died, or did not answer within ddp_timeout) becomes
// one message that names this rank and, where it can tell, the rank that stopped.
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { UserError } from "../../errors.ts";
import {
  type Tensor,
  ITEM_SIZE,
  allGather,
  allReduce,
  barrier,
  broadcast,
  cat,
  destroyProcessGroup,
  fromBytes,
  initProcessGroup,
  noGrad,
  tensor,
  tidy,
  zeros,
} from "../../torch/index.ts";
import type { WorkerEnvironment } from "./environment.ts";
import { GradientSync, assignBuckets } from "./gradient_sync.ts";
import { evaluationShard, shardBatchCount, shardBatches } from "./sharding.ts";

export interface DataParallel {
  readonly rank: number;
  readonly worldSize: number;
  /** Rank 0: the process that prints, writes the run's files and serves the data. */
  readonly isMain: boolean;
  /** This rank's batches (row indices) of one epoch over `order`. */
  trainBatches(order: readonly number[], batchSize: number, dropLast: boolean): number[][];
  /** How many batches trainBatches gives for `rows` rows. */
  trainBatchCount(rows: number, batchSize: number, dropLast: boolean): number;
  /** This rank's evaluation batches: together the ranks evaluate each row once. */
  evaluationBatches(rows: number, batchSize: number, dropLast: boolean): number[][];
  /** Element-wise sums over the ranks (in float64). */
  sum(values: readonly number[]): number[];
  /** Every rank's value, in rank order (JSON). */
  allGatherJson<T>(value: T): T[];
  /** Rank 0's bytes on every rank (`bytes` is read on rank 0 only). */
  broadcastBytes(bytes: Uint8Array | null): Uint8Array;
  /** After a step's last backward: the trainable gradients summed over the ranks. */
  reduceGradients(): void;
  /** Rank 0's values of `parameters` copied into every rank's (DDP's sync at construction). */
  broadcastParameters(parameters: readonly Tensor[]): void;
  /** The RNG states of all ranks, rank 0 first (for the checkpoint). */
  gatherRngStates(state: Tensor): Tensor[];
  barrier(what: string): void;
  /** Starts the gradient reduction for these parameters (once, before training). */
  prepareGradients(parameters: readonly [string, Tensor][]): void;
  readonly gradientStats: GradientSync["stats"] | null;
}

/** One process: the plain batches, and nothing to exchange. */
export class SingleProcess implements DataParallel {
  readonly rank = 0;
  readonly worldSize = 1;
  readonly isMain = true;
  readonly gradientStats = null;
  trainBatches(order: readonly number[], batchSize: number, dropLast: boolean): number[][] {
    return shardBatches(order, batchSize, dropLast, 1, 0);
  }
  trainBatchCount(rows: number, batchSize: number, dropLast: boolean): number {
    return shardBatchCount(rows, batchSize, dropLast, 1);
  }
  evaluationBatches(rows: number, batchSize: number, dropLast: boolean): number[][] {
    return evaluationShard(rows, batchSize, dropLast, 1, 0);
  }
  sum(values: readonly number[]): number[] {
    return [...values];
  }
  allGatherJson<T>(value: T): T[] {
    return [value];
  }
  broadcastBytes(bytes: Uint8Array | null): Uint8Array {
    return bytes!;
  }
  reduceGradients(): void {}
  broadcastParameters(): void {}
  gatherRngStates(state: Tensor): Tensor[] {
    return [state];
  }
  barrier(): void {}
  prepareGradients(): void {}
}

export const SINGLE_PROCESS: DataParallel = new SingleProcess();

export interface ProcessGroupOptions {
  /** ddp_timeout: how long the rendezvous and each collective wait for the other ranks. */
  timeoutSeconds: number;
  findUnusedParameters: boolean;
}

/** Whether a process of this host is gone (or a zombie not yet reaped by its launcher). */
function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    try {
      process.kill(pid, 0);
      return false;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === "ESRCH";
    }
  }
}

/** A 31-bit hash of the host name, to tell the ranks that share this machine. */
function hostKey(): number {
  let hash = 0;
  for (const char of hostname()) hash = (Math.imul(hash, 31) + char.charCodeAt(0)) | 0;
  return hash & 0x7fffffff;
}

/**
 * Runs a collective on `tensor` in place. Gloo in libtorch 1.13 has no bfloat16: such a tensor
 * travels as float32 (exact both ways; sums are rounded to bfloat16 once, at the end).
 */
function onTheWire(tensor: Tensor, collective: (wire: Tensor) => void): void {
  if (tensor.dtype !== "bfloat16") return collective(tensor);
  tidy(() => {
    const wire = tensor.to("float32");
    collective(wire);
    noGrad(() => tensor.copy_(wire));
  });
}

/** W processes on one c10d process group (Gloo), joined from the torchrun environment. */
export class ProcessGroupParallel implements DataParallel {
  readonly rank: number;
  readonly worldSize: number;
  readonly isMain: boolean;
  private gradients: GradientSync | null = null;
  /** Each rank's pid and host, learned at the rendezvous, to name a rank that died. */
  private readonly peers: { pid: number; host: number }[];

  constructor(
    readonly worker: WorkerEnvironment,
    private readonly options: ProcessGroupOptions,
  ) {
    this.rank = worker.rank;
    this.worldSize = worker.worldSize;
    this.isMain = worker.rank === 0;
    join(worker, options.timeoutSeconds);
    const identity = tensor([process.pid, hostKey()], { dtype: "int64" });
    const all = this.collective("the rendezvous", () => allGather(identity));
    this.peers = all.map((t) => {
      const [pid, host] = t.toFlatArray();
      t.dispose();
      return { pid: pid!, host: host! };
    });
    identity.dispose();
  }

  get gradientStats(): GradientSync["stats"] | null {
    return this.gradients?.stats ?? null;
  }

  trainBatches(order: readonly number[], batchSize: number, dropLast: boolean): number[][] {
    return shardBatches(order, batchSize, dropLast, this.worldSize, this.rank);
  }

  trainBatchCount(rows: number, batchSize: number, dropLast: boolean): number {
    return shardBatchCount(rows, batchSize, dropLast, this.worldSize);
  }

  evaluationBatches(rows: number, batchSize: number, dropLast: boolean): number[][] {
    return evaluationShard(rows, batchSize, dropLast, this.worldSize, this.rank);
  }

  sum(values: readonly number[]): number[] {
    if (values.length === 0) return [];
    return tidy(() => {
      const buffer = tensor([...values], { dtype: "float64" });
      this.collective("summing over the ranks", () => allReduce(buffer));
      return buffer.toFlatArray();
    });
  }

  allGatherJson<T>(value: T): T[] {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    return tidy(() => {
      const lengths = this.collective("gathering from the ranks", () => allGather(tensor([bytes.length], { dtype: "int64" }))).map((t) => t.item());
      const longest = Math.max(...lengths);
      const padded = new Uint8Array(Math.max(longest, 1));
      padded.set(bytes);
      const gathered = this.collective("gathering from the ranks", () => allGather(fromBytes(padded, [padded.length], "uint8")));
      const decoder = new TextDecoder();
      return gathered.map((t, r) => JSON.parse(decoder.decode(t.bytes().subarray(0, lengths[r]))) as T);
    });
  }

  broadcastBytes(bytes: Uint8Array | null): Uint8Array {
    return tidy(() => {
      const length = tensor([this.isMain ? bytes!.length : 0], { dtype: "int64" });
      this.collective("receiving from rank 0", () => broadcast(length, 0));
      const size = length.item();
      if (size === 0) return new Uint8Array(0);
      const buffer = this.isMain ? fromBytes(bytes!, [size], "uint8") : zeros([size], { dtype: "uint8" });
      this.collective("receiving from rank 0", () => broadcast(buffer, 0));
      return this.isMain ? bytes! : buffer.bytes();
    });
  }

  prepareGradients(parameters: readonly [string, Tensor][]): void {
    this.gradients = new GradientSync(parameters, {
      allReduce: (tensors) => this.collective("the gradient all-reduce", () => tensors.forEach((tensor) => onTheWire(tensor, (wire) => allReduce(wire)))),
      findUnusedParameters: this.options.findUnusedParameters,
    });
  }

  reduceGradients(): void {
    if (!this.gradients) throw new Error("prepareGradients was not called");
    this.gradients.reduce();
  }

  broadcastParameters(parameters: readonly Tensor[]): void {
    const sizes = parameters.map((p) => ({ bytes: p.numel * ITEM_SIZE[p.dtype], dtype: p.dtype }));
    for (const bucket of assignBuckets(sizes, 25 * 1024 * 1024, 25 * 1024 * 1024)) {
      tidy(() =>
        noGrad(() => {
          const flat = cat(bucket.map((index) => parameters[index]!.detach().reshape(-1)));
          this.collective("sending the parameters from rank 0", () => onTheWire(flat, (wire) => broadcast(wire, 0)));
          let offset = 0;
          for (const index of bucket) {
            const parameter = parameters[index]!;
            parameter.copy_(flat.narrow(0, offset, parameter.numel).view(parameter.shape));
            offset += parameter.numel;
          }
        }),
      );
    }
  }

  gatherRngStates(state: Tensor): Tensor[] {
    return this.collective("gathering the RNG states", () => allGather(state));
  }

  barrier(what: string): void {
    this.collective(what, () => barrier());
  }

  destroy(): void {
    destroyProcessGroup();
  }

  /** Runs a collective; a failure becomes one message naming this rank and what stopped. */
  private collective<T>(what: string, run: () => T): T {
    try {
      return run();
    } catch (error) {
      if (error instanceof UserError) throw error;
      throw new UserError(`rank ${this.rank}: ${what} failed: ${this.whatStopped(String((error as Error).message ?? error))}`, "distributed training", "the other workers stop too; fix the cause and run the same command again to resume from the last checkpoint");
    }
  }

  private whatStopped(message: string): string {
    const detail = message.replace(/^dist_\w+: /, "").replace(/\[[^\]]*\.(cc|cpp):\d+\] /, "");
    const here = hostKey();
    // A worker that died leaves its connections reset at once; its launcher may not have reaped it yet.
    let gone: number[] = [];
    for (let attempt = 0; attempt < 20 && gone.length === 0; attempt++) {
      gone = this.peers.flatMap((peer, rank) => (rank !== this.rank && peer.host === here && processGone(peer.pid) ? [rank] : []));
      if (gone.length === 0 && !/timed? ?out/i.test(detail)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
    }
    if (gone.length > 0) return `${gone.map((rank) => `rank ${rank} (pid ${this.peers[rank]!.pid})`).join(", ")} exited (${detail})`;
    if (/timed? ?out/i.test(detail)) {
      const others = this.worldSize === 2 ? `rank ${1 - this.rank} (pid ${this.peers[1 - this.rank]!.pid})` : "another worker";
      return `${others} did not answer within ddp_timeout (${this.options.timeoutSeconds} s) (${detail})`;
    }
    return `another worker stopped (${detail})`;
  }
}

/** init_process_group("gloo") from the worker's environment, with the failures a user can fix told as such. */
function join(worker: WorkerEnvironment, timeoutSeconds: number): void {
  const master = `${worker.masterAddr}:${worker.masterPort}`;
  try {
    initProcessGroup({ rank: worker.rank, worldSize: worker.worldSize, masterAddr: worker.masterAddr, masterPort: worker.masterPort, timeoutSeconds });
  } catch (error) {
    if (error instanceof UserError) throw error;
    const message = String((error as Error).message ?? error);
    if (/address already in use|failed to bind|failed to listen/i.test(message)) {
      throw new UserError(`rank 0 cannot listen on port ${worker.masterPort}: the port is in use on this machine`, "MASTER_PORT", "choose a free port with --master_port (or MASTER_PORT), or stop the program that holds it");
    }
    if (/timed out|timeout/i.test(message)) {
      const what = worker.rank === 0 ? `not all ${worker.worldSize} workers joined rank 0 at ${master}` : `rank ${worker.rank} could not reach rank 0 at ${master}`;
      throw new UserError(`${what} within ddp_timeout (${timeoutSeconds} s)`, "distributed training", "start every worker with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, and check that the address is reachable");
    }
    throw new UserError(`rank ${worker.rank} could not join the process group at ${master}: ${message.replace(/^dist_init\([^)]*\): /, "")}`, "distributed training");
  }
}
