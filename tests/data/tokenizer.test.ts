// The tokenizer wrapper on real Qwen3 and Llama 3 tokenizer files: ids known from Hugging Face,
// special tokens, split_special_tokens, added tokens, decoding and the companion files.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { UserError } from "../../src/errors.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { LLAMA3_TOKENIZER_DIR, QWEN3_TOKENIZER_DIR } from "../fixtures/tokenizers.ts";

const qwen = loadTokenizer(QWEN3_TOKENIZER_DIR);
const llama = loadTokenizer(LLAMA3_TOKENIZER_DIR);

test("Qwen3: special tokens and sizes from tokenizer_config.json", () => {
  assert.equal(qwen.eosToken, "<|im_end|>");
  assert.equal(qwen.eosTokenId, 151645);
  assert.equal(qwen.padToken, "<|endoftext|>");
  assert.equal(qwen.padTokenId, 151643);
  assert.equal(qwen.bosToken, null);
  assert.equal(qwen.bosTokenId, null);
  assert.equal(qwen.addBosToken, false);
  assert.equal(qwen.vocabSize, 151643);
  assert.equal(qwen.length, 151669);
  assert.match(qwen.chatTemplate ?? "", /<\|im_start\|>/);
});

test("Qwen3: ids equal Hugging Face's", () => {
  assert.deepEqual(qwen.encode("Hello world"), [9707, 1879]);
  assert.deepEqual(qwen.encode("<|im_start|>user\nHello world<|im_end|>", { addSpecialTokens: false }), [151644, 872, 198, 9707, 1879, 151645]);
});

test("Llama 3: special tokens and ids", () => {
  assert.equal(llama.bosToken, "<|begin_of_text|>");
  assert.equal(llama.bosTokenId, 128000);
  assert.equal(llama.eosTokenId, 128001);
  assert.equal(llama.padTokenId, null);
  assert.equal(llama.convertTokensToIds("<|eot_id|>"), 128009);
  assert.deepEqual(llama.convertTokensToIds(["<|start_header_id|>", "<|end_header_id|>", "<no such token>"]), [128006, 128007, null]);
  assert.deepEqual(llama.encode("Hello world", { addSpecialTokens: false }), [9906, 1917]);
  assert.equal(llama.convertIdsToTokens(128000), "<|begin_of_text|>");
});

test("decode round-trips and skips special tokens on request", () => {
  const text = "<|im_start|>user\n你好, world!<|im_end|>\n";
  const ids = qwen.encode(text, { addSpecialTokens: false });
  assert.equal(qwen.decode(ids), text);
  assert.equal(qwen.decode(ids, { skipSpecialTokens: true }), "user\n你好, world!\n");
  assert.equal(qwen.decode([]), "");
});

test("split_special_tokens encodes special-token text as ordinary text", () => {
  const splitting = loadTokenizer(QWEN3_TOKENIZER_DIR, { splitSpecialTokens: true });
  const ids = splitting.encode("<|im_start|>user", { addSpecialTokens: false });
  assert.ok(!ids.includes(151644));
  assert.ok(ids.length > 2);
  assert.equal(splitting.decode(ids), "<|im_start|>user");
});

test("added special tokens get new ids, are matched in text and counted", () => {
  const tokenizer = qwen.clone();
  const added = tokenizer.addSpecialTokens({ eos_token: "<my_eos>", additional_special_tokens: ["<tool>", "<|im_end|>"] });
  assert.equal(added, 2);
  assert.equal(tokenizer.eosToken, "<my_eos>");
  assert.equal(tokenizer.eosTokenId, 151669);
  assert.equal(tokenizer.convertTokensToIds("<tool>"), 151670);
  assert.equal(tokenizer.length, 151671);
  assert.deepEqual(tokenizer.encode("a<tool>b<my_eos>", { addSpecialTokens: false }), [64, 151670, 65, 151669]);
  assert.equal(tokenizer.decode([64, 151670, 65, 151669], { skipSpecialTokens: true }), "ab");
  // The source tokenizer is untouched.
  assert.equal(qwen.length, 151669);
  assert.equal(qwen.convertTokensToIds("<tool>"), null);
  assert.equal(tokenizer.addTokens(["plain_new_word"]), 1);
});

test("special_tokens_map.json, chat_template.jinja and generation_config.json are read", () => {
  const dir = mkdtempSync(join(tmpdir(), "lmf-tok-"));
  symlinkSync(join(QWEN3_TOKENIZER_DIR, "tokenizer.json"), join(dir, "tokenizer.json"));
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ eos_token: "<|endoftext|>", chat_template: "old" }));
  writeFileSync(join(dir, "special_tokens_map.json"), JSON.stringify({ eos_token: { content: "<|im_end|>", special: true }, pad_token: "<|endoftext|>" }));
  writeFileSync(join(dir, "chat_template.jinja"), "{{ messages[0].content }}");
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [151645, 151643] }));
  const tokenizer = loadTokenizer(dir);
  assert.equal(tokenizer.eosToken, "<|im_end|>");
  assert.equal(tokenizer.padTokenId, 151643);
  assert.equal(tokenizer.chatTemplate, "{{ messages[0].content }}");
  assert.deepEqual(tokenizer.generationConfig?.eos_token_id, [151645, 151643]);
});

test("a folder without tokenizer.json is a UserError", () => {
  const dir = mkdtempSync(join(tmpdir(), "lmf-tok-"));
  assert.throws(() => loadTokenizer(dir), (error: unknown) => error instanceof UserError && /tokenizer\.json/.test(error.message));
});

/** A folder holding the demo's byte-level BPE tokenizer.json, changed by `edit`. */
function demoTokenizerFolder(edit: (json: Record<string, unknown>) => unknown): string {
  const dir = mkdtempSync(join(tmpdir(), "lmf-tok-"));
  const json = JSON.parse(readFileSync("examples/demo/tiny-llama/tokenizer.json", "utf8")) as Record<string, unknown>;
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(edit(json)));
  return dir;
}

test("a tokenizer.json that is JSON but not a usable tokenizer fails at load, naming the file", () => {
  const cases: [string, (json: Record<string, unknown>) => unknown, RegExp][] = [
    ["an empty object", () => ({}), /no `model`/],
    ["an array", () => [], /no JSON object/],
    ["a model without vocab", (json) => ({ ...json, model: { type: "BPE", merges: [] } }), /model \(BPE\) has no `vocab`/],
    ["an unknown decoder", (json) => ({ ...json, decoder: { type: "NoSuchDecoder" } }), /cannot be used: .*NoSuchDecoder/],
    ["another format version", (json) => ({ ...json, version: "2.0" }), /unknown tokenizer version "2\.0"/],
  ];
  for (const [name, edit, message] of cases) {
    const dir = demoTokenizerFolder(edit);
    assert.throws(
      () => loadTokenizer(dir),
      (error: unknown) => error instanceof UserError && error.where === join(dir, "tokenizer.json") && message.test(error.what),
      name,
    );
  }
});

test("optional parts left out of tokenizer.json mean none, as HF tokenizers reads them: without a decoder, tokens are joined by spaces", () => {
  const whole = loadTokenizer(demoTokenizerFolder((json) => json));
  const bare = loadTokenizer(demoTokenizerFolder(({ decoder: _decoder, normalizer: _normalizer, ...json }) => json));
  const ids = whole.encode("Mira saw a fox.", { addSpecialTokens: false });
  assert.deepEqual(bare.encode("Mira saw a fox.", { addSpecialTokens: false }), ids);
  const vocab = (JSON.parse(readFileSync("examples/demo/tiny-llama/tokenizer.json", "utf8")) as { model: { vocab: Record<string, number> } }).model.vocab;
  const pieceOf = new Map(Object.entries(vocab).map(([piece, id]) => [id, piece]));
  assert.equal(bare.decode(ids), ids.map((id) => pieceOf.get(id)).join(" "));
  assert.equal(whole.decode(ids), "Mira saw a fox.");
});
