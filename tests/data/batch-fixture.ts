// Batch functions for the worker tests, loaded by path inside worker threads. The output depends on
// the batch (each row also carries its batch neighbour, like the KTO KL pair), so a changed batch
// cut would show.
import { threadId } from "node:worker_threads";
import { UserError } from "../../src/errors.ts";
import type { AlignedExample, DroppedExample, ProcessorResult } from "../../src/data/types.ts";

export interface FixtureRow {
  input_ids: number[];
  neighbour: string;
}

export function makeProcessor(args: { scale: number }): (batch: AlignedExample[]) => ProcessorResult<FixtureRow> {
  return (batch) => {
    const rows: FixtureRow[] = [];
    const dropped: DroppedExample[] = [];
    batch.forEach((example, index) => {
      const text = example._prompt[0]!.content;
      if (text.includes("drop")) return dropped.push({ index, reason: "asked to drop" });
      const neighbour = batch[(index + 1) % batch.length]!._prompt[0]!.content;
      rows.push({ input_ids: [...text].map((char) => char.charCodeAt(0) * args.scale), neighbour });
    });
    return { rows, dropped };
  };
}

export function makeFailing(): (batch: AlignedExample[]) => never {
  return () => {
    throw new UserError("a processor refused the batch", "fixture", "nothing to fix");
  };
}

/** One row per example: the thread that processed it, and the size of the batch it came in. */
export function makeThreadReporter(): (batch: AlignedExample[]) => ProcessorResult<{ thread: number; batch: number }> {
  return (batch) => ({ rows: batch.map(() => ({ thread: threadId, batch: batch.length })), dropped: [] });
}
