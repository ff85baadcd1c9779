// `lmf setup`, part one, as scripts/setup.sh does it: find libtorch (LIBTORCH, python3's torch, the
// system's), installing Debian's libtorch-dev with apt-get when none is found and we may (root or
// passwordless sudo), and OpenBLAS beside Debian's libtorch, whose reference BLAS is ~15x slower.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { type LibtorchStamp, packageRoot } from "../torch/addon_paths.ts";

/** native/find-libtorch.mjs's answer (what binding.gyp builds against), or null when there is none. */
export function findLibtorch(): LibtorchStamp | null {
  const result = spawnSync(process.execPath, [join(packageRoot, "native", "find-libtorch.mjs"), "json"], { encoding: "utf8" });
  if (result.status === 0) return JSON.parse(result.stdout) as LibtorchStamp;
  // A LIBTORCH that is not a libtorch folder is the user's to fix, not a reason to install another.
  if (process.env.LIBTORCH) {
    const reason = /^Error: (.*)$/m.exec(result.stderr)?.[1] ?? `LIBTORCH=${process.env.LIBTORCH} is not a libtorch folder`;
    throw new UserError(reason, "lmf setup", "point LIBTORCH at an unpacked libtorch (it holds include/ and lib/), or unset it");
  }
  return null;
}

/** "1.13.0", from torch/version.h under the include folders. */
export function libtorchVersion(found: LibtorchStamp): string {
  for (const include of found.include) {
    const header = join(include, "torch", "csrc", "api", "include", "torch", "version.h");
    if (!existsSync(header)) continue;
    const text = readFileSync(header, "utf8");
    const part = (name: string) => new RegExp(`#define TORCH_VERSION_${name}\\s+(\\d+)`).exec(text)?.[1];
    if (part("MAJOR") !== undefined) return [part("MAJOR"), part("MINOR") ?? "0", part("PATCH") ?? "0"].join(".");
  }
  return "unknown";
}

function asRoot(command: string[]): string[] | null {
  if (process.getuid?.() === 0) return command;
  const sudo = spawnSync("sudo", ["-n", "true"], { stdio: "ignore" });
  return sudo.status === 0 ? ["sudo", ...command] : null;
}

function aptInstall(packages: string[], say: (line: string) => void): boolean {
  if (spawnSync("apt-get", ["--version"], { stdio: "ignore" }).status !== 0) return false;
  const update = asRoot(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update", "-qq"]);
  const install = asRoot(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "--no-install-recommends", ...packages]);
  if (!update || !install) return false;
  say(`installing ${packages.join(" ")} with apt-get`);
  for (const command of [update, install]) {
    if (spawnSync(command[0]!, command.slice(1), { stdio: ["ignore", "ignore", "inherit"] }).status !== 0) return false;
  }
  return true;
}

const HOW_TO_GET_LIBTORCH = `no libtorch found. Install one of:
  - Debian/Ubuntu:  sudo apt-get install libtorch-dev libopenblas0-pthread
  - any Linux:      a libtorch folder from pytorch.org, then export LIBTORCH=/path/to/libtorch
  - or:             a python3 with torch installed (pip install torch)
then run \`lmf setup\` again`;

/** The libtorch to build against, installed with apt when none is found and we may. */
export function ensureLibtorch(say: (line: string) => void, warn: (line: string) => void): LibtorchStamp {
  let found = findLibtorch();
  if (!found) {
    if (!aptInstall(["libtorch-dev", "libopenblas0-pthread"], say)) throw new UserError(HOW_TO_GET_LIBTORCH);
    found = findLibtorch();
    if (!found) throw new UserError(HOW_TO_GET_LIBTORCH);
  }
  // Debian's libtorch (libtorch-dev, or python3-torch's under /usr/lib/python3) runs matmul on
  // the reference BLAS unless OpenBLAS is installed.
  const debian = found.lib.startsWith("/usr/lib/") && existsSync("/usr/bin/dpkg");
  if (debian && !dpkgHas("libopenblas0-pthread") && !aptInstall(["libopenblas0-pthread"], say)) {
    warn("libopenblas0-pthread is missing and could not be installed; matmul will be ~15x slower (sudo apt-get install libopenblas0-pthread)");
  }
  // Debian's libtorch_cpu has c10d's ProcessGroupGloo but Gloo's own headers come apart
  // (libgloo-dev); without them the engine builds without distributed training.
  const glooWanted = debian && existsSync("/usr/include/torch/csrc/distributed/c10d/ProcessGroupGloo.hpp") && !existsSync("/usr/include/gloo/config.h");
  if (glooWanted) {
    if (aptInstall(["libgloo-dev"], say)) found = findLibtorch() ?? found;
    else warn("libgloo-dev is missing and could not be installed; distributed training (--nproc_per_node) will be unavailable (sudo apt-get install libgloo-dev)");
  }
  return found;
}

function dpkgHas(name: string): boolean {
  try {
    execFileSync("dpkg", ["-s", name], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
