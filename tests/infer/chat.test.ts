// `lmf chat` driven through stdin, and the chat engine: the streamed answer equals the
// non-streamed one and the library's greedy `generate` on the template's prompt.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ChatModel } from "../../src/infer/chat_model.ts";
import { generate } from "../../src/model/generation.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

function tinyChatModel(): string {
  const folder = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null });
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(folder, file), readFileSync(join("examples/demo/tiny-llama", file)));
  return folder;
}

const MODEL = tinyChatModel();

test("chat engine: streamed pieces concatenate to the answer, which is greedy generate on the template's prompt", () => {
  const chat = ChatModel.load({ modelNameOrPath: MODEL, template: "chatml" });
  const settings = { maxNewTokens: 12, doSample: false };
  const messages = [{ role: "user" as const, content: "Who are you?" }];
  const [answer] = chat.chat([messages], settings);
  const streamed = [...chat.streamChat(messages, settings)].join("");
  assert.equal(streamed, answer!.text);
  const prompt = chat.tokenizer.encode("<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n");
  assert.deepEqual(chat.promptIds(messages), prompt);
  const { sequences } = generate(chat.model, [prompt], { maxNewTokens: 12, eosTokenId: [578], padTokenId: 576 });
  assert.equal(answer!.text, chat.tokenizer.decode(sequences[0]!, { skipSpecialTokens: true }));
  assert.equal(answer!.completionTokens, sequences[0]!.length);
  chat.dispose();
});

test("lmf chat: multi-turn over stdin, `clear` forgets, `exit` quits", () => {
  const result = spawnSync(
    process.execPath,
    ["bin/lmf.mjs", "chat", "--model_name_or_path", MODEL, "--template", "chatml", "--max_new_tokens", "6"],
    { input: "Who are you?\nAnd then?\nclear\nSay hello.\nexit\nnever read\n", encoding: "utf8" },
  );
  assert.equal(result.status, 0, result.stderr);
  assert.equal(result.stdout.match(/Assistant: /g)?.length, 3);
  assert.match(result.stdout, /History has been removed\./);
  assert.doesNotMatch(result.stdout, /never read/);
});
