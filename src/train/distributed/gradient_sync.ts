// The gradient all-reduce of DistributedDataParallel's Reducer, run once per optimizer step after
// the last micro-batch's backward (what `no_sync` gives the others): the trainable parameters are
// cut into buckets as DDP cuts them (in model order, 1 MiB for the first, then 25 MiB, one dtype
// per bucket), each bucket's gradients are flattened into one tensor, all-reduced, and copied
// back, last bucket first. find_unused_parameters: a parameter without a gradient on some ranks
// gets zeros there; one without a gradient anywhere keeps none; without it, a missing gradient
// is an error naming the parameters, where DDP would fail at the next step.
import { UserError } from "../../errors.ts";
import { type Tensor, ITEM_SIZE, cat, noGrad, tensor, tidy, zerosLike } from "../../torch/index.ts";

/** DDP's _DEFAULT_FIRST_BUCKET_BYTES and bucket_cap_mb (25). */
export const FIRST_BUCKET_BYTES = 1024 * 1024;
export const BUCKET_BYTES = 25 * 1024 * 1024;

export interface GradientSyncOptions {
  /** Sums each tensor over the ranks, in place. */
  allReduce: (tensors: Tensor[]) => void;
  findUnusedParameters: boolean;
  bucketBytes?: number;
  firstBucketBytes?: number;
}

/** What the last reductions cost, for the benchmark: per step, averaged by the caller. */
export interface GradientSyncStats {
  steps: number;
  buckets: number;
  /** Bytes of gradient all-reduced (each rank's buffer size), summed over steps. */
  bytes: number;
  /** Seconds inside the all-reduce calls. */
  allReduceSeconds: number;
  /** Seconds of the whole reduction (flattening, all-reduce, copying back). */
  totalSeconds: number;
}

/** DDP's _compute_bucket_assignment_by_size: consecutive parameters of one dtype until the bucket reaches its limit. */
export function assignBuckets(sizes: readonly { bytes: number; dtype: string }[], firstBucketBytes: number, bucketBytes: number): number[][] {
  const buckets: number[][] = [];
  const open = new Map<string, { indices: number[]; bytes: number }>();
  let limit = firstBucketBytes;
  sizes.forEach(({ bytes, dtype }, index) => {
    const bucket = open.get(dtype) ?? { indices: [], bytes: 0 };
    bucket.indices.push(index);
    bucket.bytes += bytes;
    open.set(dtype, bucket);
    if (bucket.bytes >= limit) {
      buckets.push(bucket.indices);
      open.delete(dtype);
      limit = bucketBytes;
    }
  });
  for (const bucket of open.values()) buckets.push(bucket.indices);
  return buckets;
}

export class GradientSync {
  readonly stats: GradientSyncStats = { steps: 0, buckets: 0, bytes: 0, allReduceSeconds: 0, totalSeconds: 0 };
  private readonly buckets: number[][];

  constructor(
    private readonly parameters: readonly [string, Tensor][],
    private readonly options: GradientSyncOptions,
  ) {
    const sizes = parameters.map(([, p]) => ({ bytes: p.numel * ITEM_SIZE[p.dtype], dtype: p.dtype }));
    this.buckets = assignBuckets(sizes, options.firstBucketBytes ?? FIRST_BUCKET_BYTES, options.bucketBytes ?? BUCKET_BYTES);
  }

  /** Sums every trainable parameter's gradient over the ranks, in place. */
  reduce(): void {
    const started = performance.now();
    tidy(() =>
      noGrad(() => {
        const grads = this.parameters.map(([, p]) => p.grad);
        const used = this.usedAnywhere(grads);
        for (const bucket of [...this.buckets].reverse()) {
          const members = bucket.filter((index) => used[index]);
          if (members.length === 0) continue;
          // A parameter used on other ranks only contributes zeros here, and gets their sum.
          for (const index of members) {
            if (grads[index]) continue;
            const zeros = zerosLike(this.parameters[index]![1]);
            this.parameters[index]![1].grad = zeros;
            grads[index] = zeros;
          }
          const flat = cat(members.map((index) => grads[index]!.reshape(-1)));
          const reducing = performance.now();
          this.options.allReduce([flat]);
          this.stats.allReduceSeconds += (performance.now() - reducing) / 1000;
          this.stats.bytes += flat.numel * ITEM_SIZE[flat.dtype];
          this.stats.buckets += 1;
          let offset = 0;
          for (const index of members) {
            const grad = grads[index]!;
            grad.copy_(flat.narrow(0, offset, grad.numel).view(grad.shape));
            offset += grad.numel;
          }
        }
      }),
    );
    this.stats.steps += 1;
    this.stats.totalSeconds += (performance.now() - started) / 1000;
  }

  /** Which parameters have a gradient on some rank; without find_unused_parameters, all must have one here. */
  private usedAnywhere(grads: readonly (Tensor | null)[]): boolean[] {
    const missing = grads.flatMap((grad, index) => (grad ? [] : [this.parameters[index]![0]]));
    if (!this.options.findUnusedParameters) {
      if (missing.length === 0) return grads.map(() => true);
      throw new UserError(
        `${missing.length} trainable parameter(s) received no gradient in this step (${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""}); ` +
          "distributed training without ddp_find_unused_parameters expects every trainable parameter to take part in the loss, as DistributedDataParallel does",
        "ddp_find_unused_parameters",
        "set ddp_find_unused_parameters: true, or freeze the parameters the loss does not use",
      );
    }
    // DDP's unused-parameter bitmap, all-reduced every step when find_unused_parameters is on.
    const flags = tensor(grads.map((grad) => (grad ? 1 : 0)), { dtype: "float32" });
    this.options.allReduce([flags]);
    return flags.toFlatArray().map((count) => count > 0);
  }
}
