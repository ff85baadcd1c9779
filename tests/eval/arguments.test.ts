// `lmf eval` arguments through parseEvalArgs and runEval on a tiny model and the shipped tinyfacts
// task: each argument changes which questions are asked, the prompts the model sees, how they are
// batched, or the files written, compared with the same run without it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isUserError } from "../../src/errors.ts";
import { runEval } from "../../src/eval/evaluator.ts";
import { parseEvalArgs } from "../../src/hparams/index.ts";
import { ChatModel } from "../../src/infer/chat_model.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const MODEL = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null });
for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(MODEL, file), readFileSync(join("examples/demo/tiny-llama", file)));

/** One subject with three test questions and two worked examples. */
function smallTask(): string {
  const taskDir = mkdtempSync(join(tmpdir(), "lmf-eval-args-"));
  const folder = join(taskDir, "small");
  for (const split of ["dev", "test"]) mkdirSync(join(folder, split), { recursive: true });
  writeFileSync(join(folder, "mapping.json"), JSON.stringify({ colours: { name: "colours", category: "Other" } }));
  writeFileSync(join(folder, "dev", "colours_dev.csv"), "question,A,B,C,D,answer\nSky?,blue,red,green,black,A\nGrass?,blue,red,green,black,C\n");
  writeFileSync(join(folder, "test", "colours_test.csv"), "question,A,B,C,D,answer\nBlood?,blue,red,green,black,B\nNight?,blue,red,green,black,D\nSea?,blue,red,green,black,A\n");
  return taskDir;
}

interface Seen {
  /** Each forward call's batch of prompts, as token ids. */
  batches: number[][][];
  questions: number;
}

/** Runs lmf eval and records every batch of prompts the model is given. */
async function evalWith(overrides: Record<string, unknown>): Promise<Seen> {
  const batches: number[][][] = [];
  const load = ChatModel.fromLoaded;
  ChatModel.fromLoaded = (loaded, generation, skipSpecialTokens) => {
    const chat = load.call(ChatModel, loaded, generation, skipSpecialTokens);
    const forward = chat.model.forward.bind(chat.model);
    chat.model.forward = ((ids, forwardOptions) => {
      const [rows, width] = ids.shape as [number, number];
      const flat = ids.toFlatArray();
      batches.push(Array.from({ length: rows }, (_, row) => flat.slice(row * width, (row + 1) * width)));
      return forward(ids, forwardOptions);
    }) as typeof chat.model.forward;
    return chat;
  };
  try {
    const args = parseEvalArgs({ model_name_or_path: MODEL, template: "chatml", task: "tinyfacts_test", n_shot: 1, ...overrides }, { onWarning: () => {} });
    const result = await runEval(args, { print: () => {} });
    return { batches, questions: Object.values(result.predictions).reduce((sum, subject) => sum + Object.keys(subject).length, 0) };
  } finally {
    ChatModel.fromLoaded = load;
  }
}

const prompts = (seen: Seen) => seen.batches.flat().map((ids) => ids.join(" "));

test("evaluation arguments change the run: task, task_dir, lang, n_shot, seed, batch_size, save_dir", async () => {
  const base = await evalWith({});
  assert.equal(base.questions, readdirSync("evaluation/tinyfacts/test").reduce((sum, file) => sum + readFileSync(join("evaluation/tinyfacts/test", file), "utf8").trim().split("\n").length - 1, 0));
  assert.notEqual((await evalWith({ task: "tinyfacts_val" })).questions, 0);
  assert.notDeepEqual(prompts(await evalWith({ task: "tinyfacts_val" })), prompts(base), "task");
  const small = await evalWith({ task_dir: smallTask(), task: "small_test" });
  assert.equal(small.questions, 3, "task_dir");
  await assert.rejects(evalWith({ task_dir: smallTask() }), (error: unknown) => isUserError(error) && /tinyfacts does not exist/.test(error.message));
  assert.notDeepEqual(prompts(await evalWith({ lang: "zh" })), prompts(base), "lang");
  const longer = prompts(await evalWith({ n_shot: 3 }));
  assert.ok(longer.every((prompt, i) => prompt.length > prompts(base)[i]!.length), "n_shot");
  assert.notDeepEqual(prompts(await evalWith({ n_shot: 3, seed: 7 })), longer, "seed draws other worked examples");
  // batch_size: the default 4 questions per forward, or 2.
  assert.ok(base.batches.every((batch) => batch.length <= 4) && base.batches.some((batch) => batch.length === 4));
  const pairs = await evalWith({ batch_size: 2 });
  assert.ok(pairs.batches.every((batch) => batch.length <= 2) && pairs.batches.length > base.batches.length, "batch_size");
  const saveDir = join(mkdtempSync(join(tmpdir(), "lmf-eval-args-")), "scores");
  await evalWith({ save_dir: saveDir });
  assert.deepEqual(readdirSync(saveDir).sort(), ["results.json", "results.log"], "save_dir");
});
