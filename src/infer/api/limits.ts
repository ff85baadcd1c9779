// The API server's load limits, read from the environment like its other settings (LLaMA-Factory's
// api reads API_HOST, API_PORT, API_KEY and MAX_CONCURRENT there): how many sequences generate at
// once, how many requests may wait, and how long one request may take.
import { UserError } from "../../errors.ts";

export interface ServerLimits {
  /** Sequences generating at once; a request with n choices counts n. Bounds the KV-cache memory. */
  maxSequences: number;
  /** Requests waiting for room; one more gets 503 with Retry-After. */
  maxWaiting: number;
  /** Seconds from a request's arrival: a request still waiting gets 503, a generating one ends with finish_reason "length". */
  requestTimeoutSeconds: number;
}

export const DEFAULT_LIMITS: ServerLimits = { maxSequences: 4, maxWaiting: 32, requestTimeoutSeconds: 600 };

function envNumber(env: NodeJS.ProcessEnv, name: string, fallback: number, valid: (value: number) => boolean, expected: string): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = Number(raw);
  if (!valid(value)) throw new UserError(`${name} must be ${expected}; got ${JSON.stringify(raw)}`, "environment", `e.g. ${name}=${fallback}`);
  return value;
}

const isCount = (min: number) => (value: number) => Number.isInteger(value) && value >= min;

/**
 * API_MAX_CONCURRENT (or LLaMA-Factory's MAX_CONCURRENT, which counts requests there; here a
 * request with n choices counts n, so that the memory bound holds), API_MAX_QUEUE and
 * API_REQUEST_TIMEOUT (seconds).
 */
export function limitsFromEnv(env: NodeJS.ProcessEnv): ServerLimits {
  const concurrentName = env.API_MAX_CONCURRENT !== undefined && env.API_MAX_CONCURRENT.trim() !== "" ? "API_MAX_CONCURRENT" : "MAX_CONCURRENT";
  return {
    maxSequences: envNumber(env, concurrentName, DEFAULT_LIMITS.maxSequences, isCount(1), "an integer >= 1"),
    maxWaiting: envNumber(env, "API_MAX_QUEUE", DEFAULT_LIMITS.maxWaiting, isCount(0), "an integer >= 0"),
    requestTimeoutSeconds: envNumber(env, "API_REQUEST_TIMEOUT", DEFAULT_LIMITS.requestTimeoutSeconds, (value) => Number.isFinite(value) && value > 0, "a number of seconds > 0"),
  };
}
