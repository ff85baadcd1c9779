// plot_loss: LLaMA-Factory's smoothing and a valid PNG a person can read.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inflateSync } from "node:zlib";
import { plotLoss, smooth } from "../../src/train/plot.ts";

test("smoothing is LLaMA-Factory's sigmoid-weighted EMA", () => {
  const values = [4, 2, 3, 1];
  const weight = 1.8 * (1 / (1 + Math.exp(-0.05 * 4)) - 0.5);
  const expected: number[] = [];
  let last = 4;
  for (const v of values) expected.push((last = last * weight + (1 - weight) * v));
  assert.deepEqual(smooth(values), expected);
  assert.deepEqual(smooth([]), []);
});

test("training_loss.png and training_eval_loss.png are well-formed PNGs with the curve drawn", () => {
  const dir = mkdtempSync(join(tmpdir(), "lmf-plot-"));
  const history = [
    ...Array.from({ length: 30 }, (_, i) => ({ step: i + 1, loss: 3 / (i + 1) + 0.5 })),
    { step: 10, eval_loss: 1.2 },
    { step: 20, eval_loss: 0.9 },
  ];
  const files = plotLoss(dir, history);
  assert.deepEqual(files.map((f) => f.split("/").pop()), ["training_loss.png", "training_eval_loss.png"]);
  const png = readFileSync(files[0]!);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const [width, height] = [png.readUInt32BE(16), png.readUInt32BE(20)];
  assert.deepEqual([width, height], [800, 520]);
  // Concatenate IDAT chunks, inflate, and look for the smoothed curve's colour.
  let offset = 8;
  const idat: Buffer[] = [];
  while (offset < png.length) {
    const length = png.readUInt32BE(offset);
    const type = png.toString("ascii", offset + 4, offset + 8);
    if (type === "IDAT") idat.push(png.subarray(offset + 8, offset + 8 + length));
    offset += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  assert.equal(raw.length, height * (1 + width * 3));
  let curvePixels = 0;
  let inkPixels = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = y * (1 + width * 3) + 1 + x * 3;
      if (raw[at] === 31 && raw[at + 1] === 119 && raw[at + 2] === 180) curvePixels++;
      if (raw[at] === 0 && raw[at + 1] === 0 && raw[at + 2] === 0) inkPixels++;
    }
  }
  assert.ok(curvePixels > 500, `smoothed curve pixels: ${curvePixels}`);
  assert.ok(inkPixels > 1000, `axis and text pixels: ${inkPixels}`);
});
