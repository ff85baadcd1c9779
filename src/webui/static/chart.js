// @ts-check
// Line charts drawn in the page as SVG from trainer_log.jsonl records (LlamaBoard's loss plot, kept
// live): one polyline per series over the steps, with its points, a smoothed line for the loss
// (TensorBoard's EMA, as LLaMA-Factory's plot_loss smooths), axes with a few ticks and a legend.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 240;
const MARGIN = { left: 56, right: 16, top: 12, bottom: 40 };
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];
/** Points are drawn as dots up to this many per series. */
const MAX_DOTS = 300;

/** @typedef {{ name: string, points: [number, number][], smoothed?: boolean }} Series */

/**
 * TensorBoard's exponential moving average, as LLaMA-Factory's `smooth` weights it.
 * @param {number[]} values
 */
export function smooth(values) {
  if (values.length === 0) return [];
  const weight = 1.8 * (1 / (1 + Math.exp(-0.05 * values.length)) - 0.5);
  let last = values[0];
  return values.map((value) => (last = last * weight + (1 - weight) * value));
}

/** @param {string} tag @param {Record<string, string | number>} attributes */
function svgEl(tag, attributes) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  return element;
}

/** A short number for a tick label. @param {number} value */
function tickText(value) {
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(1);
  return Number(value.toPrecision(3)).toString();
}

/**
 * Draws `series` into `svg` (replacing what it held).
 * @param {SVGSVGElement} svg
 * @param {Series[]} series
 * @param {string} xLabel
 */
export function drawChart(svg, series, xLabel) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  const all = series.flatMap((item) => item.points);
  if (all.length === 0) return;
  let [xMin, xMax] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [yMin, yMax] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (xMin === xMax) [xMin, xMax] = [xMin - 1, xMax + 1];
  if (yMin === yMax) [yMin, yMax] = [yMin - Math.abs(yMin || 1) * 0.1, yMax + Math.abs(yMax || 1) * 0.1];
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  /** @param {number} x */
  const px = (x) => MARGIN.left + ((x - xMin) / (xMax - xMin)) * plotW;
  /** @param {number} y */
  const py = (y) => MARGIN.top + (1 - (y - yMin) / (yMax - yMin)) * plotH;

  const axes = svgEl("g", { class: "axes" });
  axes.append(svgEl("line", { x1: MARGIN.left, y1: MARGIN.top + plotH, x2: MARGIN.left + plotW, y2: MARGIN.top + plotH }));
  axes.append(svgEl("line", { x1: MARGIN.left, y1: MARGIN.top, x2: MARGIN.left, y2: MARGIN.top + plotH }));
  const xTicks = new Set();
  for (let i = 0; i <= 4; i++) {
    const y = yMin + ((yMax - yMin) * i) / 4;
    const label = svgEl("text", { x: MARGIN.left - 6, y: py(y) + 4, "text-anchor": "end" });
    label.textContent = tickText(y);
    axes.append(svgEl("line", { class: "grid", x1: MARGIN.left, y1: py(y), x2: MARGIN.left + plotW, y2: py(y) }), label);
    // Steps are whole numbers: each tick sits at the whole step it names.
    const x = xMin + ((xMax - xMin) * i) / 4;
    const value = xMax - xMin >= 4 ? Math.round(x) : Math.round(x * 100) / 100;
    if (xTicks.has(value)) continue;
    xTicks.add(value);
    const xText = svgEl("text", { x: px(value), y: HEIGHT - 24, "text-anchor": "middle" });
    xText.textContent = tickText(value);
    axes.append(xText);
  }
  const xTitle = svgEl("text", { x: MARGIN.left + plotW / 2, y: HEIGHT - 6, "text-anchor": "middle", class: "axis-title" });
  xTitle.textContent = xLabel;
  axes.append(xTitle);
  svg.append(axes);

  series.forEach((item, index) => {
    const color = COLORS[index % COLORS.length];
    const group = svgEl("g", { class: "series", "data-name": item.name, "data-count": item.points.length });
    group.append(svgEl("polyline", { points: item.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" "), fill: "none", stroke: color, "stroke-width": item.smoothed ? 2 : 1.2, "stroke-opacity": item.smoothed ? 1 : 0.55 }));
    if (!item.smoothed && item.points.length <= MAX_DOTS) {
      for (const [x, y] of item.points) group.append(svgEl("circle", { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 2.2, fill: color }));
    }
    const legend = svgEl("text", { x: MARGIN.left + 8 + index * 130, y: MARGIN.top + 12, fill: color, class: "legend" });
    legend.textContent = item.name;
    group.append(legend);
    svg.append(group);
  });
}
