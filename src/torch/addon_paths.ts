// Where the native addon is found, first match wins: LMF_ADDON (a build folder, e.g. one shared by
// tests), the package's own native/build (a clone, or a package folder `lmf setup` could write), and
// the per-user cache `lmf setup` builds into otherwise: <cache>/<lmfactory version>/<libtorch key>/build,
// the key naming the platform, libtorch version, CUDA and C++ ABI. Read by native.ts, written by src/setup/.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The lmfactory package folder (this file is src/torch/ or dist/torch/ inside it). */
export const packageRoot = fileURLToPath(new URL("../../", import.meta.url));
export const packageBuild = join(packageRoot, "native", "build");

export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")) as { version: string }).version;
}

/** LMF_CACHE, else $XDG_CACHE_HOME/lmfactory, else ~/.cache/lmfactory. */
export function cacheRoot(): string {
  if (process.env.LMF_CACHE) return process.env.LMF_CACHE;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "lmfactory");
}

/** This lmfactory version's builds; `current` names the one `lmf setup` made or chose last. */
export function versionCache(): string {
  return join(cacheRoot(), packageVersion());
}

export const addonFile = (build: string): string => join(build, "Release", "lmfactory.node");
/** What the addon was built against: native/find-libtorch.mjs's JSON (source, include, lib, abi, cuda, blas). */
export const stampFile = (build: string): string => join(build, "libtorch.json");

export interface LibtorchStamp {
  source: string;
  include: string[];
  lib: string;
  abi: string | null;
  cuda?: boolean;
  blas?: string[];
}

export function readStamp(build: string): LibtorchStamp | null {
  try {
    return JSON.parse(readFileSync(stampFile(build), "utf8")) as LibtorchStamp;
  } catch {
    return null;
  }
}

function cachedBuilds(): string[] {
  const folder = versionCache();
  if (!existsSync(folder)) return [];
  let current: string | null = null;
  try {
    current = readFileSync(join(folder, "current"), "utf8").trim();
  } catch {
    // no build chosen yet
  }
  const keys = readdirSync(folder, { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name);
  // The current one first, then the others in a stable order.
  const ordered = current && keys.includes(current) ? [current, ...keys.filter((key) => key !== current).sort()] : keys.sort();
  return ordered.map((key) => join(folder, key, "build"));
}

export interface AddonLookup {
  /** The build folder to load, or null. */
  build: string | null;
  /** Every place looked, for the message when none has the addon. */
  looked: string[];
  /** A build that exists but was made for another LIBTORCH than the one set now. */
  mismatch: { build: string; source: string } | null;
}

/**
 * The build to load. With LIBTORCH set, only a build linked against its lib/ matches (a build for
 * another would load a different libtorch than the one asked for); LMF_ADDON is taken as given.
 */
export function findAddonBuild(): AddonLookup {
  if (process.env.LMF_ADDON) {
    const build = process.env.LMF_ADDON;
    return { build: existsSync(addonFile(build)) ? build : null, looked: [`LMF_ADDON=${build}`], mismatch: null };
  }
  const candidates = [packageBuild, ...cachedBuilds()];
  const wanted = process.env.LIBTORCH ? resolve(process.env.LIBTORCH, "lib") : null;
  let mismatch: AddonLookup["mismatch"] = null;
  for (const build of candidates) {
    if (!existsSync(addonFile(build))) continue;
    const stamp = readStamp(build);
    if (wanted && (!stamp || resolve(stamp.lib) !== wanted)) {
      mismatch ??= { build, source: stamp?.source ?? "an unknown libtorch" };
      continue;
    }
    return { build, looked: candidates, mismatch: null };
  }
  return { build: null, looked: candidates.length > 1 ? candidates : [packageBuild, versionCache()], mismatch };
}
