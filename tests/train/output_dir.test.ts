// The output folder of `lmf train`: a user's files are never deleted or overwritten (each case
// compares every pre-existing file byte for byte), nothing is written before the data and model
// load, output_dir apart from the model, adapters and data, LLaMA-Factory's resume-or-refuse rule,
// overwrite_output_dir over lmfactory's own outputs only, and rotation of its own checkpoints only.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { describe, test } from "node:test";
import { UserError } from "../../src/errors.ts";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { rotateCheckpoints } from "../../src/train/checkpoint.ts";
import { MANIFEST_NAME, readManifest, recordOutputs } from "../../src/train/output_manifest.ts";
import { runTrain } from "../../src/train/workflow.ts";
import { alpacaDataDir, tinyModelWithTokenizer } from "../fixtures/tiny_run.ts";

const MODEL = tinyModelWithTokenizer();
const DATA = alpacaDataDir();

function tmp(): string {
  return mkdtempSync(join(tmpdir(), "lmf-outdir-"));
}

/** Every file under `dir` with its bytes (folders as entries too), to compare before and after. */
function snapshot(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (folder: string) => {
    for (const name of readdirSync(folder)) {
      const path = join(folder, name);
      if (statSync(path).isDirectory()) {
        files.set(relative(dir, path) + "/", "");
        walk(path);
      } else files.set(relative(dir, path), readFileSync(path).toString("base64"));
    }
  };
  walk(dir);
  return files;
}

/** A user's project: notes and a source file. */
function userProject(): string {
  const dir = tmp();
  writeFileSync(join(dir, "notes.txt"), "my notes\n");
  mkdirSync(join(dir, "src"));
  writeFileSync(join(dir, "src", "main.py"), "print('hello')\n");
  return dir;
}

function args(overrides: Record<string, unknown>) {
  return parseTrainArgs(
    {
      model_name_or_path: MODEL,
      stage: "sft",
      do_train: true,
      dataset: "alpaca",
      dataset_dir: DATA,
      template: "chatml",
      cutoff_len: 32,
      per_device_train_batch_size: 4,
      max_steps: 2,
      save_strategy: "no",
      logging_steps: 1,
      ...overrides,
    },
    { onWarning: () => {} },
  );
}

async function train(overrides: Record<string, unknown>): Promise<string[]> {
  const lines: string[] = [];
  await runTrain(args(overrides), { print: (line) => lines.push(line) });
  return lines;
}

/** Asserts the run is refused with a UserError whose message matches, and that every listed folder is byte-identical. */
async function assertRefused(overrides: Record<string, unknown>, message: RegExp, untouched: string[]): Promise<void> {
  const before = untouched.map(snapshot);
  await assert.rejects(train(overrides), (error: unknown) => error instanceof UserError && message.test(error.message));
  untouched.forEach((dir, index) => assert.deepEqual(snapshot(dir), before[index], `${dir} changed`));
}

describe("a user's files", () => {
  test("overwrite_output_dir with a misspelt dataset: the project folder is byte-identical", async () => {
    const project = userProject();
    await assertRefused({ output_dir: project, overwrite_output_dir: true, dataset: "alpacca" }, /undefined dataset "alpacca"/, [project]);
  });

  test("output_dir that is, is inside or contains the model, an adapter, dataset_dir or tokenized_path is refused; nothing changes", async () => {
    const parent = tmp();
    const model = join(parent, "base");
    const dataDir = join(parent, "data");
    for (const [from, to] of [[MODEL, model], [DATA, dataDir]] as const) {
      mkdirSync(to);
      for (const name of readdirSync(from)) writeFileSync(join(to, name), readFileSync(join(from, name)));
    }
    const adapter = join(parent, "adapter");
    mkdirSync(adapter);
    writeFileSync(join(adapter, "adapter_config.json"), "{}");
    const link = join(parent, "link-to-base");
    symlinkSync(model, link);
    const base = { model_name_or_path: model, dataset_dir: dataDir, overwrite_output_dir: true };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ output_dir: model }, /is the same folder as model_name_or_path/],
      [{ output_dir: link }, /is the same folder as model_name_or_path/],
      [{ output_dir: join(model, "run") }, /is inside model_name_or_path/],
      [{ output_dir: parent }, /contains model_name_or_path/],
      [{ output_dir: adapter, finetuning_type: "lora", adapter_name_or_path: adapter }, /is the same folder as adapter_name_or_path/],
      [{ output_dir: dataDir }, /is the same folder as dataset_dir/],
      [{ output_dir: join(dataDir, "out") }, /is inside dataset_dir/],
      [{ output_dir: join(parent, "saves", "x"), tokenized_path: join(parent, "saves", "x", "cache") }, /contains tokenized_path/],
    ];
    for (const [overrides, message] of cases) await assertRefused({ ...base, ...overrides }, message, [parent]);
    // A name that merely starts like another folder's is not inside it.
    await train({ ...base, output_dir: join(parent, "data2") });
    assert.ok(existsSync(join(parent, "data2", "adapter_model.safetensors")));
  });

  test("a file of the user's with a name the run writes is refused before training, and nothing is written", async () => {
    const project = userProject();
    writeFileSync(join(project, "config.json"), '{"mine": true}\n');
    await assertRefused({ output_dir: project, finetuning_type: "full" }, /holds config\.json, which lmfactory did not write/, [project]);
    await assertRefused({ output_dir: project, finetuning_type: "full", overwrite_output_dir: true }, /holds config\.json/, [project]);
    assert.ok(!existsSync(join(project, MANIFEST_NAME)));
  });

  test("training beside the user's files leaves them byte-identical; overwrite_output_dir writes over lmfactory's own outputs only", async () => {
    const project = userProject();
    const before = snapshot(project);
    const keep = () => {
      const now = snapshot(project);
      for (const [path, bytes] of before) assert.equal(now.get(path), bytes, path);
    };
    await train({ output_dir: project, save_strategy: "steps", save_steps: 2, max_steps: 4 });
    keep();
    assert.deepEqual(readdirSync(project).filter((name) => name.startsWith("checkpoint-")).sort(), ["checkpoint-2", "checkpoint-4"]);
    // Started over: the old checkpoints stay until this run saves its first one, then go.
    await train({ output_dir: project, save_strategy: "steps", save_steps: 3, max_steps: 3, overwrite_output_dir: true });
    keep();
    assert.deepEqual(readdirSync(project).filter((name) => name.startsWith("checkpoint-")), ["checkpoint-3"]);
    assert.deepEqual(readManifest(project).stale, []);
    // A checkpoint folder lmfactory did not write is in the way of a run that starts over.
    mkdirSync(join(project, "checkpoint-1"));
    writeFileSync(join(project, "checkpoint-1", "weights.bin"), "mine");
    await assertRefused({ output_dir: project, save_strategy: "steps", save_steps: 1, overwrite_output_dir: true }, /holds checkpoint-1, which lmfactory did not write/, [project]);
  });

  test("a run that starts over writes its own pissa_init, not the earlier run's", async () => {
    const dir = tmp();
    const pissa = { output_dir: dir, finetuning_type: "lora", pissa_init: true, pissa_iter: -1, pissa_convert: true };
    await train({ ...pissa, lora_rank: 4 });
    await train({ ...pissa, lora_rank: 8, overwrite_output_dir: true });
    assert.equal(JSON.parse(readFileSync(join(dir, "pissa_init", "adapter_config.json"), "utf8")).r, 8);
  });

  test("save_total_limit removes only checkpoints lmfactory wrote", () => {
    const dir = tmp();
    for (const step of [1, 2, 3, 4]) {
      mkdirSync(join(dir, `checkpoint-${step}`));
      writeFileSync(join(dir, `checkpoint-${step}`, "trainer_state.json"), "{}");
    }
    recordOutputs(dir, ["checkpoint-2", "checkpoint-3", "checkpoint-4"]);
    rotateCheckpoints(dir, 1);
    assert.deepEqual(readdirSync(dir).filter((name) => name.startsWith("checkpoint-")).sort(), ["checkpoint-1", "checkpoint-4"]);
  });
});

describe("resume or refuse, as LLaMA-Factory decides", () => {
  test("no checkpoint and a finished model present: refused, unless it is lmfactory's own run that never finished", async () => {
    const foreign = userProject();
    writeFileSync(join(foreign, "model.safetensors"), "someone's model");
    await assertRefused({ output_dir: foreign }, /already exists and is not empty: it holds a trained model \(model\.safetensors\)/, [foreign]);

    const finished = tmp();
    await train({ output_dir: finished });
    await assertRefused({ output_dir: finished }, /already exists and is not empty/, [finished]);
    // The same folder, as a run that wrote its model but was killed before it finished.
    const manifest = JSON.parse(readFileSync(join(finished, MANIFEST_NAME), "utf8"));
    writeFileSync(join(finished, MANIFEST_NAME), JSON.stringify({ ...manifest, training_finished: false }));
    const lines = await train({ output_dir: finished });
    assert.ok(lines.some((line) => /unfinished lmfactory run without a checkpoint/.test(line)), lines.join("\n"));

    // A folder with other files and no model is trained into (LLaMA-Factory refuses only a finished model).
    const project = userProject();
    await train({ output_dir: project });
    assert.ok(existsSync(join(project, "adapter_model.safetensors")));
  });
});

test("lmf train with output_dir an existing file: exit 1, one line, no stack trace, the file unchanged", () => {
  const file = join(tmp(), "results.txt");
  writeFileSync(file, "keep");
  const result = spawnSync(process.execPath, ["bin/lmf.mjs", "train", "--model_name_or_path", MODEL, "--do_train", "--dataset", "alpaca", "--dataset_dir", DATA, "--template", "chatml", "--output_dir", file], { encoding: "utf8" });
  assert.equal(result.status, 1, result.stderr);
  assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
  assert.match(result.stderr, /^error: output_dir: .*results\.txt is a file, not a folder/);
  assert.equal(readFileSync(file, "utf8"), "keep");
});
