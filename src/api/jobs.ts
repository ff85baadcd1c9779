// The jobs as library calls, after LLaMA-Factory's `run_exp(args)` (train), `run_eval` and
// `export_model(args)`: each parses its input as `lmf <command>` does, then runs the same workflow.
// The workflow module loads on the first call, so importing lmfactory needs no engine.
import type { Command, ParseOptions } from "../hparams/index.ts";
import { type ArgsFor, type JobInput, parseArgs } from "./args.ts";

/** A job of `command` whose workflow module is loaded on first use. */
function job<C extends Command, R, O>(command: C, load: () => Promise<(args: ArgsFor<C>, options?: O) => Promise<R> | R>) {
  return async (input: JobInput<C>, options?: O & Pick<ParseOptions, "onWarning">): Promise<R> => {
    const parseOptions = { onWarning: options?.onWarning };
    const args = (parseArgs as unknown as (input: JobInput<C>, command: C, options?: ParseOptions) => ArgsFor<C>)(input, command, parseOptions);
    const run = await load();
    return run(args, options);
  };
}

/** `lmf train`: any stage (LLaMA-Factory's `run_exp`); lines go to `options.print`, else stderr with a progress bar on a terminal. */
export const runExp = job("train", async () => (await import("../train/workflow.ts")).runTrain);
export const train = runExp;

/** `lmf export` (LLaMA-Factory's `export_model`): merges adapters and writes the folder; returns its path. */
export const exportModel = job("export", async () => (await import("../export/workflow.ts")).runExport);

/** `lmf eval`: a multiple-choice benchmark; returns the accuracies and predictions. */
export const evaluate = job("eval", async () => (await import("../eval/evaluator.ts")).runEval);
