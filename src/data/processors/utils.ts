// Shared helpers of the stage processors, after LLaMA-Factory's `data/processor/processor_utils.py`:
// how a cutoff length is split between prompt and answer, and the greedy knapsack of packing.

/**
 * Lengths kept of a (source, target) pair under `cutoffLen` (LLaMA-Factory's `infer_seqlen`): a
 * short target is kept whole, else a short source is, else both shrink in proportion. Both sides
 * keep their prefix. `reservedLabelLen` (optional) guarantees the target at least that many tokens.
 */
export function inferSeqlen(sourceLen: number, targetLen: number, cutoffLen: number, reservedLabelLen = 0): [number, number] {
  let maxTargetLen: number;
  if (targetLen * 2 < cutoffLen) maxTargetLen = cutoffLen;
  else if (sourceLen * 2 < cutoffLen) maxTargetLen = cutoffLen - sourceLen;
  else maxTargetLen = Math.trunc(cutoffLen * (targetLen / (sourceLen + targetLen)));
  maxTargetLen = Math.max(maxTargetLen, Math.min(reservedLabelLen, cutoffLen));
  const newTargetLen = Math.min(maxTargetLen, targetLen);
  const maxSourceLen = Math.max(cutoffLen - newTargetLen, 0);
  const newSourceLen = Math.min(maxSourceLen, sourceLen);
  return [newSourceLen, newTargetLen];
}

/** Index of the largest number <= capacity in an ascending list, or -1 (Python's bisect_right - 1). */
function searchForFit(sorted: number[], capacity: number): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (sorted[mid]! <= capacity) low = mid + 1;
    else high = mid;
  }
  return low - 1;
}

/** Bins of lengths each summing to at most `capacity`: each bin repeatedly takes the largest length that still fits. */
export function greedyKnapsack(lengths: readonly number[], capacity: number): number[][] {
  const numbers = [...lengths].sort((a, b) => a - b);
  const knapsacks: number[][] = [];
  while (numbers.length > 0) {
    const knapsack: number[] = [];
    let remaining = capacity;
    for (;;) {
      const index = searchForFit(numbers, remaining);
      if (index === -1) break;
      remaining -= numbers[index]!;
      knapsack.push(numbers.splice(index, 1)[0]!);
    }
    // A length above capacity never fits; LLaMA-Factory drops such examples before packing.
    if (knapsack.length === 0) break;
    knapsacks.push(knapsack);
  }
  return knapsacks;
}

export function ones(length: number): number[] {
  return new Array<number>(length).fill(1);
}

export function ignored(length: number): number[] {
  return new Array<number>(length).fill(-100);
}
