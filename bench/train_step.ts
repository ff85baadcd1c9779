// Training step, lmfactory against PyTorch eager (bench/reference/train_step.py) on the same
// Llama-shaped weights (one safetensors file), the same batches, AdamW and clipping, for LoRA, full
// and freeze fine-tuning: per-step losses must agree first, then step time, tokens/s and peak RSS
// (VmHWM over the training loop, reset after loading, each side in its own process). Writes
// bench/results/train_step.json.
// Usage: node --import tsx bench/train_step.ts [--quick]   (BENCH_CASES=lora,full to run some cases,
// BENCH_STEPS=n for the length of the loss-agreement run)
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { THREADS, llamaConfig, median, resetPeak, runSide, statusMiB } from "./common.ts";

const QUICK = process.argv.includes("--quick");

/** A model to train: its shape, the batch, and which cases run on it. */
interface Bench {
  name: string;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  batch: number;
  seq: number;
  cases: string[];
  /** Steps of the first run of each side, whose losses are compared (and timed). */
  agreementSteps: number;
  /** Steps of the later runs, timed only. */
  timingSteps: number;
}

const ALL_CASES = ["lora", "full", "freeze", "lora+ckpt"];
// The model (hidden 512 x 8 layers, GQA 8 q / 4 kv heads, vocab 32k) with every case, and
// a ~0.1B one (124M parameters) for LoRA and full. Batches of 4 x 256 tokens rather than 4 x 512
// keep the whole `npm run bench` near 15 minutes on 2 cores.
const BENCHES: Bench[] = [
  {
    name: "Llama 8x512",
    ...{ hidden: 512, layers: 8, heads: 8, kvHeads: 4, intermediate: 1408, vocab: 32000, batch: 4, seq: QUICK ? 128 : 256 },
    cases: ALL_CASES,
    agreementSteps: Number(process.env.BENCH_STEPS ?? (QUICK ? 5 : 20)),
    timingSteps: QUICK ? 5 : 8,
  },
  {
    name: "Llama 12x768 (0.1B)",
    ...{ hidden: 768, layers: 12, heads: 12, kvHeads: 4, intermediate: 2048, vocab: 32000, batch: 4, seq: QUICK ? 128 : 256 },
    cases: ["lora", "full"],
    agreementSteps: QUICK ? 4 : 6,
    timingSteps: QUICK ? 4 : 6,
  },
];
/** Steps left out of the timing median (first-touch allocation, optimizer state creation). */
const WARMUP = 2;
const REPEATS = 2;
/** Per-step losses agree when their relative difference is at most this. */
const LOSS_TOLERANCE = 1e-5;
const HP = { lr: 1e-4, weight_decay: 0.01, max_grad_norm: 1.0, lora_rank: 8, lora_alpha: 16 };
type Mode = "lora" | "full" | "freeze";

interface SideResult {
  losses: number[];
  step_s: number[];
  before_mib: number;
  peak_mib: number;
}

/** Deterministic token ids (mulberry32), so both sides read the very same batches. */
function makeBatches(shape: Bench, steps: number, seed: number): number[][][] {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({ length: steps }, () =>
    Array.from({ length: shape.batch }, () => Array.from({ length: shape.seq }, () => Math.floor(next() * shape.vocab))),
  );
}

/** lmfactory side, in its own process: the trainer's step (tidy, causal-LM loss, clip, AdamW). */
async function ours(folder: string, mode: Mode, checkpointing: boolean, steps: number): Promise<void> {
  const { loadModel } = await import("../src/model/loader.ts");
  const { applyFinetuning } = await import("../src/model/adapters/index.ts");
  const { checkpointedBackward } = await import("../src/model/patches/checkpointing.ts");
  const { causalLmLoss } = await import("../src/train/stages/language_modeling.ts");
  const T = await import("../src/torch/index.ts");
  const model = loadModel(folder);
  T.manualSeed(1);
  applyFinetuning(model, { finetuningType: mode, loraRank: HP.lora_rank, loraAlpha: HP.lora_alpha, loraTarget: ["all"], freezeTrainableLayers: 2 });
  const trainable = model.namedParameters({ trainableOnly: true });
  if (mode === "lora") {
    // The reference starts from our LoRA initialisation (A random, B zero).
    T.saveSafetensors(join(folder, "lora_init.safetensors"), Object.fromEntries(trainable));
  }
  writeFileSync(join(folder, `trainable-${mode}.json`), JSON.stringify(trainable.map(([name]) => name)));
  const batches = (JSON.parse(readFileSync(join(folder, "batches.json"), "utf8")) as number[][][]).slice(0, steps);
  const optimizer = new T.AdamW(T.decayParameterGroups(trainable, HP.weight_decay), { lr: HP.lr, weightDecay: HP.weight_decay });
  const params = optimizer.paramGroups.flatMap((g) => g.params);
  resetPeak();
  const before = statusMiB("VmRSS");
  const losses: number[] = [];
  const times: number[] = [];
  for (const batch of batches) {
    const started = performance.now();
    losses.push(
      T.tidy(() => {
        const ids = T.tensor(batch);
        // Every position but the last is trained (labels = input ids), with the trainer's causal-LM loss.
        const lossOf = causalLmLoss(ids, batch.length * (batch[0]!.length - 1));
        if (checkpointing) return checkpointedBackward(model, ids, (hidden) => lossOf(model.logits(hidden)));
        const loss = T.tidy(() => lossOf(model.forward(ids))); // as the trainer: logits freed before backward
        loss.backward();
        return loss.item();
      }),
    );
    T.clipGradNorm(params, HP.max_grad_norm);
    optimizer.step();
    optimizer.zeroGrad();
    times.push((performance.now() - started) / 1000);
  }
  const result: SideResult = { losses, step_s: times, before_mib: before, peak_mib: statusMiB("VmHWM") };
  console.log(JSON.stringify(result));
}

function runOurs(folder: string, mode: Mode, checkpointing: boolean, steps: number): SideResult {
  return runSide(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--child", folder, mode, String(checkpointing), String(steps)]);
}

function runReference(folder: string, mode: Mode, checkpointing: boolean, steps: number): SideResult {
  const request = {
    folder,
    mode,
    trainable: JSON.parse(readFileSync(join(folder, `trainable-${mode}.json`), "utf8")),
    batches: JSON.parse(readFileSync(join(folder, "batches.json"), "utf8")).slice(0, steps),
    checkpointing,
    threads: THREADS,
    ...HP,
  };
  return runSide("/usr/bin/python3", ["bench/reference/train_step.py"], JSON.stringify(request));
}

async function main(): Promise<void> {
  const { normalizeConfig } = await import("../src/model/config.ts");
  const { LlamaForCausalLM } = await import("../src/model/models/llama.ts");
  const { saveModel } = await import("../src/model/loader.ts");
  const T = await import("../src/torch/index.ts");
  // BENCH_CASES=lora,lora+ckpt runs only those cases (for investigating one of them).
  const only = process.env.BENCH_CASES?.split(",");
  const models = [];
  for (const shape of BENCHES) {
    const cases = shape.cases.filter((name) => !only || only.includes(name));
    if (!cases.length) continue;
    const folder = join("bench/results/tmp", "train_step");
    mkdirSync(folder, { recursive: true });
    const config = normalizeConfig(llamaConfig(shape));
    T.manualSeed(0);
    const model = new LlamaForCausalLM(config, {}, { init: "hf" });
    const parameters = model.numParameters();
    saveModel(model, folder);
    model.dispose();
    writeFileSync(join(folder, "batches.json"), JSON.stringify(makeBatches(shape, Math.max(shape.agreementSteps, shape.timingSteps), 1234)));

    const tokens = shape.batch * shape.seq;
    const rows = [];
    console.log(
      `${shape.name} (${(parameters / 1e6).toFixed(0)}M parameters, GQA ${shape.heads}/${shape.kvHeads}, vocab ${shape.vocab}), batch ${shape.batch}x${shape.seq}, fp32, ` +
        `${THREADS} threads, ${shape.agreementSteps} + ${shape.timingSteps} steps, load ${loadavg()[0]!.toFixed(2)}`,
    );
    for (const name of cases) {
      const mode = name.replace("+ckpt", "") as Mode;
      const checkpointing = name.endsWith("+ckpt");
      const lmf: SideResult[] = [];
      const ref: SideResult[] = [];
      // Alternate the two sides so background load hits both alike; the first run of each side is
      // the long one whose losses are compared.
      for (let r = 0; r < REPEATS; r++) {
        const steps = r === 0 ? shape.agreementSteps : shape.timingSteps;
        lmf.push(runOurs(folder, mode, checkpointing, steps));
        ref.push(runReference(folder, mode, checkpointing, steps));
      }
      let maxRel = 0;
      lmf[0]!.losses.forEach((l, i) => (maxRel = Math.max(maxRel, Math.abs(l - ref[0]!.losses[i]!) / Math.abs(ref[0]!.losses[i]!))));
      const stepOf = (rs: SideResult[]) => median(rs.flatMap((r) => r.step_s.slice(WARMUP)));
      const row = {
        mode,
        checkpointing,
        losses: { lmf: lmf[0]!.losses, ref: ref[0]!.losses, maxRelDiff: maxRel, steps: lmf[0]!.losses.length, agree: maxRel <= LOSS_TOLERANCE },
        lmf: { step_s: stepOf(lmf), tokens_per_s: tokens / stepOf(lmf), peak_mib: median(lmf.map((r) => r.peak_mib)), before_mib: median(lmf.map((r) => r.before_mib)) },
        ref: { step_s: stepOf(ref), tokens_per_s: tokens / stepOf(ref), peak_mib: median(ref.map((r) => r.peak_mib)), before_mib: median(ref.map((r) => r.before_mib)) },
        load: loadavg()[0],
      };
      rows.push(row);
      console.log(
        `${name.padEnd(12)} losses ${row.losses.agree ? "agree" : "DIFFER"} (max rel diff ${maxRel.toExponential(1)} over ${row.losses.steps} steps)  ` +
          `step lmf ${row.lmf.step_s.toFixed(3)}s ref ${row.ref.step_s.toFixed(3)}s (ratio ${(row.lmf.step_s / row.ref.step_s).toFixed(2)})  ` +
          `tok/s ${row.lmf.tokens_per_s.toFixed(0)} / ${row.ref.tokens_per_s.toFixed(0)}  ` +
          `peak MiB ${row.lmf.peak_mib.toFixed(0)} / ${row.ref.peak_mib.toFixed(0)} (ratio ${(row.lmf.peak_mib / row.ref.peak_mib).toFixed(2)})  load ${row.load!.toFixed(2)}`,
      );
      // Written after every case so a run cut short still leaves its finished rows.
      const result = { name: shape.name, parameters, shape, rows };
      writeFileSync(
        "bench/results/train_step.json",
        JSON.stringify({ warmup: WARMUP, repeats: REPEATS, threads: THREADS, hp: HP, lossTolerance: LOSS_TOLERANCE, quick: QUICK, models: [...models, result] }, null, 2) + "\n",
      );
    }
    models.push({ name: shape.name, parameters, shape, rows });
    rmSync(folder, { recursive: true, force: true });
  }
}

if (process.argv[2] === "--child") await ours(process.argv[3]!, process.argv[4] as Mode, process.argv[5] === "true", Number(process.argv[6]));
else await main();
