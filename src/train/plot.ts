// plot_loss: `training_loss.png` (and `training_eval_loss.png`) from the run's log history, as
// LLaMA-Factory's plot_loss draws them: the raw curve faint, a TensorBoard-style EMA on top, axes,
// title, labels and legend. Drawn into a pixel buffer with a built-in 5x7 font and written as PNG
// with node:zlib, so it needs no image library.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { deflateSync } from "node:zlib";

/** LLaMA-Factory's smoothing: an EMA whose weight grows with the number of points (a sigmoid). */
export function smooth(values: number[]): number[] {
  if (values.length === 0) return [];
  const weight = 1.8 * (1 / (1 + Math.exp(-0.05 * values.length)) - 0.5);
  let last = values[0]!;
  return values.map((value) => (last = last * weight + (1 - weight) * value));
}

// --- PNG ----------------------------------------------------------------------------------------

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "ascii");
  Buffer.from(data).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** An RGB image encoded as PNG (8-bit, colour type 2, no interlace). */
export function encodePng(width: number, height: number, rgb: Uint8Array): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const raw = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y++) {
    raw[y * (1 + width * 3)] = 0; // filter: none
    Buffer.from(rgb.buffer, rgb.byteOffset + y * width * 3, width * 3).copy(raw, y * (1 + width * 3) + 1);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", new Uint8Array()),
  ]);
}

// --- drawing ------------------------------------------------------------------------------------

/** A 5x7 bitmap font: each glyph is 7 rows of 5 columns, row by row, '#' = ink. */
const FONT: Record<string, string> = {
  "0": ".###.#...##..###.#.###..##...#.###.",
  "1": "..#...##....#....#....#....#...###.",
  "2": ".###.#...#....#...#...#...#...#####",
  "3": "#####...#...#.....#.....##...#.###.",
  "4": "...#...##..#.#.#..#.#####...#....#.",
  "5": "######....####.....#....##...#.###.",
  "6": "..##..#...#....####.#...##...#.###.",
  "7": "#####....#...#...#...#....#....#...",
  "8": ".###.#...##...#.###.#...##...#.###.",
  "9": ".###.#...##...#.####....#...#..##..",
  ".": "..........................##...##..",
  "-": "...............#####...............",
  "+": ".......#....#..#####..#....#.......",
  ":": "......##...##........##...##.......",
  "_": "..............................#####",
  "/": ".........#...#...#...#...#.........",
  "(": "...#...#...#....#....#.....#.....#.",
  ")": ".#.....#.....#....#....#...#...#...",
  "=": "..........#####.....#####..........",
  "?": ".###.#...#....#...#...#.........#..",
  " ": "...................................",
  a: "...........###.....#.#####...#.####",
  b: "#....#....#.##.##..##...##...#####.",
  c: "...........###.#....#....#...#.###.",
  d: "....#....#.##.##..###...##...#.####",
  e: "...........###.#...#######.....###.",
  f: "..##..#..#.#...###...#....#....#...",
  g: "......#####...##...#.####....#.###.",
  h: "#....#....#.##.##..##...##...##...#",
  i: "..#........##....#....#....#...###.",
  j: "...#........##....#....#.#..#..##..",
  k: "#....#....#..#.#.#..##...#.#..#..#.",
  l: ".##....#....#....#....#....#...###.",
  m: "..........##.#.#.#.##.#.##...##...#",
  n: "..........#.##.##..##...##...##...#",
  o: "...........###.#...##...##...#.###.",
  p: "..........####.#...#####.#....#....",
  q: "...........##.##..##.####....#....#",
  r: "..........#.##.##..##....#....#....",
  s: "...........###.#.....###.....#####.",
  t: ".#....#...###...#....#....#..#..##.",
  u: "..........#...##...##...##..##.##.#",
  v: "..........#...##...##...#.#.#...#..",
  w: "..........#...##...##.#.##.#.#.#.#.",
  x: "..........#...#.#.#...#...#.#.#...#",
  y: "..........#...##...#.####....#.###.",
  z: "..........#####...#...#...#...#####",
};

class Canvas {
  readonly pixels: Uint8Array;
  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.pixels = new Uint8Array(width * height * 3).fill(255);
  }

  /** Blends a colour into one pixel with opacity `alpha`. */
  dot(x: number, y: number, color: [number, number, number], alpha = 1): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const at = (y * this.width + x) * 3;
    for (let c = 0; c < 3; c++) this.pixels[at + c] = Math.round(this.pixels[at + c]! * (1 - alpha) + color[c]! * alpha);
  }

  line(x0: number, y0: number, x1: number, y1: number, color: [number, number, number], alpha = 1, width = 1): void {
    const steps = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1) * 2;
    const seen = new Set<number>();
    for (let i = 0; i <= steps; i++) {
      const x = x0 + ((x1 - x0) * i) / steps;
      const y = y0 + ((y1 - y0) * i) / steps;
      for (let dx = 0; dx < width; dx++) {
        for (let dy = 0; dy < width; dy++) {
          const key = Math.round(y + dy) * this.width + Math.round(x + dx);
          if (seen.has(key)) continue;
          seen.add(key);
          this.dot(x + dx, y + dy, color, alpha);
        }
      }
    }
  }

  /** Text at (x, y) top-left, `scale` pixels per font dot; `vertical` runs bottom to top. */
  text(x: number, y: number, text: string, scale = 2, vertical = false): void {
    let cursor = 0;
    for (const raw of text.toLowerCase()) {
      const glyph = FONT[raw] ?? FONT["?"]!;
      for (let row = 0; row < 7; row++) {
        for (let col = 0; col < 5; col++) {
          if (glyph[row * 5 + col] !== "#") continue;
          for (let sx = 0; sx < scale; sx++) {
            for (let sy = 0; sy < scale; sy++) {
              const gx = (cursor + col) * scale + sx;
              const gy = row * scale + sy;
              if (vertical) this.dot(x + gy, y - gx, [0, 0, 0]);
              else this.dot(x + gx, y + gy, [0, 0, 0]);
            }
          }
        }
      }
      cursor += 6;
    }
  }
}

function niceTicks(min: number, max: number, count = 5): number[] {
  const span = max - min || Math.abs(max) || 1;
  const rough = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= rough)!;
  const ticks: number[] = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function label(value: number): string {
  if (value === 0) return "0";
  if (Math.abs(value) >= 1e5 || Math.abs(value) < 1e-3) return value.toExponential(1);
  return String(Number(value.toPrecision(4)));
}

/** Draws one metric against steps: the raw points faint, the smoothed curve on top. */
export function plotCurve(steps: number[], values: number[], title: string, yLabel: string): Buffer {
  const [W, H] = [800, 520];
  const [left, right, top, bottom] = [90, 30, 50, 60];
  const canvas = new Canvas(W, H);
  const smoothed = smooth(values);
  const xMin = Math.min(...steps);
  const xMax = Math.max(...steps, xMin + 1);
  let yMin = Math.min(...values);
  let yMax = Math.max(...values);
  if (yMax - yMin < 1e-12) [yMin, yMax] = [yMin - 0.5, yMax + 0.5];
  const pad = (yMax - yMin) * 0.05;
  [yMin, yMax] = [yMin - pad, yMax + pad];
  const px = (x: number) => left + ((x - xMin) / (xMax - xMin)) * (W - left - right);
  const py = (y: number) => H - bottom - ((y - yMin) / (yMax - yMin)) * (H - top - bottom);

  const grey: [number, number, number] = [200, 200, 200];
  for (const t of niceTicks(xMin, xMax)) {
    canvas.line(px(t), top, px(t), H - bottom, grey);
    const text = label(t);
    canvas.text(px(t) - text.length * 6, H - bottom + 8, text);
  }
  for (const t of niceTicks(yMin, yMax)) {
    canvas.line(left, py(t), W - right, py(t), grey);
    const text = label(t);
    canvas.text(left - 8 - text.length * 12, py(t) - 7, text);
  }
  canvas.line(left, top, left, H - bottom, [0, 0, 0]);
  canvas.line(left, H - bottom, W - right, H - bottom, [0, 0, 0]);

  const blue: [number, number, number] = [31, 119, 180];
  for (let i = 1; i < steps.length; i++) {
    canvas.line(px(steps[i - 1]!), py(values[i - 1]!), px(steps[i]!), py(values[i]!), blue, 0.4, 2);
  }
  for (let i = 1; i < steps.length; i++) {
    canvas.line(px(steps[i - 1]!), py(smoothed[i - 1]!), px(steps[i]!), py(smoothed[i]!), blue, 1, 2);
  }
  if (steps.length === 1) canvas.line(px(steps[0]!) - 2, py(values[0]!), px(steps[0]!) + 2, py(values[0]!), blue, 1, 3);

  canvas.text(left, 16, title.slice(0, 55));
  canvas.text((W - left - right) / 2 + left - 24, H - 24, "step");
  canvas.text(20, (H - top - bottom) / 2 + top + yLabel.length * 6, yLabel, 2, true);
  // Legend: faint = original, solid = smoothed.
  const lx = W - right - 190;
  canvas.line(lx, top + 14, lx + 30, top + 14, blue, 0.4, 2);
  canvas.text(lx + 40, top + 7, "original");
  canvas.line(lx, top + 36, lx + 30, top + 36, blue, 1, 2);
  canvas.text(lx + 40, top + 29, "smoothed");
  return encodePng(W, H, canvas.pixels);
}

/**
 * Writes `training_<key>.png` for each key with data in the log history (LLaMA-Factory's names:
 * `training_loss.png`, `training_eval_loss.png`); returns the files written.
 */
export function plotLoss(outputDir: string, logHistory: Record<string, number>[], keys: readonly string[] = ["loss", "eval_loss"]): string[] {
  const written: string[] = [];
  for (const key of keys) {
    const points = logHistory.filter((record) => typeof record[key] === "number" && typeof record.step === "number");
    if (points.length === 0) continue;
    const file = join(outputDir, `training_${key.replace(/\//g, "_")}.png`);
    writeFileSync(file, plotCurve(points.map((p) => p.step!), points.map((p) => p[key]!), `training ${key} of ${outputDir.split("/").pop()}`, key));
    written.push(file);
  }
  return written;
}
