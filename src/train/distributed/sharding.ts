// Which batches each rank reads, as the HF Trainer's data loaders do under DDP: accelerate's
// BatchSamplerShard (split_batches false, even_batches true) deals the global sequence of
// per-device batches round-robin, rank r taking batches r, r + W, ..., and completes the last round
// with rows from the start of the epoch so that every rank gets the same number of full batches
// (with drop_last, only complete rounds). One process is W = 1: the plain batches.

/** torch's BatchSampler over `order`: batches of `batchSize`, the last one short unless dropped. */
function batchesOf(order: readonly number[], batchSize: number, dropLast: boolean): number[][] {
  const batches: number[][] = [];
  for (let start = 0; start < order.length; start += batchSize) {
    const batch = order.slice(start, start + batchSize);
    if (batch.length < batchSize && dropLast) break;
    batches.push(batch);
  }
  return batches;
}

/** accelerate's BatchSamplerShard.__len__: the batches each rank reads in one epoch over `rows` rows. */
export function shardBatchCount(rows: number, batchSize: number, dropLast: boolean, worldSize: number): number {
  const batches = dropLast ? Math.floor(rows / batchSize) : Math.ceil(rows / batchSize);
  if (batches % worldSize === 0 || dropLast) return Math.floor(batches / worldSize);
  return Math.floor(batches / worldSize) + 1;
}

/**
 * accelerate's BatchSamplerShard._iter_with_no_split with even_batches: rank `rank`'s batches of
 * one epoch over `order`. A round is yielded once its last batch is full; what is left over is
 * completed from the first rounds' rows, cycling them when the epoch holds fewer rows than a round.
 */
export function shardBatches(order: readonly number[], batchSize: number, dropLast: boolean, worldSize: number, rank: number): number[][] {
  const batches = batchesOf(order, batchSize, dropLast);
  if (worldSize === 1) return batches;
  const mine: number[][] = [];
  let initial: number[] = [];
  let pending: number[] = [];
  let index = 0;
  let last: number[] = [];
  for (; index < batches.length; index++) {
    const batch = batches[index]!;
    if (!dropLast && index < worldSize) initial = initial.concat(batch);
    if (index % worldSize === rank) pending = batch;
    if (index % worldSize === worldSize - 1 && batch.length === batchSize) {
      mine.push(pending);
      pending = [];
    }
    last = batch;
  }
  if (dropLast || initial.length === 0) return mine;
  if (pending.length === batchSize) mine.push(pending);
  while (initial.length < worldSize * batchSize) initial = initial.concat(initial);
  // The last batch seen was full: its round was yielded above; the next round starts after it.
  let batch = last.length === batchSize ? [] : [...last];
  index = last.length === batchSize ? index : index - 1;
  let cycle = 0;
  while (index % worldSize !== 0 || batch.length > 0) {
    const end = cycle + batchSize - batch.length;
    batch = batch.concat(initial.slice(cycle, end));
    if (index % worldSize === rank) mine.push(batch);
    cycle = end;
    batch = [];
    index++;
  }
  return mine;
}

/**
 * Evaluation batches of rank `rank`: the same dealing, where the rows accelerate repeats to even
 * the last round are left out (HF's gather_for_metrics drops them), so the ranks together
 * evaluate each row once; with drop_last, only complete rounds, as accelerate's sampler.
 */
export function evaluationShard(rows: number, batchSize: number, dropLast: boolean, worldSize: number, rank: number): number[][] {
  const order = Array.from({ length: rows }, (_, i) => i);
  if (dropLast) return shardBatches(order, batchSize, true, worldSize, rank);
  return batchesOf(order, batchSize, false).filter((_, index) => index % worldSize === rank);
}
