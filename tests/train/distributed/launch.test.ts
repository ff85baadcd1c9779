// `lmf train` on two local processes: the same run launched by `--nproc_per_node 2`, worker by
// worker with torchrun's variables, and as two "machines" (two launchers with --nnodes 2 on the
// loopback address) writes identical files, equal to one process with twice the batch; rank 0
// alone writes; a distributed run killed after a checkpoint resumes to the same weights; and
// LLaMA-Factory's full-SFT example with its DeepSpeed ZeRO-3 config runs unchanged but for the
// model and its size.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadSafetensors } from "../../../src/torch/index.ts";
import { tinyModelWithTokenizer } from "../../fixtures/tiny_run.ts";
import { freePort, printed, rankEnv, start } from "../../fixtures/workers.ts";

const MODEL = tinyModelWithTokenizer();
const WEIGHTS = "adapter_model.safetensors";

/** 20 alpaca rows: val_size 0.2 leaves 16 to train on, 4 global batches of 4 per epoch. */
function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "lmf-ddp-data-"));
  const answers = ["one", "one two", "one two three", "one two three four"];
  const rows = Array.from({ length: 20 }, (_, i) => ({ instruction: `Count to ${(i % 4) + 1}, friend ${i}.`, input: "", output: answers[i % 4] }));
  writeFileSync(join(dir, "alpaca.json"), JSON.stringify(rows));
  writeFileSync(join(dir, "dataset_info.json"), JSON.stringify({ alpaca: { file_name: "alpaca.json" } }));
  return dir;
}
const DATA = dataDir();

const tmp = () => mkdtempSync(join(tmpdir(), "lmf-ddp-run-"));

/** LoRA SFT with accumulation 2, evaluation every 2 steps, a checkpoint every 2 steps. */
function trainArgs(outputDir: string, batch: number): string[] {
  return [
    "train", "--model_name_or_path", MODEL, "--stage", "sft", "--do_train", "--dataset", "alpaca", "--dataset_dir", DATA, "--template", "chatml",
    "--finetuning_type", "lora", "--cutoff_len", "32", "--per_device_train_batch_size", String(batch), "--gradient_accumulation_steps", "2",
    "--max_steps", "6", "--logging_steps", "1", "--save_steps", "2", "--learning_rate", "5e-3",
    "--val_size", "0.2", "--eval_strategy", "steps", "--eval_steps", "2", "--per_device_eval_batch_size", "1", "--output_dir", outputDir,
  ];
}

async function succeeds(...runs: ReturnType<typeof start>[]): Promise<void> {
  const exits = await Promise.all(runs.map((run) => run.exited));
  exits.forEach((exit, i) => assert.equal(exit.code, 0, runs[i]!.output()));
}

function logged(outputDir: string): { loss?: number; eval_loss?: number; current_steps: number }[] {
  return readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8").trim().split("\n").map((line) => JSON.parse(line));
}

/** The run launched by `--nproc_per_node 2`, started once for the tests that compare with it. */
let launchedRun: Promise<string> | null = null;
function launchedOnce(): Promise<string> {
  launchedRun ??= (async () => {
    const outputDir = tmp();
    await succeeds(start(["bin/lmf.mjs", ...trainArgs(outputDir, 2), "--nproc_per_node", "2"]));
    return outputDir;
  })();
  return launchedRun;
}

function weights(outputDir: string): Record<string, number[]> {
  return Object.fromEntries(Object.entries(loadSafetensors(join(outputDir, WEIGHTS))).map(([name, tensor]) => [name, tensor.toFlatArray()]));
}

test("one run launched by --nproc_per_node 2, worker by worker with torchrun's variables, and as two machines (--nnodes 2) writes identical files, as one process with twice the batch trains", async () => {
  const [byHand, twoNodes, single] = [tmp(), tmp(), tmp()];
  const launched = await launchedOnce();
  const port = await freePort();
  await succeeds(...[0, 1].map((rank) => start(["bin/lmf.mjs", ...trainArgs(byHand, 2)], rankEnv(rank, 2, port))));
  const nodePort = await freePort();
  const node = (rank: number) => start(["bin/lmf.mjs", ...trainArgs(twoNodes, 2), "--nnodes", "2", "--node_rank", String(rank), "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", String(nodePort)]);
  await succeeds(node(0), node(1));
  await succeeds(start(["bin/lmf.mjs", ...trainArgs(single, 4)]));

  const reference = readFileSync(join(launched, WEIGHTS));
  assert.ok(readFileSync(join(byHand, WEIGHTS)).equals(reference), "worker by worker");
  assert.ok(readFileSync(join(twoNodes, WEIGHTS)).equals(reference), "two machines");
  assert.deepEqual(logged(byHand).map(({ loss, eval_loss }) => [loss, eval_loss]), logged(launched).map(({ loss, eval_loss }) => [loss, eval_loss]));

  // Rank 0 alone wrote: one log line per step and evaluation, the files of a one-process run, every rank's RNG state in the checkpoints.
  const log = logged(launched);
  assert.deepEqual(log.map((entry) => entry.current_steps), [1, 2, 2, 3, 4, 4, 5, 6, 6]);
  assert.deepEqual(readdirSync(launched).sort(), readdirSync(single).sort());
  assert.deepEqual(readdirSync(join(launched, "checkpoint-6")).filter((name) => name.startsWith("rng_state")).sort(), ["rng_state_0.safetensors", "rng_state_1.safetensors"]);

  // The same losses, evaluation losses (the logs' 4 decimals) and weights (1e-6 of their norm) as one process reading batches of 4.
  const one = logged(single);
  log.forEach((entry, i) => {
    for (const key of ["loss", "eval_loss"] as const) {
      if (entry[key] === undefined) continue;
      assert.ok(Math.abs(entry[key]! - one[i]![key]!) <= 1.5e-4, `line ${i + 1} ${key}: ${entry[key]} vs ${one[i]![key]}`);
    }
  });
  const [a, b] = [weights(launched), weights(single)];
  let difference = 0;
  let norm = 0;
  for (const [name, values] of Object.entries(b)) {
    values.forEach((v, i) => {
      difference += (v - a[name]![i]!) ** 2;
      norm += v * v;
    });
  }
  assert.ok(Math.sqrt(difference) <= 1e-6 * Math.sqrt(norm), `|difference| ${Math.sqrt(difference)} vs |weights| ${Math.sqrt(norm)}`);
});

test("a distributed run killed after a checkpoint resumes with the same command and ends with the weights of an uninterrupted run", async () => {
  const interrupted = tmp();
  const first = start(["bin/lmf.mjs", ...trainArgs(interrupted, 2), "--nproc_per_node", "2"]);
  await printed(first, /\[3\/6\]/);
  first.child.kill("SIGTERM");
  const stopped = await first.exited;
  assert.equal(stopped.code, 143, first.output());
  assert.ok(readdirSync(interrupted).includes("checkpoint-2"), readdirSync(interrupted).join(", "));
  assert.ok(!readdirSync(interrupted).includes(WEIGHTS), "the run was stopped before its end");
  const again = start(["bin/lmf.mjs", ...trainArgs(interrupted, 2), "--nproc_per_node", "2"]);
  await succeeds(again);
  assert.match(again.output(), /resuming training from .*checkpoint-[24]/);
  assert.ok(readFileSync(join(interrupted, WEIGHTS)).equals(readFileSync(join(await launchedOnce(), WEIGHTS))), "resumed weights differ");
});

test("LLaMA-Factory's full-SFT example with deepspeed: examples/deepspeed/ds_z3_config.json runs on two processes unchanged but for model and size, with one notice", async () => {
  const outputDir = tmp();
  const run = start([
    "bin/lmf.mjs", "train", "examples/train_full/qwen3_full_sft.yaml", `model_name_or_path=${MODEL}`, `output_dir=${outputDir}`,
    "max_samples=8", "cutoff_len=32", "max_steps=2", "preprocessing_num_workers=1", "--nproc_per_node", "2",
  ]);
  await succeeds(run);
  assert.equal(run.output().match(/deepspeed \(ZeRO stage 3\): lmfactory runs the same data-parallel training without DeepSpeed/g)?.length, 1, run.output());
  assert.match(run.output(), /batch 1 x accumulation 2 x 2 processes = 4 per step/);
  assert.ok(readdirSync(outputDir).includes("model.safetensors"));
  // A value that disagrees with the arguments stops the run before anything is written.
  const refused = start(["bin/lmf.mjs", "train", "examples/train_full/qwen3_full_sft.yaml", `model_name_or_path=${MODEL}`, `output_dir=${join(outputDir, "refused")}`, "max_steps=2", `deepspeed={"gradient_clipping": 0.5}`]);
  const exit = await refused.exited;
  assert.equal(exit.code, 1);
  assert.match(refused.output(), /deepspeed: the DeepSpeed config disagrees with the training arguments:\n- ds gradient_clipping=0.5 vs hf max_grad_norm=1/);
  assert.ok(!readdirSync(outputDir).includes("refused"));
});
