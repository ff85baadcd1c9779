// The engine as a user meets it: the addon loads, reports what it runs on, and computes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { engineInfo, liveTensors, manualSeed, rand, tensor, tidy } from "../../src/torch/index.ts";

const repo = join(dirname(fileURLToPath(import.meta.url)), "../..");

test("engine reports libtorch, a fast BLAS and its threads", () => {
  const info = engineInfo();
  assert.match(info.torchVersion, /^\d+\.\d+/);
  assert.ok(info.threads >= 1);
  // Debian's libtorch on the reference BLAS is ~15x slower; setup must have made OpenBLAS active.
  assert.doesNotMatch(info.blas, /reference/, `slow BLAS active: ${info.blasLibrary}`);
});

test("a matmul computes the closed form and frees its temporaries", () => {
  const before = liveTensors();
  const product = tidy(() => tensor([[1, 2], [3, 4]], { dtype: "float32" }).matmul(tensor([[5], [6]], { dtype: "float32" })).toArray());
  assert.deepEqual(product, [[17], [39]]);
  assert.equal(liveTensors(), before);
});

test("idle OpenMP threads sleep when OpenBLAS keeps its own thread pool, unless the user chose", () => {
  // Spinning OpenMP threads take the cores OpenBLAS's pthreads need (and back): lmfactory sets
  // OMP_WAIT_POLICY=PASSIVE before libtorch loads, and leaves a user's own choice alone.
  const build = JSON.parse(readFileSync(join(repo, "native/build/libtorch.json"), "utf8")) as { blas?: string[] };
  const separatePool = (build.blas ?? []).some((path) => /openblas/.test(path) && !/openmp/.test(path));
  const script = 'const { engineInfo } = await import("./src/torch/index.ts"); console.log(JSON.stringify([process.env.OMP_WAIT_POLICY ?? null, engineInfo().threadWait]));';
  const run = (env: Record<string, string | undefined>) => {
    const childEnv = { ...process.env, ...env };
    for (const [key, value] of Object.entries(childEnv)) if (value === undefined) delete childEnv[key];
    const out = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repo, env: childEnv, encoding: "utf8" });
    return JSON.parse(out.trim().split("\n").pop()!) as [string | null, string];
  };
  const [policy, wait] = run({ OMP_WAIT_POLICY: undefined, GOMP_SPINCOUNT: undefined });
  if (separatePool) {
    assert.equal(policy, "PASSIVE");
    assert.match(wait, /PASSIVE set by lmfactory/);
  } else {
    assert.equal(policy, null);
    assert.equal(wait, "OpenMP default");
  }
  const [chosen, reported] = run({ OMP_WAIT_POLICY: "ACTIVE", GOMP_SPINCOUNT: undefined });
  assert.equal(chosen, "ACTIVE");
  assert.match(reported, /as set: OMP_WAIT_POLICY=ACTIVE/);
});

test("asking what the engine runs on does not move the seeded generator", () => {
  manualSeed(42);
  const expected = tidy(() => rand([4]).toFlatArray());
  manualSeed(42);
  engineInfo();
  assert.deepEqual(tidy(() => rand([4]).toFlatArray()), expected);
});
