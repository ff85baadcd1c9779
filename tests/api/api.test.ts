// The library API (src/index.ts, the package's "lmfactory" entry): parseArgs on every kind of input,
// runExp training a tiny model, ChatModel answering as the engine underneath does, evaluate on the
// shipped tinyfacts task, and importing without an engine.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ChatModel, evaluate, exportModel, isUserError, parseArgs, runExp, train, version } from "../../src/index.ts";
import { ChatModel as ChatEngine } from "../../src/infer/chat_model.ts";
import { alpacaDataDir, tinyModelWithTokenizer } from "../fixtures/tiny_run.ts";

const quiet = { onWarning: () => {} };

test("parseArgs reads an object, CLI tokens and a YAML path into the typed groups, and passes parsed ones through", () => {
  const fromObject = parseArgs({ model_name_or_path: "m", stage: "sft", do_train: true, dataset: "alpaca", lora_target: "q_proj,v_proj", learning_rate: 2e-4, output_dir: "out" }, "train", quiet);
  assert.equal(fromObject.training.learning_rate, 2e-4);
  assert.deepEqual(fromObject.finetuning.lora_target, ["q_proj", "v_proj"]);
  assert.equal(fromObject.finetuning.lora_alpha, 16); // derived as LLaMA-Factory does: 2 x lora_rank

  const folder = mkdtempSync(join(tmpdir(), "lmf-api-args-"));
  const yaml = join(folder, "cfg.yaml");
  writeFileSync(yaml, "model_name_or_path: m\nstage: sft\ndo_train: true\ndataset: alpaca\noutput_dir: out\nlora_rank: 4\n");
  assert.equal(parseArgs(yaml, "train", quiet).finetuning.lora_rank, 4);
  assert.equal(parseArgs([yaml, "lora_rank=12"], "train", quiet).finetuning.lora_rank, 12);
  assert.equal(parseArgs(fromObject), fromObject);

  const chat = parseArgs({ model_name_or_path: "m", template: "chatml", temperature: 0.5 }, "chat", quiet);
  assert.equal(chat.generating.temperature, 0.5);
  assert.equal(parseArgs({ model_name_or_path: "m", task: "tinyfacts_test" }, "eval", quiet).evaluation.task, "tinyfacts_test");

  assert.throws(() => parseArgs({ model_name_or_path: "m", lora_rnak: 4 } as never, "train", quiet), (error) => isUserError(error) && /did you mean `lora_rank`/.test(error.message));
});

test("runExp trains as lmf train does; ChatModel answers as the engine does and takes per-call settings", async () => {
  const model = tinyModelWithTokenizer();
  const output = join(mkdtempSync(join(tmpdir(), "lmf-api-run-")), "lora");
  const lines: string[] = [];
  await runExp(
    { model_name_or_path: model, stage: "sft", do_train: true, finetuning_type: "lora", lora_target: "all", dataset: "alpaca", dataset_dir: alpacaDataDir(), template: "chatml", cutoff_len: 64, output_dir: output, per_device_train_batch_size: 4, max_steps: 3, learning_rate: 5e-3, logging_steps: 1, save_strategy: "no", report_to: "none" },
    { print: (line) => lines.push(line), ...quiet },
  );
  assert.equal(train, runExp);
  assert.ok(existsSync(join(output, "adapter_model.safetensors")));
  assert.equal(readFileSync(join(output, "trainer_log.jsonl"), "utf8").trim().split("\n").length, 3);
  assert.ok(lines.some((line) => /^\[3\/3\]/.test(line)), lines.join("\n"));

  const chat = await ChatModel.load({ model_name_or_path: model, adapter_name_or_path: output, template: "chatml", max_new_tokens: 6, do_sample: false }, quiet);
  const engine = ChatEngine.load({ modelNameOrPath: model, adapterNameOrPath: [output], template: "chatml" }, { maxNewTokens: 6, doSample: false });
  try {
    const messages = [{ role: "user" as const, content: "Count to 3." }];
    const [response] = chat.chat(messages);
    const [expected] = engine.chat([messages]);
    assert.equal(response!.responseText, expected!.text);
    assert.equal(response!.promptLength, engine.promptIds(messages).length);
    assert.equal(response!.responseLength, expected!.completionTokens);
    assert.ok(response!.responseLength <= 6);
    assert.ok(chat.chat(messages, { maxNewTokens: 2 })[0]!.responseLength <= 2);
    assert.equal([...chat.streamChat(messages)].join(""), [...engine.streamChat(messages)].join(""));
    const system = "You are terse.";
    assert.equal(chat.chat(messages, { system })[0]!.promptLength, engine.promptIds(messages, system).length);
  } finally {
    chat.dispose();
    engine.dispose();
  }

  // exportModel merges the adapter into a Hugging Face folder whose model answers as the adapter did.
  const exported = join(output, "..", "merged");
  assert.equal(await exportModel({ model_name_or_path: model, adapter_name_or_path: output, template: "chatml", export_dir: exported, infer_dtype: "float32" }, { print: () => {}, ...quiet }), exported);
  const merged = ChatEngine.load({ modelNameOrPath: exported, template: "chatml" }, { maxNewTokens: 6, doSample: false });
  const adapted = ChatEngine.load({ modelNameOrPath: model, adapterNameOrPath: [output], template: "chatml" }, { maxNewTokens: 6, doSample: false });
  try {
    const messages = [{ role: "user" as const, content: "Count to 3." }];
    assert.equal(merged.chat([messages])[0]!.text, adapted.chat([messages])[0]!.text);
  } finally {
    merged.dispose();
    adapted.dispose();
  }
});

test("evaluate runs the shipped tinyfacts task and returns its accuracies", async () => {
  const saveDir = join(mkdtempSync(join(tmpdir(), "lmf-api-eval-")), "eval");
  const result = await evaluate({ model_name_or_path: tinyModelWithTokenizer(), template: "chatml", task: "tinyfacts_test", n_shot: 0, save_dir: saveDir }, { print: () => {}, ...quiet });
  assert.ok("Average" in result.categoryAccuracy);
  assert.ok(existsSync(join(saveDir, "results.json")));
});

test("importing lmfactory loads no engine; a job without one says to run lmf setup", () => {
  const script = `
    const api = await import(${JSON.stringify(new URL("../../src/index.ts", import.meta.url).href)});
    console.log(api.parseArgs({ model_name_or_path: "m", stage: "sft", do_train: true, dataset: "alpaca", output_dir: "o" }, "train", { onWarning() {} }).finetuning.stage);
    await api.runExp({ model_name_or_path: "m", stage: "sft", do_train: true, dataset: "alpaca", output_dir: "o" }, { onWarning() {} }).catch((error) => console.log(error.name, error.message));`;
  const result = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", env: { ...process.env, LMF_ADDON: join(tmpdir(), "lmf-no-such-build") } });
  assert.equal(result.status, 0, result.stderr);
  const [stage, failure] = result.stdout.trim().split("\n");
  assert.equal(stage, "sft");
  assert.match(failure!, /^UserError the native engine is not built .*run `lmf setup`/);
  assert.equal(version, JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version);
});
