// `lmf_outputs.json`: lmfactory's record of the entries it wrote in an output folder. lmfactory
// overwrites or removes only what this record lists, so a user's own files beside a run (or a
// folder named by mistake) are never touched. A name is recorded before it is written, so a kill
// between the two leaves a listed name that does not exist yet, never a written one that is not listed.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";

export const MANIFEST_NAME = "lmf_outputs.json";

export interface OutputManifest {
  /** Top-level names (files or folders) in the output folder that lmfactory wrote or is writing. */
  written: string[];
  /** lmfactory checkpoints of an earlier run that `overwrite_output_dir` started over from: never resumed, removed at the next save. */
  stale: string[];
  /** Whether the last training run in this folder got to its end. */
  training_finished: boolean;
}

const ABOUT = "lmfactory's record of what it wrote in this folder: it overwrites or removes only these entries";

/** The manifest of `dir`, or an empty one when the folder has none. */
export function readManifest(dir: string): OutputManifest {
  const path = join(dir, MANIFEST_NAME);
  if (!existsSync(path)) return { written: [], stale: [], training_finished: false };
  let parsed: Partial<OutputManifest> | null = null;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8")) as Partial<OutputManifest>;
  } catch {
    parsed = null;
  }
  if (!parsed || !Array.isArray(parsed.written) || !parsed.written.every((name) => typeof name === "string")) {
    throw new UserError(`${MANIFEST_NAME} is not lmfactory's record of its outputs`, path, "this folder was not written by lmfactory: choose another output_dir");
  }
  return { written: parsed.written, stale: Array.isArray(parsed.stale) ? parsed.stale : [], training_finished: parsed.training_finished === true };
}

/** Writes the manifest whole (a temporary file renamed over it, so a kill never leaves half of one). */
export function writeManifest(dir: string, manifest: OutputManifest): void {
  const path = join(dir, MANIFEST_NAME);
  const sorted = { about: ABOUT, written: [...new Set(manifest.written)].sort(), stale: [...new Set(manifest.stale)].sort(), training_finished: manifest.training_finished };
  writeFileSync(`${path}.tmp`, JSON.stringify(sorted, null, 2) + "\n");
  renameSync(`${path}.tmp`, path);
}

/** Records names as lmfactory's before they are written (a name written again is no longer stale). */
export function recordOutputs(dir: string, names: readonly string[]): void {
  const manifest = readManifest(dir);
  const missing = names.filter((name) => !manifest.written.includes(name));
  const stale = manifest.stale.filter((name) => !names.includes(name));
  if (missing.length > 0 || stale.length < manifest.stale.length) writeManifest(dir, { ...manifest, written: [...manifest.written, ...missing], stale });
}

/** Drops names of entries lmfactory removed, so the record stays as small as the folder. */
export function forgetOutputs(dir: string, names: readonly string[]): void {
  if (names.length === 0) return;
  const manifest = readManifest(dir);
  writeManifest(dir, { ...manifest, written: manifest.written.filter((name) => !names.includes(name)), stale: manifest.stale.filter((name) => !names.includes(name)) });
}

/** Whether lmfactory wrote `name` (a top-level entry of `dir`). */
export function isOurs(dir: string, name: string, manifest = readManifest(dir)): boolean {
  return manifest.written.includes(name);
}

/** Removes one of lmfactory's own entries; refuses (as a bug would be) to remove anything else. */
export function removeOurs(dir: string, name: string, manifest = readManifest(dir)): void {
  if (!isOurs(dir, name, manifest)) throw new Error(`refusing to remove ${join(dir, name)}: lmfactory did not write it`);
  rmSync(join(dir, name), { recursive: true, force: true });
}

/** Removes the stale checkpoints of an earlier run (all lmfactory's) and forgets them. */
export function removeStaleCheckpoints(dir: string): void {
  const manifest = readManifest(dir);
  if (manifest.stale.length === 0) return;
  for (const name of manifest.stale) removeOurs(dir, name, manifest);
  forgetOutputs(dir, manifest.stale);
}
