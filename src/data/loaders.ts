// Dataset file readers: `.json` (array, or JSON lines), `.jsonl`, `.csv` (RFC 4180), `.txt` (one
// example per line, a `text` column), `.parquet` (hyparquet, one row group at a time) and folders of
// them, after LLaMA-Factory's `data/loader.py` extension map (`FILEEXT2TYPE`). Every reader is an async
// iterator over rows, so a large file is never held whole in a string; text is strict UTF-8 (a row
// with bytes that are not is a bad row, named by file, row and byte offset).
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, extname, join } from "node:path";
import { UserError } from "../errors.ts";
import { Utf8File, badUtf8Problem } from "./utf8.ts";

/** One raw row of a dataset file. `row` is 1-based; `line` is where it starts, when the format has lines. */
export interface RawRow {
  data: unknown;
  file: string;
  row: number;
  line?: number;
  /** Set when the row could not be parsed at all; the aligner turns it into a bad-row report. */
  parseError?: string;
}

export const DATA_FILE_TYPES = ["json", "jsonl", "csv", "txt", "parquet"] as const;
export type DataFileType = (typeof DATA_FILE_TYPES)[number];

export function fileTypeOf(path: string): DataFileType | null {
  const ext = extname(path).slice(1).toLowerCase();
  return (DATA_FILE_TYPES as readonly string[]).includes(ext) ? (ext as DataFileType) : null;
}

/** Where a row came from, for messages: `data/x.json row 7 (line 31)`. */
export function rowLocation(row: Pick<RawRow, "file" | "row" | "line">): string {
  return `${row.file} row ${row.row}${row.line !== undefined ? ` (line ${row.line})` : ""}`;
}

/**
 * The files behind a dataset path: the file itself, or the visible files of a folder (sorted by
 * name, not recursive, as LLaMA-Factory lists a folder), which must all be of one supported type.
 */
export function listDataFiles(path: string): string[] {
  if (!existsSync(path)) {
    throw new UserError(`file ${path} not found`, "dataset", "check `file_name` in dataset_info.json (it is relative to dataset_dir) or the dataset path");
  }
  const files = statSync(path).isDirectory()
    ? readdirSync(path)
        .filter((name) => !name.startsWith("."))
        .sort()
        .map((name) => join(path, name))
        .filter((file) => statSync(file).isFile())
    : [path];
  if (files.length === 0) throw new UserError(`folder ${path} holds no data files`, "dataset", `put ${DATA_FILE_TYPES.join("/")} files in it`);
  const types = new Set<string>();
  for (const file of files) {
    const type = fileTypeOf(file);
    if (type === null) {
      throw new UserError(
        `unsupported file type "${extname(file) || basename(file)}" for ${file}`,
        "dataset",
        `allowed file types: ${DATA_FILE_TYPES.map((type) => "." + type).join(", ")}`,
      );
    }
    types.add(type);
  }
  if (types.size > 1) {
    throw new UserError(`files in ${path} have different types (${[...types].join(", ")})`, "dataset", "file types should be identical: keep one type per folder");
  }
  return files;
}

/** Rows of several files in order; `row` numbers restart in each file. */
export async function* readDataFiles(files: readonly string[]): AsyncGenerator<RawRow> {
  for (const file of files) yield* readDataFile(file);
}

export function readDataFile(file: string): AsyncGenerator<RawRow> {
  switch (fileTypeOf(file)) {
    case "json":
      return readJson(file);
    case "jsonl":
      return readJsonLines(file);
    case "csv":
      return readCsv(file);
    case "txt":
      return readText(file);
    case "parquet":
      return readParquet(file);
    default:
      throw new UserError(`unsupported file type for ${file}`, "dataset", `allowed file types: ${DATA_FILE_TYPES.map((type) => "." + type).join(", ")}`);
  }
}

/** Lines without their terminator (`\n` or `\r\n`), with 1-based line numbers. */
async function* lines(source: Utf8File): AsyncGenerator<{ text: string; line: number }> {
  let pending = "";
  let line = 0;
  for await (const chunk of source.chunks()) {
    pending += chunk;
    let start = 0;
    for (let end = pending.indexOf("\n"); end !== -1; end = pending.indexOf("\n", start)) {
      const text = pending.slice(start, end);
      yield { text: text.endsWith("\r") ? text.slice(0, -1) : text, line: ++line };
      start = end + 1;
    }
    pending = pending.slice(start);
  }
  if (pending.length > 0) yield { text: pending.endsWith("\r") ? pending.slice(0, -1) : pending, line: ++line };
}

function parseJsonRow(text: string, source: Utf8File): { data: unknown; parseError?: string } {
  const bad = source.badByteIn(text);
  if (bad) return { data: undefined, parseError: badUtf8Problem(bad) };
  try {
    return { data: JSON.parse(text) };
  } catch (error) {
    return { data: undefined, parseError: `not valid JSON (${(error as Error).message})` };
  }
}

export async function* readJsonLines(file: string): AsyncGenerator<RawRow> {
  const source = new Utf8File(file);
  let row = 0;
  for await (const { text, line } of lines(source)) {
    if (text.trim() === "") continue;
    yield { ...parseJsonRow(text, source), file, row: ++row, line };
  }
}

const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const NEWLINE = 0x0a;

function isJsonSpace(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09;
}

/**
 * When a `.json` file is one JSON object (`{"data": [...]}`, pretty-printed), its top-level keys,
 * each with whether its value is an array; null when the file is anything else. One streaming pass
 * that keeps only the scanner state and a few short keys.
 */
async function singleObjectKeys(file: string): Promise<{ key: string; isArray: boolean }[] | null> {
  const keys: { key: string; isArray: boolean }[] = [];
  let depth = 0;
  let inString = false;
  let escaped = false;
  let closed = false;
  let key: string | null = null;
  let capture: string | null = null; // the text of a string at depth 1 (a key, when a colon follows)
  let awaitingValue = false;
  for await (const chunk of new Utf8File(file).chunks()) {
    for (let i = 0; i < chunk.length; i++) {
      const code = chunk.charCodeAt(i);
      if (inString) {
        if (escaped) escaped = false;
        else if (code === BACKSLASH) escaped = true;
        else if (code === QUOTE) inString = false;
        if (inString && capture !== null && capture.length < 64) capture += chunk[i];
        continue;
      }
      if (isJsonSpace(code)) continue;
      if (closed || (depth === 0 && code !== OPEN_BRACE)) return null;
      if (awaitingValue) {
        if (key !== null && keys.length < 8) keys.push({ key, isArray: code === OPEN_BRACKET });
        awaitingValue = false;
        key = null;
      }
      if (code === QUOTE) {
        inString = true;
        capture = depth === 1 ? "" : null;
      } else if (code === 0x3a && depth === 1) {
        key = capture;
        awaitingValue = true;
      } else if (code === OPEN_BRACE || code === OPEN_BRACKET) {
        depth++;
      } else if (code === CLOSE_BRACE || code === CLOSE_BRACKET) {
        depth--;
        if (depth === 0) closed = true;
      }
    }
  }
  return closed ? keys : null;
}

/** The message for a `.json` file that is one object rather than rows. */
async function refuseSingleObject(file: string): Promise<void> {
  const keys = await singleObjectKeys(file);
  if (keys === null) return;
  const listed = keys.map(({ key }) => `"${key}"`).join(", ");
  const arrayKey = keys.find(({ isArray }) => isArray)?.key;
  throw new UserError(
    `${file} holds one JSON object${listed ? ` (keys ${listed})` : ""}, not an array of rows`,
    "dataset",
    `LLaMA-Factory's layout is a top-level array of row objects ([{...}, {...}]) or one row object per line${arrayKey !== undefined ? `: save the array under "${arrayKey}" as the file's whole content` : ""}`,
  );
}

/**
 * A `.json` file: a top-level array, split into elements by a streaming scanner (depth and string
 * state across chunks) and parsed one element at a time; a file that starts with `{` is read as JSON
 * lines, as Hugging Face's json builder falls back to (a pretty-printed single object is named as such).
 */
export async function* readJson(file: string): AsyncGenerator<RawRow> {
  const source = new Utf8File(file);
  const chunks = source.chunks();
  let firstChunk = "";
  let leading = 0;
  for (;;) {
    const next = await chunks.next();
    if (next.done) return;
    firstChunk = next.value;
    while (leading < firstChunk.length && isJsonSpace(firstChunk.charCodeAt(leading))) leading++;
    if (leading < firstChunk.length) break;
    leading = 0;
  }
  const opener = firstChunk.charCodeAt(leading);
  const badFirst = source.badByteIn(firstChunk.slice(leading, leading + 1));
  if (badFirst) throw new UserError(`${file} is ${badUtf8Problem(badFirst)}`, "dataset");
  if (opener === OPEN_BRACE) {
    await chunks.return(undefined);
    let first = true;
    for await (const row of readJsonLines(file)) {
      // A first line that is not JSON by itself may be the start of one pretty-printed object.
      if (first && row.parseError?.startsWith("not valid JSON")) await refuseSingleObject(file);
      first = false;
      yield row;
    }
    return;
  }
  if (opener !== OPEN_BRACKET) {
    throw new UserError(`${file} is neither a JSON array nor JSON lines`, "dataset", "a .json dataset holds one array of row objects, or one object per line");
  }

  let depth = 1;
  let inString = false;
  let escaped = false;
  let closed = false;
  let line = 1;
  let row = 0;
  let pieces: string[] = [];
  let elementStarted = false;
  let elementLine = 1;

  const finishElement = (text: string): RawRow => {
    elementStarted = false;
    return { ...parseJsonRow(text, source), file, row: ++row, line: elementLine };
  };

  const scan = function* (chunk: string, from: number): Generator<RawRow> {
    let start = from;
    for (let i = from; i < chunk.length; i++) {
      const code = chunk.charCodeAt(i);
      if (code === NEWLINE) line++;
      if (closed) {
        if (!isJsonSpace(code)) throw new UserError(`${file} line ${line}: text after the closing "]" of the top-level array`, "dataset", "remove it, or split the file");
        continue;
      }
      if (inString) {
        if (escaped) escaped = false;
        else if (code === BACKSLASH) escaped = true;
        else if (code === QUOTE) inString = false;
        continue;
      }
      const endsElement = depth === 1 && (code === COMMA || code === CLOSE_BRACKET);
      if (!elementStarted && !endsElement && !isJsonSpace(code)) {
        elementStarted = true;
        elementLine = line;
      }
      if (code === QUOTE) inString = true;
      else if (endsElement) {
        pieces.push(chunk.slice(start, i));
        const text = pieces.join("");
        pieces = [];
        start = i + 1;
        if (elementStarted) yield finishElement(text);
        else if (code === COMMA) yield { data: undefined, parseError: "empty array element (a stray comma?)", file, row: ++row, line };
        if (code === CLOSE_BRACKET) closed = true;
      } else if (code === OPEN_BRACE || code === OPEN_BRACKET) depth++;
      else if (code === CLOSE_BRACE || code === CLOSE_BRACKET) depth--;
    }
    if (!closed) pieces.push(chunk.slice(start));
  };

  // The scanner starts inside the array, just after its opening bracket.
  for (let i = 0; i < leading; i++) if (firstChunk.charCodeAt(i) === NEWLINE) line++;
  yield* scan(firstChunk, leading + 1);
  for await (const chunk of chunks) yield* scan(chunk, 0);
  if (!closed) throw new UserError(`${file} ends inside the top-level JSON array (line ${line})`, "dataset", "the file is cut short or has an unclosed bracket or string; fix or regenerate it");
}

/**
 * A `.csv` file (RFC 4180: `,` separators, `"` quoting with `""` escapes, CRLF or LF, newlines
 * inside quoted fields). The first record is the header; every value is a string.
 */
export async function* readCsv(file: string): AsyncGenerator<RawRow> {
  const source = new Utf8File(file);
  let header: string[] | null = null;
  let row = 0;
  for await (const { fields, line } of csvRecords(source)) {
    const bad = source.badByteIn(fields.join(","));
    if (header === null) {
      if (bad) throw new UserError(`the header (line ${line}) is ${badUtf8Problem(bad)}`, file);
      header = fields.map((name) => name.trim());
      continue;
    }
    if (fields.length === 1 && fields[0] === "") continue;
    row++;
    if (bad) {
      yield { data: undefined, parseError: badUtf8Problem(bad), file, row, line };
      continue;
    }
    if (fields.length !== header.length) {
      yield { data: undefined, parseError: `has ${fields.length} fields but the header has ${header.length}`, file, row, line };
      continue;
    }
    const data: Record<string, string> = {};
    header.forEach((name, index) => (data[name] = fields[index]!));
    yield { data, file, row, line };
  }
}

async function* csvRecords(source: Utf8File): AsyncGenerator<{ fields: string[]; line: number }> {
  let fields: string[] = [];
  let field = "";
  let quoted = false;
  let quoteJustClosed = false;
  let skipLineFeed = false;
  let line = 1;
  let recordLine = 1;
  for await (const chunk of source.chunks()) {
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const char = chunk[i]!;
      if (quoted) {
        if (char === '"') {
          field += chunk.slice(start, i);
          start = i + 1;
          quoted = false;
          quoteJustClosed = true;
        } else if (char === "\n") line++;
        continue;
      }
      if (skipLineFeed) {
        skipLineFeed = false;
        if (char === "\n") {
          start = i + 1;
          continue;
        }
      }
      if (char === '"') {
        field += chunk.slice(start, i);
        start = i + 1;
        // A quote right after a closing quote is an escaped quote ("").
        if (quoteJustClosed) field += '"';
        quoted = true;
        quoteJustClosed = false;
        continue;
      }
      quoteJustClosed = false;
      if (char === ",") {
        fields.push(field + chunk.slice(start, i));
        field = "";
        start = i + 1;
      } else if (char === "\n" || char === "\r") {
        fields.push(field + chunk.slice(start, i));
        field = "";
        start = i + 1;
        yield { fields, line: recordLine };
        fields = [];
        line++;
        recordLine = line;
        skipLineFeed = char === "\r";
      }
    }
    field += chunk.slice(start);
  }
  if (quoted) throw new UserError(`${source.path} line ${recordLine}: a quoted field is never closed`, "dataset", 'close the quote; a quote inside a quoted field is written as ""');
  if (field !== "" || fields.length > 0) {
    fields.push(field);
    yield { fields, line: recordLine };
  }
}

/** A `.txt` file: one example per non-empty line, as a `text` column (blank lines are skipped). */
export async function* readText(file: string): AsyncGenerator<RawRow> {
  const source = new Utf8File(file);
  let row = 0;
  for await (const { text, line } of lines(source)) {
    if (text.trim() === "") continue;
    const bad = source.badByteIn(text);
    if (bad) yield { data: undefined, parseError: badUtf8Problem(bad), file, row: ++row, line };
    else yield { data: { text }, file, row: ++row, line };
  }
}

/** A `.parquet` file, one row group at a time (the file is read in slices, never whole). */
export async function* readParquet(file: string): AsyncGenerator<RawRow> {
  const { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } = await import("hyparquet");
  const buffer = await asyncBufferFromFile(file);
  let metadata;
  try {
    metadata = await parquetMetadataAsync(buffer);
  } catch (error) {
    throw new UserError(`${file} is not a readable parquet file (${(error as Error).message})`, "dataset", "check that the file is complete and really parquet");
  }
  let rowStart = 0;
  for (const group of metadata.row_groups) {
    const rowEnd = rowStart + Number(group.num_rows);
    const rows = await parquetReadObjects({ file: buffer, metadata, rowStart, rowEnd });
    for (let index = 0; index < rows.length; index++) {
      yield { data: plainValues(rows[index]), file, row: rowStart + index + 1 };
    }
    rowStart = rowEnd;
  }
}

/** Parquet int64 columns come back as bigint; rows should hold plain JSON values. */
function plainValues(value: unknown): unknown {
  if (typeof value === "bigint") return Number(value);
  if (Array.isArray(value)) return value.map(plainValues);
  if (value !== null && typeof value === "object" && !(value instanceof Uint8Array) && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [key, inner] of Object.entries(value)) out[key] = plainValues(inner);
    return out;
  }
  return value;
}
