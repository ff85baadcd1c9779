// "Did you mean ...?": the known name closest to a mistyped one, shared by the parameter system,
// the dataset registry and the template table.

/** Levenshtein distance, for "did you mean" suggestions. */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * The known name closest to `name`, or the shortest one containing it; null when nothing is close.
 * Close means a typo's distance: at most 2 edits, or a quarter of the name's length for long names
 * (`lora_rnak` -> `lora_rank`, but not `peft_config` -> `kt_config`).
 */
export function closestName(name: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(name, candidate);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  if (best !== null && bestDistance <= Math.max(2, Math.floor(name.length / 4))) return best;
  const containing = candidates.filter((candidate) => name.length >= 3 && candidate.includes(name));
  return containing.sort((a, b) => a.length - b.length)[0] ?? null;
}
