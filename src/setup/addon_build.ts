// `lmf setup`, part two: builds the native addon with node-gyp (a dependency, with node-addon-api)
// into the package's native/build when the package folder is writable, otherwise into a copy of
// the native sources in the per-user cache (src/torch/addon_paths.ts), with progress. Rebuilt when
// the addon is missing, the libtorch found has changed, or a native source is newer, as setup.sh.
import { spawn } from "node:child_process";
import { accessSync, constants, cpSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus } from "node:os";
import { delimiter, dirname, join, sep } from "node:path";
import { UserError } from "../errors.ts";
import { type LibtorchStamp, addonFile, packageRoot, readStamp, stampFile, versionCache } from "../torch/addon_paths.ts";
import { formatDuration } from "../train/logging.ts";
import type { ProgressBar } from "../terminal/progress.ts";

const NATIVE = join(packageRoot, "native");
/** What binding.gyp compiles and runs, relative to native/. */
const NATIVE_FILES = ["binding.gyp", "find-libtorch.mjs", "src", "generated/ops.cc"];

export interface BuildTarget {
  /** The folder holding binding.gyp; node-gyp builds into its build/. */
  folder: string;
  build: string;
  /** Cache builds work on a copy of the package's native sources. */
  inCache: boolean;
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** e.g. linux-x64-torch1.13.0-cpu-abi1: one cache folder per platform, libtorch version, CUDA and C++ ABI. */
export function cacheKey(found: LibtorchStamp, torchVersion: string): string {
  return `${process.platform}-${process.arch}-torch${torchVersion}-${found.cuda ? "cuda" : "cpu"}-abi${found.abi ?? "default"}`;
}

export const packageTarget: BuildTarget = { folder: NATIVE, build: join(NATIVE, "build"), inCache: false };

/** The package folder, unless it cannot be written or is npx's cache (which npm may empty at any time). */
export function buildTarget(found: LibtorchStamp, torchVersion: string): BuildTarget {
  const packageWritable = writable(NATIVE) && (!existsSync(packageTarget.build) || writable(packageTarget.build));
  const inNpxCache = packageRoot.split(sep).includes("_npx");
  if (packageWritable && !inNpxCache) return packageTarget;
  const folder = join(versionCache(), cacheKey(found, torchVersion));
  return { folder, build: join(folder, "build"), inCache: true };
}

function newestSource(): number {
  const files = [join(packageRoot, "scripts", "ops.table"), join(packageRoot, "scripts", "gen-ops.mjs")];
  const walk = (path: string): void => {
    if (statSync(path).isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
    else files.push(path);
  };
  for (const file of NATIVE_FILES) if (existsSync(join(NATIVE, file))) walk(join(NATIVE, file));
  return Math.max(...files.filter((file) => existsSync(file)).map((file) => statSync(file).mtimeMs));
}

/** What the binary depends on: the stamp without how the libtorch was found (`source`) and its BLAS (read at load time). */
function buildInputs(stamp: LibtorchStamp | null): string {
  if (!stamp) return "";
  const { source: _source, blas: _blas, ...inputs } = stamp;
  return JSON.stringify(inputs);
}

/** Why the addon in `build` must be (re)built for `found`, or null when it is current. */
export function staleReason(build: string, found: LibtorchStamp): string | null {
  if (!existsSync(addonFile(build))) return "not built yet";
  if (buildInputs(readStamp(build)) !== buildInputs(found)) return "built against another libtorch";
  if (newestSource() > statSync(addonFile(build)).mtimeMs) return "its sources have changed";
  return null;
}

function findOnPath(names: string[]): string | null {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    for (const name of names) if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

/** node-gyp needs a C++17 compiler, make and python3. */
function checkToolchain(): void {
  const missing = [
    findOnPath([process.env.CXX ?? "g++", "c++", "clang++"]) ? null : "a C++17 compiler (g++)",
    findOnPath(["make"]) ? null : "make",
    findOnPath(["python3"]) ? null : "python3",
  ].filter((tool): tool is string => tool !== null);
  if (missing.length) {
    throw new UserError(`building the engine needs ${missing.join(", ")}`, "lmf setup", "install them (Debian/Ubuntu: sudo apt-get install build-essential python3), then run `lmf setup` again");
  }
}

/** The node-gyp command: its script, and NODE_PATH so binding.gyp's `require('node-addon-api')` resolves from a cache copy. */
function nodeGyp(): { script: string; nodePath: string } {
  const require = createRequire(import.meta.url);
  try {
    const script = require.resolve("node-gyp/bin/node-gyp.js");
    const addonApi = dirname(require.resolve("node-addon-api/package.json"));
    return { script, nodePath: dirname(addonApi) };
  } catch {
    throw new UserError("node-gyp or node-addon-api is not installed beside lmfactory", "lmf setup", "reinstall lmfactory (npm i -g lmfactory), or run `npm install` in a clone");
  }
}

/** The Node headers of the running Node when installed (then node-gyp needs no download). */
function nodedirFlag(): string[] {
  const prefix = dirname(dirname(process.execPath));
  return existsSync(join(prefix, "include", "node", "node_api.h")) ? [`--nodedir=${prefix}`] : [];
}

function copySources(target: BuildTarget): void {
  mkdirSync(target.folder, { recursive: true });
  for (const file of NATIVE_FILES) {
    mkdirSync(dirname(join(target.folder, file)), { recursive: true });
    cpSync(join(NATIVE, file), join(target.folder, file), { recursive: true });
  }
}

/** Compiles the addon (node-gyp rebuild), showing each unit as it starts; throws with the compiler's last lines on failure. */
export async function buildAddon(target: BuildTarget, found: LibtorchStamp, report: { say: (line: string) => void; bar: ProgressBar | null }): Promise<void> {
  checkToolchain();
  const gyp = nodeGyp();
  if (target.inCache) copySources(target);
  const units = [...readdirSync(join(target.folder, "src")).filter((name) => name.endsWith(".cc")), "generated/ops.cc"].length + 1; // + the link
  const started = performance.now();
  const elapsed = () => formatDuration((performance.now() - started) / 1000);
  let done = 0;
  const step = (what: string) => {
    if (report.bar) report.bar.update("building", done, units, [what, elapsed()]);
    else report.say(`${what} (${elapsed()})`);
  };
  step("configuring");
  const output: string[] = [];
  const child = spawn(process.execPath, [gyp.script, "rebuild", ...nodedirFlag(), "--jobs=max", "--loglevel=error"], {
    cwd: target.folder,
    env: { ...process.env, NODE_PATH: [gyp.nodePath, process.env.NODE_PATH].filter(Boolean).join(delimiter), JOBS: String(cpus().length) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const onLine = (line: string) => {
    output.push(line);
    if (output.length > 60) output.shift();
    // make's quiet lines: "  CXX(target) Release/obj.target/lmfactory/src/addon.o", "  SOLINK_MODULE(target) ...".
    const compiled = /^\s*CXX\(target\)\s+\S*\/lmfactory\/(\S+)\.o$/.exec(line);
    if (compiled) step(`compiling ${compiled[1]}.cc`);
    else if (/^\s*SOLINK_MODULE\(target\)/.test(line)) step("linking");
    else return;
    done += 1;
  };
  for (const stream of [child.stdout, child.stderr]) {
    let rest = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      lines.forEach(onLine);
    });
  }
  const status = await new Promise<number>((resolve) => child.on("close", (code) => resolve(code ?? 1)));
  if (report.bar) {
    if (status === 0) report.bar.update("building", units, units, ["done", elapsed()]);
    report.bar.end();
  }
  if (status !== 0 || !existsSync(addonFile(target.build))) {
    const tail = output.filter((line) => line.trim()).slice(-25).join("\n");
    throw new UserError(
      `building the native engine failed in ${target.folder}:\n${tail}`,
      "lmf setup",
      `see the compiler's output above; rerun it with: cd ${target.folder} && node ${gyp.script} rebuild`,
    );
  }
  writeFileSync(stampFile(target.build), JSON.stringify(found) + "\n");
  report.say(`built in ${elapsed()}`);
}
