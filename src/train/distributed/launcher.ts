// `lmf train --nproc_per_node N` (with --nnodes, --node_rank, --master_addr, --master_port for
// several machines): starts this machine's workers as torchrun does, each with RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT, or as LLaMA-Factory's launcher does
// when FORCE_TORCHRUN is set (NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_ADDR, MASTER_PORT; a free
// port when none is given on one machine). It watches them: a worker that fails stops the others
// (torchrun's behaviour), Ctrl-C or SIGTERM stops them all, and a master port in use is refused first.
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { UserError } from "../../errors.ts";

export interface LaunchPlan {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  /** null: a free port of this machine (one machine only). */
  masterPort: number | null;
  /** The `lmf train` arguments without the launcher's own flags. */
  workerTokens: string[];
}

type Environment = Readonly<Record<string, string | undefined>>;

const FLAGS = { nproc_per_node: "NPROC_PER_NODE", nnodes: "NNODES", node_rank: "NODE_RANK", master_addr: "MASTER_ADDR", master_port: "MASTER_PORT" } as const;
type Flag = keyof typeof FLAGS;

/** torchrun's default master port, used when several machines are named and no port is given. */
const TORCHRUN_PORT = 29500;
/** How long workers get to stop after SIGTERM or SIGINT before they are killed. */
const GRACE_MS = 5000;

/** LLaMA-Factory's is_env_enabled: true, y or 1, in any case. */
function envEnabled(env: Environment, name: string): boolean {
  return ["true", "y", "1"].includes((env[name] ?? "0").toLowerCase());
}

/** Splits the launcher's flags (`--nproc_per_node 2`, `--nproc-per-node=2`) from the training arguments. */
function splitFlags(tokens: readonly string[]): { flags: Partial<Record<Flag, string>>; rest: string[] } {
  const flags: Partial<Record<Flag, string>> = {};
  const rest: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const match = /^--([a-z_-]+)(?:=(.*))?$/.exec(tokens[i]!);
    const name = match?.[1]!.replaceAll("-", "_");
    if (!match || !name || !(name in FLAGS)) {
      rest.push(tokens[i]!);
      continue;
    }
    const value = match[2] ?? tokens[++i];
    if (value === undefined) throw new UserError(`--${name} needs a value`, "lmf train", `e.g. --${name} ${name === "master_addr" ? "127.0.0.1" : "2"}`);
    flags[name as Flag] = value;
  }
  return { flags, rest };
}

function count(name: string, text: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isInteger(value) || value < min || value > max) {
    throw new UserError(`${name} ${text} is not a whole number from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ""}`, "lmf train", `give ${name} a whole number`);
  }
  return value;
}

/**
 * The launch `lmf train` asks for, or null: no launcher flag and no FORCE_TORCHRUN, or this process
 * is already a worker (WORLD_SIZE set by a launcher).
 */
export function launchPlan(tokens: readonly string[], env: Environment): LaunchPlan | null {
  const { flags, rest } = splitFlags(tokens);
  const given = Object.keys(flags);
  if (env.WORLD_SIZE !== undefined) {
    if (given.length > 0) {
      throw new UserError(`--${given[0]} is a launcher flag, but this process is already a worker (WORLD_SIZE=${env.WORLD_SIZE} is set)`, "lmf train", "drop the launcher flags when a launcher (torchrun, ...) starts the workers, or unset WORLD_SIZE");
    }
    return null;
  }
  if (given.length === 0 && !envEnabled(env, "FORCE_TORCHRUN")) return null;
  // LLaMA-Factory switches torchrun to an elastic rendezvous with these; lmfactory's launcher has a static one.
  const elastic = ["RDZV_ID", "MIN_NNODES", "MAX_NNODES"].filter((name) => env[name]).concat(env.MAX_RESTARTS && env.MAX_RESTARTS !== "0" ? ["MAX_RESTARTS"] : []);
  if (elastic.length > 0) {
    throw new UserError(`${elastic.join(", ")} ask for an elastic launch (restarts, a changing number of nodes), which lmfactory's launcher does not do`, "lmf train", `unset ${elastic.join(", ")}: every node then runs with --nnodes, --node_rank and the master's address`);
  }
  const value = (flag: Flag) => flags[flag] ?? env[FLAGS[flag]];
  const nnodes = count("--nnodes (NNODES)", value("nnodes") ?? "1", 1);
  const nodeRank = count("--node_rank (NODE_RANK)", value("node_rank") ?? "0", 0);
  if (nodeRank >= nnodes) throw new UserError(`--node_rank ${nodeRank} is not below --nnodes ${nnodes}`, "lmf train", "node ranks run from 0 to nnodes - 1; node 0 hosts the master");
  const port = value("master_port");
  return {
    nprocPerNode: count("--nproc_per_node (NPROC_PER_NODE)", value("nproc_per_node") ?? "1", 1),
    nnodes,
    nodeRank,
    masterAddr: value("master_addr") || "127.0.0.1",
    masterPort: port !== undefined ? count("--master_port (MASTER_PORT)", port, 1, 65535) : nnodes > 1 ? TORCHRUN_PORT : null,
    workerTokens: rest,
  };
}

/** A port of this machine nothing listens on (LLaMA-Factory's find_available_port). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** Refuses a master port that something on this machine already listens on (before any worker starts). */
function ensurePortFree(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", (error: NodeJS.ErrnoException) => {
      reject(
        error.code === "EADDRINUSE"
          ? new UserError(`the master port ${port} is in use on this machine (another run, or another program, listens there)`, "--master_port", "choose a free port with --master_port (or MASTER_PORT), or leave it out on one machine to get a free one")
          : new UserError(`cannot listen on the master port ${port}: ${error.message}`, "--master_port", "choose another port"),
      );
    });
    server.listen(port, () => server.close(() => resolve()));
  });
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

const SIGNAL_NUMBER: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/** Starts this machine's workers and waits for them; returns the launcher's exit status. */
export async function launchWorkers(plan: LaunchPlan, print: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): Promise<number> {
  const port = plan.masterPort ?? (await freePort());
  if (plan.nodeRank === 0) await ensurePortFree(port);
  const worldSize = plan.nnodes * plan.nprocPerNode;
  const firstRank = plan.nodeRank * plan.nprocPerNode;
  const entry = fileURLToPath(new URL("../../../bin/lmf.mjs", import.meta.url));
  const threads = process.env.OMP_NUM_THREADS ?? process.env.LMF_NUM_THREADS ?? String(Math.max(1, Math.floor(cpus().length / plan.nprocPerNode)));
  print(
    `lmf: starting ${plan.nprocPerNode} worker(s) on node ${plan.nodeRank} of ${plan.nnodes} (ranks ${firstRank}-${firstRank + plan.nprocPerNode - 1} of ${worldSize}), ` +
      `master ${plan.masterAddr}:${port}, ${threads} thread(s) each`,
  );
  const workers: { rank: number; child: ChildProcess; exited: boolean }[] = [];
  for (let local = 0; local < plan.nprocPerNode; local++) {
    const rank = firstRank + local;
    const env = {
      ...process.env,
      RANK: String(rank),
      WORLD_SIZE: String(worldSize),
      LOCAL_RANK: String(local),
      LOCAL_WORLD_SIZE: String(plan.nprocPerNode),
      GROUP_RANK: String(plan.nodeRank),
      MASTER_ADDR: plan.masterAddr,
      MASTER_PORT: String(port),
      // torchrun sets OMP_NUM_THREADS so that the workers do not oversubscribe the cores.
      ...(process.env.OMP_NUM_THREADS === undefined && process.env.LMF_NUM_THREADS === undefined && { OMP_NUM_THREADS: threads }),
    };
    const child = spawn(process.execPath, [...process.execArgv, entry, "train", ...plan.workerTokens], { env, stdio: "inherit" });
    workers.push({ rank, child, exited: false });
    print(`lmf: worker rank ${rank} is pid ${child.pid}`);
  }
  return new Promise((resolve) => {
    let stopping: { reason: "failure" | NodeJS.Signals; status: number } | null = null;
    let killTimer: NodeJS.Timeout | undefined;
    const live = () => workers.filter((worker) => !worker.exited);
    const stopAll = (signal: NodeJS.Signals) => {
      for (const worker of live()) worker.child.kill(signal);
      // A worker stopped with SIGSTOP, or stuck in a native call, gets SIGKILL after the grace period.
      killTimer ??= setTimeout(() => live().forEach((worker) => worker.child.kill("SIGKILL")), GRACE_MS);
    };
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping?.reason === signal) {
        live().forEach((worker) => worker.child.kill("SIGKILL"));
        return;
      }
      print(`lmf: ${signal} received; stopping the workers`);
      stopping = { reason: signal, status: 128 + (SIGNAL_NUMBER[signal] ?? 1) };
      stopAll(signal);
    };
    const onInterrupt = () => onSignal("SIGINT");
    const onTerminate = () => onSignal("SIGTERM");
    process.on("SIGINT", onInterrupt);
    process.on("SIGTERM", onTerminate);
    for (const worker of workers) {
      const finished = (code: number | null, signal: NodeJS.Signals | null) => {
        if (worker.exited) return;
        worker.exited = true;
        if ((code !== 0 || signal) && stopping === null) {
          print(`lmf: worker rank ${worker.rank} (pid ${worker.child.pid}) ${describeExit(code, signal)}; stopping the other workers`);
          stopping = { reason: "failure", status: code !== null && code !== 0 ? code : 128 + (SIGNAL_NUMBER[signal!] ?? 1) };
          stopAll("SIGTERM");
        }
        if (live().length > 0) return;
        clearTimeout(killTimer);
        process.off("SIGINT", onInterrupt);
        process.off("SIGTERM", onTerminate);
        resolve(stopping?.status ?? 0);
      };
      worker.child.on("exit", finished);
      worker.child.on("error", (error) => {
        print(`lmf: worker rank ${worker.rank} could not start: ${error.message}`);
        finished(1, null);
      });
    }
  });
}
