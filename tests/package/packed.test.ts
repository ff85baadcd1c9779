// The package as a user gets it: `npm pack` (dist/ built first, as prepack does), the tarball's
// file list, then the tarball unpacked into a temporary project outside the repo, its runtime
// dependencies linked from the repo's node_modules (no registry needed) and the engine the repo
// already built reused through the per-user cache, as `lmf setup` would have left it. A consumer
// is type-checked against the package's declarations, and the README's TypeScript example runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { cacheKey } from "../../src/setup/addon_build.ts";
import { libtorchVersion } from "../../src/setup/libtorch.ts";
import { packageBuild, readStamp } from "../../src/torch/addon_paths.ts";

const repo = new URL("../../", import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as { version: string; dependencies: Record<string, string> };

/** The ```ts block of the README's "Use from TypeScript" section. */
function readmeExample(): string {
  const readme = readFileSync(join(repo, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Use from TypeScript"));
  const match = /```ts\n([\s\S]*?)```/.exec(section.slice(0, section.indexOf("\n## ", 3)));
  assert.ok(match, "the README's Use from TypeScript section has a ```ts example");
  return match[1]!;
}

test("the packed tarball installs into a project, type-checks a consumer and runs the README example", { timeout: 600_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "lmf-packed-"));
  execFileSync(process.execPath, [join(repo, "scripts/build-dist.mjs")], { cwd: repo, stdio: "ignore" });
  const packed = JSON.parse(execFileSync("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], { cwd: repo, encoding: "utf8" })) as { filename: string; files: { path: string }[] }[];
  const files = packed[0]!.files.map((file) => file.path);
  for (const required of ["bin/lmf.mjs", "dist/index.js", "dist/index.d.ts", "dist/torch/index.d.ts", "dist/torch/native_ops.d.ts", "dist/BUILD.json", "src/index.ts", "native/binding.gyp", "native/src/addon.cc", "native/generated/ops.cc", "scripts/ops.table", "examples/demo/pretrain.yaml", "data/dataset_info.json", "evaluation/tinyfacts/mapping.json", "README.md", "LICENSE"]) {
    assert.ok(files.includes(required), `the tarball lacks ${required}`);
  }
  const shipped = files.filter((path) => /^(tests|bench|saves|dev|native\/build)\//.test(path) || path.endsWith(".tgz"));
  assert.deepEqual(shipped, [], "tests, benchmarks, saves and builds stay out of the tarball");

  // A project that installed the tarball: lmfactory unpacked, its dependencies beside it.
  const project = join(work, "project");
  const installed = join(project, "node_modules", "lmfactory");
  mkdirSync(installed, { recursive: true });
  execFileSync("tar", ["-xzf", join(work, packed[0]!.filename), "-C", installed, "--strip-components=1"]);
  for (const name of [...Object.keys(manifest.dependencies), "@types/node"]) {
    mkdirSync(dirname(join(project, "node_modules", name)), { recursive: true });
    symlinkSync(realpathSync(join(repo, "node_modules", name)), join(project, "node_modules", name));
  }
  // The engine the repo built, where `lmf setup` would have put it for a read-only package folder.
  const cache = join(work, "cache");
  const found = readStamp(packageBuild);
  assert.ok(found, `no engine built in ${packageBuild} to reuse (run npm run setup)`);
  const key = cacheKey(found, libtorchVersion(found));
  mkdirSync(join(cache, manifest.version, key), { recursive: true });
  symlinkSync(realpathSync(packageBuild), join(cache, manifest.version, key, "build"));
  writeFileSync(join(cache, manifest.version, "current"), `${key}\n`);
  const env: NodeJS.ProcessEnv = { ...process.env, LMF_CACHE: cache };
  delete env.LMF_ADDON;
  delete env.LIBTORCH;

  // The command runs the compiled dist/ (no TypeScript loader is installed in this project).
  const lmf = (...args: string[]) => spawnSync(process.execPath, [join(installed, "bin/lmf.mjs"), ...args], { cwd: project, env, encoding: "utf8" });
  assert.equal(lmf("--version").stdout.trim(), manifest.version);
  const environment = lmf("env");
  assert.equal(environment.status, 0, environment.stderr);
  assert.match(environment.stdout, new RegExp(`engine\\s+${join(cache, manifest.version, key, "build").replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));

  // A consumer compiled against the package's declarations: the README example and the type checks.
  writeFileSync(join(project, "package.json"), JSON.stringify({ type: "module", private: true }));
  writeFileSync(join(project, "tsconfig.json"), JSON.stringify({ compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, outDir: "out", types: ["node"] }, include: ["*.ts"] }));
  writeFileSync(join(project, "example.ts"), readmeExample());
  const typeChecks = readFileSync(join(repo, "tests/package/public_types.ts"), "utf8").replaceAll('"../../src/index.ts"', '"lmfactory"').replaceAll('"../../src/torch/index.ts"', '"lmfactory/torch"');
  assert.doesNotMatch(typeChecks, /\.\.\/src\//, "every import of the type checks points at the package");
  writeFileSync(join(project, "public_types.ts"), typeChecks);
  const tsc = spawnSync(process.execPath, [join(repo, "node_modules/typescript/bin/tsc"), "-p", project], { encoding: "utf8" });
  assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);

  // The README example, run from a folder holding the package's examples as the README says.
  cpSync(join(installed, "examples"), join(project, "examples"), { recursive: true });
  const run = spawnSync(process.execPath, [join(project, "out/example.js")], { cwd: project, env, encoding: "utf8" });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /^LoRA rank 16, 10 steps$/m);
  assert.match(run.stdout, /^answer: .* \(\d+ tokens\)$/m);
  assert.match(run.stderr, /\[30\/30\]/);
  assert.match(run.stderr, /\[10\/10\]/);
  const log = readFileSync(join(project, "saves/api-demo/lora/trainer_log.jsonl"), "utf8").trim().split("\n");
  assert.deepEqual(log.map((line) => (JSON.parse(line) as { current_steps: number }).current_steps), [10]);

  // The installed command from dist/: tokenizing on worker threads (they load the compiled
  // processors by URL), and the shipped evaluation task.
  const workers = lmf("train", "examples/demo/sft_lora.yaml", "model_name_or_path=saves/api-demo/pretrain", "output_dir=saves/cli-workers", "max_steps=2", "logging_steps=1", "preprocessing_num_workers=2", "preprocessing_batch_size=4");
  assert.equal(workers.status, 0, workers.stderr);
  assert.match(workers.stderr, /\[2\/2\]/);
  const evaluation = lmf("eval", "--model_name_or_path", "saves/api-demo/pretrain", "--template", "chatml", "--task", "tinyfacts_test", "--task_dir", join(installed, "evaluation"), "--n_shot", "0", "--save_dir", "saves/eval");
  assert.equal(evaluation.status, 0, evaluation.stderr);
  assert.match(evaluation.stdout + evaluation.stderr, /Average/);
});
