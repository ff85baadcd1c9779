// `report_to: tensorboard`: TensorBoard event files written without dependencies, as HF's
// TensorBoardCallback does through torch's SummaryWriter. Follows TFRecord framing
// (tensorflow/core/lib/io/record_writer.cc), CRC32C (RFC 3720), and the `Event` / `Summary`
// messages of tensorflow/core/util/event.proto and tensorflow/core/framework/summary.proto.
import { closeSync, mkdirSync, openSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { RunReporter } from "./logging.ts";

/** CRC32C (Castagnoli), reflected polynomial 0x82F63B78, one table lookup per byte. */
const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** TFRecord stores a rotated-and-offset CRC, so that CRCs of data that embeds CRCs stay strong. */
export function maskedCrc32c(bytes: Uint8Array): number {
  const crc = crc32c(bytes);
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;
}

/** One TFRecord: uint64 length, masked CRC of the length, the data, masked CRC of the data (all little-endian). */
export function tfRecord(data: Uint8Array): Buffer {
  const record = Buffer.alloc(8 + 4 + data.length + 4);
  record.writeBigUInt64LE(BigInt(data.length), 0);
  record.writeUInt32LE(maskedCrc32c(record.subarray(0, 8)), 8);
  record.set(data, 12);
  record.writeUInt32LE(maskedCrc32c(data), 12 + data.length);
  return record;
}

// Protobuf wire format: a key is (field number << 3 | wire type).
const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;

function varint(value: number): number[] {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`cannot encode ${value} as an unsigned varint`);
  const bytes: number[] = [];
  // Division instead of `>>>`, which would truncate values above 2^32.
  while (value >= 0x80) {
    bytes.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  bytes.push(value);
  return bytes;
}

const key = (field: number, wireType: number) => varint((field << 3) | wireType);

function lengthDelimited(field: number, payload: Uint8Array): number[] {
  return [...key(field, LENGTH_DELIMITED), ...varint(payload.length), ...payload];
}

function double(field: number, value: number): number[] {
  const bytes = Buffer.alloc(8);
  bytes.writeDoubleLE(value);
  return [...key(field, FIXED64), ...bytes];
}

function float(field: number, value: number): number[] {
  const bytes = Buffer.alloc(4);
  bytes.writeFloatLE(value);
  return [...key(field, FIXED32), ...bytes];
}

export interface EventFields {
  wallTime: number;
  step?: number;
  fileVersion?: string;
  /** Scalars of one `Summary`, tag -> value, each a `Summary.Value` with `simple_value`. */
  scalars?: Record<string, number>;
  /** One text summary, as torch's `add_text` writes it (tag `<tag>/text_summary`). */
  text?: { tag: string; value: string };
}

const DT_STRING = 7;

/**
 * torch.utils.tensorboard.summary.text: `Summary.Value { tag = 1; metadata = 9; tensor = 8 }` with
 * `SummaryMetadata { plugin_data = 1 { plugin_name = 1: "text" } }` and
 * `TensorProto { dtype = 1: DT_STRING; tensor_shape = 2 { dim = 2 { size = 1: 1 } }; string_val = 8 }`.
 */
function textValue(tag: string, value: string): number[] {
  const metadata = lengthDelimited(1, Uint8Array.from(lengthDelimited(1, Buffer.from("text", "utf8"))));
  const shape = lengthDelimited(2, Uint8Array.from([...key(1, VARINT), ...varint(1)]));
  const tensor = [...key(1, VARINT), ...varint(DT_STRING), ...lengthDelimited(2, Uint8Array.from(shape)), ...lengthDelimited(8, Buffer.from(value, "utf8"))];
  return [...lengthDelimited(1, Buffer.from(`${tag}/text_summary`, "utf8")), ...lengthDelimited(9, Uint8Array.from(metadata)), ...lengthDelimited(8, Uint8Array.from(tensor))];
}

/**
 * `Event { double wall_time = 1; int64 step = 2; oneof what { string file_version = 3; Summary summary = 5; } }`,
 * `Summary { repeated Value value = 1; }`, `Summary.Value { string tag = 1; oneof value { float simple_value = 2; } }`.
 * Proto3 leaves out a zero step; a oneof member is written even when zero.
 */
export function encodeEvent(event: EventFields): Uint8Array {
  const bytes = double(1, event.wallTime);
  if (event.step) bytes.push(...key(2, VARINT), ...varint(event.step));
  if (event.fileVersion !== undefined) bytes.push(...lengthDelimited(3, Buffer.from(event.fileVersion, "utf8")));
  if (event.scalars) {
    const values = Object.entries(event.scalars).flatMap(([tag, value]) =>
      lengthDelimited(1, Uint8Array.from([...lengthDelimited(1, Buffer.from(tag, "utf8")), ...float(2, value)])),
    );
    bytes.push(...lengthDelimited(5, Uint8Array.from(values)));
  }
  if (event.text) bytes.push(...lengthDelimited(5, Uint8Array.from(lengthDelimited(1, Uint8Array.from(textValue(event.text.tag, event.text.value))))));
  return Uint8Array.from(bytes);
}

/** Distinguishes writers one process opens within the same second, like tensorboard's `_global_uid`. */
let writersOpened = 0;

/** `events.out.tfevents.<unix seconds>.<hostname>.<pid>.<n>`, the name torch's SummaryWriter gives its file. */
export function eventFileName(now = new Date()): string {
  const seconds = String(Math.floor(now.getTime() / 1000)).padStart(10, "0");
  return `events.out.tfevents.${seconds}.${hostname()}.${process.pid}.${writersOpened++}`;
}

/** HF's default `logging_dir`: `<output_dir>/runs/<Mon DD_HH-MM-SS>_<hostname>` (local time). */
export function defaultLoggingDir(outputDir: string, now = new Date()): string {
  const month = now.toLocaleString("en-US", { month: "short" });
  const two = (n: number) => String(n).padStart(2, "0");
  const stamp = `${month}${two(now.getDate())}_${two(now.getHours())}-${two(now.getMinutes())}-${two(now.getSeconds())}`;
  return join(outputDir, "runs", `${stamp}_${hostname()}`);
}

/** An event file: the version record first, then one event per scalar; every record reaches the OS at once. */
export class EventFileWriter {
  readonly path: string;
  private fd: number | null;

  constructor(logDir: string) {
    mkdirSync(logDir, { recursive: true });
    this.path = join(logDir, eventFileName());
    this.fd = openSync(this.path, "w");
    this.write({ wallTime: Date.now() / 1000, fileVersion: "brain.Event:2" });
  }

  addScalar(tag: string, value: number, step: number, wallTime = Date.now() / 1000): void {
    this.write({ wallTime, step, scalars: { [tag]: value } });
  }

  addText(tag: string, value: string, step = 0, wallTime = Date.now() / 1000): void {
    this.write({ wallTime, step, text: { tag, value } });
  }

  close(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
  }

  private write(event: EventFields): void {
    if (this.fd === null) throw new Error(`event file ${this.path} is closed`);
    // writeSync leaves nothing buffered in this process: a running TensorBoard sees each step as it lands.
    writeSync(this.fd, tfRecord(encodeEvent(event)));
  }
}

/** HF's `rewrite_logs`: `eval_loss` -> `eval/loss`, `test_*` -> `test/*`, anything else -> `train/<name>`. */
export function tensorBoardTag(name: string): string {
  for (const split of ["eval", "test"]) if (name.startsWith(`${split}_`)) return `${split}/${name.slice(split.length + 1)}`;
  return `train/${name}`;
}

/**
 * The reporter RunLog calls with HF's log keys (`loss`, `learning_rate`, `epoch`, `grad_norm`, `eval_loss`).
 * `args`: the training arguments as JSON, written first as the `args` text, as HF's
 * TensorBoardCallback.on_train_begin does (where TensorBoard shows `run_name`).
 */
export function tensorBoardReporter(logDir: string, options: { args?: string } = {}): RunReporter & { readonly path: string } {
  const writer = new EventFileWriter(logDir);
  if (options.args !== undefined) writer.addText("args", options.args);
  return {
    path: writer.path,
    scalars(step, values) {
      const wallTime = Date.now() / 1000;
      for (const [name, value] of Object.entries(values)) writer.addScalar(tensorBoardTag(name), value, step, wallTime);
    },
    close: () => writer.close(),
  };
}
