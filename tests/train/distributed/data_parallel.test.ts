// Data parallelism through the trainer on two local processes (Gloo): two processes x batch b
// train exactly as one process x batch 2b (per-step losses, evaluation losses and final weights
// within 1e-6 relative, fp32, with gradient accumulation, LoRA, full and freeze), and
// ddp_find_unused_parameters decides what a trainable parameter without a gradient does.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type DataParallelJob, type DataParallelResult, runDataParallelJob } from "../../fixtures/data_parallel_job.ts";
import { makeTinyModel } from "../../fixtures/tiny_model.ts";
import { freePort, rankEnv, start } from "../../fixtures/workers.ts";

const MODEL = makeTinyModel();

/** The job run by `worldSize` workers; rank 0's result, and every worker's exit code and output. */
async function runWorkers(worldSize: number, job: DataParallelJob & { findUnusedParameters: boolean }) {
  const port = await freePort();
  const out = join(mkdtempSync(join(tmpdir(), "lmf-ddp-")), "result.json");
  const workers = Array.from({ length: worldSize }, (_, rank) => start(["tests/fixtures/data_parallel_worker.ts", JSON.stringify(job), out], rankEnv(rank, worldSize, port)));
  const exits = await Promise.all(workers.map((worker) => worker.exited));
  const codes = exits.map((exit) => exit.code);
  const outputs = workers.map((worker) => worker.output());
  const result = codes.every((code) => code === 0) ? (JSON.parse(readFileSync(out, "utf8")) as DataParallelResult) : null;
  return { codes, outputs, result };
}

function assertClose(actual: readonly number[], expected: readonly number[], what: string): void {
  assert.equal(actual.length, expected.length, `${what}: ${actual.length} values, expected ${expected.length}`);
  actual.forEach((value, i) => assert.ok(Math.abs(value - expected[i]!) <= 1e-6 * Math.abs(expected[i]!), `${what} ${i + 1}: ${value} vs ${expected[i]}`));
}

/** |a - b| / |a| (Euclidean norms) at most 1e-6, over all trainable weights together or tensor by tensor. */
function assertSameWeights(actual: Record<string, number[]>, expected: Record<string, number[]>, per: "all" | "tensor"): void {
  assert.deepEqual(Object.keys(actual), Object.keys(expected));
  let difference = 0;
  let norm = 0;
  for (const [name, values] of Object.entries(expected)) {
    const other = actual[name]!;
    const squared = values.reduce((sum, v, i) => sum + (v - other[i]!) ** 2, 0);
    const size = values.reduce((sum, v) => sum + v * v, 0);
    if (per === "tensor") assert.ok(Math.sqrt(squared) <= 1e-6 * Math.sqrt(size), `${name}: |difference| ${Math.sqrt(squared)} vs |weights| ${Math.sqrt(size)}`);
    difference += squared;
    norm += size;
  }
  assert.ok(Math.sqrt(difference) <= 1e-6 * Math.sqrt(norm), `|difference| ${Math.sqrt(difference)} vs |weights| ${Math.sqrt(norm)}`);
}

for (const mode of ["lora", "full", "freeze"] as const) {
  test(`2 processes x batch 2 train as 1 process x batch 4: per-step losses, sharded evaluation and final weights agree (fp32, accumulation 2, ${mode})`, async () => {
    // 32 rows: 8 global batches of 4 per epoch, 4 optimizer steps; 6 steps cross into the second (reshuffled) epoch.
    const job: DataParallelJob = { model: MODEL, mode, batchSize: 2, accumulation: 2, maxSteps: 6, rows: 32, evalSteps: 3, evalRows: 7 };
    const reference = runDataParallelJob({ ...job, batchSize: 4 });
    const { codes, outputs, result } = await runWorkers(2, { ...job, findUnusedParameters: false });
    assert.deepEqual(codes, [0, 0], outputs.join("\n"));
    assertClose(result!.stepLosses, reference.stepLosses, "step");
    assertClose(result!.evalLosses, reference.evalLosses, "evaluation");
    assert.equal(result!.evalLosses.length, 2);
    assertSameWeights(result!.weights, reference.weights, "all");
    // Tensor by tensor, against one process reading the very same micro-batches (batch 2 x accumulation 4):
    // against batch 4 a LoRA B matrix, which starts at zero, differs by ~1.7e-6 of its norm, as much
    // as those two single-process runs differ from each other (AdamW turns the rounding noise of
    // near-zero gradient entries, whose sums depend on the batch shapes, into lr-sized steps).
    assertSameWeights(result!.weights, runDataParallelJob({ ...job, accumulation: 4 }).weights, "tensor");
    // The run trained: the weights moved from where they started.
    const untrained = runDataParallelJob({ ...job, batchSize: 4, maxSteps: 1 });
    assert.notDeepEqual(untrained.weights, reference.weights);
  });
}

test("ddp_find_unused_parameters: false stops at a trainable parameter without a gradient, naming it; true trains it as one process does", async () => {
  const job: DataParallelJob = { model: MODEL, mode: "lora", batchSize: 2, accumulation: 1, maxSteps: 2, rows: 8, unusedParameter: true };
  const refused = await runWorkers(2, { ...job, findUnusedParameters: false });
  assert.deepEqual(refused.codes, [1, 1], refused.outputs.join("\n"));
  assert.match(refused.outputs[0]!, /1 trainable parameter\(s\) received no gradient in this step \(score\).*set ddp_find_unused_parameters: true/s);

  const allowed = await runWorkers(2, { ...job, findUnusedParameters: true });
  assert.deepEqual(allowed.codes, [0, 0], allowed.outputs.join("\n"));
  const reference = runDataParallelJob({ ...job, batchSize: 4 });
  assertClose(allowed.result!.stepLosses, reference.stepLosses, "step");
  assertSameWeights(allowed.result!.weights, reference.weights, "all");
  // Without a gradient anywhere it keeps none, so AdamW skips it (its weight decay would shrink it).
  assert.deepEqual(allowed.result!.weights.score, [1, 1, 1, 1]);
});
