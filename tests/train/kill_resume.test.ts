// `lmf train` killed with SIGKILL at different moments (before its first checkpoint, while a
// checkpoint is being written, between checkpoints, during the final save, at a seeded random
// time), then run again with the same command: it always completes, and its final weights are
// byte-identical to those of a run that was never interrupted.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { alpacaDataDir, tinyModelWithTokenizer } from "../fixtures/tiny_run.ts";

const MODEL = tinyModelWithTokenizer();
const DATA = alpacaDataDir();
const WEIGHTS = "adapter_model.safetensors";

function command(outputDir: string): string[] {
  return [
    "bin/lmf.mjs", "train",
    "--model_name_or_path", MODEL, "--stage", "sft", "--do_train", "--dataset", "alpaca", "--dataset_dir", DATA, "--template", "chatml",
    "--finetuning_type", "lora", "--lora_dropout", "0.1", "--cutoff_len", "32",
    "--per_device_train_batch_size", "2", "--max_steps", "12", "--save_steps", "3", "--save_total_limit", "2", "--logging_steps", "1",
    "--output_dir", outputDir,
  ];
}

function names(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

interface KillMoment {
  /** The folder state that starts the clock (from the start of the process when absent). */
  trigger?: (entries: string[]) => boolean;
  /** How long after the trigger to kill; null: never (the run is only timed). */
  delayMs: number | null;
}

/** Runs the command, SIGKILLs it at the moment, and says what the folder held then and how long training took. */
function runAndKill(outputDir: string, moment: KillMoment): Promise<{ killed: boolean; atKill: string[]; msAfterTrigger: number }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, command(outputDir), { stdio: "ignore" });
    let atKill: string[] = [];
    let triggeredAt: number | null = moment.trigger ? null : performance.now();
    let timer: NodeJS.Timeout | undefined;
    const kill = () => {
      atKill = names(outputDir);
      child.kill("SIGKILL");
    };
    const armed = () => {
      if (moment.delayMs === null) return;
      if (moment.delayMs === 0) kill();
      else timer = setTimeout(kill, moment.delayMs);
    };
    const poll = setInterval(() => {
      if (triggeredAt !== null || !moment.trigger!(names(outputDir))) return;
      triggeredAt = performance.now();
      clearInterval(poll);
      armed();
    }, 1);
    if (triggeredAt !== null) {
      clearInterval(poll);
      armed();
    }
    child.on("exit", (_code, signal) => {
      clearInterval(poll);
      clearTimeout(timer);
      resolve({ killed: signal === "SIGKILL", atKill, msAfterTrigger: performance.now() - (triggeredAt ?? performance.now()) });
    });
  });
}

function runToEnd(outputDir: string): Buffer {
  const result = spawnSync(process.execPath, command(outputDir), { encoding: "utf8" });
  assert.equal(result.status, 0, result.stderr);
  return readFileSync(join(outputDir, WEIGHTS));
}

test("killed at any moment, the same command completes with the weights of an uninterrupted run", async () => {
  const claimed = (entries: string[]) => entries.includes("lmf_args.json");
  const referenceDir = join(mkdtempSync(join(tmpdir(), "lmf-kill-")), "out");
  const { msAfterTrigger: trainingMs } = await runAndKill(referenceDir, { trigger: claimed, delayMs: null });
  const reference = readFileSync(join(referenceDir, WEIGHTS));

  // A seeded stand-in for "random": the same moments on every run of the test, within training.
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const checkpoints = (entries: string[]) => entries.filter((name) => /^checkpoint-\d+$/.test(name));
  const moments: [string, KillMoment][] = [
    ["as soon as it claims the folder, before any checkpoint", { trigger: claimed, delayMs: 0 }],
    ["while the first checkpoint is being written", { trigger: (entries) => entries.some((name) => /^\.checkpoint-\d+\.tmp$/.test(name)), delayMs: 0 }],
    ["between checkpoints", { trigger: (entries) => entries.includes("checkpoint-6"), delayMs: 0 }],
    ["during the final save", { trigger: (entries) => entries.includes("adapter_config.json"), delayMs: 0 }],
    ["at a random time in training", { trigger: claimed, delayMs: trainingMs * random() }],
    ["at another random time in training", { trigger: claimed, delayMs: trainingMs * random() }],
  ];
  const seen: string[] = [];
  for (const [name, moment] of moments) {
    const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-kill-")), "out");
    const { killed, atKill } = await runAndKill(outputDir, moment);
    const temporary = atKill.some((entry) => entry.endsWith(".tmp")) ? " and a temporary folder" : "";
    seen.push(`${name}: ${killed ? `killed with ${checkpoints(atKill).join(", ") || "no checkpoint"}${temporary}` : "finished first"}`);
    if (name.startsWith("as soon as")) assert.deepEqual(checkpoints(atKill), [], "killed before the first checkpoint");
    assert.ok(runToEnd(outputDir).equals(reference), `${name}: the final weights differ from the uninterrupted run's`);
    assert.deepEqual(names(outputDir).filter((entry) => entry.endsWith(".tmp")), [], `${name}: temporary entries were left`);
  }
  console.log(seen.join("\n"));
});
