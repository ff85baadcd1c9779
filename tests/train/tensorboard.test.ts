// The TensorBoard event writer (src/train/tensorboard.ts) against the formats it follows: CRC32C
// check values (RFC 3720 B.4), one event record laid out by hand from event.proto/summary.proto,
// and a TFRecord + protobuf reader written here, apart from the writer, reading a real run back.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { EventFileWriter, crc32c, defaultLoggingDir, encodeEvent, maskedCrc32c, tfRecord } from "../../src/train/tensorboard.ts";
import { runTrain } from "../../src/train/workflow.ts";
import { bitwiseCrc32c, bitwiseMasked, readEventFile } from "../fixtures/tensorboard_reader.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const uint32LE = (value: number) => [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24];

test("crc32c: the standard check value and RFC 3720's iSCSI test vectors", () => {
  assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  const text = Buffer.from("In the morning, Mira went to the forest.");
  assert.equal(crc32c(text), bitwiseCrc32c(text));
  assert.equal(maskedCrc32c(text), bitwiseMasked(text));
});

test("one scalar event record, byte for byte", () => {
  // Event { wall_time: 1.5, step: 3, summary { value { tag: "a", simple_value: 0.5 } } }
  const event = [
    0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f, // field 1 fixed64: 1.5 = 0x3FF8000000000000, little-endian
    0x10, 0x03, // field 2 varint: 3
    0x2a, 0x0a, // field 5 length-delimited (Summary), 10 bytes
    0x0a, 0x08, // Summary.value (field 1), 8 bytes
    0x0a, 0x01, 0x61, // Value.tag (field 1): "a"
    0x15, 0x00, 0x00, 0x00, 0x3f, // Value.simple_value (field 2, fixed32): 0.5 = 0x3F000000
  ];
  assert.deepEqual([...encodeEvent({ wallTime: 1.5, step: 3, scalars: { a: 0.5 } })], event);
  const length = [23, 0, 0, 0, 0, 0, 0, 0];
  const expected = [...length, ...uint32LE(bitwiseMasked(Uint8Array.from(length))), ...event, ...uint32LE(bitwiseMasked(Uint8Array.from(event)))];
  assert.deepEqual([...tfRecord(Uint8Array.from(event))], expected);

  // A step above 2^32 needs more than five varint bytes; step 0 is left out as proto3 does.
  assert.deepEqual([...encodeEvent({ wallTime: 0, step: 2 ** 35 })].slice(9), [0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
  assert.deepEqual([...encodeEvent({ wallTime: 0, step: 0 })], [0x09, 0, 0, 0, 0, 0, 0, 0, 0]);
});

test("EventFileWriter: the version record first, then one event per scalar, readable after each write", () => {
  const dir = mkdtempSync(join(tmpdir(), "lmf-tb-"));
  const writer = new EventFileWriter(dir);
  assert.match(writer.path, new RegExp(`events\\.out\\.tfevents\\.\\d{10}\\.${hostname().replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.${process.pid}\\.\\d+$`));
  writer.addScalar("train/loss", 2.5, 1, 1000.25);
  // Flushed: a reader sees the scalar before the writer is closed.
  assert.deepEqual(readEventFile(writer.path).at(-1), { wallTime: 1000.25, step: 1, scalars: [["train/loss", 2.5]], texts: [] });
  writer.addScalar("eval/loss", 1 / 3, 2 ** 40);
  writer.close();
  const events = readEventFile(writer.path);
  assert.equal(events.length, 3);
  assert.equal(events[0]!.fileVersion, "brain.Event:2");
  assert.equal(events[0]!.step, 0);
  assert.ok(Math.abs(events[0]!.wallTime - Date.now() / 1000) < 60);
  assert.deepEqual(events[2]!.scalars, [["eval/loss", Math.fround(1 / 3)]]);
  assert.equal(events[2]!.step, 2 ** 40);
});

test("defaultLoggingDir: HF's output_dir/runs/<Mon DD_HH-MM-SS>_<hostname>", () => {
  assert.equal(defaultLoggingDir("out", new Date(2024, 0, 5, 14, 3, 9)), join("out", "runs", `Jan05_14-03-09_${hostname()}`));
});

test("report_to: only none, tensorboard and all are accepted", () => {
  const base = { model_name_or_path: "m", do_train: true, dataset: "d", output_dir: "o" };
  for (const report_to of ["none", "tensorboard", "all", ["tensorboard", "none"]]) {
    assert.doesNotThrow(() => parseTrainArgs({ ...base, report_to }, { onWarning: () => {} }), String(report_to));
  }
  for (const report_to of ["wandb", ["tensorboard", "wandb"]]) {
    assert.throws(() => parseTrainArgs({ ...base, report_to }, { onWarning: () => {} }), /not yet supported.*report_to/, String(report_to));
  }
});

// ---- A real run through `lmf train`'s workflow, read back with the reader above. ----

function tinyRunSetup(): { model: string; data: string } {
  const model = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null });
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(model, file), readFileSync(join("examples/demo/tiny-llama", file)));
  const data = mkdtempSync(join(tmpdir(), "lmf-tb-data-"));
  const rows = Array.from({ length: 16 }, (_, i) => ({ instruction: `Count to ${(i % 4) + 1}.`, input: "", output: ["one", "one two", "one two three", "one two three four"][i % 4] }));
  writeFileSync(join(data, "alpaca.json"), JSON.stringify(rows));
  writeFileSync(join(data, "dataset_info.json"), JSON.stringify({ alpaca: { file_name: "alpaca.json" } }));
  return { model, data };
}

const SETUP = tinyRunSetup();

async function trainWith(overrides: Record<string, unknown>): Promise<string> {
  const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-tb-run-")), "out");
  const args = parseTrainArgs(
    {
      model_name_or_path: SETUP.model,
      do_train: true,
      stage: "sft",
      template: "chatml",
      finetuning_type: "lora",
      dataset: "alpaca",
      dataset_dir: SETUP.data,
      cutoff_len: 64,
      output_dir: outputDir,
      per_device_train_batch_size: 4,
      learning_rate: 1e-2,
      max_steps: 6,
      logging_steps: 2,
      save_strategy: "no",
      lr_scheduler_type: "linear",
      ...overrides,
    },
    { onWarning: () => {} },
  );
  await runTrain(args, { print: () => {} });
  return outputDir;
}

test("a training run's scalars read back from its event file under HF's tags and steps", async () => {
  const loggingDir = join(mkdtempSync(join(tmpdir(), "lmf-tb-logs-")), "tb");
  const outputDir = await trainWith({ report_to: "tensorboard", logging_dir: loggingDir, val_size: 4, eval_strategy: "steps", eval_steps: 3 });
  const files = readdirSync(loggingDir);
  assert.equal(files.length, 1);
  assert.match(files[0]!, /^events\.out\.tfevents\.\d{10}\./);
  const events = readEventFile(join(loggingDir, files[0]!));
  assert.equal(events[0]!.fileVersion, "brain.Event:2");

  const written = events.slice(2).flatMap((event) => event.scalars.map(([tag, value]) => ({ step: event.step, tag, value })));
  // grad_norm is not a LLaMA-Factory log field; HF's log_history (trainer_state.json) has it.
  const history = JSON.parse(readFileSync(join(outputDir, "trainer_state.json"), "utf8")).log_history as { step: number; grad_norm?: number }[];
  const gradNorms = new Map(history.filter((h) => h.grad_norm !== undefined).map((h) => [h.step, h.grad_norm!]));
  const expected = readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as { current_steps: number; loss?: number; eval_loss?: number; lr?: number; epoch: number })
    .flatMap((record) => [
      ...(record.loss !== undefined ? [{ step: record.current_steps, tag: "train/loss", value: record.loss }] : []),
      ...(record.loss !== undefined && gradNorms.has(record.current_steps) ? [{ step: record.current_steps, tag: "train/grad_norm", value: gradNorms.get(record.current_steps)! }] : []),
      ...(record.lr !== undefined ? [{ step: record.current_steps, tag: "train/learning_rate", value: record.lr }] : []),
      ...(record.eval_loss !== undefined ? [{ step: record.current_steps, tag: "eval/loss", value: record.eval_loss }] : []),
      { step: record.current_steps, tag: "train/epoch", value: record.epoch },
    ]);
  assert.deepEqual(
    written.map(({ step, tag }) => `${step} ${tag}`),
    expected.map(({ step, tag }) => `${step} ${tag}`),
  );
  assert.deepEqual(
    [...new Set(written.map((s) => s.step))],
    [2, 3, 4, 6],
    "logging at 2, 4, 6 and evaluation at 3 and 6",
  );
  for (const [i, scalar] of written.entries()) {
    const reference = expected[i]!;
    // trainer_log.jsonl rounds epoch to 2 decimals and eval_loss to 4; the event file holds float32.
    const tolerance = scalar.tag === "train/epoch" ? 0.006 : scalar.tag === "eval/loss" ? 6e-5 : Math.abs(reference.value) * 1e-6;
    assert.ok(Math.abs(scalar.value - reference.value) <= tolerance, `${scalar.tag} at ${scalar.step}: ${scalar.value} vs ${reference.value}`);
  }
  assert.ok(written.every((s) => Number.isFinite(s.value)));
});

test("report_to: all writes to HF's default logging_dir; none writes no event file", async () => {
  const withAll = await trainWith({ report_to: "all", max_steps: 2 });
  const runs = readdirSync(join(withAll, "runs"));
  assert.equal(runs.length, 1);
  assert.match(runs[0]!, new RegExp(`^[A-Z][a-z]{2}\\d{2}_\\d{2}-\\d{2}-\\d{2}_`));
  const events = readEventFile(join(withAll, "runs", runs[0]!, readdirSync(join(withAll, "runs", runs[0]!))[0]!));
  assert.deepEqual(events.slice(2).map((e) => `${e.step} ${e.scalars[0]![0]}`), ["2 train/loss", "2 train/grad_norm", "2 train/learning_rate", "2 train/epoch"]);

  const withNone = await trainWith({ report_to: "none", max_steps: 2 });
  assert.ok(!readdirSync(withNone).includes("runs"));
});

test("run_name: TensorBoard's `args` text holds it (output_dir by default), as HF's TensorBoardCallback writes the training arguments; the folder stays logging_dir", async () => {
  const textOf = (dir: string) => {
    const runs = readdirSync(join(dir, "runs"));
    const events = readEventFile(join(dir, "runs", runs[0]!, readdirSync(join(dir, "runs", runs[0]!))[0]!));
    assert.deepEqual(events[1]!.texts.map(([tag]) => tag), ["args/text_summary"]);
    return JSON.parse(events[1]!.texts[0]![1]) as Record<string, unknown>;
  };
  const named = await trainWith({ report_to: "tensorboard", max_steps: 1, run_name: "fox-run" });
  assert.equal(textOf(named).run_name, "fox-run");
  assert.equal(readdirSync(join(named, "runs")).length, 1, "HF names the TensorBoard folder after the time and host, not run_name");
  const unnamed = await trainWith({ report_to: "tensorboard", max_steps: 1 });
  assert.equal(textOf(unnamed).run_name, unnamed);
});
