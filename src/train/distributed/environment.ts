// Whether this process is one worker of a data-parallel run, read from the variables torchrun sets
// for each worker (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so
// that lmfactory's own launcher, torchrun or any launcher that sets them (a SLURM script, ...)
// starts the same run. WORLD_SIZE marks a worker; a worker needs RANK and the master's address too.
import { UserError } from "../../errors.ts";

export interface WorkerEnvironment {
  rank: number;
  worldSize: number;
  /** The worker's index on its machine (LOCAL_RANK; RANK when the launcher does not set it). */
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
}

type Environment = Readonly<Record<string, string | undefined>>;

function wholeNumber(env: Environment, name: string, min: number): number {
  const text = env[name]!;
  const value = Number(text);
  if (text.trim() === "" || !Number.isInteger(value) || value < min) {
    throw new UserError(`${name}=${text} is not a whole number of at least ${min}`, "the distributed environment", `set ${name} as torchrun does, or unset WORLD_SIZE to train in one process`);
  }
  return value;
}

/** The worker this process is, or null when WORLD_SIZE is not set (a single-process run). */
export function workerEnvironment(env: Environment = process.env): WorkerEnvironment | null {
  if (env.WORLD_SIZE === undefined) return null;
  const missing = ["RANK", "MASTER_ADDR", "MASTER_PORT"].filter((name) => !env[name]);
  if (missing.length > 0) {
    throw new UserError(
      `WORLD_SIZE is set but ${missing.join(", ")} ${missing.length === 1 ? "is" : "are"} not: a worker needs its rank and the master's address`,
      "the distributed environment",
      "launch with `lmf train --nproc_per_node N ...` (or torchrun), or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for each worker",
    );
  }
  const worldSize = wholeNumber(env, "WORLD_SIZE", 1);
  const rank = wholeNumber(env, "RANK", 0);
  if (rank >= worldSize) {
    throw new UserError(`RANK=${rank} is not below WORLD_SIZE=${worldSize}`, "the distributed environment", "ranks run from 0 to WORLD_SIZE - 1");
  }
  const masterPort = wholeNumber(env, "MASTER_PORT", 1);
  if (masterPort > 65535) throw new UserError(`MASTER_PORT=${masterPort} is not a port`, "the distributed environment", "choose a port from 1 to 65535");
  const localRank = env.LOCAL_RANK !== undefined ? wholeNumber(env, "LOCAL_RANK", 0) : rank;
  const localWorldSize = env.LOCAL_WORLD_SIZE !== undefined ? wholeNumber(env, "LOCAL_WORLD_SIZE", 1) : worldSize;
  return { rank, worldSize, localRank, localWorldSize, masterAddr: env.MASTER_ADDR!, masterPort };
}
