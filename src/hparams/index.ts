// The parameter system's entry points: one parse function per command (train; chat/api/export;
// eval), each reading CLI tokens or an object, checking types, rules and tiers, then deriving
// what LLaMA-Factory derives (`get_train_args`, `get_infer_args`, `get_eval_args`), plus
// `toDict`, `saveJson` and `loadJson` for the resolved arguments.
import { readFileSync, writeFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { UserError } from "../errors.ts";
import { type DataArguments, dataGroup } from "./data.ts";
import { type EvaluationArguments, evaluationGroup } from "./evaluation.ts";
import { type FinetuningArguments, finetuningGroup } from "./finetuning.ts";
import { type GeneratingArguments, generatingGroup } from "./generating.ts";
import { type ModelArguments, modelGroup } from "./model.ts";
import { closestName } from "../names.ts";
import { type RawSettings, coerceValue, readArgv, readObject, resolveGroups } from "./parser.ts";
import { type Command, type RuleArgs, firstBrokenRule, ruleMessage } from "./rules.ts";
import { type Field, type Group, type GroupKey, type Tier, defaultsOf, formatValue } from "./schema.ts";
import { type TrainingArguments, trainingGroup } from "./training.ts";

export type { DataArguments, EvaluationArguments, FinetuningArguments, GeneratingArguments, ModelArguments, TrainingArguments };
export type { Command, Rule, RuleArgs } from "./rules.ts";
export { rules } from "./rules.ts";
export type { Field, Group, GroupKey, Tier, ValueTier } from "./schema.ts";

export interface TrainArgs {
  model: ModelArguments;
  data: DataArguments;
  training: TrainingArguments;
  finetuning: FinetuningArguments;
  generating: GeneratingArguments;
}
export interface InferArgs {
  model: ModelArguments;
  data: DataArguments;
  finetuning: FinetuningArguments;
  generating: GeneratingArguments;
}
export interface EvalArgs {
  model: ModelArguments;
  data: DataArguments;
  evaluation: EvaluationArguments;
  finetuning: FinetuningArguments;
}
export type AnyArgs = Partial<TrainArgs & EvalArgs>;

export const allGroups: readonly Group[] = [modelGroup, dataGroup, trainingGroup, finetuningGroup, generatingGroup, evaluationGroup];

/** The groups each command fills, as in LLaMA-Factory's train, infer and eval parsers. */
export const commandGroups: Readonly<Record<Command, readonly GroupKey[]>> = {
  train: ["model", "data", "training", "finetuning", "generating"],
  chat: ["model", "data", "finetuning", "generating"],
  api: ["model", "data", "finetuning", "generating"],
  export: ["model", "data", "finetuning", "generating"],
  eval: ["model", "data", "evaluation", "finetuning"],
};

export const groupByKey = (key: GroupKey): Group => allGroups.find((group) => group.key === key)!;

export interface ParseOptions {
  /** Where notices go (old names, ignored keys); stderr by default. */
  onWarning?: (message: string) => void;
  /** Return settings of features not built yet instead of refusing them (tests, web-board previews). */
  allowUnsupported?: boolean;
}

/** CLI tokens (`cfg.yaml key=value`, `--key value`) or a plain object of LLaMA-Factory keys. */
export type ArgsInput = readonly string[] | Record<string, unknown>;

export function parseTrainArgs(input: ArgsInput, options: ParseOptions = {}): TrainArgs {
  const args = parseFor("train", input, options) as unknown as TrainArgs;
  const { data, training, finetuning, model } = args;
  finishData(data);
  data.packing ??= finetuning.stage === "pt";
  finishFinetuning(finetuning);
  training.generation_max_length ??= data.cutoff_len;
  training.generation_num_beams = data.eval_num_beams ?? training.generation_num_beams;
  training.remove_unused_columns = false;
  if (finetuning.finetuning_type === "lora") training.label_names ??= ["labels"];
  model.compute_dtype = training.bf16 || finetuning.pure_bf16 ? "bfloat16" : training.fp16 ? "float16" : "float32";
  model.model_max_length = data.cutoff_len;
  model.block_diag_attn = data.neat_packing;
  return args;
}

/** For `lmf chat`, `lmf api` and `lmf export`: a training config works too; its training keys are ignored. */
export function parseInferArgs(input: ArgsInput, options: ParseOptions & { command?: "chat" | "api" | "export" } = {}): InferArgs {
  const command = options.command ?? "chat";
  const args = parseFor(command, input, options) as unknown as InferArgs;
  finishData(args.data);
  finishFinetuning(args.finetuning);
  const { model } = args;
  model.compute_dtype = model.infer_dtype === "auto" ? null : model.infer_dtype;
  model.device_map = model.export_dir && model.export_device === "cpu" ? "cpu" : "auto";
  model.model_max_length = args.data.cutoff_len;
  model.block_diag_attn = args.data.neat_packing;
  return args;
}

export function parseEvalArgs(input: ArgsInput, options: ParseOptions = {}): EvalArgs {
  const args = parseFor("eval", input, options) as unknown as EvalArgs;
  finishData(args.data);
  finishFinetuning(args.finetuning);
  args.model.compute_dtype = args.model.infer_dtype === "auto" ? null : args.model.infer_dtype;
  args.model.device_map = "auto";
  args.model.model_max_length = args.data.cutoff_len;
  return args;
}

function parseFor(command: Command, input: ArgsInput, options: ParseOptions): Record<GroupKey, Record<string, unknown>> {
  const onWarning = options.onWarning ?? ((message: string) => console.warn(`notice: ${message}`));
  const settings: RawSettings = Array.isArray(input) ? readArgv(input as readonly string[]) : readObject(input as Record<string, unknown>);
  const used = commandGroups[command].map(groupByKey);
  const values = resolveGroups(settings, {
    used,
    others: allGroups.filter((group) => !used.includes(group)),
    command: `lmf ${command}`,
    strictOthers: command === "train",
    onWarning,
  });
  const ruleArgs = { command, ...values } as unknown as RuleArgs;
  // A feature that is not built is refused before its own rules: their fixes could not help.
  if (!options.allowUnsupported) refuseUnsupported(unsupportedSettings(command, values));
  const broken = firstBrokenRule(ruleArgs);
  if (broken) throw new UserError(ruleMessage(broken, ruleArgs), `rule ${broken.name}`, broken.fix);
  for (const setting of noEffectSettings(command, values)) {
    onWarning(`\`${setting.name}: ${formatValue(setting.value)}\` has no effect in lmfactory: ${setting.reason}`);
  }
  return values;
}

/** DataArguments' `__post_init__`: neat packing implies packing, and packing leaves room for one token. */
function finishData(data: DataArguments): void {
  if (data.neat_packing) data.packing = true;
  if (data.packing) data.cutoff_len -= 1;
}

function finishFinetuning(finetuning: FinetuningArguments): void {
  finetuning.lora_alpha ??= finetuning.lora_rank * 2;
}

export interface UnsupportedSetting {
  group: string;
  name: string;
  value: unknown;
  tier: "later" | "out";
}

type GroupValues = Partial<Record<GroupKey, Record<string, unknown>>>;

/** Each field the command reads, with its value and the tier that value has. */
function* settingTiers(command: Command, values: GroupValues) {
  for (const key of commandGroups[command]) {
    const group = groupByKey(key);
    for (const [name, spec] of Object.entries(group.fields)) {
      if (spec.derived || (spec.trainOnly && command !== "train")) continue;
      const value = values[key]?.[name];
      const valueTier = typeof value === "string" ? spec.choiceTiers?.[value] : listTier(spec, value);
      yield { group, name, spec, value, valueTier, tier: valueTier ?? spec.tier, isDefault: isDeepStrictEqual(value, spec.default) };
    }
  }
}

/** Settings that ask for a feature lmfactory has not built (tier later) or never will (tier out). */
export function unsupportedSettings(command: Command, values: GroupValues): UnsupportedSetting[] {
  const found: UnsupportedSetting[] = [];
  for (const { group, name, value, valueTier, tier, isDefault } of settingTiers(command, values)) {
    if (tier === "now" || tier === "noop") continue;
    if (!valueTier && isDefault) continue;
    found.push({ group: group.name, name, value, tier });
  }
  return found;
}

export interface NoEffectSetting {
  name: string;
  value: unknown;
  reason: string;
}

/** Non-default settings of fields that change nothing in lmfactory: each gets one notice with its reason. */
export function noEffectSettings(command: Command, values: GroupValues): NoEffectSetting[] {
  const found: NoEffectSetting[] = [];
  for (const { name, spec, value, tier, isDefault } of settingTiers(command, values)) {
    if (tier === "noop" && !isDefault) found.push({ name, value, reason: spec.noEffect! });
  }
  return found;
}

/** A list field with per-value tiers (`report_to: [tensorboard, wandb]`) is as supported as its least supported item. */
function listTier(spec: Field, value: unknown): Tier | undefined {
  if (!spec.choiceTiers || !Array.isArray(value)) return undefined;
  const tiers = value.map((item: unknown) => (typeof item === "string" ? spec.choiceTiers![item] : undefined) ?? spec.tier);
  return tiers.includes("out") ? "out" : tiers.includes("later") ? "later" : tiers.includes("noop") ? "noop" : "now";
}

function refuseUnsupported(found: UnsupportedSetting[]): void {
  if (found.length === 0) return;
  const describe = (setting: UnsupportedSetting) => `\`${setting.name}: ${formatValue(setting.value)}\``;
  const later = found.filter((setting) => setting.tier === "later").map(describe);
  const out = found.filter((setting) => setting.tier === "out").map(describe);
  const parts = [
    later.length ? `not yet supported by lmfactory: ${later.join(", ")}` : "",
    out.length ? `out of scope for lmfactory: ${out.join(", ")}` : "",
  ].filter(Boolean);
  throw new UserError(parts.join("; "), undefined, "remove these settings or set them back to their defaults");
}

/** LLaMA-Factory's `to_dict()` per group: secrets masked, GeneratingArguments' length rule applied. */
export function toDict(args: AnyArgs): Partial<Record<GroupKey, Record<string, unknown>>> {
  const out: Partial<Record<GroupKey, Record<string, unknown>>> = {};
  for (const group of allGroups) {
    const values = args[group.key] as Record<string, unknown> | undefined;
    if (values) out[group.key] = group.toDict ? group.toDict({ ...values }) : { ...values };
  }
  return out;
}

const isSecret = (name: string) => name.endsWith("_token") || name.endsWith("api_key");

/**
 * Writes every resolved field of every group (secrets as null), so `loadJson` gives back the
 * same arguments and a run can be reproduced from its output folder.
 */
export function saveJson(path: string, args: AnyArgs): void {
  const out: Record<string, Record<string, unknown>> = {};
  for (const group of allGroups) {
    const values = args[group.key] as Record<string, unknown> | undefined;
    if (!values) continue;
    out[group.key] = Object.fromEntries(Object.entries(values).map(([name, value]) => [name, isSecret(name) ? null : value]));
  }
  writeFileSync(path, `${JSON.stringify(out, null, 2)}\n`);
}

/** Reads a file written by `saveJson`: values are checked against the declarations, missing ones take defaults. */
export function loadJson(path: string): AnyArgs {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new UserError(`cannot read saved arguments: ${(error as Error).message}`, path, "give a file written by saveJson");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new UserError("saved arguments must be a JSON object of groups", path);
  }
  const out: Record<string, Record<string, unknown>> = {};
  for (const [key, groupValues] of Object.entries(parsed)) {
    const group = allGroups.find((candidate) => candidate.key === key);
    if (!group) {
      const guess = closestName(key, allGroups.map((candidate) => candidate.key));
      throw new UserError(`unknown group \`${key}\``, path, guess ? `did you mean \`${guess}\`?` : undefined);
    }
    const values: Record<string, unknown> = defaultsOf(group.fields);
    for (const [name, value] of Object.entries(groupValues as Record<string, unknown>)) {
      const spec = group.fields[name];
      if (!spec) {
        const guess = closestName(name, Object.keys(group.fields));
        throw new UserError(`unknown key \`${key}.${name}\``, path, guess ? `did you mean \`${guess}\`?` : undefined);
      }
      values[name] = coerceValue(name, spec, value, `${path} (${key}.${name})`);
    }
    out[key] = values;
  }
  return out as AnyArgs;
}
