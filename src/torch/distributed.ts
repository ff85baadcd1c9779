// torch.distributed over c10d: one process group per process (Gloo on CPU), created from the
// rendezvous torchrun's variables describe (rank, world size, master address and port), with
// the collectives data-parallel training needs. Collectives act in place, as torch's do.
import { UserError } from "../errors.ts";
import { native } from "./native.ts";
import { Tensor } from "./tensor.ts";

export type ReduceOp = "sum" | "max" | "min";

const REDUCE_OPS: Record<ReduceOp, number> = { sum: 0, max: 1, min: 2 };

export interface ProcessGroupOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  /** How long a collective (and the rendezvous) may wait for the other ranks, as ddp_timeout. */
  timeoutSeconds: number;
}

let current: ProcessGroupOptions | null = null;

/** Whether this build of the engine has c10d (libtorch's c10d headers and Gloo at build time). */
export function distributedAvailable(): boolean {
  return native.dist_available();
}

function engine() {
  if (!native.dist_available() || !native.dist_init) {
    throw new UserError(
      "this build of lmfactory's engine has no distributed support (c10d with Gloo)",
      undefined,
      "install Gloo's headers (Debian: apt-get install libgloo-dev) and rebuild with `npm run setup`",
    );
  }
  return native as Required<typeof native>;
}

/** torch.distributed.init_process_group("gloo"): blocks until every rank has joined. */
export function initProcessGroup(options: ProcessGroupOptions): void {
  if (current) throw new Error("the process group is already initialised");
  engine().dist_init!(options.rank, options.worldSize, options.masterAddr, options.masterPort, Math.round(options.timeoutSeconds * 1000));
  current = options;
}

export function isInitialized(): boolean {
  return current !== null;
}

export function getRank(): number {
  return current?.rank ?? 0;
}

export function getWorldSize(): number {
  return current?.worldSize ?? 1;
}

export function allReduce(tensors: Tensor | Tensor[], op: ReduceOp = "sum"): void {
  const list = Array.isArray(tensors) ? tensors : [tensors];
  engine().dist_all_reduce!(list.map((t) => t.id), REDUCE_OPS[op]);
}

export function broadcast(tensors: Tensor | Tensor[], root = 0): void {
  const list = Array.isArray(tensors) ? tensors : [tensors];
  engine().dist_broadcast!(list.map((t) => t.id), root);
}

/** Every rank's copy of `tensor`, in rank order (same shape on every rank). */
export function allGather(tensor: Tensor): Tensor[] {
  return engine().dist_all_gather!(tensor.id).map((id) => new Tensor(id));
}

export function barrier(): void {
  engine().dist_barrier!();
}

export function destroyProcessGroup(): void {
  if (!current) return;
  engine().dist_destroy!();
  current = null;
}
