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
    const rng = getRngState();
    saveSafetensors(join(temporary, "rng_state.safetensors"), { cpu: rng });
    rng.dispose();
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

/** Restores optimizer, scheduler and RNG state saved by `saveCheckpoint`. */
export function loadTrainingState(checkpoint: string, optimizer: Optimizer<BaseHyperParameters>, scheduler: LambdaLR): void {
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
  const rngReader = openSafetensors(join(checkpoint, "rng_state.safetensors"));
  try {
    const rng = rngReader.get("cpu");
    setRngState(rng);
    rng.dispose();
  } finally {
    rngReader.close();
  }
}
