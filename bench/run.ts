// Runs every benchmark in bench/ (each bench/*.ts except this file) in turn, each in its own
// process so one's memory and threads do not colour the next. Used by `npm run bench`;
// `npm run bench -- --quick` passes --quick on (smaller shapes and fewer steps where a bench has them);
// `--tables` only rewrites BENCHMARKS.md's result tables from bench/results/*.json.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { median } from "./common.ts";

const self = fileURLToPath(import.meta.url);
/** Files the benches import, not benches themselves. */
const HELPERS = ["common.ts", "memory_fit.ts"];
const here = dirname(self);
const benches = readdirSync(here)
  .filter((name) => name.endsWith(".ts") && name !== basename(self) && !HELPERS.includes(name))
  .sort();
const tablesOnly = process.argv.includes("--tables");
let failed = 0;
for (const name of tablesOnly ? [] : benches) {
  console.log(`\n=== bench/${name}`);
  const started = performance.now();
  const result = spawnSync(process.execPath, ["--import", "tsx", join(here, name), ...process.argv.slice(2)], { stdio: "inherit" });
  console.log(`bench/${name}: ${((performance.now() - started) / 1000).toFixed(0)} s`);
  if (result.status !== 0) {
    failed += 1;
    console.error(`bench/${name} failed (exit ${result.status ?? result.signal})`);
  }
}
writeResultTables();
process.exit(failed ? 1 : 0);

/**
 * Rewrites the generated part of BENCHMARKS.md (between the `results` markers) from
 * bench/results/*.json, so the tables there are always the last run's; the prose around stays.
 */
function writeResultTables(): void {
  const root = join(here, "..");
  const doc = join(root, "BENCHMARKS.md");
  const start = "<!-- results:start -->";
  const end = "<!-- results:end -->";
  if (!existsSync(doc)) return;
  const text = readFileSync(doc, "utf8");
  if (!text.includes(start) || !text.includes(end)) return;
  const read = (name: string) => {
    const path = join(here, "results", name);
    return existsSync(path) ? JSON.parse(readFileSync(path, "utf8")) : null;
  };
  const f = (x: number, digits = 2) => x.toFixed(digits);
  const out: string[] = [
    `_Written by \`npm run bench\` (or \`node --import tsx bench/run.ts --tables\`) on ${new Date().toISOString().slice(0, 16)}Z from bench/results/*.json; a benchmark run alone replaces its own table only, and training rows carry the date they were measured._`,
    "",
  ];
  const train = read("train_step.json");
  for (const model of train?.models ?? []) {
    const s = model.shape;
    const bt = train.bf16Tolerance;
    out.push(
      `### Training step: ${model.name}, ${f(model.parameters / 1e6, 0)}M parameters (GQA ${s.heads}/${s.kvHeads}, MLP ${s.intermediate}, vocab ${s.vocab}), batch ${s.batch}x${s.seq}, ${train.threads} threads${train.quick ? ", --quick" : ""}`,
      "",
      `Losses: the first run of each side, ${s.agreementSteps} steps, compared step by step (agree: fp32 within ${train.lossTolerance.toExponential(0)} relative; ` +
        `bf16 within ${bt.atol} + ${bt.rtol}·|PyTorch|, torch.testing's bfloat16 tolerance, at every step). ` +
        `Time: median step time over the steps after the first ${s.warmup} of ${s.repeats} run(s) per side (${s.agreementSteps}${s.repeats > 1 ? ` and ${s.timingSteps}` : ""} steps in the latest run; a row's own step count is in its losses column), the sides alternating. ` +
        "Peak RSS: VmHWM of each side's own process over its training loop. bf16: lmfactory's `bf16: true` (loaded in bf16, trainable weights float32, forwards under autocast) against PyTorch with `torch.autocast(\"cpu\", dtype=torch.bfloat16)` set up the same way.",
      "",
      "| mode | precision | losses agree (max rel. diff) | lmf step s | PyTorch step s | time ratio | lmf tok/s | PyTorch tok/s | lmf peak MiB | PyTorch peak MiB | memory ratio | load | measured |",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    );
    for (const r of model.rows) {
      out.push(
        `| ${r.mode}${r.checkpointing ? " + grad. checkpointing (both)" : ""} | ${r.precision ?? "fp32"} | ${r.losses.agree ? "yes" : "**no**"} (${r.losses.maxRelDiff.toExponential(1)}, ${r.losses.steps} steps) | ${f(r.lmf.step_s, 3)} | ${f(r.ref.step_s, 3)} | **${f(r.lmf.step_s / r.ref.step_s)}** | ${f(r.lmf.tokens_per_s, 0)} | ${f(r.ref.tokens_per_s, 0)} | ${f(r.lmf.peak_mib, 0)} | ${f(r.ref.peak_mib, 0)} | **${f(r.lmf.peak_mib / r.ref.peak_mib)}** | ${f(r.load, 1)} | ${r.measured ? `${r.measured}Z` : "earlier run"} |`,
      );
    }
    out.push("");
    // bf16 against fp32 of the same mode: the speed-up of mixed precision on this CPU, each side.
    const speedups = model.rows
      .filter((r: { precision?: string }) => r.precision === "bf16")
      .map((r: { mode: string; checkpointing: boolean; lmf: { step_s: number }; ref: { step_s: number } }) => {
        const fp32 = model.rows.find((o: { mode: string; checkpointing: boolean; precision?: string }) => o.mode === r.mode && o.checkpointing === r.checkpointing && (o.precision ?? "fp32") === "fp32");
        return fp32 ? `${r.mode}${r.checkpointing ? " + ckpt" : ""}: lmfactory **${f(fp32.lmf.step_s / r.lmf.step_s)}x**, PyTorch ${f(fp32.ref.step_s / r.ref.step_s)}x` : null;
      })
      .filter(Boolean);
    if (speedups.length) out.push(`bf16 speed-up over fp32 (fp32 step time / bf16 step time): ${speedups.join("; ")}.`, "");
    for (const r of model.rows.filter((row: { perLayer?: unknown }) => row.perLayer)) {
      out.push(`Memory of one decoder layer (${r.precision}): our peak ${f(r.lmf.peak_mib, 0)} MiB at ${s.layers} layers, ${f(r.perLayer.peak_mib, 0)} MiB at ${r.perLayer.layers}: **${f(r.perLayer.mib_per_layer, 1)} MiB per layer**.`, "");
    }
    for (const fit of model.fit ?? []) {
      out.push(
        `Largest Qwen2.5 model whose LoRA + gradient checkpointing step (batch ${s.batch}x${s.seq}) fits in 24 GiB, ${fit.precision} (estimate from the measured per-layer memory, bench/memory_fit.ts): **${fit.largest ?? "none"}** — ` +
          fit.estimates.map((e: { name: string; peakMiB: number; fits: boolean }) => `${e.name.replace("Qwen2.5-", "")} ${f(e.peakMiB / 1024, 1)} GiB${e.fits ? "" : " (no)"}`).join(", ") +
          ".",
        "",
      );
    }
  }
  const decode = read("decode.json");
  if (decode) {
    const s = decode.shape;
    const r = decode.row;
    out.push(
      `### Greedy decoding (Llama ${s.layers}x${s.hidden}, ${f(r.params / 1e6, 0)}M params, vocab ${s.vocab}, f32, batch 1, prompt ${decode.prompt}, ${decode.newTokens} new tokens, ${decode.threads} threads, median of ${decode.runs})`,
      "",
      "| | prefill s (prompt + 1st token) | decode tok/s |",
      "| --- | ---: | ---: |",
      `| lmfactory \`generate\` (KV cache) | ${f(r.lmf.prefill_s, 3)} | ${f(r.lmf.decode_tokens_per_s, 1)} |`,
      `| llama.cpp (node-llama-cpp, f32 GGUF) | ${f(r.llama_cpp.prefill_s, 3)} | ${f(r.llama_cpp.decode_tokens_per_s, 1)} |`,
      `| ratio lmf / llama.cpp | **${f(r.lmf.prefill_s / r.llama_cpp.prefill_s)}** (time) | **${f(r.lmf.decode_tokens_per_s / r.llama_cpp.decode_tokens_per_s)}** (speed) |`,
      "",
      `Greedy paths identical for ${r.greedy_tokens_identical}/${decode.newTokens} tokens; load ${f(r.load, 1)}.`,
      "",
    );
  }
  const qlora = read("qlora.json");
  if (qlora) {
    const c = qlora.config;
    const byVariant = Object.fromEntries(qlora.stepRuns.map((r: { variant: string }) => [r.variant, r]));
    const label: Record<string, string> = { "lora-fp32": "LoRA, float32", "qlora-fp32": "QLoRA NF4 + double quant., float32 compute", "lora-bf16": "LoRA, bfloat16", "qlora-bf16": "QLoRA NF4 + double quant., bfloat16 compute" };
    out.push(
      `### QLoRA (bench/qlora.ts): Qwen2-shaped ${c.num_hidden_layers}x${c.hidden_size}, ${f(qlora.parameters / 1e6, 0)}M parameters (vocab ${c.vocab_size}, tied), random weights saved in bfloat16, LoRA rank 8 on all linear layers, gradient checkpointing, 1x${qlora.tokens} tokens, ${qlora.threads} threads${qlora.quick ? ", --quick" : ""}`,
      "",
      "Each row is its own process. Step s: each step of the run (the first warms up). Step peak: VmHWM reset after loading, so it counts the model as loaded plus the step. Load peak: VmHWM from before the load.",
      "",
      "| run | step s | step peak RSS MiB | load peak MiB (before) | model MiB | losses |",
      "| --- | ---: | ---: | ---: | ---: | --- |",
    );
    for (const r of qlora.stepRuns) {
      out.push(`| ${label[r.variant] ?? r.variant} | ${r.step_s.map((t: number) => f(t, 1)).join(", ")} | ${f(r.step_peak_mib, 0)} | ${f(r.load_peak_mib, 0)} (${f(r.before_load_mib, 0)}) | ${f(r.model_mib, 0)} | ${r.losses.map((l: number) => f(l, 4)).join(", ")} |`);
    }
    const lora = byVariant["lora-fp32"];
    out.push("");
    for (const variant of ["qlora-fp32", "qlora-bf16"]) {
      const q = byVariant[variant];
      if (q && lora) out.push(`${label[variant]} / LoRA float32: step peak RSS **${f(q.step_peak_mib / lora.step_peak_mib)}**.`, "");
    }
    for (const [a, b] of [["qlora-fp32", "lora-fp32"], ["qlora-bf16", "lora-bf16"]]) {
      if (byVariant[a] && byVariant[b]) out.push(`${label[a]} / ${label[b]}: step time **${f(byVariant[a].step_s.at(-1) / byVariant[b].step_s.at(-1))}**.`, "");
    }
    if (qlora.loadRatio !== null) out.push(`Loading the 4-bit model: (load peak − before) / (model + largest checkpoint tensor) = **${f(qlora.loadRatio)}**.`, "");
    const d = qlora.decode;
    if (d) {
      out.push(
        `Greedy decoding, batch 1, prompt ${qlora.prompt}, ${qlora.newTokens} new tokens: lmfactory on the NF4 model (float32 compute) ${f(d.lmf.decode_tokens_per_s)} tok/s (prefill ${f(d.lmf.prefill_s)} s), ` +
          `llama.cpp on the same weights as Q4_0 (llama.cpp's own quantizer; token embedding at q8_0) ${f(d.llama_cpp.decode_tokens_per_s)} tok/s (prefill ${f(d.llama_cpp.prefill_s)} s): ratio **${f(d.lmf.decode_tokens_per_s / d.llama_cpp.decode_tokens_per_s)}**. Load ${f(d.load ?? qlora.load, 1)}.`,
        "",
      );
    }
  }
  const serve = read("serve.json");
  if (serve) {
    const s = serve.shape;
    out.push(
      `### Serving concurrent streaming clients (bench/serve.ts): Qwen2 ${s.layers}x${s.hidden}, ${f(serve.params / 1e6, 0)}M params, vocab ${s.vocab}, f32, ${serve.maxTokens} new tokens per client, ${serve.threads} threads${serve.quick ? ", --quick" : ""}`,
      "",
      "Both servers behind the same OpenAI streaming endpoint, driven by the `openai` client; lmfactory is `lmf api` (continuous batching, API_MAX_CONCURRENT 16), llama.cpp is node-llama-cpp with one context of 16 sequences (its evaluations batched into one llama_decode). Aggregate tokens/s = completion tokens of all clients / wall time; TTFT = request sent to first content chunk.",
      "",
      "| clients | lmf tok/s | llama.cpp tok/s | ratio (speed) | lmf TTFT median s | llama.cpp TTFT median s | lmf TTFT max s | llama.cpp TTFT max s | lmf answers = single requests | load |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    );
    for (const r of serve.rows) {
      out.push(
        `| ${r.clients} | ${f(r.lmf.tokens_per_s, 1)} | ${f(r.llama_cpp.tokens_per_s, 1)} | **${f(r.lmf.tokens_per_s / r.llama_cpp.tokens_per_s)}** | ${f(r.lmf.ttft_median_s)} | ${f(r.llama_cpp.ttft_median_s)} | ${f(r.lmf.ttft_max_s)} | ${f(r.llama_cpp.ttft_max_s)} | ${r.lmf_identical_to_single === null ? "(the single request)" : r.lmf_identical_to_single ? "yes" : "**no**"} | ${f(r.load, 1)} |`,
      );
    }
    out.push("");
  }
  const gpu = read("gpu_lora_step.json");
  if (gpu) {
    out.push(
      `### LoRA SFT step vs transformers + PEFT (bench/gpu/lora_step.ts, not part of \`npm run bench\`): device ${gpu.device}, ${gpu.model}, batch ${gpu.batch}x${gpu.seq}, ${gpu.steps} steps (${gpu.warmup} warm-up)`,
      "",
      gpu.hf
        ? `transformers ${gpu.transformers_peft}: losses agree within bf16 tolerance: ${gpu.losses_agree_bf16 ? "yes" : "**no**"}; tokens/s lmfactory ${f(gpu.lmf.tokens_per_s, 0)}, HF + PEFT ${f(gpu.hf.tokens_per_s, 0)} (ratio **${f(gpu.tokens_per_s_ratio)}**); ${gpu.memory_measure}: ${f(gpu.lmf.memory_mib, 0)} vs ${f(gpu.hf.memory_mib, 0)} (ratio **${f(gpu.memory_ratio)}**).`
        : `lmfactory alone (transformers + PEFT absent): losses ${gpu.lmf.losses.map((l: number) => f(l, 4)).join(", ")}; ${f(gpu.lmf.tokens_per_s, 1)} tokens/s; ${gpu.memory_measure} ${f(gpu.lmf.memory_mib, 0)}.`,
      "",
    );
  }
  const ppo = read("ppo_step.json");
  if (ppo) {
    out.push(
      `### PPO step (bench/ppo_step.ts): ${ppo.model}, ${ppo.rollouts} rollouts of up to ${ppo.maxNewTokens} tokens, ppo_epochs ${ppo.ppoEpochs}, api reward${ppo.quick ? ", --quick" : ""}`,
      "",
      `Seconds per step (rollouts, scoring, reference and ${ppo.ppoEpochs} optimisation epochs): median **${f(ppo.step_s.median, 3)}** (${f(ppo.step_s.min, 3)}-${f(ppo.step_s.max, 3)}) over ${ppo.repeats} runs of ${ppo.steps} steps, each less a 1-step run; load ${f(ppo.load, 1)}.`,
      "",
    );
  }
  const ckpt = read("checkpointing.json");
  if (ckpt) {
    out.push("### Memory of one full-model step, with and without gradient checkpointing (bench/checkpointing.ts)", "", "| mode | peak RSS MiB | before the step MiB | step s |", "| --- | ---: | ---: | ---: |");
    for (const r of ckpt.rows) out.push(`| ${r.mode} | ${f(r.peakMiB, 0)} | ${f(r.weightsMiB, 0)} | ${f(r.seconds)} |`);
    out.push("");
  }
  const preference = read("preference_memory.json");
  if (preference) {
    const sft = preference.rows.find((r: { mode: string }) => r.mode === "sft");
    out.push(
      `### Memory of LoRA DPO against LoRA SFT, same model and tokens (bench/preference_memory.ts)`,
      "",
      `Llama ${preference.shape.layers}x${preference.shape.hidden}, vocab ${preference.shape.vocab} (${f(preference.weightsMiB, 0)} MiB of fp32 weights), LoRA r 8 on all linear layers, ${preference.pairs} pairs of ${preference.prompt} + ${preference.answer} tokens per step (SFT trains the same ${2 * preference.pairs} rows), gradient checkpointing, ${preference.steps} steps.`,
      "",
      "| side | reference model | RSS after loading MiB | peak RSS MiB | peak / SFT | step s |",
      "| --- | --- | ---: | ---: | ---: | ---: |",
    );
    const reference = { sft: "none", dpo: "the policy, adapters disabled", dpo_ref_copy: "`ref_model`: a frozen copy" } as Record<string, string>;
    for (const r of preference.rows) out.push(`| ${r.mode === "sft" ? "LoRA SFT" : "LoRA DPO"} | ${reference[r.mode]} | ${f(r.loadedMiB, 0)} | ${f(r.peakMiB, 0)} | **${f(r.peakMiB / sft.peakMiB)}** | ${f(r.stepSeconds)} |`);
    out.push("");
  }
  const moe = read("moe.json");
  if (moe) {
    const s = moe.shape;
    const [sparse, dense] = moe.rows;
    out.push(
      `### Mixture of experts vs the dense model of the same active parameters (bench/moe.ts${moe.quick ? ", --quick" : ""})`,
      "",
      `Mixtral ${s.layers}x${s.hidden} with ${s.experts} experts of MLP width ${s.expertIntermediate}, top-${s.topK}, router loss on, against a Llama with MLP width ${s.topK * s.expertIntermediate} (same attention, embedding, batches); full fine-tuning (AdamW) on ${s.batch}x${s.seq} tokens, fp32; median step time over ${moe.runs} alternating runs per side of ${moe.steps} steps (first ${moe.warmup} dropped); load ${f(moe.load, 1)}.`,
      "",
      "| model | parameters M | active per token M | step s | peak MiB | before the steps MiB |",
      "| --- | ---: | ---: | ---: | ---: | ---: |",
    );
    for (const r of moe.rows) out.push(`| ${r.side === "moe" ? "MoE (Mixtral)" : "dense (Llama)"} | ${f(r.parameters / 1e6)} | ${f(r.activeParameters / 1e6)} | ${f(r.stepSeconds, 3)} | ${f(r.peakMiB, 0)} | ${f(r.beforeMiB, 0)} |`);
    out.push("", `MoE / dense: step time **${f(sparse.stepSeconds / dense.stepSeconds)}**, peak memory **${f(sparse.peakMiB / dense.peakMiB)}**.`, "");
  }
  const data = read("data.json");
  const tokenize = read("tokenize.json");
  if (data || tokenize) {
    out.push("### Data preprocessing (bench/data.ts, bench/tokenize.ts)", "", "| step | workers | seconds | throughput |", "| --- | ---: | ---: | ---: |");
    for (const r of data?.results ?? []) out.push(`| ${r.step} (${data.rows} alpaca rows) | ${r.workers} | ${f(r.seconds)} | ${Math.round(r.rowsPerSecond).toLocaleString("en-US")} rows/s |`);
    for (const [name, r] of Object.entries<{ seconds: number; tokensPerSecond: number }>(tokenize?.results ?? {})) {
      out.push(`| sharegpt → qwen3 template → tokens: ${name} | | ${f(r.seconds)} | ${Math.round(r.tokensPerSecond).toLocaleString("en-US")} tokens/s |`);
    }
    out.push("");
  }
  const quality = read("export_quality.json");
  if (quality) {
    const m = quality.model;
    out.push(
      `### Quantized exports (bench/export_quality.ts): the demo Llama (${m.layers}x${m.hidden}, ${f(m.parameters / 1e6, 1)}M params, vocab ${m.vocab}) pre-trained on 90% of the story corpus${quality.quick ? ", --quick" : ""}`,
      "",
      `Perplexity on the held-out 10% (${quality.heldOut.windows} windows of ${quality.heldOut.window} tokens); greedy agreement: tokens equal to the reference's before the first difference, ${quality.prompts} prompts x ${quality.newTokens} new tokens. lmfactory float32 perplexity: ${f(quality.float32Perplexity, 4)}.`,
      "",
      "| GGUF type (run by llama.cpp) | perplexity | greedy agreement with f16 | file MiB |",
      "| --- | ---: | ---: | ---: |",
    );
    for (const [type, r] of Object.entries<{ perplexity: number; agreementWithF16: number; fileMiB: number }>(quality.gguf)) {
      out.push(`| ${type} | ${f(r.perplexity, 4)} | ${f(100 * r.agreementWithF16, 1)}% | ${f(r.fileMiB)} |`);
    }
    out.push("", "| GPTQ (run by lmfactory) | perplexity | round-to-nearest perplexity | greedy agreement with float32 |", "| --- | ---: | ---: | ---: |");
    for (const [bits, r] of Object.entries<{ perplexity: number; rtnPerplexity: number; agreementWithF32: number }>(quality.gptq)) {
      out.push(`| ${bits} | ${f(r.perplexity, 4)} | ${f(r.rtnPerplexity, 4)} | ${f(100 * r.agreementWithF32, 1)}% |`);
    }
    out.push("");
  }
  const ddp = read("distributed.json");
  if (ddp) {
    const s = ddp.shape;
    out.push(
      `### Data-parallel step on ${ddp.world} processes (bench/distributed.ts): Llama ${s.layers}x${s.hidden} (0.1B), ${f(ddp.parameters / 1e6, 0)}M parameters, batch ${ddp.batch}x${ddp.seq} per process, fp32, ${ddp.threadsPerRank} thread per process, Gloo over loopback${ddp.quick ? ", --quick" : ""}`,
      "",
      `Medians over steps ${ddp.warmup + 1}-${ddp.steps}. Reduction: the Reducer's whole gradient reduction per step (flatten, all-reduce, copy back); all-reduce: the time inside Gloo's all-reduce calls. ` +
        "Sent: bytes one rank wrote to its sockets during the reduction (/proc/self/io wchar); ring all-reduce theory: 2 x (N - 1) / N x gradient bytes.",
      "",
      "| mode | trainable | gradient MiB | buckets | step s | reduction s | all-reduce s | share of step | sent MiB | theory MiB | sent / theory | load |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    );
    for (const r of ddp.rows) {
      out.push(
        `| ${r.mode} | ${(r.trainable / 1e6).toFixed(2)}M | ${f(r.gradient_bytes / 2 ** 20, 1)} | ${r.buckets} | ${f(r.step_s, 3)} | ${f(r.reduce_s, 3)} | ${f(r.all_reduce_s, 3)} | **${f(100 * r.share, 1)} %** | ${f(r.sent_bytes / 2 ** 20, 1)} | ${f(r.theoretical_bytes / 2 ** 20, 1)} | ${f(r.sent_over_theoretical, 3)} | ${f(r.load, 1)} |`,
      );
    }
    out.push("");
  }
  const ops = read("ops.json");
  if (ops) {
    out.push("### Per-op overhead (bench/ops.ts)", "", "| op | µs |", "| --- | ---: |");
    for (const [name, us] of Object.entries<number>(ops.perOpMicroseconds ?? {})) out.push(`| ${name} | ${f(us)} |`);
    out.push("");
    const m = ops.matmul;
    if (m?.pytorchGflops) {
      const [ours, theirs] = [median(m.lmfactoryGflops), median(m.pytorchGflops)];
      out.push(`${m.n}x${m.n} float32 matmul: lmfactory ${f(ours, 1)} GFLOP/s, PyTorch ${f(theirs, 1)} GFLOP/s, ratio **${f(m.medianRatio)}** (median of the alternating runs).`, "");
    }
  }
  const before = text.slice(0, text.indexOf(start) + start.length);
  const after = text.slice(text.indexOf(end));
  writeFileSync(doc, `${before}\n${out.join("\n")}\n${after}`);
  console.log("BENCHMARKS.md: result tables updated");
}
