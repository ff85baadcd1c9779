// The export folder, complete or absent: everything is written into a temporary sibling folder
// that is renamed to `export_dir` at the end. An existing folder is replaced only when asked
// (`export_overwrite`) and only when a manifest shows that an earlier lmfactory export wrote every
// file in it; its files are then removed by name, never by a recursive delete.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { UserError } from "../errors.ts";

/** Lists what an lmfactory export wrote, so a later export may replace exactly those files. */
export const MANIFEST_NAME = "lmfactory_export.json";

interface Manifest {
  lmfactory_export: number;
  files: string[];
  [key: string]: unknown;
}

function readManifest(folder: string): Manifest | null {
  const path = join(folder, MANIFEST_NAME);
  if (!existsSync(path)) return null;
  try {
    const parsed = JSON.parse(readFileSync(path, "utf8")) as Manifest;
    return Array.isArray(parsed.files) && parsed.files.every((file) => typeof file === "string" && !file.includes("/")) ? parsed : null;
  } catch {
    return null;
  }
}

/**
 * Checks that `exportDir` can be written before anything is loaded or written: absent, empty, or
 * (with `overwrite`) an earlier lmfactory export holding nothing else.
 */
export function checkExportDir(exportDir: string, overwrite: boolean): void {
  if (!existsSync(exportDir)) {
    const parent = dirname(resolve(exportDir));
    if (existsSync(parent) && !statSync(parent).isDirectory()) throw new UserError("the parent of export_dir is a file", exportDir, "choose another export_dir");
    return;
  }
  if (!statSync(exportDir).isDirectory()) throw new UserError("export_dir exists and is a file", exportDir, "choose a folder path for export_dir");
  const entries = readdirSync(exportDir);
  if (entries.length === 0) return;
  if (!overwrite) {
    throw new UserError(
      `export_dir is not empty (${entries.length} entr${entries.length === 1 ? "y" : "ies"})`,
      exportDir,
      "choose a new export_dir, or set export_overwrite: true to replace an earlier lmfactory export there",
    );
  }
  const manifest = readManifest(exportDir);
  if (!manifest) {
    throw new UserError(
      `export_dir holds files that lmfactory did not write (no ${MANIFEST_NAME}), and lmfactory never overwrites those`,
      exportDir,
      "choose a new export_dir, or empty this one yourself",
    );
  }
  const listed = new Set([...manifest.files, MANIFEST_NAME]);
  const foreign = entries.filter((entry) => !listed.has(entry) || !statSync(join(exportDir, entry)).isFile());
  if (foreign.length) {
    throw new UserError(
      `export_dir holds ${foreign.length} file(s) that the earlier export did not write: ${foreign.slice(0, 5).join(", ")}`,
      exportDir,
      "move those files away or choose a new export_dir; lmfactory never overwrites files it did not write",
    );
  }
}

/** A temporary folder beside `exportDir` whose files become `exportDir` on `commit`. */
export class StagedFolder {
  readonly path: string;
  private readonly files: string[] = [];

  constructor(readonly exportDir: string) {
    const target = resolve(exportDir);
    mkdirSync(dirname(target), { recursive: true });
    this.path = join(dirname(target), `.${basename(target)}.lmf-partial-${process.pid}`);
    if (existsSync(this.path)) this.removeOwnFolder(this.path, readdirSync(this.path));
    mkdirSync(this.path);
  }

  /** Records files written into `path` (names relative to it). */
  add(...names: string[]): void {
    for (const name of names) if (!this.files.includes(name)) this.files.push(name);
  }

  /** Writes the manifest and moves the folder into place, replacing an earlier lmfactory export. */
  commit(details: Record<string, unknown>): string[] {
    const manifest: Manifest = { lmfactory_export: 1, ...details, files: [...this.files].sort() };
    writeFileSync(join(this.path, MANIFEST_NAME), `${JSON.stringify(manifest, null, 2)}\n`);
    const target = resolve(this.exportDir);
    let previous: { folder: string; files: string[] } | null = null;
    if (existsSync(target)) {
      const entries = readdirSync(target);
      if (entries.length === 0) {
        rmdirSync(target);
      } else {
        const old = readManifest(target);
        // checkExportDir ran before loading; a folder that changed since is not ours to replace.
        if (!old) throw new UserError("export_dir changed while exporting", this.exportDir, "run the export again");
        const aside = join(dirname(target), `.${basename(target)}.lmf-replaced-${process.pid}`);
        renameSync(target, aside);
        previous = { folder: aside, files: [...old.files, MANIFEST_NAME] };
      }
    }
    renameSync(this.path, target);
    if (previous) this.removeOwnFolder(previous.folder, previous.files);
    return manifest.files;
  }

  /** Removes the partial folder after a failure (this export made it, and everything in it). */
  abort(): void {
    if (existsSync(this.path)) this.removeOwnFolder(this.path, readdirSync(this.path));
  }

  private removeOwnFolder(folder: string, files: string[]): void {
    for (const name of files) rmSync(join(folder, name), { force: true });
    try {
      rmdirSync(folder);
    } catch {
      console.warn(`lmf: left ${folder} in place: it holds files lmfactory did not write`);
    }
  }
}
