// The folders the web board was opened with, and what it finds in them: every path a form names
// must lie inside them (symbolic links followed), model folders and trained outputs for the
// pickers (LlamaBoard's `saves/<model>/<finetuning_type>/<run>` layout), the datasets of a
// `dataset_info.json` with each problem spelled out, and saved argument sets. The board's own files
// (runs, saved arguments) live in `<work folder>/lmf_webui/`.
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { DATASET_INFO, parseEntry, readDatasetInfo } from "../data/registry.ts";
import { UserError } from "../errors.ts";
import { readConfigFile } from "../hparams/parser.ts";

/** Fields whose values are paths (or hub ids, for the model-like ones): they must stay inside the opened folders. */
export const PATH_FIELDS = [
  "model_name_or_path", "adapter_name_or_path", "cache_dir", "new_special_tokens_config", "offload_folder",
  "export_dir", "export_quantization_dataset", "dataset_dir", "media_dir", "tokenized_path", "output_dir",
  "resume_from_checkpoint", "logging_dir", "ref_model", "ref_model_adapters", "reward_model", "reward_model_adapters",
  "task_dir", "save_dir", "deepspeed", "fsdp_config", "profiler_output_dir", "hyper_parallel_args", "swanlab_logdir",
  "kt_weight_path", "kt_non_expert_weight_path", "kt_expert_checkpoint_path", "ray_storage_path",
] as const;

/** Path fields that may also name a model or dataset on the hub (read from the local cache, never a file picker). */
const HUB_ID_FIELDS = new Set(["model_name_or_path", "ref_model", "reward_model", "export_quantization_dataset"]);
const HUB_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;

/** The board's own folder inside the work folder. */
export const STATE_FOLDER = "lmf_webui";
const SAVED_ARGS_FOLDER = "configs";
export const SAVED_ARGS_NAME = /^[A-Za-z0-9][\w.-]{0,63}$/;

/** Bounds of the folder scans behind the pickers. */
const SCAN_DEPTH = 4;
const SCAN_FOLDERS = 2000;
const PICKER_ENTRIES = 200;

export interface DatasetEntry {
  name: string;
  formatting: string;
  ranking: boolean;
  /** The data file or folder, as written in dataset_info.json. */
  file: string | null;
  /** What is wrong with this entry (unknown key, missing file...), when something is. */
  problem: string | null;
}

export interface DatasetListing {
  /** The dataset_info.json read (or looked for). */
  file: string;
  datasets: DatasetEntry[];
  /** Why there is no list: a missing folder or file, or a malformed dataset_info.json. */
  error: string | null;
}

export class Workspace {
  /** Absolute, symbolic links resolved; the first is the work folder. */
  readonly folders: string[];

  constructor(folders: readonly string[]) {
    if (folders.length === 0) throw new Error("a workspace needs at least one folder");
    this.folders = folders.map((folder) => {
      if (!existsSync(folder) || !statSync(folder).isDirectory()) throw new UserError(`folder ${folder} not found`, "--dir", "give existing folders");
      return realpathSync(folder);
    });
  }

  /** Relative paths in forms and configs are relative to it; runs start in it. */
  get workDir(): string {
    return this.folders[0]!;
  }

  get stateDir(): string {
    return join(this.workDir, STATE_FOLDER);
  }

  resolve(path: string): string {
    return resolve(this.workDir, path);
  }

  /** The path as the user would write it: relative to the work folder when inside it. */
  display(path: string): string {
    const rel = relative(this.workDir, path);
    return rel && !rel.startsWith("..") && !isAbsolute(rel) ? rel : path;
  }

  /** Whether `path` (resolved against the work folder, links followed as far as it exists) is inside an opened folder. */
  contains(path: string): boolean {
    let existing = this.resolve(path);
    const rest: string[] = [];
    while (!existsSync(existing)) {
      const parent = dirname(existing);
      if (parent === existing) return false;
      rest.unshift(basename(existing));
      existing = parent;
    }
    const real = join(realpathSync(existing), ...rest);
    return this.folders.some((folder) => real === folder || real.startsWith(folder + sep));
  }

  /** The problem with a path field's value, or null: outside the opened folders is refused (hub ids of model-like fields and a reward API's URL pass). */
  pathProblem(field: string, value: unknown): string | null {
    const paths = Array.isArray(value) ? value.map(String) : typeof value === "string" ? [value] : [];
    for (const path of paths) {
      if (HUB_ID_FIELDS.has(field) && HUB_ID.test(path) && !path.split("/").includes("..") && !existsSync(this.resolve(path))) continue;
      // PPO's `reward_model_type: api` names a URL, not a path.
      if (field === "reward_model" && /^https?:\/\//.test(path)) continue;
      if (!this.contains(path)) return `${path} is outside the folders this board was opened with (${this.folders.join(", ")})`;
    }
    return null;
  }

  /** Folders holding a Hugging Face model (config.json beside weights or a tokenizer), for the model picker. */
  listModels(): string[] {
    const found: string[] = [];
    const queue = this.folders.map((folder) => ({ folder, depth: 0 }));
    let visited = 0;
    while (queue.length && visited < SCAN_FOLDERS && found.length < PICKER_ENTRIES) {
      const { folder, depth } = queue.shift()!;
      visited += 1;
      let names: string[];
      try {
        names = readdirSync(folder);
      } catch {
        continue;
      }
      if (names.includes("config.json") && names.some((name) => name.endsWith(".safetensors") || name === "tokenizer.json" || name.endsWith(".bin"))) {
        found.push(this.display(folder));
      }
      if (depth >= SCAN_DEPTH) continue;
      for (const name of names.sort()) {
        if (name.startsWith(".") || name === "node_modules" || name === STATE_FOLDER || name.startsWith("checkpoint-")) continue;
        const child = join(folder, name);
        try {
          if (statSync(child).isDirectory()) queue.push({ folder: child, depth: depth + 1 });
        } catch {
          // A broken link or a folder we may not read: not a model.
        }
      }
    }
    return found;
  }

  /** Trained outputs for the top bar's picker: `saves/<model>/<finetuning_type>/*` and their checkpoints, newest first. */
  listCheckpoints(model: string, finetuningType: string): string[] {
    if (!model || !/^[\w.-]+$/.test(finetuningType)) return [];
    const root = join(this.workDir, "saves", basename(model.replace(/\/+$/, "")), finetuningType);
    if (!existsSync(root) || !this.contains(root)) return [];
    const runs = readdirSync(root)
      .map((name) => join(root, name))
      .filter((path) => statSync(path).isDirectory())
      .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
    const entries: string[] = [];
    for (const run of runs) {
      const checkpoints = readdirSync(run)
        .filter((name) => /^checkpoint-\d+$/.test(name))
        .sort((a, b) => Number(b.slice(11)) - Number(a.slice(11)))
        .map((name) => join(run, name));
      for (const folder of [run, ...checkpoints]) if (isTrainedOutput(folder)) entries.push(this.display(folder));
      if (entries.length >= PICKER_ENTRIES) break;
    }
    return entries.slice(0, PICKER_ENTRIES);
  }

  /** The datasets of `datasetDir`'s dataset_info.json; when there are none, the reason, naming the file. */
  listDatasets(datasetDir: string): DatasetListing {
    const dir = this.resolve(datasetDir || "data");
    const file = join(dir, DATASET_INFO);
    const listing = (error: string | null, datasets: DatasetEntry[] = []): DatasetListing => ({ file: this.display(file), datasets, error });
    if (!this.contains(dir)) return listing(`${this.display(dir)} is outside the folders this board was opened with (${this.folders.join(", ")})`);
    if (!existsSync(dir)) return listing(`the dataset folder ${this.display(dir)} does not exist`);
    let info: Record<string, unknown> | null;
    try {
      info = readDatasetInfo(dir);
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      return listing(`${this.display(file)}: ${withLine(error.what, file)}${error.fix ? ` (${error.fix})` : ""}`);
    }
    if (info === null) return listing(`${this.display(file)} not found: the dataset folder needs a dataset_info.json naming its datasets (see data/README.md in LLaMA-Factory)`);
    const datasets = Object.entries(info).map(([name, entry]): DatasetEntry => {
      const raw = (entry ?? {}) as Record<string, unknown>;
      const described = { name, formatting: String(raw.formatting ?? "alpaca"), ranking: raw.ranking === true, file: typeof raw.file_name === "string" ? raw.file_name : null };
      try {
        const attr = parseEntry(name, entry, dir);
        if (!existsSync(attr.path)) return { ...described, problem: `its file ${this.display(attr.path)} does not exist` };
        if (!this.contains(attr.path)) return { ...described, problem: `its file ${attr.path} is outside the folders this board was opened with` };
        return { ...described, problem: null };
      } catch (error) {
        if (!(error instanceof UserError)) throw error;
        return { ...described, problem: `${error.what}${error.fix ? ` (${error.fix})` : ""}` };
      }
    });
    if (datasets.length === 0) return listing(`${this.display(file)} defines no datasets`);
    return listing(null, datasets);
  }

  private savedArgsDir(): string {
    return join(this.stateDir, SAVED_ARGS_FOLDER);
  }

  listSavedArgs(): string[] {
    const dir = this.savedArgsDir();
    if (!existsSync(dir)) return [];
    return readdirSync(dir).filter((name) => name.endsWith(".yaml")).map((name) => name.slice(0, -5)).sort();
  }

  saveArgs(name: string, yaml: string): string {
    if (!SAVED_ARGS_NAME.test(name)) throw new UserError(`"${name}" is not a usable name`, "save", "use letters, digits, '.', '-' or '_' (at most 64)");
    mkdirSync(this.savedArgsDir(), { recursive: true });
    const path = join(this.savedArgsDir(), `${name}.yaml`);
    writeFileSync(path, yaml);
    return this.display(path);
  }

  /** A saved set (or any config file the form could have written) as key → value. */
  loadArgs(name: string): Record<string, unknown> {
    if (!SAVED_ARGS_NAME.test(name)) throw new UserError(`"${name}" is not a saved argument set`, "load");
    const path = join(this.savedArgsDir(), `${name}.yaml`);
    if (!existsSync(path)) throw new UserError(`no saved argument set "${name}"`, "load", `saved sets: ${this.listSavedArgs().join(", ") || "none yet"}`);
    return Object.fromEntries([...readConfigFile(path)].map(([key, setting]) => [key, setting.value]));
  }
}

/** A folder holding what a run saves: a LoRA adapter or full weights. */
function isTrainedOutput(folder: string): boolean {
  return existsSync(join(folder, "adapter_config.json")) || existsSync(join(folder, "config.json"));
}

/** JSON.parse reports a byte position; people look for a line and column. */
function withLine(message: string, file: string): string {
  const match = /position (\d+)/.exec(message);
  if (!match) return message;
  const before = readFileSync(file, "utf8").slice(0, Number(match[1]));
  const lines = before.split("\n");
  return `${message} (line ${lines.length}, column ${lines.at(-1)!.length + 1})`;
}
