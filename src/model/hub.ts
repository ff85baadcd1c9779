// Finds a model's local folder. There is no network here: `model_name_or_path` must be a folder,
// or a hub id already downloaded into a Hugging Face cache (`models--org--name/snapshots/<rev>`).
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { UserError } from "../errors.ts";

export interface ResolveOptions {
  cacheDir?: string | null;
  revision?: string;
}

function cacheRoots(cacheDir: string | null | undefined): string[] {
  const roots = [
    cacheDir,
    process.env.HF_HUB_CACHE,
    process.env.HF_HOME && join(process.env.HF_HOME, "hub"),
    join(homedir(), ".cache/huggingface/hub"),
  ];
  return roots.filter((root): root is string => Boolean(root));
}

/** The snapshot folder of `repoId` at `revision` (a branch/tag name in refs/, or a commit). */
function findInCache(root: string, repoId: string, revision: string): string | null {
  const repo = join(root, `models--${repoId.replace(/\//g, "--")}`);
  if (!existsSync(repo)) return null;
  const ref = join(repo, "refs", revision);
  const commit = existsSync(ref) ? readFileSync(ref, "utf8").trim() : revision;
  const snapshot = join(repo, "snapshots", commit);
  if (existsSync(snapshot)) return snapshot;
  const snapshots = existsSync(join(repo, "snapshots")) ? readdirSync(join(repo, "snapshots")) : [];
  return snapshots.length === 1 && revision === "main" ? join(repo, "snapshots", snapshots[0]!) : null;
}

export function resolveModelPath(nameOrPath: string, options: ResolveOptions = {}): string {
  const local = resolve(nameOrPath);
  if (existsSync(local)) {
    if (!statSync(local).isDirectory()) {
      throw new UserError(`model path ${nameOrPath} is a file`, "model_name_or_path", "point it at the folder holding config.json");
    }
    return local;
  }
  const revision = options.revision ?? "main";
  for (const root of cacheRoots(options.cacheDir)) {
    const found = findInCache(root, nameOrPath, revision);
    if (found) return found;
  }
  throw new UserError(
    `'${nameOrPath}' is neither a local folder nor in a Hugging Face cache (${cacheRoots(options.cacheDir).join(", ")})`,
    "model_name_or_path",
    "there is no network access here: download the model first (e.g. `huggingface-cli download " +
      nameOrPath +
      "` on a connected machine) and set model_name_or_path to its folder, or cache_dir to the cache holding it",
  );
}
