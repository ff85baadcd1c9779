// The `lmf` command line: train | chat | api | eval | export | webui | webchat | setup | env |
// completion | version | help, each a
// thin call into the layers (LLaMA-Factory's `llamafactory-cli`). Heavy modules (the parameter
// system, libtorch) load inside the actions, so `lmf --help` starts fast.
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { isUserError } from "./errors.ts";

type Job = "train" | "chat" | "api" | "eval" | "export";

const JOBS: Record<Job, string> = {
  train: "pre-train or fine-tune a model (stages pt and sft; rm, dpo, kto, ppo later)",
  chat: "chat with a model in the terminal",
  api: "serve an OpenAI-compatible HTTP API",
  eval: "run a multiple-choice benchmark (MMLU, C-Eval, CMMLU format)",
  export: "merge adapters and write a Hugging Face folder (sharded, GPTQ) or a GGUF file",
};

/** Exit status of a command whose job is parsed and validated but not built yet. */
const NOT_BUILT = 3;

function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return manifest.version;
}

async function runJob(job: Job, tokens: string[]): Promise<number> {
  if (tokens.includes("--help") || tokens.includes("-h")) {
    const { commandHelp } = await import("./hparams/help.ts");
    console.log(commandHelp(job));
    return 0;
  }
  const hparams = await import("./hparams/index.ts");
  // In a data-parallel run only rank 0 prints the notices.
  const replica = process.env.WORLD_SIZE !== undefined && process.env.RANK !== "0";
  const onWarning = replica ? () => {} : (message: string) => console.error(`notice: ${message}`);
  if (job === "train") {
    // `--nproc_per_node N` (or FORCE_TORCHRUN): this process launches the workers, once the arguments are known to be good.
    const { launchPlan, launchWorkers } = await import("./train/distributed/launcher.ts");
    const launch = launchPlan(tokens, process.env);
    if (launch) {
      hparams.parseTrainArgs(launch.workerTokens, { onWarning: () => {} });
      return launchWorkers(launch);
    }
    const args = hparams.parseTrainArgs(tokens, { onWarning });
    const { runTrain } = await import("./train/workflow.ts");
    await runTrain(args);
    return 0;
  }
  if (job === "chat") {
    const args = hparams.parseInferArgs(tokens, { onWarning, command: job });
    const { loadChatModelFromArgs, generationSettingsFromArgs } = await import("./infer/from_args.ts");
    const { runChatCli } = await import("./infer/chat_cli.ts");
    const { progressBarFor } = await import("./terminal/progress.ts");
    const chat = loadChatModelFromArgs(args, progressBarFor(process.stderr));
    await runChatCli(chat, generationSettingsFromArgs(args.generating));
    chat.dispose();
    return 0;
  }
  if (job === "api") {
    const args = hparams.parseInferArgs(tokens, { onWarning, command: job });
    const { runApi } = await import("./infer/api/server.ts");
    await runApi(args);
    return 0;
  }
  if (job === "eval") {
    const args = hparams.parseEvalArgs(tokens, { onWarning });
    const { runEval } = await import("./eval/evaluator.ts");
    await runEval(args);
    return 0;
  }
  const args = hparams.parseInferArgs(tokens, { onWarning, command: job });
  const { runExport } = await import("./export/workflow.ts");
  await runExport(args);
  return 0;
}

async function printEnv(): Promise<number> {
  console.log(`lmfactory      ${packageVersion()}`);
  console.log(`platform       ${process.platform} ${process.arch}`);
  try {
    const { engineReport } = (await import("./torch/env.ts")) as { engineReport: () => string | Promise<string> };
    console.log(await engineReport());
    return 0;
  } catch (error) {
    const reason = String((error as Error)?.message ?? error).split("\n")[0];
    console.log(`node           ${process.version}`);
    console.log(`libtorch       not available (${reason})`);
    console.error("The native engine is not built or libtorch is missing: run `lmf setup`.");
    return 1;
  }
}

async function inspectData(action: string, tokens: string[]): Promise<number> {
  const { UserError } = await import("./errors.ts");
  if (action !== "inspect") throw new UserError(`unknown data action '${action}'`, "lmf data", "use `lmf data inspect <config>`");
  let n = 3;
  let json = false;
  const rest: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] === "--json") json = true;
    else if (tokens[i] === "--n") n = Number(tokens[++i]);
    else rest.push(tokens[i]!);
  }
  if (!Number.isInteger(n) || n < 0) throw new UserError("--n must be a whole number", "lmf data inspect");
  const hparams = await import("./hparams/index.ts");
  const args = hparams.parseTrainArgs(rest, { onWarning: (message) => console.error(`notice: ${message}`) });
  const { prepareTrainingData } = await import("./train/workflow.ts");
  const { renderInspection } = await import("./data/inspect.ts");
  const data = await prepareTrainingData(args, (line) => console.error(line));
  const rows = data.train.length ? data.train : data.eval;
  const { colorEnabled } = await import("./terminal/style.ts");
  console.log(renderInspection(rows, data.tokenizer, { n, json, color: !json && colorEnabled(process.stdout), cutoffLen: args.data.cutoff_len, dropped: data.dropped, prompts: args.finetuning.stage === "ppo" }));
  return 0;
}

async function expandLlamaPro(action: string, flags: { model_name_or_path: string; output_dir: string; num_expand: string }): Promise<number> {
  const { UserError } = await import("./errors.ts");
  if (action !== "expand") throw new UserError(`unknown llama-pro action '${action}'`, "lmf llama-pro", "use `lmf llama-pro expand`");
  const numExpand = Number(flags.num_expand);
  if (!Number.isInteger(numExpand) || numExpand <= 0) {
    throw new UserError(`--num_expand must be a positive integer, got '${flags.num_expand}'`, "lmf llama-pro expand");
  }
  const { resolveModelPath } = await import("./model/hub.ts");
  const { expandCheckpoint } = await import("./model/adapters/llama_pro.ts");
  const result = expandCheckpoint(resolveModelPath(flags.model_name_or_path), flags.output_dir, { numExpandedLayers: numExpand });
  console.log(`wrote ${flags.output_dir} with ${result.numLayers} layers.`);
  console.log(`Train it with: use_llama_pro: true, freeze_trainable_layers: ${result.freezeTrainableLayers} (finetuning_type freeze or lora).`);
  return 0;
}

async function printHelp(topic: string | undefined, program: Command): Promise<number> {
  const help = await import("./hparams/help.ts");
  if (!topic) {
    console.log(program.helpInformation());
    console.log("`lmf <command> --help` lists the keys of one command; `lmf help <key>` explains one key.\n");
    console.log(help.allFieldsHelp());
    return 0;
  }
  console.log(topic in JOBS ? help.commandHelp(topic as Job) : help.fieldHelp(topic));
  return 0;
}

function buildProgram(setStatus: (status: number) => void): Command {
  const program = new Command("lmf")
    .description("LLM fine-tuning on libtorch with LLaMA-Factory's parameters")
    .version(packageVersion(), "-v, --version");
  for (const [job, description] of Object.entries(JOBS) as [Job, string][]) {
    program
      .command(job)
      .description(description)
      .usage("[config.yaml|config.json] [key=value ...] [--key value ...]")
      .helpOption(false)
      .allowUnknownOption()
      .allowExcessArguments()
      .argument("[args...]", "a config file, then overrides")
      .action(async (tokens: string[]) => setStatus(await runJob(job, tokens)));
  }
  for (const [name, description] of [
    ["webui", "the web board: train, evaluate, chat and export in a browser (`lmf webui --help`)"],
    ["webchat", "the chat page alone, for the model a config names (`lmf webchat --help`)"],
  ] as const) {
    program
      .command(name)
      .description(description)
      .helpOption(false)
      .allowUnknownOption()
      .allowExcessArguments()
      .argument("[args...]", "flags (and for webchat a config file, then overrides)")
      .action(async (tokens: string[]) => {
        const { webuiMain, webchatMain } = await import("./webui/main.ts");
        setStatus(await (name === "webui" ? webuiMain(tokens) : webchatMain(tokens)));
      });
  }
  program
    .command("data")
    .description("`lmf data inspect <config> [--n 3] [--json]`: the first examples as the model will see them")
    .argument("<action>", "inspect")
    .argument("[args...]", "a training config, then overrides")
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(async (action: string, tokens: string[]) => setStatus(await inspectData(action, tokens)));
  program
    .command("llama-pro")
    .description("LLaMA Pro: `lmf llama-pro expand` writes a checkpoint with identity blocks inserted")
    .argument("<action>", "expand")
    .requiredOption("--model_name_or_path <folder>", "the model to expand")
    .requiredOption("--output_dir <folder>", "where to write the expanded model")
    .requiredOption("--num_expand <n>", "how many blocks to insert (divides num_hidden_layers)")
    .action(async (action: string, flags: { model_name_or_path: string; output_dir: string; num_expand: string }) =>
      setStatus(await expandLlamaPro(action, flags)),
    );
  program
    .command("setup")
    .description("find or install libtorch and build the native engine (once after installing lmfactory)")
    .option("--rebuild", "build even when the engine is current")
    .option("--quiet", "print only what changes")
    .action(async (flags: { rebuild?: boolean; quiet?: boolean }) => {
      const { runSetup } = await import("./setup/index.ts");
      setStatus(await runSetup(flags));
    });
  program
    .command("completion")
    .description("print a shell completion script: `source <(lmf completion bash)`, or zsh")
    .argument("<shell>", "bash or zsh")
    .action(async (shell: string) => {
      const { completionScript } = await import("./terminal/completion.ts");
      console.log(completionScript(shell, program.commands.map((command) => command.name())));
    });
  program
    .command("env")
    .description("show lmfactory, Node, libtorch and BLAS versions, threads and devices")
    .action(async () => setStatus(await printEnv()));
  program
    .command("version")
    .description("print the lmfactory version")
    .action(() => console.log(`lmfactory ${packageVersion()}`));
  program
    .command("help")
    .description("list commands; `lmf help <command>` lists its keys, `lmf help <key>` explains one")
    .argument("[topic]", "a command or a key")
    .action(async (topic: string | undefined) => setStatus(await printHelp(topic, program)));
  program.addHelpCommand(false);
  return program;
}

/** Runs the CLI on `argv` (as `process.argv`) and returns the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  let status = 0;
  const program = buildProgram((value) => (status = value));
  try {
    await program.parseAsync([...argv]);
  } catch (error) {
    if (!isUserError(error)) throw error;
    console.error(`error: ${error.message}`);
    return 1;
  }
  return status;
}
