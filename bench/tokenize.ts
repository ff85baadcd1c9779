// Tokenize-and-template throughput: a generated sharegpt file (multi-turn) through the real sft
// pipeline (load, align, qwen3 template, supervised processor) on 1 and 2 worker threads, against
// the tokenizer alone encoding the same rendered text, in one run. Prints a table and writes
// bench/results/tokenize.json. The tokenizer is @huggingface/tokenizers (pure TypeScript) on the
// real Qwen3 tokenizer files; no native HF tokenizers binding is installed to compare with.
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadDatasets, processDataset } from "../src/data/dataset.ts";
import { loadTokenizer } from "../src/data/tokenizer.ts";
import { type ProcessorOptions, processorSpec } from "../src/data/processors/factories.ts";
import type { SupervisedRow } from "../src/data/types.ts";
import { QWEN3_TOKENIZER_DIR } from "../tests/fixtures/tokenizers.ts";

const CONVERSATIONS = Number(process.env.BENCH_CONVERSATIONS ?? 6000);
const WORDS = ["model", "token", "answer", "question", "river", "forest", "train", "layer", "value", "number", "story", "lamp", "key", "map"];

function sentence(seed: number, length: number): string {
  return Array.from({ length }, (_, i) => WORDS[(seed * 7 + i * 13) % WORDS.length]).join(" ") + ".";
}

const dir = mkdtempSync(join(tmpdir(), "lmf-bench-tok-"));
const rows = Array.from({ length: CONVERSATIONS }, (_, i) => ({
  conversations: [
    { from: "human", value: sentence(i, 12 + (i % 9)) },
    { from: "gpt", value: sentence(i + 1, 30 + (i % 17)) },
    { from: "human", value: sentence(i + 2, 8) },
    { from: "gpt", value: sentence(i + 3, 25) },
  ],
}));
writeFileSync(join(dir, "chats.json"), JSON.stringify(rows));
writeFileSync(join(dir, "dataset_info.json"), JSON.stringify({ chats: { file_name: "chats.json", formatting: "sharegpt" } }));

const options: ProcessorOptions = {
  modelFolder: QWEN3_TOKENIZER_DIR,
  tokenizer: {},
  template: "qwen3",
  templateOptions: {},
  cutoffLen: 1024,
  packing: false,
  neatPacking: false,
  trainOnPrompt: false,
  maskHistory: false,
};
const spec = processorSpec("makeSupervisedProcessor", options);

const loadStart = performance.now();
const { train } = await loadDatasets({ datasetNames: ["chats"], datasetDir: dir });
const loadSeconds = (performance.now() - loadStart) / 1000;
const examples = train!;

const results: Record<string, { seconds: number; tokens: number; tokensPerSecond: number }> = {};
for (const workers of [1, 2]) {
  const started = performance.now();
  const processed = await processDataset<SupervisedRow>(examples, spec, { numWorkers: workers, batchSize: 500 });
  const seconds = (performance.now() - started) / 1000;
  const tokens = processed.rows.reduce((sum, row) => sum + row.input_ids.length, 0);
  results[`pipeline, ${workers} worker${workers > 1 ? "s" : ""}`] = { seconds, tokens, tokensPerSecond: tokens / seconds };
}

// The tokenizer alone on the same text the template renders (one string per conversation).
const tokenizer = loadTokenizer(QWEN3_TOKENIZER_DIR);
const texts = examples.map((example) =>
  [...example._prompt, ...example._response].map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join(""),
);
const started = performance.now();
let tokens = 0;
for (const text of texts) tokens += tokenizer.encode(text).length;
const seconds = (performance.now() - started) / 1000;
results["tokenizer alone (encode)"] = { seconds, tokens, tokensPerSecond: tokens / seconds };

console.log(`tokenize-and-template: ${CONVERSATIONS} sharegpt conversations (4 turns), Qwen3 tokenizer, 2 cores`);
console.log(`load + align: ${loadSeconds.toFixed(2)} s (${(CONVERSATIONS / loadSeconds).toFixed(0)} conversations/s)`);
console.log("what                          seconds    tokens   tokens/s   vs tokenizer alone");
const alone = results["tokenizer alone (encode)"]!.tokensPerSecond;
for (const [name, r] of Object.entries(results)) {
  console.log(`${name.padEnd(28)} ${r.seconds.toFixed(2).padStart(8)} ${String(r.tokens).padStart(9)} ${r.tokensPerSecond.toFixed(0).padStart(10)}   ${(r.tokensPerSecond / alone).toFixed(2)}x`);
}
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/tokenize.json", JSON.stringify({ conversations: CONVERSATIONS, loadSeconds, results }, null, 2) + "\n");
