// The tokenized-dataset cache (`tokenized_path`, alias `cache_path`; `overwrite_cache`), after
// LLaMA-Factory's `data/loader.py` save_to_disk / load_from_disk. One split per folder: rows as JSON
// lines plus `dropped.json` and a `manifest.json` holding a hash of what built it (tokenizer files,
// template, arguments, data files). Unlike upstream, a different hash rebuilds instead of silently
// reusing stale data. Written to a temp folder and renamed, so a crash never leaves half a cache.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { once } from "node:events";
import { UserError } from "../errors.ts";
import type { DroppedExample } from "./types.ts";

const MANIFEST = "manifest.json";
const ROWS = "rows.jsonl";
const DROPPED = "dropped.json";
const FORMAT_VERSION = 1;

export interface CacheManifest {
  format: "lmfactory-tokenized";
  version: number;
  /** sha256 of the canonical JSON of `key`. */
  hash: string;
  key: unknown;
  rows: number;
  dropped: number;
  createdAt: string;
}

/** JSON with object keys sorted, so equal keys hash equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_, inner: unknown) =>
    inner !== null && typeof inner === "object" && !Array.isArray(inner)
      ? Object.fromEntries(Object.entries(inner as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : inner,
  );
}

export function hashKey(key: unknown): string {
  return createHash("sha256").update(canonicalJson(key)).digest("hex");
}

/** sha256 over the names and contents of the files that exist (missing ones count as absent). */
export function hashFiles(paths: readonly string[]): string {
  const hash = createHash("sha256");
  for (const path of paths) {
    if (!existsSync(path) || !statSync(path).isFile()) continue;
    hash.update(path.split(/[\\/]/).pop()!).update("\0").update(readFileSync(path)).update("\0");
  }
  return hash.digest("hex");
}

const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model"];

/** A hash of the tokenizer files in a model folder, for a cache key. */
export function tokenizerFingerprint(modelDir: string): string {
  return hashFiles(TOKENIZER_FILES.map((name) => join(modelDir, name)));
}

export function isCacheFolder(dir: string): boolean {
  return existsSync(join(dir, MANIFEST));
}

export function readManifest(dir: string): CacheManifest | null {
  if (!isCacheFolder(dir)) return null;
  try {
    const manifest = JSON.parse(readFileSync(join(dir, MANIFEST), "utf8")) as CacheManifest;
    return manifest.format === "lmfactory-tokenized" ? manifest : null;
  } catch {
    return null;
  }
}

/** Why the cache at `dir` cannot serve `key`, or null when it can. */
export function cacheMismatch(dir: string, key: unknown): string | null {
  const manifest = readManifest(dir);
  if (manifest === null) return "no cache there";
  if (manifest.version !== FORMAT_VERSION) return `cache format ${manifest.version}, expected ${FORMAT_VERSION}`;
  if (manifest.hash !== hashKey(key)) {
    const before = (manifest.key ?? {}) as Record<string, unknown>;
    const now = (key ?? {}) as Record<string, unknown>;
    const changed = [...new Set([...Object.keys(before), ...Object.keys(now)])].filter((name) => canonicalJson(before[name]) !== canonicalJson(now[name]));
    return `built with different ${changed.length ? changed.join(", ") : "settings"}`;
  }
  return null;
}

export async function readCache<Row>(dir: string): Promise<{ rows: Row[]; dropped: DroppedExample[] }> {
  const rows: Row[] = [];
  const lines = createInterface({ input: createReadStream(join(dir, ROWS), { encoding: "utf8" }), crlfDelay: Infinity });
  for await (const line of lines) if (line) rows.push(JSON.parse(line) as Row);
  const dropped = JSON.parse(readFileSync(join(dir, DROPPED), "utf8")) as DroppedExample[];
  return { rows, dropped };
}

/**
 * Writes a split's rows to `dir` (replacing an earlier lmfactory cache there). A folder that exists,
 * holds files and is not one of our caches is refused rather than deleted.
 */
export async function writeCache(dir: string, key: unknown, rows: readonly unknown[], dropped: readonly DroppedExample[]): Promise<void> {
  if (existsSync(dir) && !isCacheFolder(dir) && readdirSync(dir).length > 0) {
    throw new UserError(`${dir} exists and is not an lmfactory tokenized-dataset cache`, "tokenized_path", "point tokenized_path at a new or empty folder; this one is left untouched");
  }
  mkdirSync(dirname(dir), { recursive: true });
  const temp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(temp, { recursive: true });
  try {
    const out = createWriteStream(join(temp, ROWS), { encoding: "utf8" });
    for (const row of rows) {
      if (!out.write(JSON.stringify(row) + "\n")) await once(out, "drain");
    }
    out.end();
    await once(out, "finish");
    writeFileSync(join(temp, DROPPED), JSON.stringify(dropped));
    const manifest: CacheManifest = { format: "lmfactory-tokenized", version: FORMAT_VERSION, hash: hashKey(key), key, rows: rows.length, dropped: dropped.length, createdAt: new Date().toISOString() };
    writeFileSync(join(temp, MANIFEST), JSON.stringify(manifest, null, 2));
    rmSync(dir, { recursive: true, force: true });
    renameSync(temp, dir);
  } catch (error) {
    rmSync(temp, { recursive: true, force: true });
    throw error;
  }
}
