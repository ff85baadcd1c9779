// A LoRA SFT step on a Qwen2.5-0.5B-shaped model, lmfactory against transformers + PEFT on the same
// weights, LoRA initialisation and batches, as LLaMA-Factory runs it: model in bf16, LoRA r 8 /
// alpha 16 on every linear layer in float32, bf16 autocast, gradient checkpointing, AdamW (lr 1e-4),
// clipping at 1.0. Reports per-step losses (agreement within bf16 tolerance), tokens/s and peak
// memory: on CUDA the GPU memory in use (nvidia-smi, sampled every 50 ms, minus what was in use
// before; PyTorch's max_memory_reserved/allocated too), on the CPU the peak RSS. Without
// transformers/PEFT (or torch) in python3, the comparison is skipped and lmfactory runs alone.
// Usage: node --import tsx bench/gpu/lora_step.ts [--device cuda] [--steps 8] [--batch 4] [--seq 512]
//        [--model <HF folder of a Qwen2-family model>] [--out bench/results/gpu_lora_step.json]
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HP = { lr: 1e-4, weight_decay: 0.0, max_grad_norm: 1.0, lora_rank: 8, lora_alpha: 16 };
const LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
const QWEN25_05B = {
  model_type: "qwen2",
  architectures: ["Qwen2ForCausalLM"],
  vocab_size: 151936,
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  max_position_embeddings: 32768,
  rope_theta: 1000000,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
  use_sliding_window: false,
  bos_token_id: 151643,
  eos_token_id: 151645,
};
/** bf16 agreement: torch.testing's bfloat16 tolerance, per step. */
const BF16 = { rtol: 1.6e-2, atol: 1e-5 };

interface SideResult {
  losses: number[];
  step_s: number[];
  /** Seconds for the steps after the warm-up, device work included (synchronised at the end). */
  timed_s: number;
  timed_steps: number;
  peak_rss_mib: number;
  torch_max_allocated_mib?: number;
  torch_max_reserved_mib?: number;
  gpu_used_mib?: number;
}

function arg(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : process.argv[at + 1]!;
}

function peakRssMiB(): number {
  return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1]) / 1024;
}

/** Deterministic token ids (an LCG), the same for both sides. */
function batches(steps: number, batch: number, seq: number, vocab: number): number[][][] {
  let state = 1234;
  const next = () => (state = (state * 1103515245 + 12345) % 2 ** 31);
  return Array.from({ length: steps }, () => Array.from({ length: batch }, () => Array.from({ length: seq }, () => next() % vocab)));
}

/** lmfactory's side, in its own process: `lmf train`'s LoRA + bf16 + gradient checkpointing step. */
async function ours(folder: string, device: string, warmup: number): Promise<void> {
  const T = await import("../../src/torch/index.ts");
  const { loadModel } = await import("../../src/model/loader.ts");
  const { applyFinetuning } = await import("../../src/model/adapters/index.ts");
  const { checkpointedBackward } = await import("../../src/model/patches/checkpointing.ts");
  const { causalLmLoss } = await import("../../src/train/stages/language_modeling.ts");
  const model = loadModel(folder, { dtype: "bfloat16", device });
  T.manualSeed(1);
  applyFinetuning(model, { finetuningType: "lora", loraRank: HP.lora_rank, loraAlpha: HP.lora_alpha, loraTarget: LORA_TARGETS, loraDtype: "float32", upcastTrainable: true });
  const trainable = model.namedParameters({ trainableOnly: true });
  // transformers + PEFT start from this very initialisation.
  T.saveSafetensors(join(folder, "lora_init.safetensors"), Object.fromEntries(T.noGrad(() => trainable.map(([name, p]) => [name, T.keep(p.to("cpu"))]))));
  const data = JSON.parse(readFileSync(join(folder, "batches.json"), "utf8")) as number[][][];
  const optimizer = new T.AdamW(T.decayParameterGroups(trainable, HP.weight_decay), { lr: HP.lr, weightDecay: HP.weight_decay });
  const params = optimizer.paramGroups.flatMap((group) => group.params);
  const amp = { device: T.autocastDeviceOf(device), dtype: "bfloat16" as const };
  const losses: number[] = [];
  const stepSeconds: number[] = [];
  let timedFrom = 0;
  for (const [index, batch] of data.entries()) {
    if (index === warmup) timedFrom = performance.now();
    const started = performance.now();
    losses.push(
      T.tidy(() => {
        const ids = T.tensor(batch, { device });
        const lossOf = causalLmLoss(ids, batch.length * (batch[0]!.length - 1));
        return checkpointedBackward(model, ids, (hidden) => lossOf(model.logits(hidden)), { autocast: amp });
      }),
    );
    T.clipGradNorm(params, HP.max_grad_norm);
    optimizer.step();
    optimizer.zeroGrad();
    stepSeconds.push((performance.now() - started) / 1000);
  }
  // Reading a value waits for the device's queued work.
  T.tidy(() => params[0]!.sum().item());
  const timed = (performance.now() - timedFrom) / 1000;
  const result: SideResult = { losses, step_s: stepSeconds, timed_s: timed, timed_steps: data.length - warmup, peak_rss_mib: peakRssMiB() };
  console.log(JSON.stringify(result));
}

/** `nvidia-smi`'s memory in use on GPU 0, MiB, or null without it. */
function gpuUsedMiB(): number | null {
  const run = spawnSync("nvidia-smi", ["--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"], { encoding: "utf8" });
  return run.status === 0 ? Number(run.stdout.trim().split("\n")[0]) : null;
}

/** Runs a side in its own process; on CUDA samples the GPU memory in use while it runs. */
async function runSide(command: string, args: string[], input: string | null, device: string): Promise<SideResult> {
  const baseline = device.startsWith("cuda") ? gpuUsedMiB() : null;
  let peak = baseline ?? 0;
  const child = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (data: Buffer) => (out += data.toString()));
  if (input !== null) child.stdin.end(input);
  else child.stdin.end();
  const sampler =
    baseline !== null
      ? setInterval(() => {
          const used = gpuUsedMiB();
          if (used !== null) peak = Math.max(peak, used);
        }, 50)
      : null;
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  if (sampler) clearInterval(sampler);
  if (code !== 0) throw new Error(`${command} ${args.join(" ")} exited with ${code}`);
  const result = JSON.parse(out.trim().split("\n").pop()!) as SideResult;
  if (baseline !== null) result.gpu_used_mib = peak - baseline;
  return result;
}

function hasTransformers(): string | null {
  const run = spawnSync("python3", ["-c", "import torch, transformers, peft; print(transformers.__version__, peft.__version__)"], { encoding: "utf8" });
  return run.status === 0 ? run.stdout.trim() : null;
}

async function main(): Promise<void> {
  const device = arg("device", "cpu");
  const onGpu = device.startsWith("cuda");
  const steps = Number(arg("steps", onGpu ? "8" : "2"));
  const warmup = Number(arg("warmup", onGpu ? "3" : "1"));
  const [batch, seq] = [Number(arg("batch", onGpu ? "4" : "1")), Number(arg("seq", onGpu ? "512" : "128"))];
  const outPath = arg("out", "bench/results/gpu_lora_step.json");
  const work = mkdtempSync(join(tmpdir(), "lmf-gpu-lora-"));
  try {
    const folder = join(work, "model");
    const given = arg("model", "");
    if (given) {
      // A real checkpoint: link its files in (lmfactory writes lora_init and batches beside them).
      mkdirSync(folder);
      execFileSync("sh", ["-c", `ln -s "$(realpath "${given}")"/* "${folder}/"`]);
    } else {
      const { normalizeConfig } = await import("../../src/model/config.ts");
      const { architectureFor } = await import("../../src/model/registry.ts");
      const { saveModel } = await import("../../src/model/loader.ts");
      const T = await import("../../src/torch/index.ts");
      const config = normalizeConfig(QWEN25_05B);
      T.manualSeed(0);
      const model = architectureFor(config).build(config, { init: "hf" });
      mkdirSync(folder);
      saveModel(model, folder);
      writeFileSync(join(folder, "config.json"), JSON.stringify({ ...QWEN25_05B, torch_dtype: "float32" }, null, 2));
      model.dispose();
    }
    const vocab = (JSON.parse(readFileSync(join(folder, "config.json"), "utf8")) as { vocab_size: number }).vocab_size;
    writeFileSync(join(folder, "batches.json"), JSON.stringify(batches(steps, batch, seq, vocab)));
    const tokens = batch * seq;
    console.log(`LoRA SFT step, Qwen2.5-0.5B shape${given ? ` (${given})` : " (random weights)"}, device ${device}, batch ${batch}x${seq}, ${steps} steps (${warmup} warm-up), bf16 autocast, gradient checkpointing`);

    const lmf = await runSide(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--child", folder, device, String(warmup)], null, device);
    const versions = hasTransformers();
    let hf: SideResult | null = null;
    if (versions) {
      const request = { folder, device, warmup, targets: LORA_TARGETS, ...HP };
      hf = await runSide("python3", [join(dirname(fileURLToPath(import.meta.url)), "lora_step_hf.py")], JSON.stringify(request), device);
    } else {
      console.log("transformers + peft are not importable by python3: the comparison is skipped, lmfactory ran alone.");
    }
    const tps = (side: SideResult) => (tokens * side.timed_steps) / side.timed_s;
    const memory = (side: SideResult) => (onGpu ? (side.gpu_used_mib ?? NaN) : side.peak_rss_mib);
    const agree = hf ? lmf.losses.every((loss, i) => Math.abs(loss - hf!.losses[i]!) <= BF16.atol + BF16.rtol * Math.abs(hf!.losses[i]!)) : null;
    const summary = {
      device,
      batch,
      seq,
      steps,
      warmup,
      model: given || "random Qwen2.5-0.5B shape",
      transformers_peft: versions,
      lmf: { ...lmf, tokens_per_s: tps(lmf), memory_mib: memory(lmf) },
      hf: hf ? { ...hf, tokens_per_s: tps(hf), memory_mib: memory(hf) } : null,
      losses_agree_bf16: agree,
      tokens_per_s_ratio: hf ? tps(lmf) / tps(hf) : null,
      memory_ratio: hf ? memory(lmf) / memory(hf) : null,
      memory_measure: onGpu ? "GPU memory in use (nvidia-smi) above the idle baseline, MiB" : "peak RSS (VmHWM), MiB",
    };
    console.log(`losses lmfactory ${lmf.losses.map((l) => l.toFixed(4)).join(" ")}`);
    if (hf) console.log(`losses HF+PEFT   ${hf.losses.map((l) => l.toFixed(4)).join(" ")}  (agree within bf16 tolerance: ${agree})`);
    console.log(`tokens/s lmfactory ${tps(lmf).toFixed(0)}${hf ? `, HF+PEFT ${tps(hf).toFixed(0)}, ratio ${summary.tokens_per_s_ratio!.toFixed(2)} (goal >= 1.5)` : ""}`);
    console.log(`memory (${summary.memory_measure}) lmfactory ${memory(lmf).toFixed(0)}${hf ? `, HF+PEFT ${memory(hf).toFixed(0)}, ratio ${summary.memory_ratio!.toFixed(2)} (goal <= 0.6)` : ""}`);
    if (hf?.torch_max_reserved_mib) console.log(`HF+PEFT torch.cuda max reserved ${hf.torch_max_reserved_mib.toFixed(0)} MiB, max allocated ${hf.torch_max_allocated_mib!.toFixed(0)} MiB`);
    mkdirSync(dirname(outPath), { recursive: true });
    writeFileSync(outPath, JSON.stringify(summary, null, 2) + "\n");
    console.log(`written ${outPath}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[2] === "--child") await ours(process.argv[3]!, process.argv[4]!, Number(process.argv[5]));
else await main();
