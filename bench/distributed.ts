// Data-parallel training on two local processes (c10d with Gloo over the loopback interface) for
// the ~0.1B Llama (12 x 768), LoRA and full: per optimizer step, the step time, the time spent
// in the gradient all-reduce (the Reducer's bucketed reduction: flattening, all-reduce, copying
// back) and its share of the step, and the bytes each rank sent during it (/proc/self/io wchar:
// Gloo writes its sockets with write/writev) against the ring all-reduce's 2 x (N - 1) / N x
// gradient bytes. Each rank runs the trainer's own step (train()) on 1 thread.
// Writes bench/results/distributed.json.
// Usage: node --import tsx bench/distributed.ts [--quick]
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { llamaConfig, median } from "./common.ts";

const QUICK = process.argv.includes("--quick");
const SHAPE = { hidden: 768, layers: 12, heads: 12, kvHeads: 4, intermediate: 2048, vocab: 32000 };
const WORLD = 2;
/** Per rank: batch x sequence tokens of each micro-batch. */
const BATCH = 2;
const SEQ = QUICK ? 64 : 128;
const STEPS = QUICK ? 3 : 6;
/** Steps left out of the medians (first-touch allocation, optimizer state creation). */
const WARMUP = 1;

interface RankResult {
  step_s: number[];
  reduce_s: number[];
  all_reduce_s: number[];
  sent_bytes: number[];
  gradient_bytes: number;
  trainable: number;
  buckets_per_step: number;
}

function wchar(): number {
  return Number(/wchar: (\d+)/.exec(readFileSync("/proc/self/io", "utf8"))![1]);
}

/** One rank, in its own process: the trainer on random tokens, its gradient reduction timed. */
async function child(folder: string, mode: "lora" | "full"): Promise<void> {
  const { loadModel } = await import("../src/model/loader.ts");
  const { applyFinetuning } = await import("../src/model/adapters/index.ts");
  const { ProcessGroupParallel } = await import("../src/train/distributed/data_parallel.ts");
  const { workerEnvironment } = await import("../src/train/distributed/environment.ts");
  const { languageModeling } = await import("../src/train/stages/language_modeling.ts");
  const { train } = await import("../src/train/trainer.ts");
  const T = await import("../src/torch/index.ts");
  const model = loadModel(folder);
  T.manualSeed(1);
  applyFinetuning(model, { finetuningType: mode, loraRank: 8, loraAlpha: 16, loraTarget: ["all"] });
  const parallel = new ProcessGroupParallel(workerEnvironment()!, { timeoutSeconds: 600, findUnusedParameters: false });
  const trainable = model.namedParameters({ trainableOnly: true });
  const result: RankResult = {
    step_s: [],
    reduce_s: [],
    all_reduce_s: [],
    sent_bytes: [],
    gradient_bytes: trainable.reduce((sum, [, p]) => sum + p.numel * T.ITEM_SIZE[p.dtype], 0),
    trainable: trainable.reduce((sum, [, p]) => sum + p.numel, 0),
    buckets_per_step: 0,
  };
  // Timed around the trainer's one reduction per step; a step is the time from one reduction's end to the next's.
  const reduce = parallel.reduceGradients.bind(parallel);
  let lastEnd = performance.now();
  parallel.reduceGradients = () => {
    const stats = parallel.gradientStats;
    const [allReduceBefore, bucketsBefore] = [stats?.allReduceSeconds ?? 0, stats?.buckets ?? 0];
    const [sentBefore, started] = [wchar(), performance.now()];
    reduce();
    const ended = performance.now();
    result.sent_bytes.push(wchar() - sentBefore);
    result.reduce_s.push((ended - started) / 1000);
    result.all_reduce_s.push(parallel.gradientStats!.allReduceSeconds - allReduceBefore);
    result.buckets_per_step = parallel.gradientStats!.buckets - bucketsBefore;
    result.step_s.push((ended - lastEnd) / 1000);
    lastEnd = ended;
  };
  let state = 7 + parallel.rank;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const rows = Array.from({ length: BATCH * WORLD * (STEPS + 1) }, () => {
    const ids = Array.from({ length: SEQ }, () => Math.floor(next() * SHAPE.vocab));
    return { input_ids: ids, attention_mask: ids.map(() => 1), labels: ids };
  });
  lastEnd = performance.now();
  train(
    {
      model,
      train: rows,
      collate: (batch) => ({ input_ids: batch.map((r) => r.input_ids), attention_mask: batch.map((r) => r.attention_mask), labels: batch.map((r) => r.labels) }),
      stage: languageModeling,
      saveModel: () => {},
      loadModel: () => {},
    },
    {
      outputDir: mkdtempSync(join(tmpdir(), "lmf-bench-ddp-")),
      batchSize: BATCH,
      gradientAccumulationSteps: 1,
      learningRate: 1e-4,
      weightDecay: 0.01,
      adamBeta1: 0.9,
      adamBeta2: 0.999,
      adamEpsilon: 1e-8,
      maxGradNorm: 1,
      numTrainEpochs: 1,
      maxSteps: STEPS,
      lrSchedulerType: "constant",
      warmupSteps: 0,
      warmupRatio: 0,
      loggingSteps: 1,
      saveStrategy: "no",
      saveSteps: 500,
      saveTotalLimit: null,
      saveOnlyModel: true,
      evalStrategy: "no",
      evalSteps: null,
      dataSeed: 1,
      gradientCheckpointing: false,
      resumeFrom: null,
      print: () => {},
      parallel,
    },
  );
  parallel.destroy();
  if (parallel.isMain) console.log(JSON.stringify(result));
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** Both ranks of one case; rank 0's measurements. */
async function runCase(folder: string, mode: "lora" | "full"): Promise<RankResult> {
  const port = await freePort();
  const outputs: string[] = ["", ""];
  const exits = await Promise.all(
    [0, 1].map(
      (rank) =>
        new Promise<number | null>((resolve) => {
          const env = { ...process.env, RANK: String(rank), WORLD_SIZE: String(WORLD), LOCAL_RANK: String(rank), MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port), OMP_NUM_THREADS: "1" };
          const worker = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--child", folder, mode], { env, stdio: ["ignore", "pipe", "inherit"] });
          worker.stdout!.on("data", (chunk: Buffer) => (outputs[rank] += chunk.toString()));
          worker.on("exit", resolve);
        }),
    ),
  );
  if (exits.some((code) => code !== 0)) throw new Error(`a rank failed (${exits.join(", ")})`);
  return JSON.parse(outputs[0]!.trim().split("\n").pop()!) as RankResult;
}

async function main(): Promise<void> {
  const { normalizeConfig } = await import("../src/model/config.ts");
  const { LlamaForCausalLM } = await import("../src/model/models/llama.ts");
  const { saveModel } = await import("../src/model/loader.ts");
  const T = await import("../src/torch/index.ts");
  const folder = mkdtempSync(join(tmpdir(), "lmf-bench-ddp-model-"));
  try {
    T.manualSeed(0);
    const model = new LlamaForCausalLM(normalizeConfig(llamaConfig(SHAPE)), {}, { init: "hf" });
    const parameters = model.numParameters();
    saveModel(model, folder);
    model.dispose();
    const rows = [];
    for (const mode of ["lora", "full"] as const) {
      const load = loadavg()[0]!;
      const r = await runCase(folder, mode);
      const timed = (values: number[]) => median(values.slice(WARMUP));
      const theoretical = (2 * (WORLD - 1) / WORLD) * r.gradient_bytes;
      const row = {
        mode,
        trainable: r.trainable,
        gradient_bytes: r.gradient_bytes,
        buckets: r.buckets_per_step,
        step_s: timed(r.step_s),
        reduce_s: timed(r.reduce_s),
        all_reduce_s: timed(r.all_reduce_s),
        share: timed(r.reduce_s) / timed(r.step_s),
        sent_bytes: timed(r.sent_bytes),
        theoretical_bytes: theoretical,
        sent_over_theoretical: timed(r.sent_bytes) / theoretical,
        load,
      };
      rows.push(row);
      console.log(
        `${mode}: step ${row.step_s.toFixed(3)} s, reduction ${row.reduce_s.toFixed(3)} s (all-reduce ${row.all_reduce_s.toFixed(3)} s, ${(100 * row.share).toFixed(1)} % of the step), ` +
          `${(row.sent_bytes / 2 ** 20).toFixed(1)} MiB sent vs ${(theoretical / 2 ** 20).toFixed(1)} MiB (${row.sent_over_theoretical.toFixed(3)}x), ${row.buckets} buckets`,
      );
    }
    const out = { world: WORLD, threadsPerRank: 1, batch: BATCH, seq: SEQ, steps: STEPS, warmup: WARMUP, quick: QUICK, shape: SHAPE, parameters, rows };
    mkdirSync(new URL("results/", import.meta.url), { recursive: true });
    writeFileSync(new URL("results/distributed.json", import.meta.url), JSON.stringify(out, null, 2) + "\n");
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}

if (process.argv[2] === "--child") await child(process.argv[3]!, process.argv[4] as "lora" | "full");
else await main();
