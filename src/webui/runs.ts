// The web board's runs: each is `lmf <command> <config.yaml>` started as a child process (the Node
// binary and bin/lmf.mjs by absolute path, never through PATH) in its own process group, writing
// its output straight to a log file, so it keeps going when the page closes (and when the board
// stops). A run's record, config and log live in `lmf_webui/runs/<id>/`; the board reads them back at
// start and follows runs still alive. Stop ends the whole process group (SIGTERM, then SIGKILL);
// training leaves its last complete checkpoint, and Resume runs the same config, which resumes from
// it. After LlamaBoard's runner.py (which starts `llamafactory-cli train` the same way).
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../errors.ts";
import { JOB_COMMAND, type JobName } from "./form_schema.ts";
import type { Workspace } from "./workspace.ts";

export type RunStatus = "running" | "stopping" | "finished" | "failed" | "stopped" | "unknown";

export interface RunRecord {
  id: string;
  job: JobName;
  /** What runs, as a person would type it. */
  commandLine: string;
  /** The config file the run reads (absolute). */
  config: string;
  /** Where its results go (output_dir, or export_dir); absolute. */
  outputDir: string | null;
  pid: number | null;
  startedAt: string;
  endedAt: string | null;
  status: RunStatus;
  exitCode: number | null;
  signal: string | null;
  /** The run this one resumes. */
  resumes: string | null;
}

/** The `lmf` entry script, by absolute path. */
export const LMF_BIN = fileURLToPath(new URL("../../bin/lmf.mjs", import.meta.url));

/** Seconds between SIGTERM and SIGKILL when a run is stopped. */
const STOP_GRACE_MS = 5000;
/** How often runs started before this board (no exit event) are checked. */
const ADOPTED_POLL_MS = 2000;

const RUN_ID = /^\d{8}-\d{6}-[0-9a-f]{4}$/;

function newRunId(): string {
  const now = new Date();
  const pad = (n: number) => String(n).padStart(2, "0");
  const stamp = `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}-${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
  return `${stamp}-${randomBytes(2).toString("hex")}`;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A process that is alive and still runs this config (a reused pid is not the run). */
function runsConfig(pid: number, config: string): boolean {
  if (!isAlive(pid)) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(config);
  } catch {
    // No /proc (not Linux): trust the pid.
    return true;
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

export class RunManager {
  private readonly runs = new Map<string, RunRecord>();
  private readonly children = new Map<string, ChildProcess>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly workspace: Workspace) {}

  get runsDir(): string {
    return join(this.workspace.stateDir, "runs");
  }

  runDir(id: string): string {
    return join(this.runsDir, id);
  }

  logPath(id: string): string {
    return join(this.runDir(id), "output.log");
  }

  /** Reads the runs recorded earlier; follows those still alive, and marks the others as ended while the board was away. */
  load(): void {
    if (!existsSync(this.runsDir)) return;
    for (const id of readdirSync(this.runsDir).filter((name) => RUN_ID.test(name)).sort()) {
      let record: RunRecord;
      try {
        record = JSON.parse(readFileSync(join(this.runDir(id), "run.json"), "utf8")) as RunRecord;
      } catch {
        continue;
      }
      this.runs.set(id, record);
      if (record.status !== "running" && record.status !== "stopping") continue;
      if (record.pid !== null && runsConfig(record.pid, record.config)) this.adopt(record);
      else this.finish(record, null, null, "unknown");
    }
  }

  list(): RunRecord[] {
    return [...this.runs.values()].sort((a, b) => b.id.localeCompare(a.id));
  }

  get(id: string): RunRecord {
    const run = RUN_ID.test(id) ? this.runs.get(id) : undefined;
    if (!run) throw new UserError(`no run ${id}`, "runs");
    return run;
  }

  /** Starts `lmf <command> <config>` for a checked job; `yaml` is its config. */
  start(job: JobName, yaml: string, outputDir: string | null, resumes: string | null = null): RunRecord {
    const id = newRunId();
    const dir = this.runDir(id);
    mkdirSync(dir, { recursive: true });
    const config = join(dir, "config.yaml");
    writeFileSync(config, yaml);
    const command = JOB_COMMAND[job];
    const record: RunRecord = {
      id,
      job,
      commandLine: `lmf ${command} ${this.workspace.display(config)}`,
      config,
      outputDir,
      pid: null,
      startedAt: new Date().toISOString(),
      endedAt: null,
      status: "running",
      exitCode: null,
      signal: null,
      resumes,
    };
    const log = openSync(this.logPath(id), "a");
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [LMF_BIN, command, config], {
        cwd: this.workspace.workDir,
        detached: true,
        stdio: ["ignore", log, log],
        env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" },
      });
    } finally {
      closeSync(log);
    }
    record.pid = child.pid ?? null;
    this.runs.set(id, record);
    this.children.set(id, child);
    child.once("error", (error) => {
      writeFileSync(this.logPath(id), `lmf webui: could not start the run: ${error.message}\n`, { flag: "a" });
      this.finish(record, 127, null);
    });
    child.once("exit", (code, signal) => {
      this.children.delete(id);
      this.finish(record, code, signal);
    });
    this.save(record);
    return record;
  }

  /** Ends the run's process group: SIGTERM, then SIGKILL for what is left after a grace period. */
  stop(id: string): RunRecord {
    const run = this.get(id);
    if (run.status !== "running" || run.pid === null) return run;
    run.status = "stopping";
    this.save(run);
    killGroup(run.pid, "SIGTERM");
    const pid = run.pid;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (this.runs.get(id)?.status === "stopping") killGroup(pid, "SIGKILL");
    }, STOP_GRACE_MS);
    timer.unref();
    this.timers.add(timer);
    return run;
  }

  /** Runs a stopped (or failed) training run's config again: lmf train resumes from its last checkpoint. */
  resume(id: string): RunRecord {
    const run = this.get(id);
    if (run.job !== "train") throw new UserError(`run ${id} is not a training run`, "resume");
    if (run.status === "running" || run.status === "stopping") throw new UserError(`run ${id} is still running`, "resume", "stop it first");
    return this.start(run.job, readFileSync(run.config, "utf8"), run.outputDir, run.id);
  }

  /** Stops following the runs (they keep going). */
  close(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    for (const child of this.children.values()) child.removeAllListeners("exit");
  }

  /** A run started by an earlier board: no exit event comes, so its pid is polled. */
  private adopt(record: RunRecord): void {
    const timer = setInterval(() => {
      if (runsConfig(record.pid!, record.config)) return;
      clearInterval(timer);
      this.timers.delete(timer);
      this.finish(record, null, null, record.status === "stopping" ? "stopped" : "unknown");
    }, ADOPTED_POLL_MS);
    timer.unref();
    this.timers.add(timer);
  }

  private finish(record: RunRecord, code: number | null, signal: NodeJS.Signals | null, status?: RunStatus): void {
    if (record.endedAt !== null) return;
    record.endedAt = new Date().toISOString();
    record.exitCode = code;
    record.signal = signal;
    record.status = status ?? (record.status === "stopping" ? "stopped" : code === 0 ? "finished" : "failed");
    this.save(record);
  }

  private save(record: RunRecord): void {
    const path = join(this.runDir(record.id), "run.json");
    writeFileSync(`${path}.tmp`, `${JSON.stringify(record, null, 2)}\n`);
    renameSync(`${path}.tmp`, path);
  }
}
