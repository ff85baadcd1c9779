// A form's values checked by the parameter system itself, before anything starts: each value is
// coerced by its declaration (type, choices, bounds), paths must stay inside the opened folders,
// then the command's own parser runs its rules and tiers, and the datasets and model are looked up.
// Each message is the parameter system's, placed beside the field it names. The checked values
// become the YAML a run starts with (LlamaBoard writes `training_args.yaml` the same way).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { getDatasetAttrs } from "../data/registry.ts";
import { UserError } from "../errors.ts";
import { parseInferArgs, parseTrainArgs } from "../hparams/index.ts";
import { coerceValue } from "../hparams/parser.ts";
import { resolveModelPath } from "../model/hub.ts";
import { closestName } from "../names.ts";
import { FIXED, IN_VIEW, JOB_COMMAND, type JobName, TOP_BAR, commandFields } from "./form_schema.ts";
import { PATH_FIELDS, type Workspace } from "./workspace.ts";

export interface CheckResult {
  ok: boolean;
  /** Field name → the parameter system's message for it. */
  errors: Record<string, string>;
  /** A problem that names no single field. */
  message: string | null;
  /** Settings accepted with a notice (no effect in lmfactory, old names). */
  notices: string[];
  /** The checked values, in form order, as the run's config holds them. */
  settings: Record<string, unknown>;
  yaml: string;
}

export interface CheckOptions {
  /** Also run the command's parser and look up datasets and the model (false: each value alone, e.g. webchat's generation settings). */
  full?: boolean;
}

/** `what (fix)` of a UserError: the "where" is the field the message is shown beside. */
export const userMessage = (error: UserError): string => `${error.what}${error.fix ? ` (${error.fix})` : ""}`;

/** An empty input means "not set": null for optional fields, the default otherwise. */
function isUnset(raw: unknown): boolean {
  return raw === undefined || raw === null || (typeof raw === "string" && raw.trim() === "");
}

/** The field names a message mentions as `name` or `name: value`, in order. */
export function fieldsNamed(message: string, known: ReadonlySet<string>): string[] {
  const names = [...message.matchAll(/`([a-z_0-9]+)(?::[^`]*)?`/g)].map((match) => match[1]!);
  return [...new Set(names.filter((name) => known.has(name)))];
}

function ordered(job: JobName, values: Record<string, unknown>, declared: readonly string[]): Record<string, unknown> {
  const order = [...TOP_BAR, ...IN_VIEW[job], ...Object.keys(FIXED[job]), ...declared];
  const out: Record<string, unknown> = {};
  for (const name of order) if (name in values && !(name in out)) out[name] = values[name];
  return out;
}

/** The same settings with path fields made absolute against the work folder, for checks run in this process. */
export function absolutePaths(settings: Record<string, unknown>, workspace: Workspace): Record<string, unknown> {
  const out = { ...settings };
  for (const name of PATH_FIELDS) {
    const value = out[name];
    const absolute = (path: string) => (name === "model_name_or_path" && !existsSync(workspace.resolve(path)) ? path : workspace.resolve(path));
    if (typeof value === "string") out[name] = absolute(value);
    else if (Array.isArray(value)) out[name] = value.map((item) => absolute(String(item)));
  }
  return out;
}

function parseForJob(job: JobName, settings: Record<string, unknown>, onWarning: (message: string) => void): void {
  const command = JOB_COMMAND[job];
  if (command === "train") parseTrainArgs(settings, { onWarning });
  else parseInferArgs(settings, { onWarning, command: command === "export" ? "export" : "chat" });
}

/** Datasets named by the form exist in dataset_info.json (or as paths) and their files lie inside the opened folders. */
function checkDatasets(settings: Record<string, unknown>, workspace: Workspace, errors: Record<string, string>): void {
  const datasetDir = workspace.resolve(String(settings.dataset_dir ?? "data"));
  for (const field of ["dataset", "eval_dataset"]) {
    const names = settings[field];
    if (!Array.isArray(names) || names.length === 0) continue;
    try {
      for (const attr of getDatasetAttrs(names.map(String), datasetDir)) {
        if (!workspace.contains(attr.path)) throw new UserError(`dataset "${attr.name}" reads ${attr.path}, outside the folders this board was opened with`);
        if (!existsSync(attr.path)) throw new UserError(`dataset "${attr.name}": file ${workspace.display(attr.path)} not found`, undefined, "check file_name in dataset_info.json");
      }
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      errors[field] = userMessage(error);
    }
  }
}

export function checkJob(job: JobName, values: Record<string, unknown>, workspace: Workspace | null, options: CheckOptions = {}): CheckResult {
  const full = options.full ?? true;
  const declared = commandFields(JOB_COMMAND[job]);
  const known = new Set(declared.keys());
  const errors: Record<string, string> = {};
  const coerced: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(values)) {
    const field = declared.get(name);
    if (!field) {
      const guess = closestName(name, [...known]);
      errors[name] = `unknown key \`${name}\` for lmf ${JOB_COMMAND[job]}${guess ? ` (did you mean \`${guess}\`?)` : ""}`;
      continue;
    }
    if (name in FIXED[job]) continue;
    if (isUnset(raw)) continue;
    try {
      coerced[name] = coerceValue(name, field.spec, typeof raw === "string" ? raw.trim() : raw, "form");
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      errors[name] = userMessage(error);
    }
  }
  Object.assign(coerced, FIXED[job]);
  if (workspace) {
    for (const name of PATH_FIELDS) {
      const problem = name in coerced ? workspace.pathProblem(name, coerced[name]) : null;
      if (problem) errors[name] ??= problem;
    }
    // adapter_folder is a subfolder of each adapter: together they must stay inside too.
    const adapters = coerced.adapter_name_or_path;
    if (typeof coerced.adapter_folder === "string" && Array.isArray(adapters)) {
      const problem = workspace.pathProblem("adapter_name_or_path", adapters.map((adapter) => join(String(adapter), coerced.adapter_folder as string)));
      if (problem) errors.adapter_folder ??= problem;
    }
  }
  const settings = ordered(job, coerced, [...declared.keys()]);
  const notices: string[] = [];
  let message: string | null = null;
  if (full && Object.keys(errors).length === 0) {
    try {
      parseForJob(job, workspace ? absolutePaths(settings, workspace) : settings, (notice) => notices.push(notice));
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      const text = userMessage(error);
      const named = fieldsNamed(`${error.where ?? ""} ${error.what}`, known);
      if (named.length) for (const name of named) errors[name] ??= text;
      else message = text;
    }
    if (workspace && Object.keys(errors).length === 0 && message === null) {
      checkDatasets(settings, workspace, errors);
      const model = settings.model_name_or_path;
      if (typeof model === "string") {
        try {
          resolveModelPath(existsSync(workspace.resolve(model)) ? workspace.resolve(model) : model, { cacheDir: (settings.cache_dir as string | undefined) ?? null });
        } catch (error) {
          if (!(error instanceof UserError)) throw error;
          errors.model_name_or_path = userMessage(error);
        }
      }
    }
  }
  const ok = Object.keys(errors).length === 0 && message === null;
  return { ok, errors, message, notices, settings, yaml: configYaml(job, settings) };
}

/** The config a run starts with: the checked settings, with a header saying what wrote it. */
export function configYaml(job: JobName, settings: Record<string, unknown>): string {
  const head = `# lmf ${JOB_COMMAND[job]} config written by the lmfactory web board (${job} tab)\n`;
  return head + stringify(settings, { lineWidth: 0 });
}
