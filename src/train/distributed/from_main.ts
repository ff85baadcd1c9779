// Work done once, on rank 0, whose result every rank needs: deciding about the output folder,
// preprocessing the data (LLaMA-Factory's main_process_first). Rank 0 runs it while the others
// wait; the result reaches them over the process group as JSON (rows in chunks, so neither a big
// dataset's JSON string nor a shared file system is needed), and so does a failure, so that every
// rank stops with rank 0's message instead of waiting for ddp_timeout.
import { UserError } from "../../errors.ts";
import type { DataParallel } from "./data_parallel.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Rows per broadcast chunk: each chunk's JSON stays far below V8's string limit. */
const ROWS_PER_CHUNK = 20_000;

type Outcome = { ok: true; value: unknown } | { ok: false; message: string };

function send(parallel: DataParallel, outcome: Outcome | null): Outcome {
  const bytes = parallel.broadcastBytes(outcome ? encoder.encode(JSON.stringify(outcome)) : null);
  return JSON.parse(decoder.decode(bytes)) as Outcome;
}

function failed(message: string): UserError {
  return new UserError(`rank 0 stopped: ${message}`, "distributed training", "this worker stops with it; fix what rank 0 reports and run the same command again");
}

/**
 * Runs `produce` on rank 0; every other rank receives `share(result)` (the result itself by
 * default) through JSON, or rank 0's error.
 */
export async function fromMain<T, S = T>(parallel: DataParallel, produce: () => T | Promise<T>, share: (value: T) => S = (value) => value as unknown as S): Promise<T | S> {
  if (parallel.worldSize === 1) return produce();
  if (!parallel.isMain) {
    const outcome = send(parallel, null);
    if (!outcome.ok) throw failed(outcome.message);
    return outcome.value as S;
  }
  let value: T;
  try {
    value = await produce();
  } catch (error) {
    send(parallel, { ok: false, message: (error as Error).message ?? String(error) });
    throw error;
  }
  send(parallel, { ok: true, value: share(value) });
  return value;
}

/** Rank 0's rows on every rank, in chunks (the ranks must call it together, after fromMain agreed). */
export function broadcastRows<Row>(parallel: DataParallel, rows: readonly Row[] | null): Row[] {
  if (parallel.worldSize === 1) return rows as Row[];
  const count = parallel.sum([parallel.isMain ? rows!.length : 0])[0]!;
  const out: Row[] = [];
  for (let start = 0; start < count; start += ROWS_PER_CHUNK) {
    const chunk = parallel.isMain ? encoder.encode(JSON.stringify(rows!.slice(start, start + ROWS_PER_CHUNK))) : null;
    const received = parallel.broadcastBytes(chunk);
    if (parallel.isMain) continue;
    for (const row of JSON.parse(decoder.decode(received)) as Row[]) out.push(row);
  }
  return parallel.isMain ? (rows as Row[]) : out;
}
