// A minimal parquet writer for test fixtures (no pyarrow here): REQUIRED flat columns, PLAIN
// encoding, uncompressed, one data page (v1) per column chunk, metadata in Thrift compact protocol,
// following apache/parquet-format (parquet.thrift). Strings are UTF8 BYTE_ARRAY, integers INT64,
// other numbers DOUBLE, booleans BOOLEAN.
import { writeFileSync } from "node:fs";

type Cell = string | number | boolean;

const enum ThriftType {
  True = 1,
  False = 2,
  I32 = 5,
  I64 = 6,
  Binary = 8,
  List = 9,
  Struct = 12,
}

/** Thrift compact protocol writer for the few shapes the parquet footer needs. */
class Compact {
  bytes: number[] = [];
  private lastField: number[] = [0];

  private varint(value: bigint): void {
    let rest = value;
    while (rest >= 0x80n) {
      this.bytes.push(Number(rest & 0x7fn) | 0x80);
      rest >>= 7n;
    }
    this.bytes.push(Number(rest));
  }
  private zigzag(value: number | bigint): void {
    const big = BigInt(value);
    this.varint(big >= 0n ? big << 1n : (-big << 1n) - 1n);
  }
  private header(id: number, type: number): void {
    const delta = id - this.lastField[this.lastField.length - 1]!;
    if (delta > 0 && delta <= 15) this.bytes.push((delta << 4) | type);
    else {
      this.bytes.push(type);
      this.zigzag(id);
    }
    this.lastField[this.lastField.length - 1] = id;
  }
  i32(id: number, value: number): this {
    this.header(id, ThriftType.I32);
    this.zigzag(value);
    return this;
  }
  i64(id: number, value: number): this {
    this.header(id, ThriftType.I64);
    this.zigzag(value);
    return this;
  }
  string(id: number, value: string): this {
    this.header(id, ThriftType.Binary);
    const encoded = Buffer.from(value, "utf8");
    this.varint(BigInt(encoded.length));
    this.bytes.push(...encoded);
    return this;
  }
  bool(id: number, value: boolean): this {
    this.header(id, value ? ThriftType.True : ThriftType.False);
    return this;
  }
  struct(id: number, body: (writer: this) => void): this {
    this.header(id, ThriftType.Struct);
    this.inStruct(body);
    return this;
  }
  private inStruct(body: (writer: this) => void): void {
    this.lastField.push(0);
    body(this);
    this.bytes.push(0);
    this.lastField.pop();
  }
  private listHeader(id: number, size: number, elementType: number): void {
    this.header(id, ThriftType.List);
    if (size < 15) this.bytes.push((size << 4) | elementType);
    else {
      this.bytes.push(0xf0 | elementType);
      this.varint(BigInt(size));
    }
  }
  structList<T>(id: number, items: readonly T[], body: (writer: this, item: T) => void): this {
    this.listHeader(id, items.length, ThriftType.Struct);
    for (const item of items) this.inStruct((writer) => body(writer, item));
    return this;
  }
  i32List(id: number, items: readonly number[]): this {
    this.listHeader(id, items.length, ThriftType.I32);
    for (const item of items) this.zigzag(item);
    return this;
  }
  stringList(id: number, items: readonly string[]): this {
    this.listHeader(id, items.length, ThriftType.Binary);
    for (const item of items) {
      const encoded = Buffer.from(item, "utf8");
      this.varint(BigInt(encoded.length));
      this.bytes.push(...encoded);
    }
    return this;
  }
  end(): Buffer {
    this.bytes.push(0);
    return Buffer.from(this.bytes);
  }
}

const TYPE = { BOOLEAN: 0, INT64: 2, DOUBLE: 5, BYTE_ARRAY: 6 } as const;

function columnType(values: readonly Cell[]): number {
  if (values.every((value) => typeof value === "string")) return TYPE.BYTE_ARRAY;
  if (values.every((value) => typeof value === "boolean")) return TYPE.BOOLEAN;
  if (values.every((value) => Number.isInteger(value))) return TYPE.INT64;
  if (values.every((value) => typeof value === "number")) return TYPE.DOUBLE;
  throw new Error("mixed column types are not supported by the fixture writer");
}

function plainValues(type: number, values: readonly Cell[]): Buffer {
  if (type === TYPE.BYTE_ARRAY) {
    return Buffer.concat(values.map((value) => {
      const encoded = Buffer.from(value as string, "utf8");
      const length = Buffer.alloc(4);
      length.writeUInt32LE(encoded.length);
      return Buffer.concat([length, encoded]);
    }));
  }
  if (type === TYPE.BOOLEAN) {
    const packed = Buffer.alloc(Math.ceil(values.length / 8));
    values.forEach((value, index) => {
      if (value) packed[index >> 3]! |= 1 << (index & 7);
    });
    return packed;
  }
  const out = Buffer.alloc(8 * values.length);
  values.forEach((value, index) => (type === TYPE.INT64 ? out.writeBigInt64LE(BigInt(value as number), 8 * index) : out.writeDoubleLE(value as number, 8 * index)));
  return out;
}

export function writeParquet(path: string, rows: readonly Record<string, Cell>[], options: { rowGroupSize?: number } = {}): void {
  const names = Object.keys(rows[0] ?? {});
  const types = names.map((name) => columnType(rows.map((row) => row[name]!)));
  const groupSize = options.rowGroupSize ?? rows.length;
  const parts: Buffer[] = [Buffer.from("PAR1")];
  let offset = 4;
  const rowGroups: { columns: { type: number; name: string; offset: number; size: number; count: number }[]; rows: number; bytes: number }[] = [];
  for (let start = 0; start < rows.length; start += groupSize) {
    const group = rows.slice(start, start + groupSize);
    const columns = names.map((name, column) => {
      const data = plainValues(types[column]!, group.map((row) => row[name]!));
      const pageHeader = new Compact()
        .i32(1, 0)
        .i32(2, data.length)
        .i32(3, data.length)
        .struct(5, (page) => page.i32(1, group.length).i32(2, 0).i32(3, 3).i32(4, 3))
        .end();
      const chunk = { type: types[column]!, name, offset, size: pageHeader.length + data.length, count: group.length };
      parts.push(pageHeader, data);
      offset += chunk.size;
      return chunk;
    });
    rowGroups.push({ columns, rows: group.length, bytes: columns.reduce((sum, column) => sum + column.size, 0) });
  }
  const schema = [{ name: "schema", children: names.length }, ...names.map((name, column) => ({ name, type: types[column]! }))];
  const footer = new Compact()
    .i32(1, 1)
    .structList(2, schema, (writer, element) => {
      if ("type" in element) writer.i32(1, element.type).i32(3, 0).string(4, element.name);
      else writer.string(4, element.name).i32(5, element.children);
      if ("type" in element && element.type === TYPE.BYTE_ARRAY) writer.i32(6, 0);
    })
    .i64(3, rows.length)
    .structList(4, rowGroups, (writer, group) => {
      writer.structList(1, group.columns, (chunkWriter, chunk) => {
        chunkWriter.i64(2, chunk.offset).struct(3, (meta) =>
          meta
            .i32(1, chunk.type)
            .i32List(2, [0])
            .stringList(3, [chunk.name])
            .i32(4, 0)
            .i64(5, chunk.count)
            .i64(6, chunk.size)
            .i64(7, chunk.size)
            .i64(9, chunk.offset),
        );
      });
      writer.i64(2, group.bytes).i64(3, group.rows);
    })
    .string(6, "lmfactory test fixture")
    .end();
  const length = Buffer.alloc(4);
  length.writeUInt32LE(footer.length);
  parts.push(footer, length, Buffer.from("PAR1"));
  writeFileSync(path, Buffer.concat(parts));
}
