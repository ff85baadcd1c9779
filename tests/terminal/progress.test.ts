// The terminal progress bar: drawn in place only on an interactive terminal, lines scroll above it,
// NO_COLOR drops the colours, fields beyond the width are left off; the training log drives it after
// every step (not under disable_tqdm); and `lmf train` under a pseudo-terminal redraws it while
// piped output stays plain lines.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProgressBar, progressBarFor } from "../../src/terminal/progress.ts";
import { RunLog } from "../../src/train/logging.ts";
import { alpacaDataDir, tinyModelWithTokenizer } from "../fixtures/tiny_run.ts";

function fakeTerminal(columns = 100) {
  const writes: string[] = [];
  return { isTTY: true, columns, writes, write: (text: string) => writes.push(text) > 0 };
}

function withEnv<T>(values: Record<string, string | undefined>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(values).map((key) => [key, process.env[key]]));
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
  try {
    return fn();
  } finally {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

test("a bar is made only for an interactive terminal with progress on", () => {
  withEnv({ TERM: "xterm" }, () => {
    assert.ok(progressBarFor(fakeTerminal()) instanceof ProgressBar);
    assert.equal(progressBarFor({ isTTY: false, write: () => true }), null);
    assert.equal(progressBarFor(fakeTerminal(), { disabled: true }), null);
  });
  withEnv({ TERM: "dumb" }, () => assert.equal(progressBarFor(fakeTerminal()), null));
});

test("the bar redraws in place, lines scroll above it, colours follow NO_COLOR, fields fit the width", () => {
  withEnv({ TERM: "xterm", NO_COLOR: undefined }, () => {
    const terminal = fakeTerminal();
    const bar = new ProgressBar(terminal);
    bar.update("train", 12, 24, ["loss 1.2345"]);
    assert.equal(terminal.writes.length, 1);
    const drawn = terminal.writes[0]!;
    assert.ok(drawn.startsWith("\r\x1b[K"), JSON.stringify(drawn));
    assert.match(drawn, /train  50% /);
    assert.match(drawn, /12\/24  loss 1\.2345$/);
    assert.equal(drawn.match(/█/g)!.length, 12);
    assert.match(drawn, /\x1b\[32m/); // green on a colour terminal

    bar.update("train", 13, 24); // within the redraw interval: skipped
    assert.equal(terminal.writes.length, 1);
    bar.update("train", 24, 24); // complete: always drawn
    assert.match(terminal.writes[1]!, /100%/);

    bar.line("a log line");
    assert.equal(terminal.writes[2], `\r\x1b[Ka log line\n${terminal.writes[1]!.slice(4)}`);
    bar.end();
    assert.equal(terminal.writes[3], "\n");
    bar.line("after the bar");
    assert.equal(terminal.writes[4], "after the bar\n");
  });
  withEnv({ TERM: "xterm", NO_COLOR: "1" }, () => {
    const terminal = fakeTerminal(60);
    new ProgressBar(terminal).update("train", 1, 4, ["epoch 0.25", "loss 1.0000", "short"]);
    const drawn = terminal.writes[0]!;
    assert.doesNotMatch(drawn, /\x1b\[\d+m/);
    assert.ok(drawn.length - 4 <= 59, drawn);
    assert.match(drawn, /1\/4  epoch 0\.25$/); // the loss would pass the 60th column: it and the fields after it are left off
  });
});

test("the training log moves the bar each step with the last logged loss and lr; disable_tqdm leaves it alone", () => {
  withEnv({ TERM: "xterm" }, () => {
    for (const progress of [true, false]) {
      const terminal = fakeTerminal(140);
      const bar = new ProgressBar(terminal);
      const log = new RunLog(mkdtempSync(join(tmpdir(), "lmf-bar-")), (line) => bar.line(line), false, [], { progress, bar });
      log.step({ step: 1, totalSteps: 2, epoch: 0.5, loss: 1.23456, lr: 1e-3, tokensPerSecond: 10, totalTokens: 100, stepsThisRun: 1 });
      log.tick({ step: 2, totalSteps: 2, epoch: 1, tokens: 64 });
      log.close();
      const drawn = terminal.writes.filter((text) => text.startsWith("\r\x1b[Ktrain"));
      if (!progress) {
        assert.deepEqual(drawn, []);
        continue;
      }
      assert.equal(drawn.length, 1);
      assert.match(drawn[0]!, /train 100% .* 2\/2  epoch 1\.00  loss 1\.2346  lr 1\.00e-3  \d+ tokens\/s  ETA 0:00:00/);
      assert.equal(terminal.writes.at(-1), "\n");
    }
  });
});

test("lmf train redraws a bar on a terminal and prints plain lines when piped", { skip: spawnSync("script", ["--version"]).status !== 0 && "no `script` to make a pseudo-terminal" }, () => {
  const model = tinyModelWithTokenizer();
  const data = alpacaDataDir();
  const output = mkdtempSync(join(tmpdir(), "lmf-bar-run-"));
  const command = (name: string) =>
    [process.execPath, "bin/lmf.mjs", "train", "--model_name_or_path", model, "--stage", "sft", "--do_train", "true", "--finetuning_type", "lora", "--dataset", "alpaca", "--dataset_dir", data, "--template", "chatml", "--cutoff_len", "64", "--output_dir", join(output, name), "--max_steps", "4", "--logging_steps", "2", "--save_strategy", "no", "--per_device_train_batch_size", "4"];
  const env = { ...process.env, TERM: "xterm", NO_COLOR: "1" };
  const quote = (word: string) => `'${word.replaceAll("'", "'\\''")}'`;
  const tty = spawnSync("script", ["-qec", command("tty").map(quote).join(" "), "/dev/null"], { encoding: "utf8", env });
  assert.equal(tty.status, 0, tty.stdout + tty.stderr);
  assert.match(tty.stdout, /\r\x1b\[Ktrain 100% [█]+ 4\/4  epoch [\d.]+  loss [\d.]+  lr [\d.e+-]+  \d+ tokens\/s/);
  assert.match(tty.stdout, /\r\x1b\[Kpreprocessing train 100% [█]+ 12\/12/);
  assert.match(tty.stdout, /\r\x1b\[K\[2\/4\]  epoch/); // a log line printed above the bar
  const piped = spawnSync(command("piped")[0]!, command("piped").slice(1), { encoding: "utf8", env });
  assert.equal(piped.status, 0, piped.stderr);
  assert.doesNotMatch(piped.stderr, /\r|\x1b/);
  assert.match(piped.stderr, /^\[4\/4\]  epoch/m);
});
