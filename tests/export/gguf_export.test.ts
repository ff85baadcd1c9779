// GGUF export beyond f32/f16 (src/export/gguf/quants.ts, mix.ts, tokenizer.ts; `lmf export` with
// export_format: gguf): every tensor of every type is byte-identical to what llama.cpp's own
// quantizer (llama_model_quantize in node-llama-cpp's libllama, through
// tests/reference/llama_cpp_quantize.py) makes from our f32 file; llama.cpp loads each type and
// tokenizes as the Hugging Face tokenizer does (Llama 3, Qwen3 and a GPT-2 style BPE); f32
// next-token probabilities match ours; llama.cpp's chat formats a conversation with the file's
// chat template as lmfactory's template does.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { getTemplateAndFixTokenizer } from "../../src/data/templates/index.ts";
import type { Template } from "../../src/data/templates/template.ts";
import { exportGguf } from "../../src/export/gguf/export.ts";
import { GGUF_FILE_TYPES, type GgufFileType } from "../../src/export/gguf/mix.ts";
import { bf16Bits, fp16Bits } from "../../src/export/gguf/quants.ts";
import { syntheticTokenizer } from "../../src/export/gguf/tokenizer.ts";
import { runExport } from "../../src/export/workflow.ts";
import { parseInferArgs } from "../../src/hparams/index.ts";
import { loadModel } from "../../src/model/loader.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { noGrad, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";
import { LLAMA3_TOKENIZER_DIR, QWEN3_TOKENIZER_DIR } from "../fixtures/tokenizers.ts";
import { readGguf } from "./gguf_reader.ts";

const LIB = fileURLToPath(new URL("../../node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/", import.meta.url));
const DEMO_TOKENIZER = fileURLToPath(new URL("../../examples/demo/tiny-llama/", import.meta.url));
const hasPython = spawnSync("/usr/bin/python3", ["-c", "import ctypes"]).status === 0;
const work = mkdtempSync(join(tmpdir(), "lmf-gguf-export-"));
let counter = 0;
const fresh = (name: string) => join(work, `${name}-${counter++}`);

function llamaCpp(request: Record<string, unknown>): Record<string, unknown> {
  const out = execFileSync("/usr/bin/python3", ["tests/reference/llama_cpp_quantize.py"], { input: JSON.stringify({ lib: LIB, ...request }) });
  return JSON.parse(out.toString());
}

type NodeLlamaCpp = typeof import("node-llama-cpp");
let nlc: NodeLlamaCpp | null = null;
let llama: Awaited<ReturnType<NodeLlamaCpp["getLlama"]>> | null = null;
let unavailable = "";
before(async () => {
  try {
    nlc = await import("node-llama-cpp");
    llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error, progressLogs: false });
  } catch (error) {
    unavailable = `node-llama-cpp cannot load on this machine: ${(error as Error).message.split("\n")[0]}`;
  }
  if (!hasPython) unavailable ||= "no /usr/bin/python3 for the ctypes bridge to libllama";
});
after(async () => {
  await llama?.dispose();
});

test("half and bfloat16 conversions round to nearest even (subnormals, ties, overflow)", () => {
  assert.equal(fp16Bits(1), 0x3c00);
  assert.equal(fp16Bits(65504), 0x7bff);
  assert.equal(fp16Bits(65520), 0x7c00, "ties to even overflow to infinity");
  assert.equal(fp16Bits(2 ** -24), 0x0001, "smallest subnormal");
  assert.equal(fp16Bits(2 ** -25), 0x0000, "half of it ties to even zero");
  assert.equal(fp16Bits(3 * 2 ** -25), 0x0002, "1.5 units ties to even 2");
  assert.equal(fp16Bits(1 + 2 ** -11), 0x3c00, "tie at 1 rounds to even");
  assert.equal(fp16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(fp16Bits(-2), 0xc000);
  assert.equal(bf16Bits(1 + 2 ** -8), 0x3f80, "tie rounds to even");
  assert.equal(bf16Bits(1 + 3 * 2 ** -8), 0x3f82);
});

const SHAPES = [
  {
    label: "llama, 3 layers, ffn rows of 544 (k-quants fall back to q5_0/q5_1/q8_0)",
    overrides: { hidden_size: 256, intermediate_size: 544, vocab_size: 512, num_attention_heads: 4, num_key_value_heads: 2, num_hidden_layers: 3 },
    types: Object.keys(GGUF_FILE_TYPES) as GgufFileType[],
  },
  {
    label: "qwen3 with tied embeddings, ffn rows of 520 (f16 fallback), 9 layers (use_more_bits picks layers)",
    overrides: {
      model_type: "qwen3", architectures: ["Qwen3ForCausalLM"], hidden_size: 256, intermediate_size: 520, vocab_size: 320,
      num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64, num_hidden_layers: 9, tie_word_embeddings: true,
    },
    types: ["q4_k_m", "q5_k_m", "q4_0"] as GgufFileType[],
  },
  ...(
    [
      ["mixtral, 8 experts (llama.cpp's 8-expert rules)", { model_type: "mixtral", num_local_experts: 8, num_experts_per_tok: 2 }],
      ["qwen2_moe, shared expert and its [1, hidden] gate", { model_type: "qwen2_moe", moe_intermediate_size: 96, shared_expert_intermediate_size: 160, num_experts: 4, num_experts_per_tok: 2 }],
      ["gemma3_text, tied, (1 + w) norms", { model_type: "gemma3_text", head_dim: 64, query_pre_attn_scalar: 64, sliding_window: 16, tie_word_embeddings: true }],
      ["phi3, fused qkv and gate_up", { model_type: "phi3" }],
      ["glm4, biases and post-norms", { model_type: "glm4", head_dim: 64 }],
      [
        "deepseek_v2, MLA's split attn_k_b / attn_v_b, shared experts",
        {
          model_type: "deepseek_v2", num_key_value_heads: 4, q_lora_rank: 64, kv_lora_rank: 64, qk_nope_head_dim: 32, qk_rope_head_dim: 32, v_head_dim: 32,
          moe_intermediate_size: 64, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2, first_k_dense_replace: 1,
        },
      ],
    ] as [string, Record<string, unknown>][]
  ).map(([label, family]) => ({
    label: `${label}: the float types and q8_0`,
    overrides: { hidden_size: 256, intermediate_size: 544, vocab_size: 512, num_attention_heads: 4, num_key_value_heads: 2, num_hidden_layers: 2, ...family },
    types: ["f16", "bf16", "q8_0"] as GgufFileType[],
  })),
];

for (const { label, overrides, types } of SHAPES) {
  test(`GGUF quantization is byte-identical to llama.cpp's quantizer: ${label}`, (t) => {
    if (unavailable) return t.skip(unavailable);
    const model = loadModel(makeTinyModel(overrides, 21));
    const tokenizer = syntheticTokenizer(model.config.vocab_size, { bosTokenId: 1, eosTokenId: 2 });
    const f32Path = fresh("f32.gguf");
    exportGguf(model, tokenizer, f32Path, { type: "f32" });
    for (const type of types) {
      const ours = fresh(`ours-${type}.gguf`);
      const theirs = fresh(`theirs-${type}.gguf`);
      exportGguf(model, tokenizer, ours, { type });
      assert.deepEqual(llamaCpp({ op: "quantize", input: f32Path, output: theirs, ftype: GGUF_FILE_TYPES[type].ftype }), { ok: true, status: 0 });
      const a = readGguf(ours);
      const b = readGguf(theirs);
      assert.deepEqual([...a.tensors.keys()].sort(), [...b.tensors.keys()].sort());
      const used = new Set<number>();
      for (const [name, expected] of b.tensors) {
        const actual = a.tensors.get(name)!;
        assert.equal(actual.type, expected.type, `${type}: ${name} type`);
        assert.ok(actual.bytes.equals(expected.bytes), `${type}: ${name} (${expected.type}) bytes differ`);
        used.add(expected.type);
      }
      assert.equal(a.metadata.get("general.file_type"), GGUF_FILE_TYPES[type].ftype);
      t.diagnostic(`${type}: ${b.tensors.size} tensors identical, ggml types ${[...used].sort((x, y) => x - y).join(",")}`);
    }
    model.dispose();
  });
}

/** A tiny model whose vocabulary is a real tokenizer's, exported through `lmf export` with export_format gguf. */
async function exportTinyWith(tokenizerDir: string, template: string, type: GgufFileType, overrides: Record<string, unknown> = {}): Promise<{ out: string; folder: string }> {
  const tokenizer = loadTokenizer(tokenizerDir);
  const folder = makeTinyModel({ vocab_size: tokenizer.length, bos_token_id: tokenizer.bosTokenId, eos_token_id: tokenizer.eosTokenId, ...overrides }, 22);
  for (const name of readdirSync(tokenizerDir)) if (/^tokenizer.*\.json$/.test(name)) copyFileSync(join(tokenizerDir, name), join(folder, name));
  const dir = fresh("gguf-export");
  const args = parseInferArgs({ model_name_or_path: folder, template, export_dir: dir, export_format: "gguf", export_gguf_type: type, resize_vocab: true }, { command: "export", onWarning: () => {} });
  await runExport(args, { print: () => {} });
  return { out: dir, folder };
}

const TEXTS = ["Hello world! It's 2024.", "  leading spaces\n\nand\ttabs", "数字 12345 and émojis 🦙🦙", "<|im_start|>user\nhi<|im_end|>", "'ll 'RE don't"];

for (const [label, dir, template, pre] of [
  ["Llama 3 (smaug-bpe: this copy adds no BOS)", LLAMA3_TOKENIZER_DIR, "llama3", "smaug-bpe"],
  ["Qwen3 (qwen2)", QWEN3_TOKENIZER_DIR, "qwen3_nothink", "qwen2"],
  ["the demo's GPT-2 style BPE (gpt-2)", DEMO_TOKENIZER, "qwen3_nothink", "gpt-2"],
] as const) {
  test(`lmf export gguf: llama.cpp tokenizes as the Hugging Face tokenizer does: ${label}`, async (t) => {
    if (unavailable) return t.skip(unavailable);
    const { out } = await exportTinyWith(dir, template, "f16");
    const file = join(out, "model-f16.gguf");
    const info = readGguf(file);
    assert.equal(info.metadata.get("tokenizer.ggml.model"), "gpt2");
    assert.equal(info.metadata.get("tokenizer.ggml.pre"), pre);
    const ours = loadTokenizer(dir);
    getTemplateAndFixTokenizer(template, ours);
    assert.equal(info.metadata.get("tokenizer.ggml.eos_token_id"), ours.eosTokenId);
    const model = await llama!.loadModel({ modelPath: file, gpuLayers: 0, vocabOnly: true });
    try {
      for (const text of TEXTS) {
        assert.deepEqual(model.tokenize(text, true).map(Number), ours.encode(text, { addSpecialTokens: false }), JSON.stringify(text));
      }
    } finally {
      await model.dispose();
    }
    assert.match(readFileSync(join(out, "Modelfile"), "utf8"), /^# ollama modelfile auto-generated by llamafactory\n\nFROM \.\/model-f16\.gguf\n/);
  });
}

test("lmf export gguf: llama.cpp loads every type; f32 next-token probabilities equal lmfactory's; quantized ones stay close", async (t) => {
  if (unavailable) return t.skip(unavailable);
  type Token = import("node-llama-cpp").Token;
  const prompt = [5, 17, 42, 8, 91, 3, 60, 22];
  const shape = { hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2 };
  let ours: number[] | null = null;
  for (const type of Object.keys(GGUF_FILE_TYPES) as GgufFileType[]) {
    // The demo tokenizer with qwen3_nothink adds no tokens: the model keeps its 579 rows.
    const { out, folder } = await exportTinyWith(DEMO_TOKENIZER, "qwen3_nothink", type, shape);
    if (!ours) {
      const source = loadModel(folder);
      const logits = tidy(() => noGrad(() => source.forward(tensor([prompt])).select(1, prompt.length - 1).select(0, 0).softmax(-1).toFlatArray()));
      ours = logits;
      source.dispose();
    }
    const model = await llama!.loadModel({ modelPath: join(out, `model-${type}.gguf`), gpuLayers: 0 });
    const context = await model.createContext({ contextSize: 32, batchSize: 32, threads: 2, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
    try {
      const next = { generateNext: { probabilities: true } } as const;
      const result = (await context.getSequence().controlledEvaluate([...prompt.slice(0, -1).map((id) => id as Token), [prompt.at(-1)! as Token, next]])).at(-1)!.next;
      const distribution = new Array<number>(ours.length).fill(0);
      for (const [token, p] of result.probabilities!) distribution[token] = p;
      let diff = 0;
      distribution.forEach((p, i) => (diff = Math.max(diff, Math.abs(p - ours![i]!))));
      t.diagnostic(`${type}: max |p_llama.cpp - p_lmfactory| = ${diff.toExponential(2)}`);
      assert.ok(diff < (type === "f32" ? 1e-5 : 0.05), `${type} next-token probabilities differ by ${diff}`);
    } finally {
      await context.dispose();
      await model.dispose();
    }
  }
});

test("llama.cpp's chat formats a conversation with the GGUF's chat template as lmfactory's template does", async (t) => {
  if (unavailable) return t.skip(unavailable);
  const conversation = [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Hi!" },
    { role: "assistant", content: "Hello." },
    { role: "user", content: "What is 2+2?" },
  ];
  for (const [dir, template] of [[DEMO_TOKENIZER, "qwen3_nothink"], [LLAMA3_TOKENIZER_DIR, "llama3"]] as const) {
    const { out } = await exportTinyWith(dir, template, "q8_0");
    const chatTemplate = readGguf(join(out, "model-q8_0.gguf")).metadata.get("tokenizer.chat_template") as string;
    const theirs = llamaCpp({ op: "chat", template: chatTemplate, messages: conversation, add_ass: true });
    const tokenizer = loadTokenizer(dir);
    const ours = getTemplateAndFixTokenizer(template, tokenizer).template as Template;
    const [prompt] = ours.renderOneturn(tokenizer, [...conversation.slice(1), { role: "assistant", content: "" }] as never, conversation[0]!.content);
    t.diagnostic(`${template}: ${JSON.stringify(theirs.text).slice(0, 120)}...`);
    // llama.cpp's llama3 format starts without the BOS text, which its tokenizer adds as a token.
    assert.equal(theirs.text, template === "llama3" ? prompt.replace(/^<\|begin_of_text\|>/, "") : prompt);
  }
});

test("tokenizers llama.cpp's vocabularies cannot carry are refused clearly: byte fallback under a byte-level pre-tokenizer, unknown pre-tokenizers", async () => {
  const { Tokenizer } = await import("../../src/data/tokenizer.ts");
  const { ggufTokenizerFromHf } = await import("../../src/export/gguf/tokenizer.ts");
  const { UserError } = await import("../../src/errors.ts");
  const json = JSON.parse(readFileSync(join(DEMO_TOKENIZER, "tokenizer.json"), "utf8"));
  const config = JSON.parse(readFileSync(join(DEMO_TOKENIZER, "tokenizer_config.json"), "utf8"));
  const spm = new Tokenizer({ ...json, model: { ...json.model, byte_fallback: true } }, config);
  assert.throws(() => ggufTokenizerFromHf(spm, 579, null), (error: unknown) => error instanceof UserError && /with byte fallback and a byte-level pre-tokenizer/.test(error.message) && /convert_hf_to_gguf\.py/.test(error.fix ?? ""));
  const unknown = new Tokenizer(
    { ...json, pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: "\\s+|\\S+" }, behavior: "Isolated", invert: false }, { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }] } },
    config,
  );
  assert.throws(() => ggufTokenizerFromHf(unknown, 579, null), (error: unknown) => error instanceof UserError && /no pre-tokenizer matching/.test(error.message));
  // The demo's own tokenizer passes: llama.cpp's gpt-2 pre-tokenizer, 579 tokens, its ChatML specials as control tokens.
  const ok = ggufTokenizerFromHf(new Tokenizer(json, config), 579, null);
  assert.equal(ok.pre, "gpt-2");
  assert.deepEqual([ok.tokenTypes[576], ok.tokenTypes[578], ok.tokenTypes[100]], [3, 3, 1]);
  assert.equal(ok.merges!.length, json.model.merges.length);
});
