// What quantized exports cost in quality, on a model that has learnt something: the demo's 4-layer
// Llama pre-trained (`lmf train`) on 90% of the story corpus, then perplexity on the held-out 10%
// and greedy continuations for each GGUF type (run by llama.cpp through node-llama-cpp, against
// f16) and each GPTQ width (run by lmfactory from the exported folder, against the float32 model
// and round-to-nearest at the same width). Writes bench/results/export_quality.json.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { roundToNearest } from "../src/export/gptq/gptq.ts";
import { GGUF_FILE_TYPES, type GgufFileType } from "../src/export/gguf/mix.ts";
import { runExport } from "../src/export/workflow.ts";
import { parseInferArgs } from "../src/hparams/index.ts";
import { generate } from "../src/model/generation.ts";
import { loadModel } from "../src/model/loader.ts";
import type { CausalLM } from "../src/model/registry.ts";
import { loadTokenizer } from "../src/data/tokenizer.ts";
import { Linear, noGrad, tensor, tidy } from "../src/torch/index.ts";
import { THREADS } from "./common.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const quick = process.argv.includes("--quick");
const work = mkdtempSync(join(tmpdir(), "lmf-bench-export-"));
const WINDOW = 128;
const NEW_TOKENS = 32;

// --- a trained model and held-out text -----------------------------------------------------------
const lines = readFileSync(join(root, "examples/demo/corpus.jsonl"), "utf8").trim().split("\n");
const cut = Math.floor(lines.length * 0.9);
const dataDir = join(work, "data");
mkdirSync(dataDir);
writeFileSync(join(dataDir, "train.jsonl"), lines.slice(0, cut).join("\n") + "\n");
writeFileSync(join(dataDir, "dataset_info.json"), JSON.stringify({ train90: { file_name: "train.jsonl", columns: { prompt: "text" } } }));
const heldOut = lines.slice(cut).map((line) => JSON.parse(line).text as string);
const modelDir = join(work, "model");
console.log(`training the demo model on ${cut} stories (held out: ${heldOut.length})...`);
execFileSync(process.execPath, [join(root, "bin/lmf.mjs"), "train", join(root, "examples/demo/pretrain.yaml"), "dataset=train90", `dataset_dir=${dataDir}`, `output_dir=${modelDir}`, "plot_loss=false", "logging_steps=1000", ...(quick ? ["max_steps=80"] : [])], {
  cwd: root,
  stdio: ["ignore", "ignore", "inherit"],
  env: { ...process.env, OMP_NUM_THREADS: String(THREADS) },
});

const tokenizer = loadTokenizer(modelDir);
const stream = heldOut.flatMap((text) => [...tokenizer.encode(text), tokenizer.eosTokenId!]);
const windows: number[][] = [];
for (let i = 0; i + WINDOW <= stream.length && windows.length < (quick ? 8 : 32); i += WINDOW) windows.push(stream.slice(i, i + WINDOW));
const prompts = heldOut.slice(0, quick ? 3 : 8).map((text) => tokenizer.encode(text.split(" ").slice(0, 6).join(" ")));

/** exp(mean −log p(next token)) over the windows, from a function giving log-probabilities per position. */
function perplexity(logProbs: (window: number[]) => number[][]): number {
  let total = 0;
  let count = 0;
  for (const window of windows) {
    const rows = logProbs(window);
    for (let t = 0; t + 1 < window.length; t++) {
      total -= rows[t]![window[t + 1]!]!;
      count++;
    }
  }
  return Math.exp(total / count);
}

function lmfLogProbs(model: CausalLM) {
  return (window: number[]) =>
    tidy(() => {
      const logits = noGrad(() => model.forward(tensor([window])).logSoftmax(-1).select(0, 0).to("float32"));
      const vocab = logits.shape[1]!;
      const data = logits.data() as Float32Array;
      return window.map((_, t) => Array.from(data.subarray(t * vocab, (t + 1) * vocab)));
    });
}

function lmfGreedy(model: CausalLM): number[][] {
  return prompts.map((prompt) => generate(model, [prompt], { maxNewTokens: NEW_TOKENS, doSample: false, eosTokenId: [] }).sequences[0]!);
}

/** Tokens equal to the reference's before the first difference, over all prompts. */
function agreement(paths: number[][], reference: number[][]): number {
  let same = 0;
  paths.forEach((path, i) => {
    let k = 0;
    while (k < path.length && path[k] === reference[i]![k]) k++;
    same += k;
  });
  return same / (prompts.length * NEW_TOKENS);
}

async function exportWith(settings: Record<string, unknown>): Promise<string> {
  const dir = join(work, `export-${Object.values(settings).join("-")}`);
  const args = parseInferArgs({ model_name_or_path: modelDir, template: "empty", export_dir: dir, ...settings }, { command: "export", onWarning: () => {} });
  await runExport(args, { print: () => {} });
  return dir;
}

const model = loadModel(modelDir);
const baseline = { perplexity: perplexity(lmfLogProbs(model)), greedy: lmfGreedy(model) };
console.log(`lmfactory float32: perplexity ${baseline.perplexity.toFixed(3)}`);

// --- GGUF through llama.cpp ---------------------------------------------------------------------
const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
type Token = import("node-llama-cpp").Token;
const gguf: Record<string, { perplexity: number; agreementWithF16: number; fileMiB: number; exportSeconds: number }> = {};
let f16Greedy: number[][] | null = null;
for (const type of ["f16", ...Object.keys(GGUF_FILE_TYPES).filter((t) => t !== "f16" && t !== "f32")] as GgufFileType[]) {
  const started = performance.now();
  const dir = await exportWith({ export_format: "gguf", export_gguf_type: type });
  const exportSeconds = (performance.now() - started) / 1000;
  const file = join(dir, `model-${type}.gguf`);
  const loaded = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  const context = await loaded.createContext({ contextSize: 256, batchSize: 256, threads: THREADS, flashAttention: false });
  const vocab = model.config.vocab_size;
  const sequence = context.getSequence();
  const logProbs = async (window: number[]) => {
    await sequence.clearHistory();
    const items = window.map((id) => [id as Token, { generateNext: { probabilities: true } }] as const);
    const results = await sequence.controlledEvaluate(items as never);
    return results.map((result) => {
      const row = new Array<number>(vocab).fill(-Infinity);
      for (const [token, p] of result!.next!.probabilities!) row[token] = Math.log(p);
      return row;
    });
  };
  const rows: number[][][] = [];
  for (const window of windows) rows.push(await logProbs(window));
  let index = 0;
  const ppl = perplexity(() => rows[index++]!);
  const greedy: number[][] = [];
  for (const prompt of prompts) {
    await sequence.clearHistory();
    const out: number[] = [];
    let input: Token[] = prompt as Token[];
    for (let step = 0; step < NEW_TOKENS; step++) {
      const last = input.at(-1)!;
      const result = (await sequence.controlledEvaluate([...input.slice(0, -1), [last, { generateNext: { token: true } }]] as never)).at(-1)!.next!;
      out.push(result.token!);
      input = [result.token! as Token];
    }
    greedy.push([...prompt, ...out].slice(prompt.length));
  }
  f16Greedy ??= greedy;
  gguf[type] = { perplexity: ppl, agreementWithF16: agreement(greedy, f16Greedy), fileMiB: readFileSync(file).length / 2 ** 20, exportSeconds };
  console.log(`GGUF ${type}: perplexity ${ppl.toFixed(3)}, greedy tokens equal to f16's ${(100 * gguf[type]!.agreementWithF16).toFixed(1)}%, ${gguf[type]!.fileMiB.toFixed(2)} MiB`);
  await context.dispose();
  await loaded.dispose();
}
await llama.dispose();

// --- GPTQ through lmfactory ----------------------------------------------------------------------
const gptq: Record<string, { perplexity: number; rtnPerplexity: number; agreementWithF32: number }> = {};
for (const bits of [8, 4, 3, 2]) {
  const dir = await exportWith({ export_quantization_bit: bits, export_quantization_dataset: join(dataDir, "train.jsonl"), export_quantization_nsamples: quick ? 16 : 64, export_quantization_maxlen: 32 });
  const quantized = loadModel(dir);
  const rtn = loadModel(modelDir);
  noGrad(() => {
    for (const [name, module] of rtn.namedModules()) {
      if (module instanceof Linear && /\.layers\.\d+\./.test(name)) tidy(() => module.weight.copy_(roundToNearest(module.weight, { bits, groupSize: 128 })));
    }
  });
  gptq[`${bits}-bit`] = { perplexity: perplexity(lmfLogProbs(quantized)), rtnPerplexity: perplexity(lmfLogProbs(rtn)), agreementWithF32: agreement(lmfGreedy(quantized), baseline.greedy) };
  console.log(`GPTQ ${bits}-bit: perplexity ${gptq[`${bits}-bit`]!.perplexity.toFixed(3)} (round-to-nearest ${gptq[`${bits}-bit`]!.rtnPerplexity.toFixed(3)}), greedy tokens equal to float32's ${(100 * gptq[`${bits}-bit`]!.agreementWithF32).toFixed(1)}%`);
  quantized.dispose();
  rtn.dispose();
}

const result = {
  model: { layers: model.config.num_hidden_layers, hidden: model.config.hidden_size, intermediate: model.config.intermediate_size, vocab: model.config.vocab_size, parameters: model.numParameters() },
  heldOut: { stories: heldOut.length, windows: windows.length, window: WINDOW },
  prompts: prompts.length,
  newTokens: NEW_TOKENS,
  quick,
  float32Perplexity: baseline.perplexity,
  gguf,
  gptq,
};
mkdirSync(join(root, "bench/results"), { recursive: true });
writeFileSync(join(root, "bench/results/export_quality.json"), JSON.stringify(result, null, 2) + "\n");
model.dispose();
