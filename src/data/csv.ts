// CSV records as Python's csv module reads them (what pandas and HF datasets load):
// `,` separators, `"` quoting at a field's start with `""` escapes, newlines inside quotes, CRLF,
// LF or CR; a quote inside an unquoted field is an ordinary character. Fed in chunks, so a large
// file streams; one parser for datasets (src/data/loaders.ts) and benchmarks (src/eval/).
import { UserError } from "../errors.ts";

export interface CsvRecord {
  fields: string[];
  /** The line the record starts on (1-based). */
  line: number;
}

export class CsvParser {
  private fields: string[] = [];
  private field = "";
  private quoted = false;
  /** Inside quotes, a quote was just read: an escaped quote if another follows, else the closing one. */
  private quotePending = false;
  private atFieldStart = true;
  private skipLineFeed = false;
  private line = 1;
  private recordLine = 1;

  /** The records completed by this chunk. */
  push(chunk: string): CsvRecord[] {
    const records: CsvRecord[] = [];
    let start = 0; // the run chunk[start, i) is copied into the field at the next boundary
    for (let i = 0; i < chunk.length; i++) {
      const char = chunk[i]!;
      if (this.skipLineFeed) {
        this.skipLineFeed = false;
        if (char === "\n") {
          start = i + 1;
          continue;
        }
      }
      if (this.quoted) {
        if (this.quotePending) {
          this.quotePending = false;
          if (char === '"') {
            this.field += '"';
            start = i + 1;
            continue;
          }
          this.quoted = false; // the quote closed the field; this character is read unquoted
        } else {
          if (char === '"') {
            this.field += chunk.slice(start, i);
            start = i + 1;
            this.quotePending = true;
          } else if (char === "\n") this.line++;
          continue;
        }
      }
      if (char === '"' && this.atFieldStart) {
        start = i + 1;
        this.quoted = true;
        this.atFieldStart = false;
        continue;
      }
      if (char === ",") {
        this.fields.push(this.field + chunk.slice(start, i));
        this.field = "";
        start = i + 1;
        this.atFieldStart = true;
      } else if (char === "\n" || char === "\r") {
        this.fields.push(this.field + chunk.slice(start, i));
        records.push({ fields: this.fields, line: this.recordLine });
        this.fields = [];
        this.field = "";
        start = i + 1;
        this.atFieldStart = true;
        this.line++;
        this.recordLine = this.line;
        this.skipLineFeed = char === "\r";
      } else {
        this.atFieldStart = false;
      }
    }
    this.field += chunk.slice(start);
    return records;
  }

  /** The last record (a file may end without a newline); an unclosed quote is an error in `where`. */
  end(where: string, argument = "dataset"): CsvRecord[] {
    if (this.quoted && !this.quotePending) {
      throw new UserError(`${where} line ${this.recordLine}: a quoted field is never closed`, argument, 'close the quote; a quote inside a quoted field is written as ""');
    }
    if (this.field === "" && this.fields.length === 0 && !this.quoted) return [];
    this.fields.push(this.field);
    const record = { fields: this.fields, line: this.recordLine };
    this.fields = [];
    this.field = "";
    this.quoted = false;
    this.quotePending = false;
    return [record];
  }
}

/** Every record of a whole text. */
export function csvRecords(text: string, where: string, argument?: string): CsvRecord[] {
  const parser = new CsvParser();
  return [...parser.push(text), ...parser.end(where, argument)];
}
