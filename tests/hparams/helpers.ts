// Shared test helpers: parse a config object with a given command and capture notices.
import { type AnyArgs, type Command, parseEvalArgs, parseInferArgs, parseTrainArgs } from "../../src/hparams/index.ts";

export const baseConfigs: Record<Command, Record<string, unknown>> = {
  train: { model_name_or_path: "models/tiny", stage: "sft", do_train: true, dataset: "alpaca_en_demo", output_dir: "saves/test" },
  chat: { model_name_or_path: "models/tiny" },
  api: { model_name_or_path: "models/tiny" },
  export: { model_name_or_path: "models/tiny", export_dir: "saves/merged" },
  eval: { model_name_or_path: "models/tiny", task: "mmlu_test" },
};

export function parseWith(
  command: Command,
  input: readonly string[] | Record<string, unknown>,
  options: { allowUnsupported?: boolean } = {},
): { args: AnyArgs; notices: string[] } {
  const notices: string[] = [];
  const common = { ...options, onWarning: (message: string) => notices.push(message) };
  const args =
    command === "train"
      ? parseTrainArgs(input, common)
      : command === "eval"
        ? parseEvalArgs(input, common)
        : parseInferArgs(input, { ...common, command });
  return { args, notices };
}
