// The most memory `lmf api` spends on requests besides the weights, from the model's config: each
// running sequence reserves a KV cache for prompt + answer (at most the context C); one model step
// at a time runs, and the largest is a prefill step of PREFILL_TOKENS_PER_STEP prompt tokens over
// all rows, whose composed attention holds about four score tensors [heads, tokens, C] and, per row,
// the keys and values repeated for every query head; each decode step has float32 logits per row.
// Checked against the peak RSS of generations on a Qwen2.5-0.5B-shaped model on CPU (README).
import type { ModelConfig } from "../../model/config.ts";
import { type DType, ITEM_SIZE } from "../../torch/index.ts";

/** Prompt tokens one prefill step feeds across all rows of a request (vLLM's per-step token budget). */
export const PREFILL_TOKENS_PER_STEP = 128;

/** Bytes per vocabulary entry of a decode step's scores: float32 scores, warped and sorted copies, int64 indices. */
const LOGIT_BYTES = 32;

export interface MemoryBudget {
  /** KV cache of one sequence at the full context: 2 · layers · kv_heads · head_dim · C · bytes. */
  kvCachePerSequence: number;
  /** Logits of one sequence in one decode step: vocab · 32 bytes. */
  logitsPerSequence: number;
  /** The largest prefill step of a request with `rows` rows: heads · C · bytes · (4 · 128 + 2 · rows · head_dim). */
  prefillStep: (rows: number) => number;
}

export function memoryBudget(config: ModelConfig, dtype: DType, context: number): MemoryBudget {
  const bytes = ITEM_SIZE[dtype];
  return {
    kvCachePerSequence: 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * context * bytes,
    logitsPerSequence: config.vocab_size * LOGIT_BYTES,
    prefillStep: (rows) => config.num_attention_heads * context * bytes * (4 * PREFILL_TOKENS_PER_STEP + 2 * rows * config.head_dim),
  };
}

/** The most one request of `rows` sequences (n choices, or beams) costs. */
export function requestBytes(budget: MemoryBudget, rows: number): number {
  return rows * (budget.kvCachePerSequence + budget.logitsPerSequence) + budget.prefillStep(rows);
}

/** The most the server's requests cost together with `maxSequences` sequences running (steps run one at a time). */
export function serverBytes(budget: MemoryBudget, maxSequences: number): number {
  return maxSequences * (budget.kvCachePerSequence + budget.logitsPerSequence) + budget.prefillStep(maxSequences);
}

export function formatBytes(bytes: number): string {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB` : `${Math.ceil(bytes / 2 ** 20)} MiB`;
}
