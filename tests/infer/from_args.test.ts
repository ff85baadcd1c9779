// `lmf chat` / `lmf api` arguments through parseInferArgs and loadChatModelFromArgs: each
// generating, model and data argument changes what the chat model answers or how it renders and
// decodes, compared with the same model loaded without it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isUserError } from "../../src/errors.ts";
import { parseInferArgs } from "../../src/hparams/index.ts";
import type { ChatModel } from "../../src/infer/chat_model.ts";
import { loadChatModelFromArgs } from "../../src/infer/from_args.ts";
import { manualSeed } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

function tinyChatModel(seed = 0): string {
  const folder = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null }, seed);
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(folder, file), readFileSync(join("examples/demo/tiny-llama", file)));
  return folder;
}

const MODEL = tinyChatModel();
const question = [{ role: "user" as const, content: "Where does the fox live?" }];

function withChat<T>(overrides: Record<string, unknown>, use: (chat: ChatModel) => T): T {
  const args = parseInferArgs({ model_name_or_path: MODEL, template: "chatml", do_sample: false, max_new_tokens: 8, ...overrides }, { command: "chat", onWarning: () => {} });
  const chat = loadChatModelFromArgs(args);
  try {
    return use(chat);
  } finally {
    chat.dispose();
  }
}

/** The answer's token count and text, sampled from seed 0 when sampling. */
function answer(overrides: Record<string, unknown>): { text: string; tokens: number } {
  return withChat(overrides, (chat) => {
    manualSeed(0);
    const [reply] = chat.chat([question]);
    return { text: reply!.text, tokens: reply!.completionTokens };
  });
}

test("generating arguments change the answer: do_sample, temperature, top_p, top_k, num_beams, max_length, max_new_tokens, repetition_penalty", () => {
  const greedy = answer({});
  assert.equal(greedy.tokens, 8, "the tiny model answers up to max_new_tokens");
  assert.equal(answer({ max_new_tokens: 3 }).tokens, 3, "max_new_tokens");
  // max_length counts the prompt; it applies when max_new_tokens is 0.
  const promptTokens = withChat({}, (chat) => chat.promptIds(question).length);
  assert.equal(answer({ max_new_tokens: 0, max_length: promptTokens + 5 }).tokens, 5, "max_length");
  const sampled = answer({ do_sample: true, top_p: 1, top_k: 0, temperature: 1 });
  assert.notEqual(sampled.text, greedy.text, "do_sample");
  assert.notEqual(answer({ do_sample: true, top_p: 1, top_k: 0, temperature: 3 }).text, sampled.text, "temperature");
  // Keeping only the most likely token makes sampling greedy.
  assert.equal(answer({ do_sample: true, top_p: 1, top_k: 1, temperature: 1 }).text, greedy.text, "top_k");
  assert.equal(answer({ do_sample: true, top_p: 1e-6, top_k: 0, temperature: 1 }).text, greedy.text, "top_p");
  assert.notEqual(answer({ repetition_penalty: 5 }).text, greedy.text, "repetition_penalty");
  assert.notEqual(answer({ num_beams: 4 }).text, greedy.text, "num_beams");
});

test("length_penalty reaches the chat model's generation settings", () => {
  // Its effect on beam scores is shown by the generation tests; here: the setting is not dropped.
  assert.equal(withChat({ num_beams: 2, length_penalty: 2.5 }, (chat) => chat.defaults.lengthPenalty), 2.5);
  assert.equal(withChat({}, (chat) => chat.defaults.lengthPenalty), 1.0);
});

test("skip_special_tokens: false keeps special tokens in the answer's text", () => {
  const ids = [577, 100, 578];
  assert.equal(withChat({}, (chat) => chat.decode(ids)), withChat({}, (chat) => chat.tokenizer.decode([100])));
  assert.equal(withChat({ skip_special_tokens: false }, (chat) => chat.decode(ids)), withChat({}, (chat) => `<|im_start|>${chat.tokenizer.decode([100])}<|im_end|>`));
});

test("use_kv_cache: false feeds the whole sequence at every step, for the same answer", () => {
  const widths = (overrides: Record<string, unknown>) =>
    withChat(overrides, (chat) => {
      const seen: number[] = [];
      const forward = chat.model.forward.bind(chat.model);
      chat.model.forward = ((ids, options) => {
        seen.push(ids.shape[1]!);
        return forward(ids, options);
      }) as typeof chat.model.forward;
      const text = chat.chat([question])[0]!.text;
      return { text, seen };
    });
  const cached = widths({});
  const uncached = widths({ use_kv_cache: false });
  assert.equal(uncached.text, cached.text);
  assert.ok(cached.seen.slice(1).every((width) => width === 1), `with the cache: ${cached.seen}`);
  assert.ok(uncached.seen.slice(1).every((width, step) => width === uncached.seen[0]! + step + 1), `without: ${uncached.seen}`);
});

test("template, default_system, enable_thinking and tool_format change the prompt the chat model renders", () => {
  const prompt = (overrides: Record<string, unknown>, tools?: string) => withChat(overrides, (chat) => chat.tokenizer.decode(chat.promptIds(question, undefined, tools)));
  assert.equal(prompt({}), "<|im_start|>user\nWhere does the fox live?<|im_end|>\n<|im_start|>assistant\n");
  assert.equal(prompt({ template: "empty" }), "Where does the fox live?");
  assert.match(prompt({ default_system: "You are Mira." }), /^<\|im_start\|>system\nYou are Mira\.<\|im_end\|>/);
  assert.doesNotMatch(prompt({ template: "qwen3" }), /<think>/);
  assert.match(prompt({ template: "qwen3", enable_thinking: false }), /<think>\n\n<\/think>\n\n$/);
  const tools = JSON.stringify([{ name: "weather", description: "Weather of a city", parameters: { type: "object", properties: { city: { type: "string" } } } }]);
  const qwenTools = prompt({ template: "qwen" }, tools);
  assert.match(qwenTools, /<tools>/);
  assert.notEqual(prompt({ template: "qwen", tool_format: "default" }, tools), qwenTools);
});

test("add_tokens, add_special_tokens and split_special_tokens change the chat model's tokenizer", () => {
  const encode = (overrides: Record<string, unknown>, text: string) => withChat(overrides, (chat) => ({ ids: chat.tokenizer.encode(text), size: chat.tokenizer.length }));
  const plain = encode({}, "hello <tool> <|im_start|>");
  assert.equal(plain.size, 579);
  const added = encode({ add_tokens: "hello" }, "hello <tool> <|im_start|>");
  assert.equal(added.size, 580);
  assert.equal(added.ids[0], 579);
  const special = encode({ add_special_tokens: "<tool>" }, "hello <tool> <|im_start|>");
  assert.equal(special.size, 580);
  assert.ok(special.ids.includes(579) && special.ids.length < plain.ids.length);
  // Split, `<|im_start|>` in text is ordinary text, not token 577.
  const split = encode({ split_special_tokens: true, use_fast_tokenizer: false }, "<|im_start|>");
  assert.ok(split.ids.length > 1 && !split.ids.includes(577), `${split.ids}`);
});

test("infer_dtype sets the dtype the chat model computes in", () => {
  assert.equal(withChat({}, (chat) => chat.model.inputEmbeddings().weight.dtype), "float32");
  assert.equal(withChat({ infer_dtype: "bfloat16" }, (chat) => chat.model.inputEmbeddings().weight.dtype), "bfloat16");
});

test("cache_dir and model_revision pick the snapshot of a hub id in a Hugging Face cache", () => {
  const cache = mkdtempSync(join(tmpdir(), "lmf-hub-"));
  const repo = join(cache, "models--lmf-test--tiny");
  mkdirSync(join(repo, "refs"), { recursive: true });
  cpSync(MODEL, join(repo, "snapshots", "aaa111"), { recursive: true });
  cpSync(tinyChatModel(1), join(repo, "snapshots", "bbb222"), { recursive: true });
  writeFileSync(join(repo, "refs", "main"), "aaa111\n");
  writeFileSync(join(repo, "refs", "v2"), "bbb222\n");
  const hubAnswer = (overrides: Record<string, unknown>) => answer({ model_name_or_path: "lmf-test/tiny", cache_dir: cache, ...overrides }).text;
  assert.equal(hubAnswer({}), answer({}).text, "main is the local model's snapshot");
  assert.notEqual(hubAnswer({ model_revision: "v2" }), hubAnswer({}), "v2 is another model");
  assert.throws(() => answer({ model_name_or_path: "lmf-test/tiny" }), (error: unknown) => isUserError(error) && /neither a local folder nor in a Hugging Face cache/.test(error.message));
  assert.throws(() => hubAnswer({ model_revision: "v3" }), (error: unknown) => isUserError(error) && /lmf-test\/tiny/.test(error.message));
});
