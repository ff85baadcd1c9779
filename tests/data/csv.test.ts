// The one CSV parser against Python's csv module (what pandas and HF datasets read), whole and fed
// in chunks split at every position.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { CsvParser, csvRecords } from "../../src/data/csv.ts";
import { isUserError } from "../../src/errors.ts";

const CASES = [
  "a,b,c\n1,2,3\n",
  'q,"with, comma","with ""quotes""","multi\nline"\nx,y,z,w',
  'mid"quote,plain\r\nnext,"a""b"\r\n',
  '"",,""\n"x"y,z\n',
  "cr only\rsecond line\r",
  'unicode é,"日本,語"\n',
];

function python(text: string): string[][] {
  const out = execFileSync("/usr/bin/python3", ["-c", "import csv,io,json,sys; print(json.dumps(list(csv.reader(io.StringIO(sys.stdin.read(), newline='')))))"], { input: text });
  return JSON.parse(out.toString());
}

test("records equal Python's csv.reader, whole and in chunks split anywhere", () => {
  for (const text of CASES) {
    const expected = python(text).filter((row) => row.length > 0);
    assert.deepEqual(csvRecords(text, "t.csv").map((r) => r.fields), expected, JSON.stringify(text));
    for (let cut = 1; cut < text.length; cut++) {
      const parser = new CsvParser();
      const records = [...parser.push(text.slice(0, cut)), ...parser.push(text.slice(cut)), ...parser.end("t.csv")];
      assert.deepEqual(records.map((r) => r.fields), expected, `${JSON.stringify(text)} cut at ${cut}`);
    }
  }
});

test("each record knows its first line; an unclosed quote names the file and line", () => {
  assert.deepEqual(csvRecords('a\n"b\nc"\nd', "t.csv").map((r) => r.line), [1, 2, 4]);
  assert.throws(() => csvRecords('ok\n"never closed\n', "data/x.csv"), (error) => isUserError(error) && /data\/x\.csv line 2: a quoted field is never closed/.test(error.message));
});
