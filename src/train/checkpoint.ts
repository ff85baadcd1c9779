// Training checkpoints (`checkpoint-<step>/`): the model or adapter, optimizer and scheduler
// state, the RNG state and the data position, written to a temporary folder and renamed so that a
// kill at any moment leaves the last complete checkpoint intact; `save_total_limit` rotation. Both
// record in lmf_outputs.json what they write and remove only entries recorded there.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { UserError } from "../errors.ts";
import {
  type BaseHyperParameters,
  type LambdaLR,
  type Optimizer,
  type OptimizerStateMeta,
  type SchedulerState,
  type Tensor,
  getRngState,
  openSafetensors,
  saveSafetensors,
  setRngState,
} from "../torch/index.ts";
import { forgetOutputs, isOurs, readManifest, recordOutputs, removeOurs, removeStaleCheckpoints } from "./output_manifest.ts";

export const CHECKPOINT_PREFIX = "checkpoint-";

/** Where the data loader stands: the epoch and how many micro-batches of it were consumed. */
export interface DataPosition {
  epoch: number;
  microBatch: number;
}

export interface TrainerStateJson {
  global_step: number;
  max_steps: number;
  num_train_epochs: number;
  epoch: number;
  logging_steps: number;
  save_steps: number;
  eval_steps: number | null;
  train_batch_size: number;
  /** The processes of the run that wrote it (data parallelism); absent: one. */
  lmf_world_size?: number;
  /** Input tokens seen (include_num_input_tokens_seen); absent in checkpoints of older runs. */
  num_input_tokens_seen?: number;
  total_flos: number;
  log_history: Record<string, number>[];
  best_metric: number | null;
  best_global_step?: number | null;
  best_model_checkpoint: string | null;
  is_local_process_zero: boolean;
  is_world_process_zero: boolean;
  /** HF's ExportableState callbacks: EarlyStoppingCallback's patience counter survives a resume. */
  stateful_callbacks?: { EarlyStoppingCallback?: { args: Record<string, number>; attributes: { early_stopping_patience_counter: number } } };
  /** lmfactory's exact-resume data: the data position and the tokens seen so far. */
  lmf_data_position: DataPosition;
  lmf_total_tokens: number;
}

export interface CheckpointParts {
  saveModel: (folder: string) => void;
  optimizer: Optimizer<BaseHyperParameters>;
  scheduler: LambdaLR;
  state: TrainerStateJson;
  /** Every rank's RNG state, rank 0 first, in a run of several processes (HF's rng_state_<rank>). */
  rngStates?: readonly Tensor[];
}

/** The RNG state file of one rank: rng_state.safetensors in one process, rng_state_<rank> in several (as HF names them). */
function rngStateFile(rank: number, worldSize: number): string {
  return worldSize > 1 ? `rng_state_${rank}.safetensors` : "rng_state.safetensors";
}

/** The temporary folder a checkpoint is written to before it is renamed. */
export function checkpointTemporaryName(name: string): string {
  return `.${name}.tmp`;
}

/** Writes `checkpoint-<step>` atomically (a `.tmp` folder renamed at the end). */
export function saveCheckpoint(outputDir: string, parts: CheckpointParts, saveOnlyModel: boolean): string {
  const name = `${CHECKPOINT_PREFIX}${parts.state.global_step}`;
  const final = join(outputDir, name);
  const temporary = join(outputDir, checkpointTemporaryName(name));
  mkdirSync(outputDir, { recursive: true });
  const manifest = readManifest(outputDir);
  for (const entry of [name, checkpointTemporaryName(name)]) {
    if (existsSync(join(outputDir, entry)) && !isOurs(outputDir, entry, manifest)) {
      throw new UserError(`${entry} exists and lmfactory did not write it; the checkpoint of step ${parts.state.global_step} would replace it`, outputDir, "move it away or choose another output_dir");
    }
  }
  recordOutputs(outputDir, [name, checkpointTemporaryName(name)]);
  rmSync(temporary, { recursive: true, force: true });
  mkdirSync(temporary, { recursive: true });
  parts.saveModel(temporary);
  if (!saveOnlyModel) {
    const optimizerState = parts.optimizer.stateDict();
    saveSafetensors(join(temporary, "optimizer.safetensors"), optimizerState.tensors);
    writeFileSync(join(temporary, "optimizer.json"), JSON.stringify(optimizerState.meta));
    writeFileSync(join(temporary, "scheduler.json"), JSON.stringify(parts.scheduler.stateDict()));
    if (parts.rngStates && parts.rngStates.length > 1) {
      parts.rngStates.forEach((state, rank) => saveSafetensors(join(temporary, rngStateFile(rank, parts.rngStates!.length)), { cpu: state }));
    } else {
      const rng = getRngState();
      saveSafetensors(join(temporary, "rng_state.safetensors"), { cpu: rng });
      rng.dispose();
    }
  }
  writeFileSync(join(temporary, "trainer_state.json"), JSON.stringify(parts.state, null, 2) + "\n");
  rmSync(final, { recursive: true, force: true });
  renameSync(temporary, final);
  return final;
}

/** Checkpoint folders in `outputDir`, oldest first. */
export function listCheckpoints(outputDir: string): string[] {
  if (!existsSync(outputDir) || !statSync(outputDir).isDirectory()) return [];
  return readdirSync(outputDir)
    .filter((name) => new RegExp(`^${CHECKPOINT_PREFIX}\\d+$`).test(name) && existsSync(join(outputDir, name, "trainer_state.json")))
    .sort((a, b) => Number(a.slice(CHECKPOINT_PREFIX.length)) - Number(b.slice(CHECKPOINT_PREFIX.length)))
    .map((name) => join(outputDir, name));
}

export function lastCheckpoint(outputDir: string): string | null {
  return listCheckpoints(outputDir).at(-1) ?? null;
}

/**
 * After a save: removes the stale checkpoints of a run that overwrite_output_dir started over from,
 * then the oldest checkpoints beyond `limit`, as HF's `save_total_limit` (null: keep all), but only
 * those lmfactory wrote (a checkpoint it did not write is kept, even when it is over the limit).
 * The best checkpoint is never deleted: HF moves it next to the newest before rotating, and keeps
 * two when the limit is 1 and the newest is not the best, so training can still resume.
 */
export function rotateCheckpoints(outputDir: string, limit: number | null, best: string | null = null): void {
  removeStaleCheckpoints(outputDir);
  if (limit === null || limit <= 0) return;
  const checkpoints = listCheckpoints(outputDir);
  const keep = best !== null && limit === 1 && checkpoints.at(-1) !== best ? 2 : limit;
  if (checkpoints.length <= keep) return;
  const bestIndex = best === null ? -1 : checkpoints.indexOf(best);
  for (let i = bestIndex; i >= 0 && i < checkpoints.length - 2; i++) [checkpoints[i], checkpoints[i + 1]] = [checkpoints[i + 1]!, checkpoints[i]!];
  const manifest = readManifest(outputDir);
  const removed: string[] = [];
  for (const old of checkpoints.slice(0, checkpoints.length - keep)) {
    const name = basename(old);
    if (!isOurs(outputDir, name, manifest)) continue;
    removeOurs(outputDir, name, manifest);
    removed.push(name, checkpointTemporaryName(name));
  }
  forgetOutputs(outputDir, removed);
}

export function readTrainerState(checkpoint: string): TrainerStateJson {
  const path = join(checkpoint, "trainer_state.json");
  if (!existsSync(path)) {
    throw new UserError("not a checkpoint (no trainer_state.json)", checkpoint, "point resume_from_checkpoint at a checkpoint-<step> folder");
  }
  return JSON.parse(readFileSync(path, "utf8")) as TrainerStateJson;
}

/** This process's place in a data-parallel run, for the RNG state it resumes. */
export interface ResumingProcess {
  rank: number;
  worldSize: number;
  warn: (line: string) => void;
}

/** Restores optimizer, scheduler and RNG state saved by `saveCheckpoint` (this rank's RNG state in a run of several processes). */
export function loadTrainingState(checkpoint: string, optimizer: Optimizer<BaseHyperParameters>, scheduler: LambdaLR, resuming: ResumingProcess = { rank: 0, worldSize: 1, warn: () => {} }): void {
  const optimizerFile = join(checkpoint, "optimizer.safetensors");
  if (!existsSync(optimizerFile)) {
    throw new UserError(
      "the checkpoint holds the model only (save_only_model), so training cannot resume exactly from it",
      checkpoint,
      "start a new run from these weights instead, or resume from a checkpoint saved without save_only_model",
    );
  }
  const reader = openSafetensors(optimizerFile);
  const tensors: Record<string, Tensor> = {};
  try {
    for (const name of reader.names()) tensors[name] = reader.get(name);
    const meta = JSON.parse(readFileSync(join(checkpoint, "optimizer.json"), "utf8")) as OptimizerStateMeta;
    optimizer.loadStateDict({ tensors, meta });
  } finally {
    reader.close();
    for (const tensor of Object.values(tensors)) tensor.dispose();
  }
  scheduler.loadStateDict(JSON.parse(readFileSync(join(checkpoint, "scheduler.json"), "utf8")) as SchedulerState);
  let rngFile = join(checkpoint, rngStateFile(resuming.rank, resuming.worldSize));
  if (!existsSync(rngFile)) {
    // HF: "Didn't find an RNG file for process ...": the run continues, its random draws differ.
    const saved = readTrainerState(checkpoint).lmf_world_size ?? 1;
    resuming.warn(`${checkpoint} was written by a run of ${saved} process(es) and holds no RNG state for rank ${resuming.rank} of ${resuming.worldSize}; dropout and NEFTune draw other numbers than an uninterrupted run`);
    rngFile = join(checkpoint, existsSync(join(checkpoint, "rng_state.safetensors")) ? "rng_state.safetensors" : rngStateFile(0, saved));
  }
  const rngReader = openSafetensors(rngFile);
  try {
    const rng = rngReader.get("cpu");
    setRngState(rng);
    rng.dispose();
  } finally {
    rngReader.close();
  }
}
