// What a run tells the user and leaves behind, in LLaMA-Factory's and HF's shapes: a progress
// line per logging step (step, epoch, loss, lr, tokens/s, ETA), `trainer_log.jsonl` (LogCallback's
// fields), and the `*_results.json` files HF's Trainer writes; experiment trackers (`report_to`)
// get each logged step's scalars through RunReporter, as HF's callbacks get `on_log`. On a
// terminal a progress bar (tqdm's) follows every optimizer step.
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ProgressBar } from "../terminal/progress.ts";

export interface LogRecord {
  current_steps: number;
  total_steps: number;
  loss?: number;
  eval_loss?: number;
  /** PPO's mean reward of the log window (LLaMA-Factory's LogCallback copies `reward`). */
  reward?: number;
  /** LLaMA-Factory's LogCallback copies `rewards/accuracies` (dpo) here. */
  accuracy?: number;
  lr?: number;
  epoch?: number;
  percentage: number;
  elapsed_time: string;
  remaining_time: string;
  throughput?: number;
  total_tokens?: number;
}

/** H:MM:SS, as LLaMA-Factory formats elapsed and remaining time. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

/** Rounds as HF's Trainer logs floats (4 significant decimals for losses). */
function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** An experiment tracker fed like HF's `on_log`: the global step and HF's log keys (`loss`, `learning_rate`, `epoch`, `grad_norm`, `eval_loss`). */
export interface RunReporter {
  scalars(step: number, values: Record<string, number>): void;
  close(): void;
}

export class RunLog {
  private readonly startedAt = performance.now();
  private readonly logFile: string;
  private tokensThisRun = 0;
  private stepsThisRun = 0;
  private lastLoss: number | undefined;
  private lastLr: number | undefined;

  constructor(
    readonly outputDir: string,
    private readonly print: (line: string) => void = (line) => process.stderr.write(line + "\n"),
    resumed = false,
    private readonly reporters: readonly RunReporter[] = [],
    /**
     * progress: false (disable_tqdm) prints each log as HF's PrinterCallback does, without the
     * progress line; `bar`, on a terminal, is redrawn after every optimizer step; writes: false
     * keeps trainer_log.jsonl untouched (the ranks other than 0).
     */
    private readonly display: { progress: boolean; bar?: ProgressBar | null; writes?: boolean } = { progress: true },
  ) {
    this.logFile = join(outputDir, "trainer_log.jsonl");
    if (!resumed && this.display.writes !== false && existsSync(this.logFile)) writeFileSync(this.logFile, "");
  }

  /** Seconds since this process started training. */
  elapsed(): number {
    return (performance.now() - this.startedAt) / 1000;
  }

  /** One logging step: the terminal line and one JSON line in trainer_log.jsonl. */
  step(values: {
    step: number;
    totalSteps: number;
    epoch: number;
    loss?: number;
    evalLoss?: number;
    lr?: number;
    gradNorm?: number;
    /** The stage's metrics of this log (`rewards/chosen`, `eval_accuracy`, ...), reported to the trackers as HF logs them. */
    metrics?: Record<string, number>;
    tokensPerSecond: number;
    totalTokens: number;
    stepsThisRun: number;
    /** The record HF's Trainer.log keeps (log_history), printed as a dict under disable_tqdm. */
    logs?: Record<string, number>;
  }): LogRecord {
    const accuracy = values.metrics?.["rewards/accuracies"];
    const reward = values.metrics?.reward;
    const elapsed = this.elapsed();
    const perStep = values.stepsThisRun > 0 ? elapsed / values.stepsThisRun : 0;
    const remaining = perStep * (values.totalSteps - values.step);
    const record: LogRecord = {
      current_steps: values.step,
      total_steps: values.totalSteps,
      ...(values.loss !== undefined && { loss: round(values.loss, 4) }),
      ...(values.evalLoss !== undefined && { eval_loss: round(values.evalLoss, 4) }),
      ...(reward !== undefined && { reward }),
      ...(accuracy !== undefined && { accuracy }),
      ...(values.lr !== undefined && { lr: values.lr }),
      epoch: round(values.epoch, 2),
      percentage: round((100 * values.step) / values.totalSteps, 2),
      elapsed_time: formatDuration(elapsed),
      remaining_time: formatDuration(remaining),
      throughput: round(values.tokensPerSecond, 2),
      total_tokens: values.totalTokens,
    };
    if (this.display.writes !== false) appendFileSync(this.logFile, JSON.stringify(record) + "\n");
    // HF's keys and values: the loss rounded to 4 decimals as Trainer.log rounds it, the rest as computed.
    const scalars: Record<string, number> = {
      ...(record.loss !== undefined && { loss: record.loss }),
      ...(values.gradNorm !== undefined && { grad_norm: values.gradNorm }),
      ...(values.lr !== undefined && { learning_rate: values.lr }),
      ...(values.evalLoss !== undefined && { eval_loss: values.evalLoss }),
      ...values.metrics,
      epoch: values.epoch,
    };
    for (const reporter of this.reporters) reporter.scalars(values.step, scalars);
    if (values.loss !== undefined) this.lastLoss = values.loss;
    if (values.lr !== undefined) this.lastLr = values.lr;
    if (!this.display.progress) {
      const logs = values.logs ?? scalars;
      this.print(`{${Object.entries(logs).map(([name, value]) => `'${name}': ${value}`).join(", ")}}`);
      return record;
    }
    const parts = [
      `[${values.step}/${values.totalSteps}]`,
      `epoch ${record.epoch!.toFixed(2)}`,
      values.loss !== undefined ? `loss ${values.loss.toFixed(4)}` : "",
      values.evalLoss !== undefined ? `eval_loss ${values.evalLoss.toFixed(4)}` : "",
      reward !== undefined ? `reward ${reward.toFixed(4)}` : "",
      values.lr !== undefined ? `lr ${values.lr.toExponential(2)}` : "",
      `${values.tokensPerSecond.toFixed(0)} tokens/s`,
      `elapsed ${record.elapsed_time}`,
      `ETA ${record.remaining_time}`,
    ];
    this.print(parts.filter(Boolean).join("  "));
    return record;
  }

  /** One optimizer step done: the bar shows it with the last logged loss and lr, tokens/s over this run and the ETA. */
  tick(values: { step: number; totalSteps: number; epoch: number; tokens: number }): void {
    this.stepsThisRun += 1;
    this.tokensThisRun += values.tokens;
    const bar = this.display.progress ? this.display.bar : null;
    if (!bar) return;
    const elapsed = this.elapsed();
    const remaining = (elapsed / this.stepsThisRun) * (values.totalSteps - values.step);
    bar.update("train", values.step, values.totalSteps, [
      `epoch ${values.epoch.toFixed(2)}`,
      this.lastLoss !== undefined ? `loss ${this.lastLoss.toFixed(4)}` : "",
      this.lastLr !== undefined ? `lr ${this.lastLr.toExponential(2)}` : "",
      `${(this.tokensThisRun / Math.max(elapsed, 1e-9)).toFixed(0)} tokens/s`,
      `ETA ${formatDuration(remaining)}`,
    ].filter(Boolean));
  }

  info(line: string): void {
    this.print(line);
  }

  /** Ends the bar and closes the reporters' files; the run's own files are written whole at each step. */
  close(): void {
    this.display.bar?.end();
    for (const reporter of this.reporters) reporter.close();
  }
}

/** `<split>_results.json`, merged into `all_results.json`, as HF's `save_metrics` (output_dir made if missing). */
export function saveMetrics(outputDir: string, split: "train" | "eval" | "predict", metrics: Record<string, number>): void {
  mkdirSync(outputDir, { recursive: true });
  writeFileSync(join(outputDir, `${split}_results.json`), JSON.stringify(metrics, null, 4) + "\n");
  const allPath = join(outputDir, "all_results.json");
  const all = existsSync(allPath) ? readEarlierResults(allPath) : {};
  writeFileSync(allPath, JSON.stringify({ ...all, ...metrics }, null, 4) + "\n");
}

/** The metrics an earlier step of the run merged; a file cut short by a kill mid-write counts as none. */
function readEarlierResults(path: string): Record<string, number> {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, number>;
  } catch {
    return {};
  }
}
