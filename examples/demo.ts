// The built-in demo: pre-trains a small Llama from scratch on examples/demo/corpus.txt at the byte
// level, on the real engine (libtorch autograd, AdamW, a cosine schedule, gradient checkpointing),
// saves it as a Hugging Face folder, loads it back and continues a prompt with greedy decoding.
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { normalizeConfig } from "../src/model/config.ts";
import { loadModel, saveModel } from "../src/model/loader.ts";
import { KVCache, LlamaForCausalLM } from "../src/model/models/llama.ts";
import { checkpointedBackward } from "../src/model/patches/checkpointing.ts";
import {
  AdamW,
  type Tensor,
  clipGradNorm,
  crossEntropy,
  decayParameterGroups,
  engineReport,
  getScheduler,
  liveTensors,
  manualSeed,
  noGrad,
  randint,
  tensor,
  tidy,
} from "../src/torch/index.ts";

const STEPS = Number(process.env.DEMO_STEPS ?? 300);
const BATCH = 8;
const SEQ = 96;
const OUTPUT = process.env.DEMO_OUTPUT ?? join("saves", "demo-byte-llama");
const BOS = 256;

console.log("lmfactory demo: pre-training a byte-level Llama from scratch\n");
console.log(engineReport() + "\n");

const corpus = [...Buffer.from(readFileSync(new URL("./demo/corpus.txt", import.meta.url), "utf8"))];
const config = normalizeConfig({
  model_type: "llama",
  vocab_size: 259, // 256 bytes + bos, eos, pad
  hidden_size: 128,
  intermediate_size: 352,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 256,
  bos_token_id: BOS,
  eos_token_id: 257,
  pad_token_id: 258,
  tie_word_embeddings: true,
});
manualSeed(42);
const model = new LlamaForCausalLM(config, {}, { init: "hf" });
console.log(`model: ${config.num_hidden_layers} layers, hidden ${config.hidden_size}, ${model.numParameters()} parameters`);

const optimizer = new AdamW(decayParameterGroups(model.namedParameters(), 0.01), { lr: 3e-3, betas: [0.9, 0.95] });
const scheduler = getScheduler("cosine", optimizer, { numWarmupSteps: 20, numTrainingSteps: STEPS });

/** A batch of random windows of the corpus, each starting with BOS: ids [B, T]. */
function batch(): Tensor {
  const starts = randint(0, corpus.length - SEQ, [BATCH]).toFlatArray(); // seeded by manualSeed
  return tensor(starts.map((start) => [BOS, ...corpus.slice(start, start + SEQ - 1)]));
}

const lossOf = (ids: Tensor) => (logits: Tensor) =>
  crossEntropy(logits.slice(1, 0, -1).reshape(-1, config.vocab_size), ids.slice(1, 1).reshape(-1));

const started = performance.now();
let liveAtStart = 0; // measured after step 1, once AdamW has made its state
let firstLoss = 0;
let lastLoss = 0;
for (let step = 1; step <= STEPS; step++) {
  const loss = tidy(() => {
    const ids = batch();
    const value = checkpointedBackward(model, ids, lossOf(ids));
    clipGradNorm(model.parameters(), 1.0);
    optimizer.step();
    optimizer.zeroGrad();
    scheduler.step();
    return value;
  });
  if (step === 1) {
    firstLoss = loss;
    liveAtStart = liveTensors();
  }
  lastLoss = loss;
  if (step % 25 === 0 || step === 1) {
    const seconds = (performance.now() - started) / 1000;
    const tokensPerSecond = (step * BATCH * SEQ) / seconds;
    const eta = (seconds / step) * (STEPS - step);
    console.log(
      `step ${String(step).padStart(4)}/${STEPS}  loss ${loss.toFixed(4)}  lr ${optimizer.paramGroups[0]!.lr.toExponential(2)}  ` +
        `${tokensPerSecond.toFixed(0)} tokens/s  ETA ${eta.toFixed(0)}s  live tensors ${liveTensors()}`,
    );
  }
}
if (liveTensors() !== liveAtStart) throw new Error(`tensor leak: ${liveAtStart} live at start, ${liveTensors()} at the end`);
console.log(`\nloss ${firstLoss.toFixed(3)} -> ${lastLoss.toFixed(3)} (uniform over 259 symbols would be ${Math.log(259).toFixed(3)})`);

rmSync(OUTPUT, { recursive: true, force: true });
saveModel(model, OUTPUT);
model.dispose();
optimizer.dispose();
console.log(`saved a Hugging Face folder: ${OUTPUT}/ (config.json, model.safetensors)`);

const reloaded = loadModel(OUTPUT);
const prompt = "Training runs in ";
const generated: number[] = [];
const cache = new KVCache(config.num_hidden_layers);
noGrad(() => {
  let next = tidy(() => reloaded.forward(tensor([[BOS, ...Buffer.from(prompt)]]), { cache }).select(1, -1).argmax(-1).item());
  for (let i = 0; i < 80 && next < 256; i++) {
    generated.push(next);
    const token = next;
    next = tidy(() => reloaded.forward(tensor([[token]]), { cache }).select(1, -1).argmax(-1).item());
  }
});
cache.dispose();
reloaded.dispose();
console.log(`\ngreedy continuation of "${prompt}":\n  ${prompt}${Buffer.from(generated).toString("utf8")}`);
