// Faults of a two-process `lmf train`: a worker killed mid-run ends the other with a message
// naming it (through the launcher, and between workers started by hand), a worker that stops
// answering ends the other after ddp_timeout, Ctrl-C on the launcher stops every worker, and a
// master port in use is refused before anything starts.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { alpacaDataDir, tinyModelWithTokenizer } from "../../fixtures/tiny_run.ts";
import { freePort, printed, rankEnv, start } from "../../fixtures/workers.ts";

const MODEL = tinyModelWithTokenizer();
const DATA = alpacaDataDir();

/** A long pre-training run with freeze tuning (it is always stopped first), logging every step. */
function trainArgs(extra: string[] = []): string[] {
  return [
    "bin/lmf.mjs", "train", "--model_name_or_path", MODEL, "--stage", "pt", "--do_train", "--dataset", "alpaca", "--dataset_dir", DATA,
    "--finetuning_type", "freeze", "--freeze_trainable_layers", "1", "--cutoff_len", "16", "--per_device_train_batch_size", "2", "--max_steps", "5000",
    "--logging_steps", "1", "--save_strategy", "no", "--output_dir", mkdtempSync(join(tmpdir(), "lmf-ddp-fault-")), ...extra,
  ];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test("a worker killed mid-run stops the run with a message naming its rank: from the launcher, and from the other worker", async () => {
  const launched = start([...trainArgs(), "--nproc_per_node", "2"]);
  const pid = Number((await printed(launched, /worker rank 1 is pid (\d+)/))[1]);
  await printed(launched, /\[2\/5000\]/);
  process.kill(pid, "SIGKILL");
  const exit = await launched.exited;
  // The launcher names it (rank 1's exit is usually seen first; otherwise rank 0's own message names it).
  assert.notEqual(exit.code, 0);
  assert.match(launched.output(), new RegExp(`worker rank 1 \\(pid ${pid}\\) was killed by SIGKILL; stopping the other workers|failed: rank 1 \\(pid ${pid}\\) exited`));

  // Started by hand (no launcher to stop it), rank 0 learns it from the broken connection.
  const port = await freePort();
  const [zero, one] = [0, 1].map((rank) => start(trainArgs(["--ddp_timeout", "600"]), rankEnv(rank, 2, port)));
  await printed(zero!, /\[2\/5000\]/);
  one!.child.kill("SIGKILL");
  const stopped = await zero!.exited;
  assert.equal(stopped.code, 1, zero!.output());
  assert.match(zero!.output(), new RegExp(`error: distributed training: rank 0: .* failed: rank 1 \\(pid ${one!.child.pid}\\) exited`));
  assert.ok(stopped.atMs < 120_000);
});

test("ddp_timeout: a worker that stops answering ends the other after that many seconds, with a message saying so", async () => {
  const port = await freePort();
  const [zero, one] = [0, 1].map((rank) => start(trainArgs(["--ddp_timeout", "3"]), rankEnv(rank, 2, port)));
  await printed(zero!, /\[2\/5000\]/);
  one!.child.kill("SIGSTOP");
  const stoppedAt = performance.now();
  const exit = await zero!.exited;
  const waited = (performance.now() - stoppedAt) / 1000;
  one!.child.kill("SIGKILL");
  assert.equal(exit.code, 1, zero!.output());
  assert.match(zero!.output(), new RegExp(`rank 0: .* failed: rank 1 \\(pid ${one!.child.pid}\\) did not answer within ddp_timeout \\(3 s\\)`));
  assert.ok(waited >= 2.5 && waited < 60, `rank 0 stopped ${waited} s after rank 1`);
});

test("Ctrl-C on the launcher stops every worker; a master port in use is refused before any worker starts", async () => {
  const launched = start([...trainArgs(), "--nproc_per_node", "2"]);
  const pids = [0, 1].map(async (rank) => Number((await printed(launched, new RegExp(`worker rank ${rank} is pid (\\d+)`)))[1]));
  const [zero, one] = await Promise.all(pids);
  await printed(launched, /\[1\/5000\]/);
  launched.child.kill("SIGINT");
  const exit = await launched.exited;
  assert.equal(exit.code, 130, launched.output());
  assert.match(launched.output(), /lmf: SIGINT received; stopping the workers/);
  assert.ok(!alive(zero!) && !alive(one!), "a worker outlived the launcher");

  const server = createServer();
  const port = await new Promise<number>((resolve) => server.listen(0, () => resolve((server.address() as { port: number }).port)));
  try {
    const busy = start([...trainArgs(), "--nproc_per_node", "2", "--master_port", String(port)]);
    const refused = await busy.exited;
    assert.equal(refused.code, 1);
    assert.match(busy.output(), new RegExp(`error: --master_port: the master port ${port} is in use on this machine`));
    assert.doesNotMatch(busy.output(), /worker rank/);
  } finally {
    server.close();
  }
});
