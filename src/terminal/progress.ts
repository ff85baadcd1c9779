// A progress bar redrawn in place on a terminal (tqdm's role in LLaMA-Factory): one bar line at the
// bottom, lines printed through `line()` scroll above it. Made only for an interactive stream; a
// pipe, a file, TERM=dumb or disable_tqdm get plain lines from the callers instead.
import { colorEnabled, isInteractive, palette } from "./style.ts";

interface TerminalStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): boolean;
}

/** Redraws at most this often, so a fast loop does not spend its time writing to the terminal. */
const REDRAW_MS = 100;
const BAR_WIDTH = 24;

export class ProgressBar {
  private current: string | null = null;
  private lastDraw = 0;
  private readonly colors;

  constructor(private readonly stream: TerminalStream) {
    this.colors = palette(colorEnabled(stream));
  }

  /** Prints a line above the bar (the bar is redrawn below it). */
  line(text: string): void {
    this.stream.write(this.current !== null ? `\r\x1b[K${text}\n${this.current}` : `${text}\n`);
  }

  /** Sets the bar to `done` of `total` with a label and fields (`loss 1.23`); redrawn when due or complete. */
  update(label: string, done: number, total: number, fields: readonly string[] = []): void {
    const now = performance.now();
    if (this.current !== null && done < total && now - this.lastDraw < REDRAW_MS) return;
    this.lastDraw = now;
    this.current = this.render(label, done, total, fields);
    this.stream.write(`\r\x1b[K${this.current}`);
  }

  /** Leaves the last drawn bar on screen and moves below it; the next update starts a new bar. */
  end(): void {
    if (this.current === null) return;
    this.stream.write("\n");
    this.current = null;
  }

  private render(label: string, done: number, total: number, fields: readonly string[]): string {
    const fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
    const filled = Math.round(fraction * BAR_WIDTH);
    const bar = this.colors.green("█".repeat(filled)) + this.colors.dim("░".repeat(BAR_WIDTH - filled));
    const head = `${label} ${String(Math.floor(fraction * 100)).padStart(3)}% ${bar} ${done}/${total}`;
    // Fields that do not fit the terminal's width are left off from the end (a terminal of unknown size counts as 100 columns).
    const width = (this.stream.columns || 100) - 1;
    let text = head;
    let visible = visibleLength(head);
    for (const field of fields) {
      if (visible + 2 + field.length > width) break;
      text += `  ${field}`;
      visible += 2 + field.length;
    }
    return text;
  }
}

function visibleLength(text: string): number {
  return text.replace(/\x1b\[[0-9;]*m/g, "").length;
}

/** A bar on `stream` when it is an interactive terminal and progress is not disabled, else null. */
export function progressBarFor(stream: TerminalStream, options: { disabled?: boolean } = {}): ProgressBar | null {
  return !options.disabled && isInteractive(stream) ? new ProgressBar(stream) : null;
}
