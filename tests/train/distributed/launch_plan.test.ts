// What `lmf train` reads to launch workers (torchrun's flags, LLaMA-Factory's FORCE_TORCHRUN and
// its NNODES / NODE_RANK / NPROC_PER_NODE / MASTER_ADDR / MASTER_PORT) and what a worker reads
// (torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
import assert from "node:assert/strict";
import { test } from "node:test";
import { workerEnvironment } from "../../../src/train/distributed/environment.ts";
import { launchPlan } from "../../../src/train/distributed/launcher.ts";

const CONFIG = ["cfg.yaml", "learning_rate=1e-4", "--max_steps", "3"];

test("launcher flags in torchrun's spellings are taken out of the training arguments; the rest goes to the workers", () => {
  assert.equal(launchPlan(CONFIG, {}), null);
  const plan = launchPlan(["--nproc_per_node", "2", ...CONFIG, "--nnodes=2", "--node-rank", "1", "--master_addr", "10.0.0.1", "--master-port=29555"], {});
  assert.deepEqual(plan, { nprocPerNode: 2, nnodes: 2, nodeRank: 1, masterAddr: "10.0.0.1", masterPort: 29555, workerTokens: CONFIG });
  // One machine without a port: a free one is picked at launch (LLaMA-Factory's find_available_port).
  assert.deepEqual(launchPlan(["--nproc-per-node=3", ...CONFIG], {}), { nprocPerNode: 3, nnodes: 1, nodeRank: 0, masterAddr: "127.0.0.1", masterPort: null, workerTokens: CONFIG });
  // Several machines must agree on a port: torchrun's 29500.
  assert.equal(launchPlan(["--nnodes", "2", ...CONFIG], {})!.masterPort, 29500);
});

test("FORCE_TORCHRUN launches with LLaMA-Factory's variables; flags win over them; a worker never launches", () => {
  const env = { FORCE_TORCHRUN: "1", NNODES: "2", NODE_RANK: "1", NPROC_PER_NODE: "4", MASTER_ADDR: "192.168.0.1", MASTER_PORT: "29501" };
  assert.deepEqual(launchPlan(CONFIG, env), { nprocPerNode: 4, nnodes: 2, nodeRank: 1, masterAddr: "192.168.0.1", masterPort: 29501, workerTokens: CONFIG });
  assert.equal(launchPlan(CONFIG, { ...env, FORCE_TORCHRUN: "true" })!.nprocPerNode, 4);
  assert.equal(launchPlan(CONFIG, { ...env, FORCE_TORCHRUN: "0" }), null);
  assert.equal(launchPlan(["--nproc_per_node", "2", ...CONFIG], env)!.nprocPerNode, 2);
  // NNODES and friends alone do not launch (LLaMA-Factory needs FORCE_TORCHRUN or several devices).
  assert.equal(launchPlan(CONFIG, { NNODES: "2", NPROC_PER_NODE: "2" }), null);
  assert.equal(launchPlan(CONFIG, { ...env, WORLD_SIZE: "8", RANK: "3" }), null);
  assert.throws(() => launchPlan(["--nproc_per_node", "2", ...CONFIG], { WORLD_SIZE: "2", RANK: "0" }), /--nproc_per_node is a launcher flag, but this process is already a worker/);
});

test("bad launcher values are refused with the flag named", () => {
  assert.throws(() => launchPlan(["--nproc_per_node", "0"], {}), /--nproc_per_node \(NPROC_PER_NODE\) 0 is not a whole number from 1/);
  assert.throws(() => launchPlan(["--nproc_per_node", "two"], {}), /is not a whole number/);
  assert.throws(() => launchPlan(["--nnodes", "2", "--node_rank", "2"], {}), /--node_rank 2 is not below --nnodes 2/);
  assert.throws(() => launchPlan(["--master_port", "70000", "--nproc_per_node", "2"], {}), /--master_port \(MASTER_PORT\) 70000 is not a whole number from 1 to 65535/);
  assert.throws(() => launchPlan(["--nproc_per_node"], {}), /--nproc_per_node needs a value/);
  // LLaMA-Factory's elastic launch (torchrun --rdzv-*) is not built: refused, not ignored.
  assert.throws(() => launchPlan(CONFIG, { FORCE_TORCHRUN: "1", RDZV_ID: "job7", MAX_RESTARTS: "3" }), /RDZV_ID, MAX_RESTARTS ask for an elastic launch/);
  assert.doesNotThrow(() => launchPlan(CONFIG, { FORCE_TORCHRUN: "1", MAX_RESTARTS: "0" }));
});

test("a worker is the process WORLD_SIZE marks, with its rank and the master's address", () => {
  assert.equal(workerEnvironment({}), null);
  const base = { WORLD_SIZE: "4", RANK: "3", MASTER_ADDR: "10.0.0.1", MASTER_PORT: "29500" };
  assert.deepEqual(workerEnvironment({ ...base, LOCAL_RANK: "1", LOCAL_WORLD_SIZE: "2" }), { rank: 3, worldSize: 4, localRank: 1, localWorldSize: 2, masterAddr: "10.0.0.1", masterPort: 29500 });
  // A launcher that sets only the global variables (a SLURM script): the local ones follow them.
  assert.deepEqual(workerEnvironment(base), { rank: 3, worldSize: 4, localRank: 3, localWorldSize: 4, masterAddr: "10.0.0.1", masterPort: 29500 });
  assert.throws(() => workerEnvironment({ WORLD_SIZE: "2", RANK: "0" }), /WORLD_SIZE is set but MASTER_ADDR, MASTER_PORT are not/);
  assert.throws(() => workerEnvironment({ ...base, RANK: "4" }), /RANK=4 is not below WORLD_SIZE=4/);
  assert.throws(() => workerEnvironment({ ...base, WORLD_SIZE: "0" }), /WORLD_SIZE=0 is not a whole number of at least 1/);
});
