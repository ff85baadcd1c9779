// What the page shows of a run, read from its files in bounded pieces: the log and
// `trainer_log.jsonl` (LLaMA-Factory's LogCallback lines: steps, loss, lr, ETA, tokens/s...) from a
// byte offset, so a page that polls gets only what is new and a page opened later gets the whole
// history; and, once a run ends, `all_results.json` and the first generated predictions.
import { closeSync, existsSync, openSync, readSync, statSync } from "node:fs";
import { join } from "node:path";

/** Most bytes of log, or of trainer_log.jsonl, one answer carries. */
export const LOG_CHUNK_BYTES = 256 * 1024;
export const RECORDS_CHUNK_BYTES = 1024 * 1024;
const RESULTS_BYTES = 64 * 1024;
const PREDICTIONS_SHOWN = 20;

export interface TextChunk {
  text: string;
  /** The offset to ask for next. */
  next: number;
  /** The file is shorter than the offset asked for (a run that started over): read from 0. */
  reset: boolean;
}

function readRange(path: string, from: number, length: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const buffer = Buffer.alloc(length);
    const read = readSync(fd, buffer, 0, length, from);
    return buffer.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

/** Bytes from `from` up to `max`, ending at a line end (or at least on a character boundary) unless the file ends first. */
function readLines(path: string, from: number, max: number, wholeLinesOnly: boolean): TextChunk {
  if (!existsSync(path)) return { text: "", next: 0, reset: from > 0 };
  const size = statSync(path).size;
  const reset = from > size;
  const start = reset ? 0 : from;
  const buffer = readRange(path, start, Math.min(max, size - start));
  let end = buffer.length;
  const reachedEnd = start + end >= size;
  if (wholeLinesOnly || !reachedEnd) {
    const lastNewline = buffer.lastIndexOf(0x0a);
    if (lastNewline >= 0) end = lastNewline + 1;
    else if (wholeLinesOnly) end = 0;
    else while (end > 0 && (buffer[end - 1]! & 0xc0) === 0x80) end -= 1;
  }
  return { text: buffer.subarray(0, end).toString("utf8"), next: start + end, reset };
}

export function readLogChunk(path: string, from: number): TextChunk {
  return readLines(path, from, LOG_CHUNK_BYTES, false);
}

export interface RecordsChunk {
  records: Record<string, unknown>[];
  next: number;
  reset: boolean;
}

/** Complete lines of trainer_log.jsonl from `from`; a line cut by a kill mid-write waits (or is skipped when not JSON). */
export function readRecords(outputDir: string | null, from: number): RecordsChunk {
  if (!outputDir) return { records: [], next: 0, reset: false };
  const chunk = readLines(join(outputDir, "trainer_log.jsonl"), from, RECORDS_CHUNK_BYTES, true);
  const records: Record<string, unknown>[] = [];
  for (const line of chunk.text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const value = JSON.parse(line) as unknown;
      if (value && typeof value === "object" && !Array.isArray(value)) records.push(value as Record<string, unknown>);
    } catch {
      // A partial line left by a killed run.
    }
  }
  return { records, next: chunk.next, reset: chunk.reset };
}

function readSmallJson(path: string): unknown {
  if (!existsSync(path) || statSync(path).size > RESULTS_BYTES) return null;
  try {
    return JSON.parse(readRange(path, 0, RESULTS_BYTES).toString("utf8"));
  } catch {
    return null;
  }
}

/** The metrics a finished run saved (HF's all_results.json: train, eval and predict metrics merged). */
export function readResults(outputDir: string | null): Record<string, unknown> | null {
  if (!outputDir) return null;
  const results = readSmallJson(join(outputDir, "all_results.json"));
  return results && typeof results === "object" && !Array.isArray(results) ? (results as Record<string, unknown>) : null;
}

/** The first rows of generated_predictions.jsonl ({prompt, predict, label}). */
export function readPredictions(outputDir: string | null): Record<string, unknown>[] | null {
  if (!outputDir) return null;
  const path = join(outputDir, "generated_predictions.jsonl");
  if (!existsSync(path)) return null;
  const text = readLines(path, 0, RESULTS_BYTES, true).text;
  const rows: Record<string, unknown>[] = [];
  for (const line of text.split("\n").slice(0, PREDICTIONS_SHOWN)) {
    try {
      if (line.trim()) rows.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // Skipped.
    }
  }
  return rows;
}
