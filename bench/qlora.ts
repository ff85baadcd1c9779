// QLoRA on a Qwen2-0.5B-shaped model (random weights, saved in bfloat16 as real checkpoints are):
// peak RSS and step time of a 4-bit NF4 LoRA step against the LoRA step without quantization on the
// same tokens, peak RSS while a quantized model loads against its final size, and greedy decoding
// on the 4-bit model against llama.cpp on the same weights as a Q4_0 GGUF (our f16 GGUF export,
// quantized by llama.cpp's own llama_model_quantize). Each side runs in its own process.
// Writes bench/results/qlora.json. Usage: node --import tsx bench/qlora.ts [--quick]
// BENCH_VARIANTS=lora-fp32,qlora-fp32 (the default) picks the step runs: lora-bf16 and qlora-bf16
// compute in bfloat16, slow where the CPU has no bf16 matmul instructions; runs of other variants
// already in qlora.json are kept. BENCH_STEPS=2 steps per run (the last is timed); BENCH_DECODE=0
// skips the decoding comparison (its last result is kept).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { THREADS, median, resetPeak, runSide, statusMiB } from "./common.ts";

const QUICK = process.argv.includes("--quick");
// Qwen2-0.5B: 24 x 896, GQA 14/2, MLP 4864, vocab 151936, tied embeddings, q/k/v biases (494M parameters).
const CONFIG = {
  model_type: "qwen2",
  architectures: ["Qwen2ForCausalLM"],
  vocab_size: 151936,
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: QUICK ? 6 : 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  tie_word_embeddings: true,
  bos_token_id: 1,
  eos_token_id: 2,
};
const TOKENS = QUICK ? 64 : 128;
const STEPS = Number(process.env.BENCH_STEPS ?? 2); // the last step is timed; the first warms up
const PROMPT = 32;
const NEW = QUICK ? 8 : 24;
const FOLDER = "bench/results/tmp/qlora";

type Variant = "lora-fp32" | "qlora-fp32" | "lora-bf16" | "qlora-bf16";

interface StepResult {
  variant: Variant;
  load_peak_mib: number;
  before_load_mib: number;
  after_load_mib: number;
  model_mib: number;
  largest_tensor_mib: number;
  step_s: number[];
  step_peak_mib: number;
  losses: number[];
}

/** One side: load (quantized or not), LoRA rank 8 on every linear layer, STEPS steps with gradient checkpointing. */
async function stepSide(variant: Variant): Promise<void> {
  const { loadModelFor } = await import("../src/model/pretrained.ts");
  const { checkpointedBackward } = await import("../src/model/patches/checkpointing.ts");
  const { causalLmLoss } = await import("../src/train/stages/language_modeling.ts");
  const { quantizedLayers } = await import("../src/model/quantization/index.ts");
  const { openSafetensors } = await import("../src/torch/index.ts");
  const T = await import("../src/torch/index.ts");
  const dtype = variant.endsWith("bf16") ? "bfloat16" : "float32";
  const quantized = variant.startsWith("qlora");
  const before = statusMiB("VmRSS");
  resetPeak();
  const tokenizer = { length: CONFIG.vocab_size, convertIdsToTokens: () => [] } as never;
  const { model } = loadModelFor(
    { modelFolder: FOLDER, tokenizer, template: null as never, addedTokens: 0 },
    {
      dtype,
      device: "cpu",
      training: true,
      quantization: quantized ? { method: "bnb", bits: 4, type: "nf4", doubleQuant: true } : null,
      // LLaMA-Factory keeps the trainable LoRA weights in float32 unless pure_bf16.
      finetuning: { finetuningType: "lora", loraRank: 8, loraTarget: ["all"], loraDtype: "float32" },
    },
  );
  const loadPeak = statusMiB("VmHWM");
  const afterLoad = statusMiB("VmRSS");
  const bytes = (t: import("../src/torch/index.ts").Tensor) => t.numel * T.ITEM_SIZE[t.dtype];
  const own = new Set([...model.parameters(), ...model.buffers()]);
  const modelBytes = [...own].reduce((total, t) => total + bytes(t), 0);
  const reader = openSafetensors(FOLDER);
  const largest = Math.max(...reader.names().map((name) => reader.info(name).shape.reduce((a, b) => a * b, 1) * T.ITEM_SIZE[reader.info(name).dtype]));
  reader.close();
  if (quantized && quantizedLayers(model).length !== 7 * CONFIG.num_hidden_layers) throw new Error("not every decoder linear layer is quantized");

  const trainable = model.parameters().filter((p) => p.requiresGrad);
  const optimizer = new T.AdamW(trainable, { lr: 1e-4 });
  let seed = 11;
  const batch = [Array.from({ length: TOKENS }, () => 3 + ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % (CONFIG.vocab_size - 3)))];
  resetPeak();
  const times: number[] = [];
  const losses: number[] = [];
  for (let step = 0; step < STEPS; step++) {
    const started = performance.now();
    losses.push(
      T.tidy(() => {
        const ids = T.tensor(batch);
        const lossOf = causalLmLoss(ids, TOKENS - 1);
        return checkpointedBackward(model, ids, (hidden) => lossOf(model.logits(hidden)));
      }),
    );
    optimizer.step();
    optimizer.zeroGrad();
    times.push((performance.now() - started) / 1000);
  }
  const result: StepResult = {
    variant,
    load_peak_mib: loadPeak,
    before_load_mib: before,
    after_load_mib: afterLoad,
    model_mib: modelBytes / 2 ** 20,
    largest_tensor_mib: largest / 2 ** 20,
    step_s: times,
    step_peak_mib: statusMiB("VmHWM"),
    losses,
  };
  console.log(JSON.stringify(result));
}

interface DecodeRun {
  prefill_s: number;
  decode_tokens_per_s: number;
}

/** Ours: the 4-bit model (float32 compute), greedy, KV cache. */
async function decodeSide(): Promise<void> {
  const { loadModelFor } = await import("../src/model/pretrained.ts");
  const { generateStream } = await import("../src/model/generation.ts");
  const tokenizer = { length: CONFIG.vocab_size, convertIdsToTokens: () => [] } as never;
  const { model } = loadModelFor(
    { modelFolder: FOLDER, tokenizer, template: null as never, addedTokens: 0 },
    { dtype: "float32", device: "cpu", training: false, quantization: { method: "bnb", bits: 4, type: "nf4", doubleQuant: true }, finetuning: { finetuningType: "lora" } },
  );
  const run = (): DecodeRun => {
    let firstAt = 0;
    let count = 0;
    const started = performance.now();
    for (const _ of generateStream(model, prompt(), { maxNewTokens: NEW, doSample: false, eosTokenId: [] })) {
      if (!count) firstAt = performance.now();
      count++;
    }
    return { prefill_s: (firstAt - started) / 1000, decode_tokens_per_s: (NEW - 1) / ((performance.now() - firstAt) / 1000) };
  };
  run();
  console.log(JSON.stringify([run(), run()]));
}

function prompt(): number[] {
  let seed = 7;
  return Array.from({ length: PROMPT }, () => 3 + ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % (CONFIG.vocab_size - 3)));
}

/** llama.cpp on the Q4_0 GGUF: one evaluate for the prompt, then one per token (greedy in C++). */
async function llamaCppDecode(path: string): Promise<DecodeRun[]> {
  const nlc = await import("node-llama-cpp");
  type Token = import("node-llama-cpp").Token;
  const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error, progressLogs: false });
  const llamaModel = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  const context = await llamaModel.createContext({ contextSize: 256, batchSize: 256, threads: THREADS, flashAttention: false });
  const sequence = context.getSequence();
  const next = { generateNext: { token: true } } as const;
  const run = async (): Promise<DecodeRun> => {
    await sequence.clearHistory();
    const ids = prompt();
    const started = performance.now();
    let result = (await sequence.controlledEvaluate([...ids.slice(0, -1).map((id) => id as Token), [ids.at(-1)! as Token, next]])).at(-1)!.next;
    const firstAt = performance.now();
    let count = 1;
    while (count < NEW) {
      result = (await sequence.controlledEvaluate([[result.token! as Token, next]])).at(-1)!.next;
      count++;
    }
    return { prefill_s: (firstAt - started) / 1000, decode_tokens_per_s: (NEW - 1) / ((performance.now() - firstAt) / 1000) };
  };
  await run();
  const runs = [await run(), await run()];
  await context.dispose();
  await llamaModel.dispose();
  await llama.dispose();
  return runs;
}

/** node-llama-cpp's prebuilt CPU binaries folder (libllama, libggml*). */
function llamaLibDir(): string {
  const root = "node_modules/@node-llama-cpp";
  for (const name of readdirSync(root).filter((entry) => entry.startsWith("linux-x64"))) {
    const bins = join(root, name, "bins");
    if (!existsSync(bins)) continue;
    for (const sub of readdirSync(bins)) if (readdirSync(join(bins, sub)).some((file) => /^libllama\..*\.so$/.test(file))) return join(bins, sub);
  }
  throw new Error("node-llama-cpp's linux-x64 binaries were not found");
}

async function main(): Promise<void> {
  const { normalizeConfig } = await import("../src/model/config.ts");
  const { architectureFor } = await import("../src/model/registry.ts");
  const { saveModel } = await import("../src/model/loader.ts");
  const { exportGguf } = await import("../src/export/gguf/export.ts");
  const { syntheticTokenizer } = await import("../src/export/gguf/tokenizer.ts");
  const T = await import("../src/torch/index.ts");
  mkdirSync(FOLDER, { recursive: true });
  const config = normalizeConfig(CONFIG);
  T.manualSeed(0);
  // HF init (normal 0.02), in float32, saved in bfloat16; the f16 GGUF comes from the same float32 weights.
  const model = architectureFor(config).build(config, { init: "hf" });
  const parameters = model.numParameters();
  T.noGrad(() => model.to("bfloat16"));
  saveModel(model, FOLDER);
  const withDecode = process.env.BENCH_DECODE !== "0";
  const q4 = join(FOLDER, "model-q4_0.gguf");
  if (withDecode) {
    T.noGrad(() => model.to("float32"));
    const f16 = join(FOLDER, "model-f16.gguf");
    exportGguf(model, syntheticTokenizer(CONFIG.vocab_size, { bosTokenId: 1, eosTokenId: 2 }), f16, { type: "f16" });
    // LLAMA_FTYPE_MOSTLY_Q4_0 = 2
    const quantizeOut = execFileSync("/usr/bin/python3", ["tests/reference/llama_cpp_quantize.py"], { input: JSON.stringify({ op: "quantize", lib: llamaLibDir(), input: f16, output: q4, ftype: 2, nthread: THREADS }) }).toString();
    if (!JSON.parse(quantizeOut).ok) throw new Error(`llama_model_quantize failed: ${quantizeOut}`);
  }
  model.dispose();

  const self = fileURLToPath(import.meta.url);
  const flags = QUICK ? ["--quick"] : [];
  const previous = existsSync("bench/results/qlora.json") ? JSON.parse(readFileSync("bench/results/qlora.json", "utf8")) : null;
  const comparable = previous && previous.quick === QUICK && previous.tokens === TOKENS;
  // BENCH_VARIANTS= (empty) runs no step, only the decoding comparison.
  const variants = (process.env.BENCH_VARIANTS ?? "lora-fp32,qlora-fp32").split(",").filter(Boolean) as Variant[];
  const steps: StepResult[] = comparable ? previous.stepRuns.filter((r: StepResult) => !variants.includes(r.variant)) : [];
  for (const variant of variants) {
    const run = runSide<StepResult>(process.execPath, ["--import", "tsx", self, "--child", "step", variant, ...flags]);
    steps.push(run);
    console.log(
      `${variant}: step ${run.step_s.map((t) => t.toFixed(1)).join(", ")} s, step peak RSS ${run.step_peak_mib.toFixed(0)} MiB, load peak ${run.load_peak_mib.toFixed(0)} MiB ` +
        `(${run.before_load_mib.toFixed(0)} before, model ${run.model_mib.toFixed(0)} MiB), losses ${run.losses.map((l) => l.toFixed(4))}, load ${loadavg()[0]!.toFixed(1)}`,
    );
  }
  const [lora, q] = [steps.find((s) => s.variant === "lora-fp32"), steps.find((s) => s.variant === "qlora-fp32")];
  if (lora && q) console.log(`4-bit / float32 LoRA step: peak RSS ${(q.step_peak_mib / lora.step_peak_mib).toFixed(2)}, time ${(q.step_s.at(-1)! / lora.step_s.at(-1)!).toFixed(2)}`);
  const loadRatio = q ? (q.load_peak_mib - q.before_load_mib) / (q.model_mib + q.largest_tensor_mib) : null;
  if (q) console.log(`4-bit load: (peak - before) / (model + largest checkpoint tensor ${q.largest_tensor_mib.toFixed(0)} MiB) = ${loadRatio!.toFixed(2)}`);

  let decode = comparable ? previous.decode : null;
  if (withDecode) {
    const ours = runSide<DecodeRun[]>(process.execPath, ["--import", "tsx", self, "--child", "decode", ...flags]);
    const theirs = await llamaCppDecode(q4);
    decode = {
      lmf: { prefill_s: median(ours.map((r) => r.prefill_s)), decode_tokens_per_s: median(ours.map((r) => r.decode_tokens_per_s)) },
      llama_cpp: { prefill_s: median(theirs.map((r) => r.prefill_s)), decode_tokens_per_s: median(theirs.map((r) => r.decode_tokens_per_s)) },
      load: loadavg()[0],
    };
    console.log(`greedy decoding, prompt ${PROMPT}, ${NEW} new tokens: lmf NF4 ${decode.lmf.decode_tokens_per_s.toFixed(2)} tok/s, llama.cpp Q4_0 ${decode.llama_cpp.decode_tokens_per_s.toFixed(2)} tok/s (ratio ${(decode.lmf.decode_tokens_per_s / decode.llama_cpp.decode_tokens_per_s).toFixed(2)}); load ${loadavg()[0]!.toFixed(1)}`);
  }
  writeFileSync(
    "bench/results/qlora.json",
    JSON.stringify(
      { config: CONFIG, parameters, tokens: TOKENS, threads: THREADS, quick: QUICK, checkpoint_mib: statSync(join(FOLDER, "model.safetensors")).size / 2 ** 20, stepRuns: steps, loadRatio: loadRatio ?? previous?.loadRatio ?? null, decode, prompt: PROMPT, newTokens: NEW, load: loadavg()[0] },
      null,
      2,
    ) + "\n",
  );
  rmSync(FOLDER, { recursive: true, force: true });
}

if (process.argv[2] === "--child" && process.argv[3] === "step") await stepSide(process.argv[4] as Variant);
else if (process.argv[2] === "--child" && process.argv[3] === "decode") await decodeSide();
else await main();
