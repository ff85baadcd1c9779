// parseArgs: LLaMA-Factory's get_train_args / get_infer_args / get_eval_args for the library API. A
// job's input is a config file path, CLI tokens, an object of LLaMA-Factory keys (typed: a misspelt
// key is a compile error) or arguments parsed already; the result is the typed argument groups.
import {
  type ArgsInput,
  type Command,
  type DataArguments,
  type EvalArgs,
  type EvaluationArguments,
  type FinetuningArguments,
  type GeneratingArguments,
  type InferArgs,
  type ModelArguments,
  type ParseOptions,
  type TrainArgs,
  type TrainingArguments,
  parseEvalArgs,
  parseInferArgs,
  parseTrainArgs,
} from "../hparams/index.ts";

/** The parsed argument groups of a command: train, eval, or chat/api/export. */
export type ArgsFor<C extends Command> = C extends "train" ? TrainArgs : C extends "eval" ? EvalArgs : InferArgs;

/** Keys as a YAML file gives them: lists also as comma-separated strings, as the parser takes them. */
type Settable<T> = { [K in keyof T]?: T[K] extends readonly unknown[] | null ? T[K] | string : T[K] };

export type TrainSettings = Settable<ModelArguments & DataArguments & TrainingArguments & FinetuningArguments & GeneratingArguments>;
export type InferSettings = Settable<ModelArguments & DataArguments & FinetuningArguments & GeneratingArguments>;
export type EvalSettings = Settable<ModelArguments & DataArguments & EvaluationArguments & FinetuningArguments>;
export type SettingsFor<C extends Command> = C extends "train" ? TrainSettings : C extends "eval" ? EvalSettings : InferSettings;

/**
 * What a job takes: a YAML/JSON config path, CLI tokens (`["cfg.yaml", "lora_rank=16"]`), an
 * object of LLaMA-Factory keys, or arguments parseArgs returned.
 */
export type JobInput<C extends Command> = string | readonly string[] | SettingsFor<C> | ArgsFor<C>;

const GROUPS = ["model", "data", "finetuning"] as const;

function isParsed(input: unknown): boolean {
  return typeof input === "object" && input !== null && !Array.isArray(input) && GROUPS.every((key) => typeof (input as Record<string, unknown>)[key] === "object");
}

export function parseArgs(input: JobInput<"train">, command?: "train", options?: ParseOptions): TrainArgs;
export function parseArgs(input: JobInput<"eval">, command: "eval", options?: ParseOptions): EvalArgs;
export function parseArgs(input: JobInput<"chat">, command: "chat" | "api" | "export", options?: ParseOptions): InferArgs;
export function parseArgs(input: JobInput<Command>, command: Command = "train", options: ParseOptions = {}): TrainArgs | EvalArgs | InferArgs {
  if (isParsed(input)) return input as TrainArgs | EvalArgs | InferArgs;
  const raw: ArgsInput = typeof input === "string" ? [input] : (input as ArgsInput);
  if (command === "train") return parseTrainArgs(raw, options);
  if (command === "eval") return parseEvalArgs(raw, options);
  return parseInferArgs(raw, { ...options, command });
}
