// @ts-check
// The Runs tab: every run the board started (read back from disk, so a refreshed or reopened page
// shows them again), and the chosen run's status, progress (steps, ETA, tokens/s), live log, loss
// curve and other curves (rewards, accuracies of the RLHF stages) from trainer_log.jsonl, results
// when done, and Stop / Resume. Polls the board for what is new since the last answer.
import { getJson, postJson } from "./api.js";
import { drawChart, smooth } from "./chart.js";
import { el, label } from "./form.js";
import { onLanguageChange, t } from "./i18n.js";

/**
 * @typedef {{ id: string, job: string, commandLine: string, config: string, outputDir: string | null, pid: number | null,
 *   startedAt: string, endedAt: string | null, status: string, exitCode: number | null, signal: string | null, resumes: string | null }} Run
 */

/** Keys of trainer_log.jsonl that are bookkeeping, not curves. */
const NOT_CURVES = new Set(["current_steps", "total_steps", "percentage", "epoch", "lr", "learning_rate", "throughput", "total_tokens", "elapsed_time", "remaining_time", "loss", "eval_loss", "grad_norm"]);
const LIST_POLL_MS = 3000;
const DETAIL_POLL_MS = 1000;
/** The log shown keeps at most this many characters (the file has it all). */
const LOG_KEPT = 2_000_000;

export class RunsTab {
  /** @param {HTMLElement} root */
  constructor(root) {
    this.root = root;
    /** @type {Run[]} */
    this.runs = [];
    /** @type {string | null} */
    this.selected = null;
    this.logOffset = 0;
    this.recordOffset = 0;
    this.log = "";
    /** @type {Record<string, unknown>[]} */
    this.records = [];
    /** @type {any} */
    this.last = null;
    this.busy = false;
    this.complete = false;
    this.list = el("ul", { class: "run-list", id: "run-list" });
    this.detail = el("div", { class: "run-detail", id: "run-detail" });
    root.append(el("div", { class: "runs" }, [el("div", { class: "run-column" }, [label("h2", "runs.title"), this.list]), this.detail]));
    onLanguageChange(() => {
      this.renderList();
      this.renderDetail();
    });
    this.pollList();
    setInterval(() => this.pollList(), LIST_POLL_MS);
    setInterval(() => this.pollDetail(), DETAIL_POLL_MS);
  }

  resetDetail() {
    this.logOffset = 0;
    this.recordOffset = 0;
    this.log = "";
    this.records = [];
    this.last = null;
    this.busy = false;
    this.complete = false;
  }

  async pollList() {
    try {
      this.runs = (await getJson("/api/runs")).runs;
      this.renderList();
    } catch {
      // The board may be restarting; the next poll tries again.
    }
  }

  /** @param {string} id */
  select(id) {
    this.selected = id;
    this.resetDetail();
    this.renderList();
    this.detail.replaceChildren();
    this.pollDetail();
  }

  /** Makes a new run known before the next list poll. @param {Run} run */
  add(run) {
    this.runs = [run, ...this.runs.filter((item) => item.id !== run.id)];
    this.select(run.id);
  }

  renderList() {
    if (this.runs.length === 0) {
      this.list.replaceChildren(label("li", "runs.empty", { class: "empty" }));
      return;
    }
    this.list.replaceChildren(
      ...this.runs.map((run) => {
        const item = el("li", { class: `run${run.id === this.selected ? " selected" : ""}`, "data-run": run.id, "data-status": run.status }, [
          el("span", { class: `status ${run.status}` }, [t(`runs.status.${run.status}`)]),
          " ",
          el("span", { class: "job" }, [t(`runs.job.${run.job}`)]),
          el("div", { class: "run-id" }, [run.id]),
        ]);
        item.addEventListener("click", () => this.select(run.id));
        return item;
      }),
    );
  }

  async pollDetail() {
    if (!this.selected || this.busy || this.complete) return;
    this.busy = true;
    const id = this.selected;
    try {
      const detail = await getJson(`/api/runs/${id}?log=${this.logOffset}&rec=${this.recordOffset}`);
      if (id !== this.selected) return;
      if (detail.log.reset) this.log = "";
      if (detail.records.reset) this.records = [];
      this.log = (this.log + detail.log.text).slice(-LOG_KEPT);
      this.logOffset = detail.log.next;
      this.records.push(...detail.records.records);
      this.recordOffset = detail.records.next;
      const more = detail.log.text.length > 0 || detail.records.records.length > 0;
      const changed = more || !this.last || this.last.run.status !== detail.run.status;
      this.last = detail;
      // The list shows the same status as the detail, without waiting for its own poll.
      const listed = this.runs.findIndex((run) => run.id === detail.run.id);
      if (listed >= 0 && this.runs[listed]?.status !== detail.run.status) {
        this.runs[listed] = detail.run;
        this.renderList();
      }
      // An ended run is read to its end once more, then left alone.
      this.complete = detail.run.endedAt !== null && !more;
      if (changed || this.complete) this.renderDetail();
    } catch {
      // Try again on the next tick.
    } finally {
      this.busy = false;
    }
  }

  renderDetail() {
    const detail = this.last;
    if (!detail) {
      this.detail.replaceChildren(label("p", "runs.pick", { class: "empty" }));
      return;
    }
    /** @type {Run} */
    const run = detail.run;
    const logBox = /** @type {HTMLElement | null} */ (this.detail.querySelector(".log"));
    const atBottom = !logBox || logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 8;

    const buttons = el("div", { class: "buttons" });
    if (run.status === "running") {
      const stop = label("button", "cmd.stop", { class: "stop", id: "run-stop" });
      stop.addEventListener("click", async () => {
        await postJson(`/api/runs/${run.id}/stop`);
        this.complete = false;
        this.pollList();
      });
      buttons.append(stop);
    }
    if (run.job === "train" && ["stopped", "failed", "unknown"].includes(run.status)) {
      const resume = label("button", "cmd.resume", { id: "run-resume" });
      resume.addEventListener("click", async () => this.add((await postJson(`/api/runs/${run.id}/resume`)).run));
      buttons.append(resume);
    }
    const status = el("span", { class: `status ${run.status}`, id: "run-status", "data-status": run.status }, [t(`runs.status.${run.status}`)]);
    if (run.endedAt && run.exitCode !== null) status.append(` (${t("runs.exit", { code: run.exitCode })})`);
    const facts = el("dl", { class: "facts" }, [
      label("dt", "runs.command"), el("dd", {}, [el("code", {}, [run.commandLine])]),
      label("dt", "runs.output"), el("dd", {}, [el("code", {}, [detail.outputDir ?? "-"])]),
      label("dt", "runs.started"), el("dd", {}, [new Date(run.startedAt).toLocaleString(), run.resumes ? ` · ${t("runs.resumes", { id: run.resumes })}` : ""]),
    ]);
    /** @type {(HTMLElement | SVGSVGElement)[]} */
    const parts = [el("div", { class: "run-head" }, [el("h2", {}, [`${t(`runs.job.${run.job}`)} ${run.id}`]), status, buttons]), facts, this.progress()];
    parts.push(...this.charts());
    if (detail.results) parts.push(label("h3", "runs.results"), this.table([detail.results], "results"));
    if (detail.predictions?.length) parts.push(label("h3", "runs.predictions"), this.table(detail.predictions, "predictions"));
    const log = el("pre", { class: "log", id: "run-log" }, [this.log]);
    parts.push(label("h3", "runs.log"), log);
    this.detail.replaceChildren(...parts);
    if (atBottom) log.scrollTop = log.scrollHeight;
    else if (logBox) log.scrollTop = logBox.scrollTop;
  }

  progress() {
    const last = [...this.records].reverse().find((record) => typeof record.current_steps === "number");
    const box = el("div", { class: "progress", id: "run-progress" });
    if (!last) {
      if (this.last?.run.job === "train" && !this.last?.run.endedAt) box.append(label("p", "runs.waiting", { class: "muted" }));
      return box;
    }
    const percentage = Number(last.percentage ?? 0);
    const bar = /** @type {HTMLProgressElement} */ (el("progress", { max: "100", id: "run-progress-bar" }));
    bar.value = percentage;
    const text = [
      t("runs.steps", { current: String(last.current_steps), total: String(last.total_steps) }),
      `${percentage.toFixed(percentage % 1 ? 2 : 0)} %`,
      t("runs.elapsed", { time: String(last.elapsed_time ?? "-") }),
      t("runs.eta", { time: String(last.remaining_time ?? "-") }),
    ];
    if (typeof last.throughput === "number") text.push(t("runs.throughput", { value: last.throughput.toFixed(0) }));
    box.append(label("h3", "runs.progress"), bar, el("span", { class: "progress-text", id: "run-progress-text", "data-percentage": String(percentage) }, [text.join(" · ")]));
    return box;
  }

  /** The loss chart, and one chart of every other numeric key (reward, accuracy...) when there is any. */
  charts() {
    /** @param {string} key */
    const points = (key) => /** @type {[number, number][]} */ (this.records.filter((r) => typeof r[key] === "number" && typeof r.current_steps === "number").map((r) => [Number(r.current_steps), Number(r[key])]));
    /** @type {(HTMLElement | SVGSVGElement)[]} */
    const out = [];
    const loss = points("loss");
    const evalLoss = points("eval_loss");
    if (loss.length || evalLoss.length) {
      const svg = /** @type {SVGSVGElement} */ (/** @type {unknown} */ (document.createElementNS("http://www.w3.org/2000/svg", "svg")));
      svg.setAttribute("class", "chart");
      svg.id = "loss-chart";
      /** @type {import("./chart.js").Series[]} */
      const series = [{ name: "loss", points: loss }];
      if (loss.length >= 10) {
        const smoothed = smooth(loss.map((p) => p[1]));
        series.push({ name: "smoothed", points: loss.map((p, i) => /** @type {[number, number]} */ ([p[0], smoothed[i] ?? p[1]])), smoothed: true });
      }
      if (evalLoss.length) series.push({ name: "eval_loss", points: evalLoss });
      drawChart(svg, series, t("runs.step"));
      out.push(label("h3", "runs.loss"), svg);
    }
    const keys = [...new Set(this.records.flatMap((record) => Object.keys(record).filter((key) => !NOT_CURVES.has(key) && typeof record[key] === "number")))];
    if (keys.length) {
      const svg = /** @type {SVGSVGElement} */ (/** @type {unknown} */ (document.createElementNS("http://www.w3.org/2000/svg", "svg")));
      svg.setAttribute("class", "chart");
      svg.id = "metrics-chart";
      drawChart(svg, keys.map((key) => ({ name: key, points: points(key) })), t("runs.step"));
      out.push(label("h3", "runs.rewards"), svg);
    }
    return out;
  }

  /** @param {Record<string, unknown>[]} rows @param {string} id */
  table(rows, id) {
    const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
    /** @param {unknown} value */
    const cell = (value) => (typeof value === "number" ? Number(value.toPrecision(6)).toString() : typeof value === "string" ? value : JSON.stringify(value));
    return el("table", { class: "table", id: `run-${id}` }, [
      el("thead", {}, [el("tr", {}, columns.map((column) => el("th", {}, [column])))]),
      el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((column) => el("td", {}, [cell(row[column])]))))),
    ]);
  }
}
