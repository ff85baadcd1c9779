// Where the engine is looked for and when `lmf setup` rebuilds it: LMF_ADDON first, then the
// package's native/build, then the per-user cache (its `current` build first); with LIBTORCH set
// only a build made against it; a build is stale when missing, made against another libtorch, or
// older than a native source. And the CLI's answers when there is no engine or LIBTORCH is wrong.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cacheKey, staleReason } from "../../src/setup/addon_build.ts";
import { findAddonBuild, packageBuild, packageVersion } from "../../src/torch/addon_paths.ts";

const STAMP = { source: "system", include: ["/usr/include"], lib: "/usr/lib", abi: null, rpath: false, cuda: false, blas: [] };

/** A build folder holding a (fake) addon and the stamp of what it was built against. */
function fakeBuild(folder: string, stamp: object): string {
  mkdirSync(join(folder, "Release"), { recursive: true });
  writeFileSync(join(folder, "Release", "lmfactory.node"), "");
  writeFileSync(join(folder, "libtorch.json"), JSON.stringify(stamp) + "\n");
  return folder;
}

function withEnv<T>(values: Record<string, string | undefined>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(values).map((key) => [key, process.env[key]]));
  const set = (entries: Record<string, string | undefined>) => {
    for (const [key, value] of Object.entries(entries)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  };
  set(values);
  try {
    return fn();
  } finally {
    set(saved);
  }
}

test("the cache key names platform, libtorch version, CUDA and C++ ABI", () => {
  assert.equal(cacheKey({ ...STAMP, abi: "1" }, "2.4.1"), `${process.platform}-${process.arch}-torch2.4.1-cpu-abi1`);
  assert.equal(cacheKey({ ...STAMP, cuda: true }, "1.13.0"), `${process.platform}-${process.arch}-torch1.13.0-cuda-abidefault`);
});

test("a build is stale when missing, made against another libtorch, or older than a native source", () => {
  const build = join(mkdtempSync(join(tmpdir(), "lmf-stale-")), "build");
  assert.equal(staleReason(build, STAMP), "not built yet");
  fakeBuild(build, STAMP);
  assert.equal(staleReason(build, STAMP), null);
  assert.equal(staleReason(build, { ...STAMP, lib: "/opt/libtorch/lib" }), "built against another libtorch");
  assert.equal(staleReason(build, { ...STAMP, abi: "0" }), "built against another libtorch");
  // The same libtorch found another way, or with another BLAS, needs no new binary.
  assert.equal(staleReason(build, { ...STAMP, source: "python torch (python3)", blas: ["/usr/lib/libopenblas.so.0"] }), null);
  utimesSync(join(build, "Release", "lmfactory.node"), new Date(0), new Date(0));
  assert.equal(staleReason(build, STAMP), "its sources have changed");
});

test("LMF_ADDON wins; the cache's current build is found; LIBTORCH picks the build made against it", () => {
  const cache = mkdtempSync(join(tmpdir(), "lmf-cache-"));
  const versionFolder = join(cache, packageVersion());
  const first = fakeBuild(join(versionFolder, "a-key", "build"), { ...STAMP, source: "LIBTORCH=/opt/a", lib: "/opt/a/lib" });
  const second = fakeBuild(join(versionFolder, "b-key", "build"), { ...STAMP, source: "python torch (python3)", lib: "/opt/b/lib" });
  writeFileSync(join(versionFolder, "current"), "b-key\n");
  const packageHasBuild = existsSync(join(packageBuild, "Release", "lmfactory.node"));
  withEnv({ LMF_CACHE: cache, LMF_ADDON: undefined, LIBTORCH: undefined }, () => {
    assert.equal(findAddonBuild().build, packageHasBuild ? packageBuild : second);
  });
  withEnv({ LMF_CACHE: cache, LMF_ADDON: undefined, LIBTORCH: "/opt/a" }, () => assert.equal(findAddonBuild().build, first));
  // Matched by the library folder, however that libtorch was found when it was built.
  withEnv({ LMF_CACHE: cache, LMF_ADDON: undefined, LIBTORCH: "/opt/b/" }, () => assert.equal(findAddonBuild().build, second));
  withEnv({ LMF_CACHE: cache, LMF_ADDON: undefined, LIBTORCH: "/opt/c" }, () => {
    const found = findAddonBuild();
    assert.equal(found.build, null);
    assert.ok(found.mismatch !== null && /^LIBTORCH=\/opt\/a$|python|system/.test(found.mismatch.source), JSON.stringify(found.mismatch));
  });
  withEnv({ LMF_CACHE: cache, LMF_ADDON: first, LIBTORCH: "/opt/c" }, () => assert.equal(findAddonBuild().build, first));
  withEnv({ LMF_CACHE: cache, LMF_ADDON: join(cache, "nothing") }, () => {
    assert.deepEqual(findAddonBuild(), { build: null, looked: [`LMF_ADDON=${join(cache, "nothing")}`], mismatch: null });
  });
});

test("without an engine, lmf env and a job say to run lmf setup; a LIBTORCH that is no libtorch is one clean error", () => {
  const env = { ...process.env, LMF_ADDON: join(tmpdir(), "lmf-no-such-build") };
  const lmf = (...args: string[]) => spawnSync(process.execPath, ["bin/lmf.mjs", ...args], { encoding: "utf8", env });
  const report = lmf("env");
  assert.equal(report.status, 1);
  assert.match(report.stdout, /libtorch\s+not available \(the native engine is not built \(looked in LMF_ADDON=/);
  assert.match(report.stderr, /run `lmf setup`/);
  const data = mkdtempSync(join(tmpdir(), "lmf-nosetup-"));
  writeFileSync(join(data, "rows.json"), JSON.stringify([{ instruction: "a", output: "b" }]));
  writeFileSync(join(data, "dataset_info.json"), JSON.stringify({ rows: { file_name: "rows.json" } }));
  const job = lmf("train", "--model_name_or_path", "m", "--stage", "sft", "--do_train", "true", "--dataset", "rows", "--dataset_dir", data, "--output_dir", join(data, "out"));
  assert.equal(job.status, 1);
  assert.match(job.stderr, /^error: the native engine is not built .*\(run `lmf setup`: it finds or installs libtorch and builds the engine\)\n$/);

  const setup = spawnSync(process.execPath, ["bin/lmf.mjs", "setup"], { encoding: "utf8", env: { ...process.env, LIBTORCH: join(tmpdir(), "lmf-not-libtorch") } });
  assert.equal(setup.status, 1);
  assert.match(setup.stderr, /^error: lmf setup: LIBTORCH=\S+ has no include\/ATen\/ATen.h and lib\/libtorch_cpu.so \(point LIBTORCH at an unpacked libtorch/m);
  assert.doesNotMatch(setup.stderr, /\n\s+at /);
});
