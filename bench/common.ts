// What the benchmarks share: medians, the process's own memory figures from /proc, and running a
// side of a comparison in its own process (so each side's peak memory is its own).
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";

/** The shape of a benchmark's Llama. */
export interface LlamaShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
}

/** The config.json of a Llama with `shape` (pass it through normalizeConfig to build it). */
export function llamaConfig(shape: LlamaShape): Record<string, unknown> {
  return {
    model_type: "llama",
    architectures: ["LlamaForCausalLM"],
    vocab_size: shape.vocab,
    hidden_size: shape.hidden,
    intermediate_size: shape.intermediate,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-6,
  };
}

/** Threads for both sides of every comparison (BENCH_THREADS, default min(cores, 2)). */
export const THREADS = Number(process.env.BENCH_THREADS ?? Math.min(cpus().length, 2));

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** VmHWM (peak resident memory) or VmRSS (now) of this process, MiB. */
export function statusMiB(field: "VmHWM" | "VmRSS"): number {
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync("/proc/self/status", "utf8"))![1]) / 1024;
}

/** Resets VmHWM (Linux clear_refs 5), so the next peak read is of what runs after this. */
export function resetPeak(): void {
  writeFileSync("/proc/self/clear_refs", "5");
}

/**
 * Runs `command args` with the bench's thread count and returns the JSON object its stdout ends
 * with (a side prints progress first, its result last).
 */
export function runSide<T>(command: string, args: string[], input?: string): T {
  const out = execFileSync(command, args, {
    input,
    env: { ...process.env, OMP_NUM_THREADS: String(THREADS) },
    maxBuffer: 1 << 26,
  });
  return JSON.parse(out.toString().trim().split("\n").pop()!) as T;
}
