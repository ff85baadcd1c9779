// Per-op overhead and matmul throughput, side by side in one run: lmfactory from TypeScript (with
// and without the Tensor wrapper) against the same op in a C++ loop on the same libtorch and in
// PyTorch eager (python3-torch), and a 2048x2048 fp32 matmul in GFLOP/s through both, same threads.
// Prints a table and writes bench/results/ops.json. Run: node --import tsx bench/ops.ts
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { engineInfo, ones, randn, tidy } from "../src/torch/index.ts";
import { native } from "../src/torch/native.ts";
import { median } from "./common.ts";

const OPS = 300_000;
const REPS = 5;
const MATMUL_N = 2048;
const MATMUL_REPS = 5;
// lmfactory and PyTorch matmuls alternate in rounds, so load from other processes on a shared
// machine falls on both sides alike.
const MATMUL_ROUNDS = 3;
const PYTHON = "/usr/bin/python3";


/** Microseconds per iteration of `body`, the median of REPS timed runs after a warm-up. */
function perOp(body: (n: number) => void): number {
  body(20_000);
  const runs: number[] = [];
  for (let r = 0; r < REPS; r++) {
    const start = process.hrtime.bigint();
    body(OPS);
    runs.push(Number(process.hrtime.bigint() - start) / 1000 / OPS);
  }
  return median(runs);
}

/** Builds bench/native/op_loop.cc against the libtorch the addon uses (cached by mtime). */
function cppOpLoop(): number | null {
  const source = "bench/native/op_loop.cc";
  const binary = "bench/results/tmp/op_loop";
  mkdirSync("bench/results/tmp", { recursive: true });
  const flags = (mode: string) => execFileSync("node", ["native/find-libtorch.mjs", mode]).toString().trim().split(/\s+/).filter(Boolean);
  try {
    if (!existsSync(binary) || statSync(binary).mtimeMs < statSync(source).mtimeMs) {
      const includes = flags("include").map((dir) => `-I${dir}`);
      const defines = flags("defines").map((d) => `-D${d}`);
      execFileSync("g++", ["-std=c++17", "-O2", "-w", ...includes, ...defines, source, "-o", binary, ...flags("libs")], { stdio: "inherit" });
    }
    const runs = Array.from({ length: REPS }, () => Number(execFileSync(binary, [String(OPS)]).toString().trim()));
    return median(runs);
  } catch (error) {
    console.error(`C++ loop skipped: ${(error as Error).message.split("\n")[0]}`);
    return null;
  }
}

/** PyTorch eager on the same machine and thread count: per-op add, or one round of matmuls. */
function pytorch(threads: number, mode: "add" | "matmul"): { addUs: number; matmulGflops: number[]; version: string } | null {
  const script = `
import json, time, torch
torch.set_num_threads(${threads})
a = torch.ones(1); b = torch.ones(1)
mode = "${mode}"
def loop(n):
    for _ in range(n):
        torch.add(a, b)
if mode == "add":
    loop(20000)
runs = []
for _ in range(${REPS} if mode == "add" else 0):
    t = time.perf_counter(); loop(${OPS}); runs.append((time.perf_counter() - t) * 1e6 / ${OPS})
x = torch.randn(${MATMUL_N}, ${MATMUL_N}); y = torch.randn(${MATMUL_N}, ${MATMUL_N})
x @ y
flops = []
for _ in range(${MATMUL_REPS} if mode == "matmul" else 0):
    t = time.perf_counter(); x @ y; flops.append(2 * ${MATMUL_N} ** 3 / (time.perf_counter() - t) / 1e9)
print(json.dumps({"add_us": sorted(runs)[len(runs) // 2] if runs else 0, "matmul": flops, "version": torch.__version__}))
`;
  try {
    const out = JSON.parse(execFileSync(PYTHON, ["-c", script], { encoding: "utf8" }).trim().split("\n").pop()!);
    return { addUs: out.add_us, matmulGflops: out.matmul, version: out.version };
  } catch (error) {
    console.error(`PyTorch reference skipped: ${(error as Error).message.split("\n")[0]}`);
    return null;
  }
}

function lmfMatmul(): number[] {
  return tidy(() => {
    const x = randn([MATMUL_N, MATMUL_N]);
    const y = randn([MATMUL_N, MATMUL_N]);
    tidy(() => x.matmul(y));
    return Array.from({ length: MATMUL_REPS }, () =>
      tidy(() => {
        const start = process.hrtime.bigint();
        x.matmul(y);
        return (2 * MATMUL_N ** 3) / Number(process.hrtime.bigint() - start);
      }),
    );
  });
}

/** Where the wrapper's time goes: the JS-side bookkeeping a Tensor costs, without any native call. */
function bookkeeping(): Record<string, number> {
  const registry = new FinalizationRegistry<number>(() => {});
  const scope = new Set<object>();
  return {
    "FinalizationRegistry register+unregister": perOp((n) => {
      for (let i = 0; i < n; i++) {
        const o = {};
        registry.register(o, i, o);
        registry.unregister(o);
      }
    }),
    "scope Set add+delete": perOp((n) => {
      for (let i = 0; i < n; i++) {
        const o = {};
        scope.add(o);
        scope.delete(o);
      }
    }),
    "tidy() with an empty body": perOp((n) => {
      for (let i = 0; i < n; i++) tidy(() => 0);
    }),
  };
}

function main(): void {
  const info = engineInfo();
  const a = ones([1]);
  const b = ones([1]);
  const rows: Record<string, number | null> = {
    "lmfactory: tidy(() => a.add(b))": perOp((n) => {
      for (let i = 0; i < n; i++) tidy(() => a.add(b));
    }),
    "lmfactory: a.add(b).dispose()": perOp((n) => {
      for (let i = 0; i < n; i++) a.add(b).dispose();
    }),
    "raw addon: dispose(add(a, b))": perOp((n) => {
      const [ia, ib] = [a.id, b.id];
      for (let i = 0; i < n; i++) native.dispose(native.add(ia, ib, 1));
    }),
    "C++ loop: at::add": cppOpLoop(),
  };
  const torch = pytorch(info.threads, "add");
  rows["PyTorch eager: torch.add"] = torch?.addUs ?? null;
  const costs = bookkeeping();
  a.dispose();
  b.dispose();
  const ours: number[] = [];
  const theirs: number[] = [];
  for (let round = 0; round < MATMUL_ROUNDS; round++) {
    ours.push(...lmfMatmul());
    if (torch) theirs.push(...(pytorch(info.threads, "matmul")?.matmulGflops ?? []));
  }

  const lmfGflops = median(ours);
  const torchGflops = theirs.length ? median(theirs) : null;
  const fmt = (v: number | null, digits = 2) => (v === null ? "n/a" : v.toFixed(digits));
  console.log(`libtorch ${info.torchVersion}, ${info.blas}, ${info.threads} threads${torch ? `, PyTorch ${torch.version}` : ""}`);
  console.log("\nper-op overhead: add of two 1-element float32 tensors      µs/op");
  for (const [name, value] of Object.entries(rows)) console.log(`  ${name.padEnd(52)} ${fmt(value).padStart(8)}`);
  console.log("\nwrapper bookkeeping (pure JS, no native call)                 µs/op");
  for (const [name, value] of Object.entries(costs)) console.log(`  ${name.padEnd(52)} ${fmt(value, 3).padStart(8)}`);
  console.log(`\n${MATMUL_N}x${MATMUL_N} float32 matmul, median of ${MATMUL_ROUNDS}x${MATMUL_REPS} (alternating)  GFLOP/s`);
  console.log(`  ${"lmfactory".padEnd(52)} ${fmt(lmfGflops, 1).padStart(8)}`);
  console.log(`  ${"PyTorch".padEnd(52)} ${fmt(torchGflops, 1).padStart(8)}`);
  if (torchGflops) console.log(`  ${"ratio lmfactory / PyTorch".padEnd(52)} ${(lmfGflops / torchGflops).toFixed(3).padStart(8)}  (target >= 0.95)`);
  const overhead = rows["lmfactory: tidy(() => a.add(b))"]!;
  console.log(`\ntarget: per-op overhead under 5 µs -> ${overhead < 5 ? "met" : "NOT met"} (${overhead.toFixed(2)} µs in tidy)`);

  mkdirSync("bench/results", { recursive: true });
  writeFileSync(
    "bench/results/ops.json",
    JSON.stringify(
      {
        engine: info,
        pytorchVersion: torch?.version ?? null,
        perOpMicroseconds: rows,
        bookkeepingMicroseconds: costs,
        matmul: { n: MATMUL_N, lmfactoryGflops: ours, pytorchGflops: theirs.length ? theirs : null, medianRatio: torchGflops ? lmfGflops / torchGflops : null },
      },
      null,
      2,
    ) + "\n",
  );
}

main();
