// Whether a stream gets colours and redrawn lines: only a terminal does, and colours follow the
// NO_COLOR convention (no-color.org: set and not empty turns them off) and TERM=dumb.

interface Stream {
  isTTY?: boolean;
}

/** A terminal that understands cursor movement (`\r`, erase line): not a pipe, a file or TERM=dumb. */
export function isInteractive(stream: Stream): boolean {
  return stream.isTTY === true && process.env.TERM !== "dumb";
}

export function colorEnabled(stream: Stream): boolean {
  const noColor = process.env.NO_COLOR;
  return isInteractive(stream) && (noColor === undefined || noColor === "");
}

/** ANSI styles that are identity functions when colours are off. */
export function palette(enabled: boolean) {
  const wrap = (code: string) => (text: string) => (enabled ? `\x1b[${code}m${text}\x1b[0m` : text);
  return { dim: wrap("2"), bold: wrap("1"), green: wrap("32"), yellow: wrap("33"), red: wrap("31"), cyan: wrap("36") };
}
