// `lmf webui [--host H] [--port P] [--token T] [--dir FOLDER ...]` and `lmf webchat <config>
// [overrides] [--host H] [--port P] [--token T]`: LLaMA-Factory's `webui` and `webchat`. The board
// serves until Ctrl-C; runs it started keep going after it stops and are shown again next time.
import { parseArgs } from "node:util";
import { UserError } from "../errors.ts";
import { resolveServing, type Serving, type ServingFlags } from "./auth.ts";
import { type Board, startBoard } from "./server.ts";
import { Workspace } from "./workspace.ts";

const WEBUI_USAGE = `usage: lmf webui [--host HOST] [--port PORT] [--token TOKEN] [--dir FOLDER ...]

The web board: train, evaluate, chat and export from a browser.
  --host    address to listen on (default GRADIO_SERVER_NAME, else 127.0.0.1)
  --port    port (default GRADIO_SERVER_PORT, else 7860; 0 picks a free one)
  --token   the token every request must carry; required off loopback, where one is made and
            printed when not given (also LMF_WEBUI_TOKEN)
  --dir     a folder the board may read and write (repeatable); the first is the work folder, where
            relative paths start, runs are recorded (lmf_webui/) and outputs go (saves/).
            Default: LLAMABOARD_WORKDIR, else the current folder.`;

const WEBCHAT_USAGE = `usage: lmf webchat <config.yaml> [key=value ...] [--host HOST] [--port PORT] [--token TOKEN]

The chat page alone, with the model the arguments name (as lmf chat takes them) loaded at start.
Host, port and token as for lmf webui.`;

function addressLine(board: Board, serving: Serving): string {
  return serving.token ? `${board.url}?token=${serving.token}` : board.url;
}

/** Serves until SIGINT or SIGTERM. */
async function serveUntilStopped(board: Board, serving: Serving, what: string): Promise<void> {
  if (serving.tokenGenerated) console.log(`lmf ${what}: listening on ${serving.host}, so every request needs the token in the address below (give your own with --token or LMF_WEBUI_TOKEN).`);
  console.log(`lmf ${what}: open ${addressLine(board, serving)}`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  const running = board.runs?.list().filter((run) => run.status === "running") ?? [];
  await board.close();
  if (running.length) console.log(`lmf ${what}: ${running.length} run(s) keep going in the background (${running.map((run) => run.id).join(", ")}); the board shows them again when it restarts.`);
}

export async function webuiMain(tokens: readonly string[]): Promise<number> {
  if (tokens.includes("--help") || tokens.includes("-h")) {
    console.log(WEBUI_USAGE);
    return 0;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: [...tokens],
      options: { host: { type: "string" }, port: { type: "string" }, token: { type: "string" }, dir: { type: "string", multiple: true } },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw new UserError((error as Error).message, "lmf webui", "see `lmf webui --help`");
  }
  const { dir, ...flags } = parsed.values;
  const serving = resolveServing(flags as ServingFlags);
  const workspace = new Workspace(dir?.length ? dir : [process.env.LLAMABOARD_WORKDIR || process.cwd()]);
  const board = await startBoard({ mode: "board", serving, workspace });
  console.log(`lmf webui: work folder ${workspace.workDir}${workspace.folders.length > 1 ? `; also ${workspace.folders.slice(1).join(", ")}` : ""}`);
  await serveUntilStopped(board, serving, "webui");
  return 0;
}

/** The serving flags taken out of webchat's tokens; the rest are model arguments. */
function splitServingFlags(tokens: readonly string[]): { flags: ServingFlags; rest: string[] } {
  const flags: ServingFlags = {};
  const rest: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const match = /^--(host|port|token)(?:=(.*))?$/.exec(tokens[i]!);
    if (!match) {
      rest.push(tokens[i]!);
      continue;
    }
    const value = match[2] ?? tokens[++i];
    if (value === undefined) throw new UserError(`--${match[1]} needs a value`, "lmf webchat");
    flags[match[1] as keyof ServingFlags] = value;
  }
  return { flags, rest };
}

export async function webchatMain(tokens: readonly string[]): Promise<number> {
  if (tokens.includes("--help") || tokens.includes("-h")) {
    console.log(WEBCHAT_USAGE);
    return 0;
  }
  const { flags, rest } = splitServingFlags(tokens);
  const serving = resolveServing(flags);
  const { parseInferArgs } = await import("../hparams/index.ts");
  const args = parseInferArgs(rest, { onWarning: (message) => console.error(`notice: ${message}`), command: "chat" });
  const label = `${args.model.model_name_or_path}${args.model.adapter_name_or_path?.length ? ` + ${args.model.adapter_name_or_path.join(", ")}` : ""}`;
  const board = await startBoard({ mode: "chat", serving, chatLabel: label });
  console.log(`lmf webchat: loading ${label}`);
  const state = await board.chat.load(rest, label);
  if (state.status !== "ready") {
    await board.close();
    throw new UserError(`the model could not be loaded: ${state.error}`, "lmf webchat");
  }
  await serveUntilStopped(board, serving, "webchat");
  return 0;
}
