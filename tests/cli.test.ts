// The `lmf` executable through a real child process: exit codes, one-line errors without stack
// traces, generated help, version, and jobs that parse their arguments but are not built yet.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { loadConfig } from "../src/model/config.ts";
import { makeTinyModel } from "./fixtures/tiny_model.ts";
import { alpacaDataDir, tinyModelWithTokenizer } from "./fixtures/tiny_run.ts";

const bin = new URL("../bin/lmf.mjs", import.meta.url).pathname;
const repo = new URL("..", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "lmf-cli-"));

function lmf(...args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], { cwd: repo, encoding: "utf8" });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** The notice lines of stderr, and the rest. */
function splitNotices(stderr: string): { notices: string[]; rest: string } {
  const lines = stderr.trim().split("\n");
  return { notices: lines.filter((line) => line.startsWith("notice:")), rest: lines.filter((line) => !line.startsWith("notice:")).join("\n") };
}

/** LLaMA-Factory's example configs set keys that change nothing here; each gets one notice saying so. */
const exampleNoEffectNotices = [/`trust_remote_code: true` has no effect/, /`dataloader_num_workers: 4` has no effect/];

function assertOneCleanError(stderr: string, fragment: string) {
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, stderr);
  assert.ok(lines[0]!.startsWith("error: "), stderr);
  assert.ok(lines[0]!.includes(fragment), stderr);
  assert.doesNotMatch(stderr, /\n\s+at /);
}

describe("lmf", () => {
  test("a missing config file: exit 1, one message, no stack trace", () => {
    const result = lmf("train", "x.yaml");
    assert.equal(result.status, 1);
    assertOneCleanError(result.stderr, "x.yaml: config file not found");
  });

  test("an unknown key names file, line and the closest key", () => {
    const path = join(dir, "typo.yaml");
    writeFileSync(path, "model_name_or_path: m\ndataset: d\nlora_rnak: 8\n");
    const result = lmf("train", path);
    assert.equal(result.status, 1);
    assertOneCleanError(result.stderr, `${path}:3: unknown key \`lora_rnak\` (did you mean \`lora_rank\`?)`);
  });

  test("a broken rule gives its reason and fix", () => {
    const result = lmf("train", "--model_name_or_path", "m", "--do_train", "--dataset", "d", "--stage", "pt", "--neat_packing");
    assert.equal(result.status, 1);
    assertOneCleanError(result.stderr, "`neat_packing` is only for `stage: sft`");
  });

  test("a valid config whose model is not on this machine fails with one clear message before any work", () => {
    const result = lmf("train", "examples/train_lora/llama3_lora_sft.yaml", "lora_rank=16", "cache_dir=/nonexistent");
    assert.equal(result.status, 1, result.stderr);
    const { notices, rest } = splitNotices(result.stderr);
    assert.equal(notices.length, exampleNoEffectNotices.length, result.stderr);
    exampleNoEffectNotices.forEach((notice, i) => assert.match(notices[i]!, notice));
    assertOneCleanError(rest, "model_name_or_path: 'meta-llama/Meta-Llama-3-8B-Instruct' is neither a local folder nor in a Hugging Face cache");
  });

  test("chat takes a training config and ignores its training keys with one notice", () => {
    const result = lmf("chat", "examples/train_lora/llama3_lora_sft.yaml", "cache_dir=/nonexistent");
    assert.equal(result.status, 1, result.stderr);
    assert.match(result.stderr, /^error: model_name_or_path: 'meta-llama\/Meta-Llama-3-8B-Instruct' is neither a local folder/m);
    const { notices } = splitNotices(result.stderr);
    // dataloader_num_workers and ddp_timeout are training keys: among the ignored, not noticed twice.
    assert.equal(notices.length, 2, result.stderr);
    assert.match(notices[0]!, /ignores keys it does not use: .*dataloader_num_workers.*learning_rate.*ddp_timeout/);
    assert.match(notices[1]!, /`trust_remote_code: true` has no effect/);
  });

  test("an unsupported feature is refused before anything runs", () => {
    const result = lmf("train", "examples/train_lora/qwen3_lora_dpo.yaml", "use_galore=true");
    assert.equal(result.status, 1);
    assertOneCleanError(result.stderr, "not yet supported by lmfactory: `use_galore: true`");
  });

  test("train --help lists every field with type and default", () => {
    const result = lmf("train", "--help");
    assert.equal(result.status, 0);
    assert.match(result.stdout, /ModelArguments[\s\S]*DataArguments[\s\S]*TrainingArguments[\s\S]*FinetuningArguments[\s\S]*GeneratingArguments/);
    assert.match(result.stdout, /lora_rank {2}int {2}\(default: 8\)/);
    assert.doesNotMatch(result.stdout, /EvaluationArguments/);
  });

  test("help for one key, and for an unknown one", () => {
    const one = lmf("help", "lora_rank");
    assert.equal(one.status, 0);
    assert.match(one.stdout, /lora_rank {2}\(FinetuningArguments\)/);
    const unknown = lmf("help", "lora_rnk");
    assert.equal(unknown.status, 1);
    assertOneCleanError(unknown.stderr, "did you mean `lora_rank`?");
  });

  test("lmf help lists the commands and every group", () => {
    const result = lmf("help");
    assert.equal(result.status, 0);
    for (const word of ["train", "chat", "api", "eval", "export", "webui", "webchat", "env", "version", "EvaluationArguments"]) {
      assert.ok(result.stdout.includes(word), word);
    }
  });

  test("version prints the package version", () => {
    const version = (JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as { version: string }).version;
    const result = lmf("version");
    assert.equal(result.status, 0);
    assert.equal(result.stdout.trim(), `lmfactory ${version}`);
  });

  test("webui and webchat explain their flags; a bad flag is one clear error; an unknown command is an error", () => {
    const help = lmf("webui", "--help");
    assert.equal(help.status, 0);
    assert.match(help.stdout, /usage: lmf webui \[--host HOST\] \[--port PORT\] \[--token TOKEN\] \[--dir FOLDER \.\.\.\]/);
    assert.match(lmf("webchat", "--help").stdout, /usage: lmf webchat <config\.yaml>/);
    const badPort = lmf("webui", "--port", "web");
    assert.equal(badPort.status, 1);
    assertOneCleanError(badPort.stderr, '--port: the port must be a whole number from 0 to 65535, got "web"');
    const badFlag = lmf("webui", "--hots", "0.0.0.0");
    assert.equal(badFlag.status, 1);
    assertOneCleanError(badFlag.stderr, "lmf webui: Unknown option '--hots'");
    const unknown = lmf("trian");
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /unknown command 'trian'/);
  });

  test("env reports the engine and where it is, or says how to build it", () => {
    const result = lmf("env");
    assert.match(result.stdout, /lmfactory\s+\d/);
    if (result.status === 0) assert.match(result.stdout, /libtorch\s+\d[\s\S]*\nengine\s+\/\S+/);
    else assert.match(result.stderr, /lmf setup/);
  });
});

test("lmf llama-pro expand writes an expanded checkpoint and says how to train it", () => {
  const source = makeTinyModel();
  const output = join(mkdtempSync(join(tmpdir(), "lmf-pro-")), "expanded");
  const result = spawnSync(process.execPath, ["bin/lmf.mjs", "llama-pro", "expand", "--model_name_or_path", source, "--output_dir", output, "--num_expand", "2"], { encoding: "utf8" });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /4 layers/);
  assert.match(result.stdout, /use_llama_pro: true, freeze_trainable_layers: 2/);
  assert.equal(loadConfig(output).num_hidden_layers, 4);
  const bad = spawnSync(process.execPath, ["bin/lmf.mjs", "llama-pro", "expand", "--model_name_or_path", source, "--output_dir", output, "--num_expand", "three"], { encoding: "utf8" });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^error: .*--num_expand must be a positive integer/m);
  assert.doesNotMatch(bad.stderr, /\n\s+at /);
});

describe("lmf train refuses bad inputs with one line before writing anything", () => {
  const data = alpacaDataDir();
  const train = (model: string, outputDir: string, ...extra: string[]) =>
    lmf("train", "--model_name_or_path", model, "--stage", "sft", "--do_train", "--dataset", "alpaca", "--dataset_dir", data, "--template", "chatml", "--output_dir", outputDir, "--max_steps", "1", ...extra);

  test("a tokenizer.json that is valid JSON but not a tokenizer", () => {
    const model = tinyModelWithTokenizer();
    writeFileSync(join(model, "tokenizer.json"), "{}");
    const outputDir = join(dir, "out-tokenizer");
    const result = train(model, outputDir);
    assert.equal(result.status, 1);
    assertOneCleanError(result.stderr, `${join(model, "tokenizer.json")}: not a tokenizer: it has no \`model\``);
    assert.ok(!existsSync(outputDir));
  });

  test("a cutoff_len that leaves no label token to train on", () => {
    const outputDir = join(dir, "out-cutoff");
    const result = train(tinyModelWithTokenizer(), outputDir, "--cutoff_len", "1");
    assert.equal(result.status, 1);
    // Progress lines come first; the error is the last line.
    const lines = result.stderr.trim().split("\n");
    assert.equal(lines.filter((line) => line.startsWith("error: ")).length, 1, result.stderr);
    assert.match(lines.at(-1)!, /^error: cutoff_len: none of the 12 training rows keeps a label token/);
    assert.doesNotMatch(result.stderr, /\n\s+at /);
    assert.ok(!existsSync(outputDir));
  });
});
