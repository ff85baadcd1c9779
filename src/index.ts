// lmfactory's library API (`import { runExp, ChatModel } from "lmfactory"`), mirroring
// LLaMA-Factory's Python entry points: run_exp / ChatModel / run_eval, the argument parser, and
// the tensor layer as "lmfactory/torch". Importing this loads no engine; jobs load it when they run.
export { parseArgs } from "./api/args.ts";
export type { ArgsFor, EvalSettings, InferSettings, JobInput, SettingsFor, TrainSettings } from "./api/args.ts";
export * from "./api/jobs.ts";
export { ChatModel } from "./api/chat_model.ts";
export type { ChatOptions, ChatResponse, GenerationSettings, Message } from "./api/chat_model.ts";
export type {
  Command,
  DataArguments,
  EvalArgs,
  EvaluationArguments,
  FinetuningArguments,
  GeneratingArguments,
  InferArgs,
  ModelArguments,
  ParseOptions,
  TrainArgs,
  TrainingArguments,
} from "./hparams/index.ts";
export type { RunOptions } from "./train/workflow.ts";
export type { EvalResult, RunEvalOptions } from "./eval/evaluator.ts";
export { UserError, isUserError } from "./errors.ts";
import { packageVersion } from "./torch/addon_paths.ts";

/** The installed lmfactory's version. */
export const version: string = packageVersion();
