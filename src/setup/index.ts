// `lmf setup`: makes the tensor engine ready wherever lmfactory is installed (npm i -g, npx, a
// dependency, a clone): finds or installs libtorch (libtorch.ts), builds the native addon where
// the user can write (addon_build.ts), then loads it once in a child process to prove it works.
// Idempotent: a current build is kept. scripts/setup.sh calls this for its addon step.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { UserError } from "../errors.ts";
import { progressBarFor } from "../terminal/progress.ts";
import { addonFile, findAddonBuild, packageRoot, readStamp, stampFile } from "../torch/addon_paths.ts";
import { buildAddon, buildTarget, packageTarget, staleReason } from "./addon_build.ts";
import { ensureLibtorch, libtorchVersion } from "./libtorch.ts";

export interface SetupOptions {
  /** Build even when the addon is current. */
  rebuild?: boolean;
  /** Print only what changes. */
  quiet?: boolean;
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The addon's libtorch version, from a child process that loads it (a broken build fails there, not in a later run). */
function loadCheck(addon: string): string {
  const script = "const a = require(process.argv[1]); console.log(a.build_info().torch_version);";
  const result = spawnSync(process.execPath, ["-e", script, addon], { encoding: "utf8" });
  if (result.status !== 0) {
    const reason = result.stderr.trim().split("\n").find((line) => /Error|error/.test(line)) ?? result.stderr.trim().slice(0, 400);
    throw new UserError(`the engine at ${addon} was built but does not load: ${reason}`, "lmf setup", "run `lmf setup --rebuild`; if it fails again, check that the libtorch found is complete");
  }
  return result.stdout.trim();
}

export async function runSetup(options: SetupOptions = {}): Promise<number> {
  const bar = progressBarFor(process.stdout);
  const say = (line: string) => (bar ? bar.line(`setup: ${line}`) : process.stdout.write(`setup: ${line}\n`));
  const info = options.quiet ? () => {} : say;
  const warn = (line: string) => process.stderr.write(`setup: warning: ${line}\n`);

  info("looking for libtorch");
  const found = ensureLibtorch(say, warn);
  const version = libtorchVersion(found);
  // A current build in the package folder serves everyone, writable or not (e.g. one root made after `npm i -g`).
  const target = !options.rebuild && staleReason(packageTarget.build, found) === null ? packageTarget : buildTarget(found, version);
  const reason = options.rebuild ? "a rebuild was asked for" : staleReason(target.build, found);
  if (reason) {
    say(`building the native engine against libtorch ${version} (${found.source}) into ${target.build} (${reason}; takes a few minutes)`);
    const generator = join(packageRoot, "scripts", "gen-ops.mjs");
    if (!target.inCache && existsSync(generator)) spawnSync(process.execPath, [generator], { stdio: "ignore" });
    await buildAddon(target, found, { say, bar });
  }
  // The same libtorch found another way, or its BLAS changed: the stamp is brought up to date where we may write.
  if (!reason && JSON.stringify(readStamp(target.build)) !== JSON.stringify(found) && writable(target.build)) {
    writeFileSync(stampFile(target.build), JSON.stringify(found) + "\n");
  }
  if (target.inCache) {
    mkdirSync(dirname(target.folder), { recursive: true });
    writeFileSync(join(dirname(target.folder), "current"), `${target.folder.split(/[\\/]/).pop()}\n`);
  }
  const loaded = loadCheck(addonFile(target.build));
  const used = findAddonBuild().build;
  if (used !== target.build) warn(`lmf will load the engine at ${used ?? "(none)"} instead${process.env.LMF_ADDON ? " (LMF_ADDON is set)" : ""}`);
  info(`ready: libtorch ${loaded} (${found.source}), engine in ${target.build}`);
  return 0;
}
