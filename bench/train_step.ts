// Training step, lmfactory against PyTorch eager (bench/reference/train_step.py) on the same
// Llama/Qwen2-shaped weights (one safetensors file), the same batches, AdamW and clipping, for LoRA,
// full and freeze fine-tuning, in fp32 and in bf16 (autocast over float32 master weights, against
// torch.autocast): per-step losses must agree first, then step time, tokens/s and peak RSS (VmHWM
// over the training loop, reset after loading, each side in its own process). For the 0.5B case the
// memory of one decoder layer is measured too (peak RSS at 24 and at 8 layers), from which the
// largest model whose LoRA step fits in 24 GiB is computed. Writes bench/results/train_step.json.
// Usage: node --import tsx bench/train_step.ts [--quick]   (BENCH_CASES=lora,full@bf16 to run some
// cases, BENCH_MODELS=0.5B to run some models, BENCH_STEPS=n for the loss-agreement run; see
// `overridden` for shorter runs)
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { THREADS, llamaConfig, median, resetPeak, runSide, statusMiB } from "./common.ts";
import { largestFitting, perLayerParameters } from "./memory_fit.ts";

const QUICK = process.argv.includes("--quick");

/** A model to train: its shape, the batch, and which cases run on it. */
interface Bench {
  name: string;
  /** config.json fields beyond the Llama shape (Qwen2: model_type, tied embeddings, RoPE base). */
  config?: Record<string, unknown>;
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
  /** Runs per side (the first is the loss-agreement run). */
  repeats: number;
  /** Steps left out of the timing median (first-touch allocation, optimizer state creation). */
  warmup: number;
  /** Also measure our peak at this many layers, for the memory of one layer. */
  perLayerAt?: number;
}

// A case is a mode, `+ckpt` for gradient checkpointing (both sides), `@bf16` for mixed precision.
const ALL_CASES = ["lora", "full", "freeze", "lora+ckpt", "lora@bf16", "full@bf16", "lora+ckpt@bf16"];
// The model (hidden 512 x 8 layers, GQA 8 q / 4 kv heads, vocab 32k) with every case, and
// a ~0.1B one (124M parameters) for LoRA and full. Batches of 4 x 256 tokens rather than 4 x 512
// keep the whole `npm run bench` near 15 minutes on 2 cores.
const BENCHES: Bench[] = [
  {
    name: "Llama 8x512",
    ...{ hidden: 512, layers: 8, heads: 8, kvHeads: 4, intermediate: 1408, vocab: 32000, batch: 4, seq: QUICK ? 128 : 256 },
    cases: ALL_CASES,
    agreementSteps: QUICK ? 5 : 20,
    timingSteps: QUICK ? 5 : 8,
    repeats: 2,
    warmup: 2,
  },
  {
    name: "Llama 12x768 (0.1B)",
    ...{ hidden: 768, layers: 12, heads: 12, kvHeads: 4, intermediate: 2048, vocab: 32000, batch: 4, seq: QUICK ? 128 : 256 },
    cases: ["lora", "full", "lora@bf16"],
    agreementSteps: QUICK ? 4 : 6,
    timingSteps: QUICK ? 4 : 6,
    repeats: 2,
    warmup: 2,
  },
  {
    // Qwen2.5-0.5B's shape with random weights: q/k/v bias, tied embeddings, RoPE base 1e6.
    name: "Qwen2 24x896 (0.5B)",
    config: { model_type: "qwen2", tie_word_embeddings: true, rope_theta: 1000000, max_position_embeddings: 32768, use_sliding_window: false },
    ...{ hidden: 896, layers: 24, heads: 14, kvHeads: 2, intermediate: 4864, vocab: 151936, batch: 1, seq: QUICK ? 64 : 128 },
    cases: ["lora+ckpt", "lora+ckpt@bf16"],
    agreementSteps: 3,
    timingSteps: 3,
    repeats: 1,
    warmup: 1,
    perLayerAt: 8,
  },
];
/** Per-step losses agree when their relative difference is at most this (fp32). */
const LOSS_TOLERANCE = 1e-5;
/** bf16: |ours - PyTorch| <= atol + rtol·|PyTorch| at every step (torch.testing's bfloat16 defaults). */
const BF16_TOLERANCE = { rtol: 1.6e-2, atol: 1e-5 };
const HP = { lr: 1e-4, weight_decay: 0.01, max_grad_norm: 1.0, lora_rank: 8, lora_alpha: 16 };
type Mode = "lora" | "full" | "freeze";
type Precision = "fp32" | "bf16";

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

/**
 * lmfactory side, in its own process: the trainer's step (tidy, causal-LM loss, clip, AdamW); bf16
 * as `lmf train` sets it up: loaded in bfloat16, trainable weights float32, forwards autocast.
 */
async function ours(folder: string, mode: Mode, checkpointing: boolean, steps: number, precision: Precision): Promise<void> {
  const { loadModel } = await import("../src/model/loader.ts");
  const { applyFinetuning } = await import("../src/model/adapters/index.ts");
  const { checkpointedBackward } = await import("../src/model/patches/checkpointing.ts");
  const { causalLmLoss } = await import("../src/train/stages/language_modeling.ts");
  const T = await import("../src/torch/index.ts");
  const bf16 = precision === "bf16";
  const model = loadModel(folder, { dtype: bf16 ? "bfloat16" : "float32" });
  T.manualSeed(1);
  applyFinetuning(model, {
    finetuningType: mode,
    loraRank: HP.lora_rank,
    loraAlpha: HP.lora_alpha,
    loraTarget: ["all"],
    freezeTrainableLayers: 2,
    loraDtype: bf16 ? "float32" : undefined,
    upcastTrainable: bf16,
  });
  const amp = bf16 ? { device: "cpu" as const, dtype: "bfloat16" as const } : null;
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
        if (checkpointing) return checkpointedBackward(model, ids, (hidden) => lossOf(model.logits(hidden)), { autocast: amp });
        const loss = T.tidy(() => T.autocastIf(amp, () => lossOf(model.forward(ids)))); // as the trainer: logits freed before backward
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

function runOurs(folder: string, mode: Mode, checkpointing: boolean, steps: number, precision: Precision): SideResult {
  return runSide(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--child", folder, mode, String(checkpointing), String(steps), precision]);
}

function runReference(folder: string, mode: Mode, checkpointing: boolean, steps: number, precision: Precision): SideResult {
  const request = {
    folder,
    mode,
    trainable: JSON.parse(readFileSync(join(folder, `trainable-${mode}.json`), "utf8")),
    batches: JSON.parse(readFileSync(join(folder, "batches.json"), "utf8")).slice(0, steps),
    checkpointing,
    threads: THREADS,
    precision,
    ...HP,
  };
  return runSide("/usr/bin/python3", ["bench/reference/train_step.py"], JSON.stringify(request));
}

/** Builds the bench's model with HF init (seed 0) and writes it as an HF folder; returns its parameter count. */
async function writeModel(shape: Bench, layers: number, folder: string): Promise<number> {
  const { normalizeConfig } = await import("../src/model/config.ts");
  const { architectureFor } = await import("../src/model/registry.ts");
  const { saveModel } = await import("../src/model/loader.ts");
  const T = await import("../src/torch/index.ts");
  mkdirSync(folder, { recursive: true });
  const config = normalizeConfig({ ...llamaConfig({ ...shape, layers }), ...shape.config });
  T.manualSeed(0);
  const model = architectureFor(config).build(config, { init: "hf" });
  const parameters = model.numParameters();
  saveModel(model, folder);
  model.dispose();
  return parameters;
}

interface Row {
  /** When this row was measured (a partial run keeps the rows it did not measure). */
  measured: string;
  mode: Mode;
  checkpointing: boolean;
  precision: Precision;
  losses: { lmf: number[]; ref: number[]; maxRelDiff: number; steps: number; agree: boolean };
  /** step_s is the median of `timed`, every step after the warm-up of every run of the side. */
  lmf: { step_s: number; timed?: number[]; tokens_per_s: number; peak_mib: number; before_mib: number };
  ref: { step_s: number; timed?: number[]; tokens_per_s: number; peak_mib: number; before_mib: number };
  load: number | undefined;
  perLayer: null | { layers: number; peak_mib: number; mib_per_layer: number };
}

const agreeWithin = (precision: Precision, ours: number, theirs: number) =>
  precision === "bf16" ? Math.abs(ours - theirs) <= BF16_TOLERANCE.atol + BF16_TOLERANCE.rtol * Math.abs(theirs) : Math.abs(ours - theirs) <= LOSS_TOLERANCE * Math.abs(theirs);

/** BENCH_TIMING_STEPS / BENCH_REPEATS / BENCH_BATCH / BENCH_SEQ override every model's (a shorter run on a busy machine). */
function overridden(shape: Bench): Bench {
  const env = (name: string, value: number) => (process.env[name] ? Number(process.env[name]) : value);
  const repeats = env("BENCH_REPEATS", shape.repeats);
  return {
    ...shape,
    agreementSteps: env("BENCH_STEPS", shape.agreementSteps),
    timingSteps: env("BENCH_TIMING_STEPS", shape.timingSteps),
    repeats,
    warmup: Math.min(shape.warmup, env("BENCH_STEPS", shape.agreementSteps) - 1),
    batch: env("BENCH_BATCH", shape.batch),
    seq: env("BENCH_SEQ", shape.seq),
  };
}

async function main(): Promise<void> {
  // BENCH_CASES=lora,lora+ckpt@bf16 runs only those cases; BENCH_MODELS=0.5B only the models whose name contains it.
  const only = process.env.BENCH_CASES?.split(",");
  const onlyModels = process.env.BENCH_MODELS?.split(",");
  const models: ModelResult[] = [];
  for (const declared of BENCHES) {
    const shape = overridden(declared);
    const cases = shape.cases.filter((name) => !only || only.includes(name));
    if (!cases.length || (onlyModels && !onlyModels.some((name) => shape.name.includes(name)))) continue;
    const folder = join("bench/results/tmp", "train_step");
    const parameters = await writeModel(shape, shape.layers, folder);
    writeFileSync(join(folder, "batches.json"), JSON.stringify(makeBatches(shape, Math.max(shape.agreementSteps, shape.timingSteps), 1234)));

    const tokens = shape.batch * shape.seq;
    const rows: Row[] = [];
    console.log(
      `${shape.name} (${(parameters / 1e6).toFixed(0)}M parameters, GQA ${shape.heads}/${shape.kvHeads}, vocab ${shape.vocab}), batch ${shape.batch}x${shape.seq}, ` +
        `${THREADS} threads, ${shape.agreementSteps} + ${shape.timingSteps} steps, load ${loadavg()[0]!.toFixed(2)}`,
    );
    for (const name of cases) {
      const precision: Precision = name.endsWith("@bf16") ? "bf16" : "fp32";
      const base = name.replace("@bf16", "");
      const mode = base.replace("+ckpt", "") as Mode;
      const checkpointing = base.endsWith("+ckpt");
      const lmf: SideResult[] = [];
      const ref: SideResult[] = [];
      // Alternate the two sides so background load hits both alike; the first run of each side is
      // the long one whose losses are compared.
      for (let r = 0; r < shape.repeats; r++) {
        const steps = r === 0 ? shape.agreementSteps : shape.timingSteps;
        lmf.push(runOurs(folder, mode, checkpointing, steps, precision));
        ref.push(runReference(folder, mode, checkpointing, steps, precision));
      }
      let maxRel = 0;
      lmf[0]!.losses.forEach((l, i) => (maxRel = Math.max(maxRel, Math.abs(l - ref[0]!.losses[i]!) / Math.abs(ref[0]!.losses[i]!))));
      const agree = lmf[0]!.losses.every((l, i) => agreeWithin(precision, l, ref[0]!.losses[i]!));
      const timedOf = (rs: SideResult[]) => rs.flatMap((r) => r.step_s.slice(shape.warmup));
      const stepOf = (rs: SideResult[]) => median(timedOf(rs));
      const row: Row = {
        measured: new Date().toISOString().slice(0, 16),
        mode,
        checkpointing,
        precision,
        losses: { lmf: lmf[0]!.losses, ref: ref[0]!.losses, maxRelDiff: maxRel, steps: lmf[0]!.losses.length, agree },
        lmf: { step_s: stepOf(lmf), timed: timedOf(lmf), tokens_per_s: tokens / stepOf(lmf), peak_mib: median(lmf.map((r) => r.peak_mib)), before_mib: median(lmf.map((r) => r.before_mib)) },
        ref: { step_s: stepOf(ref), timed: timedOf(ref), tokens_per_s: tokens / stepOf(ref), peak_mib: median(ref.map((r) => r.peak_mib)), before_mib: median(ref.map((r) => r.before_mib)) },
        load: loadavg()[0],
        perLayer: null,
      };
      rows.push(row);
      console.log(
        `${name.padEnd(15)} losses ${row.losses.agree ? "agree" : "DIFFER"} (max rel diff ${maxRel.toExponential(1)} over ${row.losses.steps} steps)  ` +
          `step lmf ${row.lmf.step_s.toFixed(3)}s (${range(row.lmf.timed!)}) ref ${row.ref.step_s.toFixed(3)}s (${range(row.ref.timed!)}) (ratio ${(row.lmf.step_s / row.ref.step_s).toFixed(2)})  ` +
          `tok/s ${row.lmf.tokens_per_s.toFixed(0)} / ${row.ref.tokens_per_s.toFixed(0)}  ` +
          `peak MiB ${row.lmf.peak_mib.toFixed(0)} / ${row.ref.peak_mib.toFixed(0)} (ratio ${(row.lmf.peak_mib / row.ref.peak_mib).toFixed(2)})  load ${row.load!.toFixed(2)}`,
      );
      const write = () => {
        // Written after every case so a run cut short still leaves its finished rows.
        const result = { name: shape.name, parameters, shape, rows, fit: fitOf(shape, parameters, rows) };
        writeResults([...(models as typeof result[]), result]);
      };
      write();
      if (shape.perLayerAt) {
        // Our peak with fewer layers: the difference is what one decoder layer costs in this step.
        const small = join("bench/results/tmp", "train_step_layers");
        await writeModel(shape, shape.perLayerAt, small);
        writeFileSync(join(small, "batches.json"), JSON.stringify(makeBatches(shape, 2, 1234)));
        const peak = runOurs(small, mode, checkpointing, 2, precision).peak_mib;
        row.perLayer = { layers: shape.perLayerAt, peak_mib: peak, mib_per_layer: (row.lmf.peak_mib - peak) / (shape.layers - shape.perLayerAt) };
        rmSync(small, { recursive: true, force: true });
        console.log(`${"".padEnd(15)} our peak at ${shape.perLayerAt} layers ${peak.toFixed(0)} MiB: ${row.perLayer.mib_per_layer.toFixed(1)} MiB per decoder layer`);
        write();
      }
    }
    models.push({ name: shape.name, parameters, shape, rows, fit: fitOf(shape, parameters, rows) });
    rmSync(folder, { recursive: true, force: true });
  }
}

interface ModelResult {
  name: string;
  parameters: number;
  shape: Bench;
  rows: Row[];
  fit: unknown;
}

/**
 * Writes bench/results/train_step.json: the models and rows of this run, merged into the earlier
 * results (a run of some cases replaces those rows and keeps the others, each with its date).
 */
function writeResults(measured: ModelResult[]): void {
  const path = "bench/results/train_step.json";
  const earlier = existsSync(path) ? ((JSON.parse(readFileSync(path, "utf8")) as { models?: ModelResult[] }).models ?? []) : [];
  const key = (row: Row) => `${row.mode}/${row.checkpointing}/${row.precision ?? "fp32"}`;
  const models = earlier.map((model) => {
    const fresh = measured.find((m) => m.name === model.name);
    if (!fresh) return model;
    const rows = model.rows.map((row) => fresh.rows.find((r) => key(r) === key(row)) ?? row);
    for (const row of fresh.rows) if (!rows.some((r) => key(r) === key(row))) rows.push(row);
    return { ...fresh, rows, fit: fresh.fit };
  });
  for (const fresh of measured) if (!models.some((m) => m.name === fresh.name)) models.push(fresh);
  writeFileSync(path, JSON.stringify({ threads: THREADS, hp: HP, lossTolerance: LOSS_TOLERANCE, bf16Tolerance: BF16_TOLERANCE, quick: QUICK, models }, null, 2) + "\n");
}

/** The largest Qwen2-family model whose LoRA step fits in 24 GiB, per precision, from the measured per-layer memory. */
function fitOf(shape: Bench, parameters: number, rows: Row[]) {
  return rows
    .filter((row) => row.perLayer)
    .map((row) => ({ precision: row.precision, ...largestFitting(shape, parameters, row.lmf.peak_mib, row.perLayer!.mib_per_layer, perLayerParameters(shape), row.precision) }));
}

if (process.argv[2] === "--child") await ours(process.argv[3]!, process.argv[4] as Mode, process.argv[5] === "true", Number(process.argv[6]), process.argv[7] as Precision);
else await main();

function range(values: number[]): string {
  return `${Math.min(...values).toFixed(3)}-${Math.max(...values).toFixed(3)}, ${values.length} steps`;
}
