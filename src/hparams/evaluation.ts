// EvaluationArguments: the multiple-choice benchmark run by `lmf eval` (MMLU / C-Eval / CMMLU
// folder format; LLaMA-Factory `hparams/evaluation_args.py`). Datasets are local only.
import { type ArgsOf, choice, defineGroup, int, optStr, str } from "./schema.ts";

export const evaluationFields = {
  task: optStr("Benchmark and split to run, as name_split (e.g. mmlu_test); required by lmf eval."),
  task_dir: str("evaluation", "Folder holding the benchmark folders."),
  batch_size: int(4, "Questions per evaluation batch.", { min: 1 }),
  seed: int(42, "Random seed of the evaluation data loader."),
  lang: choice(["en", "zh"], "en", "Language of the prompts."),
  n_shot: int(5, "Worked examples placed before each question.", { min: 0 }),
  save_dir: optStr("Folder to save results to; it must not exist yet."),
  download_mode: choice(
    ["reuse_dataset_if_exists", "reuse_cache_if_exists", "force_redownload"],
    "reuse_dataset_if_exists",
    "Reuse or re-download the benchmark dataset.",
    { noEffect: "benchmarks are read from task_dir; nothing is downloaded" },
  ),
};

export type EvaluationArguments = ArgsOf<typeof evaluationFields>;

export const evaluationGroup = defineGroup<typeof evaluationFields>("EvaluationArguments", "evaluation", [
  ["EvaluationArguments", evaluationFields],
]);
