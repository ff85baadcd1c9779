// The output folder of a run. Planned before anything loads: not a file, apart from the model,
// adapters and data, resumed or started by LLaMA-Factory's rule (hparams/parser.py get_train_args,
// HF's get_last_checkpoint). Claimed only once the arguments, data and model are loaded: no name the
// run writes may belong to a file lmfactory did not write (lmf_outputs.json records what it wrote).
import { existsSync, lstatSync, mkdirSync, readdirSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { UserError } from "../errors.ts";
import type { TrainArgs } from "../hparams/index.ts";
import { ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME } from "../model/adapters/lora.ts";
import { tokenizerFileNames } from "../data/tokenizer.ts";
import { CHECKPOINT_PREFIX, listCheckpoints, readTrainerState } from "./checkpoint.ts";
import { MANIFEST_NAME, type OutputManifest, readManifest, removeOurs, removeStaleCheckpoints, writeManifest } from "./output_manifest.ts";

/** LLaMA-Factory's CHECKPOINT_NAMES: a finished model or adapter in the folder itself. */
const FINISHED_MODEL_NAMES = ["adapter_model.safetensors", "adapter_model.bin", "model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin"];

/** `checkpoint-<step>` and its temporary `.checkpoint-<step>.tmp`. */
const CHECKPOINT_ENTRY = new RegExp(`^\\.?${CHECKPOINT_PREFIX}(\\d+)(\\.tmp)?$`);

export interface OutputDirPlan {
  dir: string;
  /** Whether the run writes anything into the folder (do_train, do_eval or do_predict). */
  writes: boolean;
  training: boolean;
  resumeFrom: string | null;
  /** overwrite_output_dir: lmfactory's earlier checkpoints are ignored, and removed at this run's first save. */
  startOver: boolean;
}

/** Whether anything (a file, a folder, a link, even a dangling one) has this path. */
function entryExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The absolute path with links resolved, for a path that may not exist yet (its existing part is resolved). */
function realLocation(path: string): string {
  const missing: string[] = [];
  let current = resolve(path);
  while (!existsSync(current) && dirname(current) !== current) {
    missing.unshift(basename(current));
    current = dirname(current);
  }
  return join(realpathSync(current), ...missing);
}

function isWithin(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** output_dir may not be, hold or sit in the model, an adapter, a reference or reward model, the data or the cache. */
function refuseOverlaps(args: TrainArgs): void {
  const { model, data, finetuning, training } = args;
  // Hub ids are not local paths: only what exists here is compared (tokenized_path is always local).
  const others: [string, string | null | undefined, boolean][] = [
    ["model_name_or_path", model.model_name_or_path, false],
    ...(model.adapter_name_or_path ?? []).map((path): [string, string, boolean] => ["adapter_name_or_path", path, false]),
    ["ref_model", finetuning.ref_model, false],
    ["reward_model", finetuning.reward_model, false],
    ["dataset_dir", data.dataset_dir, false],
    ["tokenized_path", data.tokenized_path, true],
  ];
  const output = realLocation(training.output_dir);
  for (const [key, path, always] of others) {
    if (!path || (!always && !existsSync(path))) continue;
    const other = realLocation(path);
    const relation = output === other ? "is the same folder as" : isWithin(output, other) ? "is inside" : isWithin(other, output) ? "contains" : null;
    if (relation === null) continue;
    throw new UserError(
      `${training.output_dir} ${relation} ${key} (${path})`,
      "output_dir",
      "choose an output_dir of its own: lmfactory writes checkpoints and the trained model there",
    );
  }
}

/** The newest checkpoint to resume from: stale checkpoints of a run started over are never resumed. */
function lastResumable(dir: string, manifest: OutputManifest): string | null {
  return listCheckpoints(dir).filter((path) => !manifest.stale.includes(basename(path))).at(-1) ?? null;
}

/** Where a run resumes: an explicit checkpoint, or the last one in output_dir (LLaMA-Factory's rule). */
function resolveResume(args: TrainArgs, manifest: OutputManifest, print: (line: string) => void): string | null {
  const { training } = args;
  const dir = training.output_dir;
  const requested = training.resume_from_checkpoint;
  if (requested && requested !== "false") {
    if (requested === "true" || requested === "True") {
      const last = lastResumable(dir, manifest);
      if (!last) throw new UserError(`no checkpoint found in ${dir}`, "resume_from_checkpoint", "train without resume_from_checkpoint first");
      return last;
    }
    if (!existsSync(requested)) throw new UserError(`checkpoint ${requested} does not exist`, "resume_from_checkpoint");
    return requested;
  }
  if (!training.do_train || !existsSync(dir) || training.overwrite_output_dir) return null;
  const last = lastResumable(dir, manifest);
  if (last) {
    print(`resuming training from ${last} (set overwrite_output_dir: true to start over)`);
    return last;
  }
  const finished = FINISHED_MODEL_NAMES.filter((name) => existsSync(join(dir, name)));
  if (finished.length === 0) return null;
  // lmfactory's own run that was stopped before its first checkpoint starts again from the beginning.
  if (finished.every((name) => manifest.written.includes(name)) && !manifest.training_finished) {
    print(`${dir} holds an unfinished lmfactory run without a checkpoint: training it again from the start`);
    return null;
  }
  throw new UserError(
    `${dir} already exists and is not empty: it holds a trained model (${finished.join(", ")}) and no checkpoint to resume from`,
    "output_dir",
    "set overwrite_output_dir: true to train again and write over lmfactory's outputs, or choose another output_dir",
  );
}

/** Checkpoint entries lmfactory did not write, that this run could write over (steps after the one it resumes from). */
function refuseForeignCheckpoints(dir: string, manifest: OutputManifest, resumeFrom: string | null): void {
  const resumeStep = resumeFrom ? readTrainerState(resumeFrom).global_step : 0;
  const inTheWay = readdirSync(dir).filter((name) => {
    const match = CHECKPOINT_ENTRY.exec(name);
    return match !== null && Number(match[1]) > resumeStep && !manifest.written.includes(name);
  });
  if (inTheWay.length === 0) return;
  throw new UserError(
    `${dir} holds ${inTheWay.slice(0, 5).join(", ")}, which lmfactory did not write; this run would save its checkpoints over ${inTheWay.length === 1 ? "it" : "them"}`,
    "output_dir",
    `move ${inTheWay.length === 1 ? "it" : "them"} away, or choose another output_dir`,
  );
}

/** Checks the output folder and decides resume or start, touching nothing on disk. */
export function planOutputDir(args: TrainArgs, print: (line: string) => void): OutputDirPlan {
  const { training } = args;
  const dir = training.output_dir;
  const writes = training.do_train || training.do_eval || training.do_predict;
  const plan: OutputDirPlan = { dir, writes, training: training.do_train, resumeFrom: null, startOver: false };
  if (!writes) return plan;
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    throw new UserError(`${dir} is a file, not a folder`, "output_dir", "give output_dir the path of a folder; it is created when missing");
  }
  refuseOverlaps(args);
  const manifest = existsSync(dir) ? readManifest(dir) : { written: [], stale: [], training_finished: false };
  plan.resumeFrom = resolveResume(args, manifest, print);
  plan.startOver = training.do_train && training.overwrite_output_dir && plan.resumeFrom === null;
  if (training.do_train && existsSync(dir)) refuseForeignCheckpoints(dir, manifest, plan.resumeFrom);
  return plan;
}

/** Top-level names this run writes into output_dir (checkpoints are recorded as they are saved). */
function plannedNames(args: TrainArgs, modelFolder: string, isLora: boolean): string[] {
  const { training, finetuning } = args;
  const names = [MANIFEST_NAME, `${MANIFEST_NAME}.tmp`];
  if (training.do_train) {
    names.push("lmf_args.json", "trainer_log.jsonl", "trainer_state.json", "train_results.json", "all_results.json");
    // Weights are written to `<name>.tmp` and renamed.
    const [config, weights] = isLora ? [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME] : ["config.json", "model.safetensors"];
    names.push(config, weights, `${weights}.tmp`, ...tokenizerFileNames(modelFolder));
    if (finetuning.plot_loss) names.push("training_loss.png", "training_eval_loss.png");
    if (finetuning.pissa_convert && finetuning.pissa_init && isLora) names.push("pissa_init", "pissa_backup", "pissa_converted");
  }
  if (training.do_eval) names.push("eval_results.json", "all_results.json");
  if (training.do_predict) names.push("generated_predictions.jsonl", "predict_results.json", "all_results.json");
  return [...new Set(names)];
}

/**
 * The first write of a run, once its arguments, data and model are loaded: refuses when a name it
 * writes belongs to a file lmfactory did not write, records the names, removes lmfactory's own
 * temporary leftovers of a killed run, and with overwrite_output_dir marks its old checkpoints stale.
 */
export function claimOutputDir(plan: OutputDirPlan, args: TrainArgs, model: { modelFolder: string; isLora: boolean }): void {
  if (!plan.writes) return;
  const { dir } = plan;
  const manifest = existsSync(dir) ? readManifest(dir) : { written: [], stale: [], training_finished: false };
  const names = plannedNames(args, model.modelFolder, model.isLora);
  const foreign = names.filter((name) => entryExists(join(dir, name)) && !manifest.written.includes(name));
  if (foreign.length > 0) {
    throw new UserError(
      `${dir} holds ${foreign.join(", ")}, which lmfactory did not write; this run would write over ${foreign.length === 1 ? "it" : "them"}`,
      "output_dir",
      `move ${foreign.length === 1 ? "it" : "them"} away, or choose another output_dir`,
    );
  }
  mkdirSync(dir, { recursive: true });
  const leftovers = manifest.written.filter((name) => name.endsWith(".tmp") && name !== `${MANIFEST_NAME}.tmp` && entryExists(join(dir, name)));
  const stale = plan.startOver ? [...manifest.stale, ...manifest.written.filter((name) => /^checkpoint-\d+$/.test(name))] : manifest.stale;
  writeManifest(dir, {
    written: [...manifest.written, ...names],
    stale,
    training_finished: plan.training ? false : manifest.training_finished,
  });
  for (const name of leftovers) removeOurs(dir, name);
}

/** The run got to its end: a later run may not start over silently, and stale checkpoints go. */
export function finishOutputDir(plan: OutputDirPlan): void {
  if (!plan.writes || !plan.training) return;
  removeStaleCheckpoints(plan.dir);
  writeManifest(plan.dir, { ...readManifest(plan.dir), training_finished: true });
}
