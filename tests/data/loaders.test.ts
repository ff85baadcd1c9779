// Dataset file readers: streaming JSON arrays (across chunk edges), JSON lines, RFC 4180 CSV,
// text lines, folders, and parquet through hyparquet on a file written by the fixture below.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { UserError } from "../../src/errors.ts";
import { listDataFiles, type RawRow, readDataFile, readDataFiles } from "../../src/data/loaders.ts";
import { writeParquet } from "./parquet-fixture.ts";

const dir = mkdtempSync(join(tmpdir(), "lmf-loaders-"));
function write(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}
async function collect(rows: AsyncIterable<RawRow>): Promise<RawRow[]> {
  const out: RawRow[] = [];
  for await (const row of rows) out.push(row);
  return out;
}

describe("json", () => {
  test("a pretty-printed array gives one row per element with its line", async () => {
    const path = write("a.json", '[\n  {"a": "x, ]} \\" y"},\n  {"a": [1, {"b": 2}]},\n  "str"\n]\n');
    const rows = await collect(readDataFile(path));
    assert.deepEqual(
      rows.map((row) => [row.data, row.row, row.line]),
      [
        [{ a: 'x, ]} " y' }, 1, 2],
        [{ a: [1, { b: 2 }] }, 2, 3],
        ["str", 3, 4],
      ],
    );
  });

  test("a large array streams across chunk edges with multi-byte text intact", async () => {
    const items = Array.from({ length: 3000 }, (_, index) => ({ instruction: `问题 ${index} ${"é".repeat(index % 500)}`, output: `[${index}]` }));
    const path = write("big.json", JSON.stringify(items, null, 1));
    const rows = await collect(readDataFile(path));
    assert.equal(rows.length, 3000);
    assert.deepEqual(rows.map((row) => row.data), items);
  });

  test("an object-per-line .json falls back to JSON lines; a bad line is a parse error row", async () => {
    const path = write("lines.json", '{"a": 1}\n\n{"a": 2\n{"a": 3}\n');
    const rows = await collect(readDataFile(path));
    assert.equal(rows.length, 3);
    assert.deepEqual(rows[0]!.data, { a: 1 });
    assert.match(rows[1]!.parseError!, /not valid JSON/);
    assert.equal(rows[1]!.line, 3);
    assert.deepEqual(rows[2]!.data, { a: 3 });
  });

  test("a truncated array is a UserError naming the file", async () => {
    const path = write("cut.json", '[{"a": 1}, {"a": ');
    await assert.rejects(collect(readDataFile(path)), (error: unknown) => error instanceof UserError && /cut\.json ends inside/.test(error.message));
  });

  test("an empty array and a trailing comma are fine; a stray comma is a bad row", async () => {
    assert.equal((await collect(readDataFile(write("empty.json", " [ ] ")))).length, 0);
    const rows = await collect(readDataFile(write("commas.json", '[{"a":1},,{"a":2},]')));
    assert.deepEqual(rows.map((row) => row.parseError ?? row.data), [{ a: 1 }, "empty array element (a stray comma?)", { a: 2 }]);
  });
});

test("jsonl skips blank lines and keeps line numbers", async () => {
  const path = write("a.jsonl", '{"text": "one"}\r\n\r\n{"text": "two"}');
  const rows = await collect(readDataFile(path));
  assert.deepEqual(rows.map((row) => [row.data, row.row, row.line]), [
    [{ text: "one" }, 1, 1],
    [{ text: "two" }, 2, 3],
  ]);
});

describe("csv", () => {
  test("quoted fields with commas, doubled quotes and newlines; CRLF; header", async () => {
    const path = write("a.csv", '\ufeffinstruction,input,output\r\n"Say ""hi""","a,b","line1\nline2"\r\nplain,,x\r\n');
    const rows = await collect(readDataFile(path));
    assert.deepEqual(rows.map((row) => row.data), [
      { instruction: 'Say "hi"', input: "a,b", output: "line1\nline2" },
      { instruction: "plain", input: "", output: "x" },
    ]);
    assert.deepEqual(rows.map((row) => row.line), [2, 4]);
  });

  test("a record with the wrong field count is a bad row; an unclosed quote is an error", async () => {
    const rows = await collect(readDataFile(write("b.csv", "a,b\n1,2\n1,2,3\n")));
    assert.match(rows[1]!.parseError!, /3 fields but the header has 2/);
    await assert.rejects(collect(readDataFile(write("c.csv", 'a\n"open\n'))), UserError);
  });
});

test("txt gives a text column per non-empty line", async () => {
  const rows = await collect(readDataFile(write("a.txt", "first doc\n\nsecond doc\r\n")));
  assert.deepEqual(rows.map((row) => [row.data, row.line]), [
    [{ text: "first doc" }, 1],
    [{ text: "second doc" }, 3],
  ]);
});

describe("folders", () => {
  test("a folder reads its files in name order; mixed types and unknown types are refused", async () => {
    const folder = join(dir, "shards");
    mkdirSync(folder);
    writeFileSync(join(folder, "b.jsonl"), '{"text": "b"}\n');
    writeFileSync(join(folder, "a.jsonl"), '{"text": "a"}\n');
    writeFileSync(join(folder, ".hidden"), "x");
    const rows = await collect(readDataFiles(listDataFiles(folder)));
    assert.deepEqual(rows.map((row) => (row.data as { text: string }).text), ["a", "b"]);
    writeFileSync(join(folder, "c.csv"), "text\nc\n");
    assert.throws(() => listDataFiles(folder), /different types/);
    assert.throws(() => listDataFiles(write("x.arrow", "")), /allowed file types/);
    assert.throws(() => listDataFiles(join(dir, "missing.json")), /not found/);
  });
});

describe("parquet", () => {
  test("a parquet file written by the fixture writer reads back row by row, over row groups", async () => {
    const path = join(dir, "a.parquet");
    const rows = Array.from({ length: 25 }, (_, index) => ({ instruction: `q${index} é`, output: `a${index}`, score: index, keep: index % 2 === 0 }));
    writeParquet(path, rows, { rowGroupSize: 10 });
    const read = await collect(readDataFile(path));
    assert.deepEqual(read.map((row) => row.data), rows);
    assert.deepEqual(read.map((row) => row.row), rows.map((_, index) => index + 1));
  });

  test("a corrupt parquet file is a UserError", async () => {
    await assert.rejects(collect(readDataFile(write("bad.parquet", "not parquet at all"))), UserError);
  });
});

describe("bytes that are not UTF-8", () => {
  /** A file of JSON lines with `bad` bytes put into the text of the given rows (1-based); returns the path and where each went. */
  function linesWithBadBytes(name: string, rows: number, badRows: Record<number, number[]>): { path: string; offsets: Record<number, number> } {
    const parts: Buffer[] = [];
    const offsets: Record<number, number> = {};
    let length = 0;
    for (let row = 1; row <= rows; row++) {
      const [head, tail] = [Buffer.from(`{"text": "row ${row} `), Buffer.from(' é"}\n')];
      const bad = badRows[row] ? Buffer.from(badRows[row]!) : Buffer.alloc(0);
      if (badRows[row]) offsets[row] = length + head.length;
      for (const part of [head, bad, tail]) {
        parts.push(part);
        length += part.length;
      }
    }
    const path = join(dir, name);
    writeFileSync(path, Buffer.concat(parts));
    return { path, offsets };
  }

  test("json lines: each row with a bad byte is a bad row naming its byte offset; the others read as before", async () => {
    const { path, offsets } = linesWithBadBytes("latin1.jsonl", 5, { 2: [0xe9], 4: [0xff, 0xfe] });
    const rows = await collect(readDataFile(path));
    assert.deepEqual(rows.map((row) => row.parseError === undefined), [true, false, true, false, true]);
    assert.match(rows[1]!.parseError!, new RegExp(`not valid UTF-8 at byte offset ${offsets[2]} \\(byte 0xE9\\)`));
    assert.match(rows[3]!.parseError!, new RegExp(`byte offset ${offsets[4]} \\(byte 0xFF\\)`));
    assert.deepEqual(rows[2]!.data, { text: "row 3  é" });
  });

  test("ill-formed sequences (overlong, surrogate, above U+10FFFF, cut short at the end) are refused at their first byte", async () => {
    for (const sequence of [[0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80]]) {
      const { path, offsets } = linesWithBadBytes("ill.jsonl", 2, { 1: sequence });
      const rows = await collect(readDataFile(path));
      assert.match(rows[0]!.parseError ?? "", new RegExp(`byte offset ${offsets[1]} `), `sequence ${sequence.map((b) => b.toString(16))}`);
      assert.equal(rows[1]!.parseError, undefined);
    }
    const cut = join(dir, "cut.txt");
    writeFileSync(cut, Buffer.concat([Buffer.from("fine\nends with "), Buffer.from([0xf0, 0x9f, 0x98])]));
    const rows = await collect(readDataFile(cut));
    assert.match(rows[1]!.parseError!, /byte offset 15 \(byte 0xF0\)/);
  });

  test("valid text is untouched: U+FFFD written in the file, a \\udfff escape, a 4-byte character across the 1 MiB chunk edge", async () => {
    const edge = 1 << 20;
    const filler = "a".repeat(edge - 2 - '{"text": "'.length);
    const text = `${filler}😀 and � and \\udfff`;
    const path = join(dir, "edge.jsonl");
    writeFileSync(path, `{"text": "${text}"}\n{"text": "next"}\n`);
    assert.equal(Buffer.from(`{"text": "${filler}`).length, edge - 2, "the emoji straddles the chunk edge");
    const rows = await collect(readDataFile(path));
    assert.deepEqual(rows.map((row) => row.parseError), [undefined, undefined]);
    assert.equal((rows[0]!.data as { text: string }).text, `${filler}😀 and � and \udfff`);
  });

  test("json arrays, csv and txt name the row too; a bad csv header stops the file", async () => {
    const json = join(dir, "bad.json");
    const before = Buffer.from('[{"a": "ok"},\n {"a": "x');
    writeFileSync(json, Buffer.concat([before, Buffer.from([0xff]), Buffer.from('"}]')]));
    const jsonRows = await collect(readDataFile(json));
    assert.equal(jsonRows[0]!.parseError, undefined);
    assert.match(jsonRows[1]!.parseError!, new RegExp(`byte offset ${before.length} \\(byte 0xFF\\)`));
    assert.equal(jsonRows[1]!.line, 2);

    const csv = join(dir, "bad.csv");
    writeFileSync(csv, Buffer.concat([Buffer.from("q,a\nfine,yes\n"), Buffer.from([0xe9]), Buffer.from(",no\n")]));
    const csvRows = await collect(readDataFile(csv));
    assert.deepEqual(csvRows.map((row) => row.parseError?.match(/byte offset (\d+)/)?.[1] ?? null), [null, "13"]);

    const header = join(dir, "header.csv");
    writeFileSync(header, Buffer.concat([Buffer.from("q,"), Buffer.from([0xe9]), Buffer.from("\nx,y\n")]));
    await assert.rejects(collect(readDataFile(header)), (error: unknown) => error instanceof UserError && /header \(line 1\) is not valid UTF-8 at byte offset 2/.test(error.message));

    const txt = join(dir, "bad.txt");
    writeFileSync(txt, Buffer.concat([Buffer.from("one\ntw"), Buffer.from([0xff]), Buffer.from("o\nthree\n")]));
    const txtRows = await collect(readDataFile(txt));
    assert.deepEqual(txtRows.map((row) => row.parseError === undefined), [true, false, true]);
  });
});

test("a .json file that is one object, not rows, says so and where the rows are", async () => {
  const path = write("wrapped.json", JSON.stringify({ version: 2, data: [{ instruction: "a", output: "b" }] }, null, 2));
  await assert.rejects(collect(readDataFile(path)), (error: unknown) => {
    assert.ok(error instanceof UserError);
    assert.match(error.message, /wrapped\.json holds one JSON object \(keys "version", "data"\), not an array of rows/);
    assert.match(error.message, /save the array under "data" as the file's whole content/);
    return true;
  });
  // JSON lines whose first line is broken are still read as lines.
  const lines = await collect(readDataFile(write("broken-first.json", '{"a": \n{"a": 2}\n')));
  assert.deepEqual(lines.map((row) => row.parseError === undefined), [false, true]);
});
