// Strict UTF-8 reading of a dataset file, chunk by chunk. Bytes that are not UTF-8 are not replaced
// by U+FFFD and trained on: each one becomes a mark in the text and its file offset is kept, so
// the row that holds it is refused (or skipped) by name. A valid chunk costs one fatal TextDecoder
// call; only a chunk with bad bytes is walked byte by byte (the WHATWG / Unicode well-formed table).
import { createReadStream } from "node:fs";

/** Stands in the text for each byte that is not UTF-8: a lone surrogate, which valid UTF-8 never decodes to. */
const MARK = "\uDFFF";

const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Length of the well-formed UTF-8 sequence at `i`, or 0 when the byte there does not start one. */
function sequenceLength(bytes: Uint8Array, i: number): number {
  const lead = bytes[i]!;
  if (lead < 0x80) return 1;
  const continues = (k: number, low = 0x80, high = 0xbf) => i + k < bytes.length && bytes[i + k]! >= low && bytes[i + k]! <= high;
  if (lead >= 0xc2 && lead <= 0xdf) return continues(1) ? 2 : 0;
  if (lead >= 0xe0 && lead <= 0xef) {
    // E0 needs A0..BF (no overlong forms), ED needs 80..9F (no surrogates).
    const ok = continues(1, lead === 0xe0 ? 0xa0 : 0x80, lead === 0xed ? 0x9f : 0xbf) && continues(2);
    return ok ? 3 : 0;
  }
  if (lead >= 0xf0 && lead <= 0xf4) {
    // F0 needs 90..BF (no overlong forms), F4 needs 80..8F (nothing above U+10FFFF).
    const ok = continues(1, lead === 0xf0 ? 0x90 : 0x80, lead === 0xf4 ? 0x8f : 0xbf) && continues(2) && continues(3);
    return ok ? 4 : 0;
  }
  return 0;
}

/** Where `bytes` stops being whole: before a multi-byte sequence that the next chunk completes. */
function wholeEnd(bytes: Uint8Array): number {
  for (let back = 1; back <= Math.min(3, bytes.length); back++) {
    const byte = bytes[bytes.length - back]!;
    if ((byte & 0xc0) === 0x80) continue; // a continuation byte: look further back for its lead
    const needed = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return needed > back ? bytes.length - back : bytes.length;
  }
  return bytes.length;
}

export class Utf8File {
  /** File offsets (and values) of the bad bytes decoded so far and not yet claimed by a row. */
  private pending: { offset: number; byte: number }[] = [];
  private head = 0;

  constructor(readonly path: string) {}

  /** The file's text in chunks (a leading byte order mark removed), bad bytes marked. */
  async *chunks(): AsyncGenerator<string> {
    const stream = createReadStream(this.path, { highWaterMark: 1 << 20 });
    let carry: Uint8Array = new Uint8Array(0);
    let offset = 0; // file offset of the first byte not decoded yet
    let first = true;
    for await (const raw of stream as AsyncIterable<Buffer>) {
      const bytes = carry.length > 0 ? Buffer.concat([carry, raw]) : raw;
      const end = wholeEnd(bytes);
      let text = this.decode(bytes.subarray(0, end), offset);
      carry = bytes.subarray(end);
      offset += end;
      if (first && text.length > 0) {
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
        first = false;
      }
      if (text.length > 0) yield text;
    }
    // A sequence cut off by the end of the file.
    if (carry.length > 0) yield this.decode(carry, offset);
  }

  /**
   * Where the first bad byte of `text` (one row's text; rows are asked about in file order) lies,
   * or null when the row is clean. Costs nothing while the file has had no bad byte.
   */
  badByteIn(text: string): { offset: number; byte: number } | null {
    if (this.head === this.pending.length) return null;
    let marks = 0;
    for (let at = text.indexOf(MARK); at !== -1; at = text.indexOf(MARK, at + 1)) marks++;
    if (marks === 0) return null;
    const first = this.pending[this.head]!;
    this.head += marks;
    if (this.head > 4096) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
    return first;
  }

  private decode(bytes: Uint8Array, offset: number): string {
    try {
      return strict.decode(bytes);
    } catch {
      return this.decodeMarking(bytes, offset);
    }
  }

  private decodeMarking(bytes: Uint8Array, offset: number): string {
    const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let text = "";
    let runStart = 0;
    for (let i = 0; i < buffer.length; ) {
      const length = sequenceLength(buffer, i);
      if (length > 0) {
        i += length;
        continue;
      }
      text += buffer.toString("utf8", runStart, i) + MARK;
      this.pending.push({ offset: offset + i, byte: buffer[i]! });
      i += 1;
      runStart = i;
    }
    return text + buffer.toString("utf8", runStart, buffer.length);
  }
}

/** The row problem for a bad byte, as RawRow.parseError says it. */
export function badUtf8Problem(bad: { offset: number; byte: number }): string {
  return `not valid UTF-8 at byte offset ${bad.offset} (byte 0x${bad.byte.toString(16).toUpperCase().padStart(2, "0")}); the file may be in another encoding (Latin-1, GBK...): re-save it as UTF-8`;
}
