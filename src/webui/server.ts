// The web board's HTTP server (`lmf webui`, and `lmf webchat` in chat mode): the page's static
// files and a JSON API over the form schema, the checks, the dataset preview, runs and chat. It
// starts only lmfactory's own jobs, from checked arguments; file pickers stay inside the opened
// folders; request bodies are bounded; access is checked by auth.ts on every request.
import { readFileSync, readdirSync } from "node:fs";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { builtinTemplateNames } from "../data/templates/index.ts";
import { UserError, isUserError } from "../errors.ts";
import type { ArgsInput } from "../hparams/index.ts";
import { type Serving, checkRequest, tokenCookie } from "./auth.ts";
import { ChatManager } from "./chat.ts";
import { absolutePaths, checkJob, userMessage } from "./form_args.ts";
import { JOB_NAMES, type JobName, TOP_BAR, buildFormSchema } from "./form_schema.ts";
import { COMMON_HEADERS, HttpError, intField, objectField, readJsonBody, sendJson, stringField } from "./http.ts";
import { PREVIEW_MAX_OFFSET, PREVIEW_MAX_ROWS, rawPage, tokenizedPage } from "./preview.ts";
import { readLogChunk, readPredictions, readRecords, readResults } from "./run_files.ts";
import { RunManager } from "./runs.ts";
import { PATH_FIELDS, type Workspace } from "./workspace.ts";

export interface BoardOptions {
  /** board: every tab (`lmf webui`); chat: the chat page alone, its model loaded at start (`lmf webchat`). */
  mode: "board" | "chat";
  serving: Serving;
  /** The opened folders (board mode). */
  workspace?: Workspace;
  /** Chat mode: the model arguments, as `lmf chat` takes them. */
  chatInput?: ArgsInput;
  chatLabel?: string;
  log?: (line: string) => void;
}

export interface Board {
  readonly url: string;
  readonly port: number;
  readonly chat: ChatManager;
  readonly runs: RunManager | null;
  close(): Promise<void>;
}

/** Largest request body: form values, or a chat conversation. */
export const MAX_BODY_BYTES = 1024 * 1024;

const STATIC_DIR = fileURLToPath(new URL("./static/", import.meta.url));
const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

/** The page's files, read once: only these names are ever served. */
function loadStatic(): Map<string, { body: Buffer; type: string }> {
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const name of readdirSync(STATIC_DIR)) {
    const type = CONTENT_TYPES[extname(name)];
    if (type) files.set(name, { body: readFileSync(join(STATIC_DIR, name)), type });
  }
  return files;
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
}

const jobOf = (body: Record<string, unknown>): JobName => {
  const job = body.job;
  if (typeof job !== "string" || !(JOB_NAMES as readonly string[]).includes(job)) throw new HttpError(400, `'job' must be one of ${JOB_NAMES.join(", ")}.`);
  return job as JobName;
};

/** What the run's results go to: output_dir for lmf train, export_dir for lmf export (absolute). */
function outputDirOf(job: JobName, settings: Record<string, unknown>, workspace: Workspace): string | null {
  const folder = job === "export" ? settings.export_dir : settings.output_dir;
  return typeof folder === "string" ? workspace.resolve(folder) : null;
}

/** Model and adapters as a label for the chat tab. */
function modelLabel(settings: Record<string, unknown>): string {
  const adapters = settings.adapter_name_or_path;
  return `${String(settings.model_name_or_path ?? "")}${Array.isArray(adapters) && adapters.length ? ` + ${adapters.join(", ")}` : ""}`;
}

export async function startBoard(options: BoardOptions): Promise<Board> {
  const { mode, serving } = options;
  const log = options.log ?? ((line: string) => console.error(line));
  const workspace = options.workspace ?? null;
  if (mode === "board" && !workspace) throw new Error("board mode needs a workspace");
  const files = loadStatic();
  const schema = { ...buildFormSchema(), templates: builtinTemplateNames(), pathFields: PATH_FIELDS };
  const runs = workspace ? new RunManager(workspace) : null;
  runs?.load();
  const chat = new ChatManager(workspace?.workDir ?? process.cwd());
  const version = packageVersion();
  let boundPort = serving.port;

  const needWorkspace = (): Workspace => {
    if (!workspace || !runs) throw new HttpError(404, "This page serves chat only (lmf webchat).");
    return workspace;
  };

  function runDetail(id: string, url: URL) {
    const run = runs!.get(id);
    const logFrom = Number(url.searchParams.get("log") ?? 0);
    const recordsFrom = Number(url.searchParams.get("rec") ?? 0);
    if (!Number.isSafeInteger(logFrom) || logFrom < 0 || !Number.isSafeInteger(recordsFrom) || recordsFrom < 0) throw new HttpError(400, "'log' and 'rec' must be byte offsets.");
    const ended = run.endedAt !== null;
    return {
      run,
      log: readLogChunk(runs!.logPath(id), logFrom),
      records: readRecords(run.outputDir, recordsFrom),
      results: ended ? readResults(run.outputDir) : null,
      predictions: ended ? readPredictions(run.outputDir) : null,
      outputDir: run.outputDir ? workspace!.display(run.outputDir) : null,
    };
  }

  async function api(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const route = `${req.method} ${url.pathname}`;
    const body = req.method === "POST" ? await readJsonBody(req, MAX_BODY_BYTES) : {};
    const runMatch = /^\/api\/runs\/([\w-]+)(\/stop|\/resume)?$/.exec(url.pathname);
    const configMatch = /^\/api\/configs\/([^/]+)$/.exec(url.pathname);

    if (route === "GET /api/info") {
      return sendJson(res, 200, { mode, version, workDir: workspace?.workDir ?? null, folders: workspace?.folders ?? [], chat: chat.current, chatLabel: options.chatLabel ?? null });
    }
    if (route === "GET /api/schema") return sendJson(res, 200, schema);
    if (route === "GET /api/chat") return sendJson(res, 200, chat.current);
    if (route === "POST /api/chat/message") {
      const generation = objectField(body, "generation");
      const checked = checkJob("chat", generation, null, { full: false });
      if (!checked.ok) return sendJson(res, 422, { error: "Some generation settings are invalid.", errors: checked.errors });
      const system = typeof body.system === "string" ? body.system : "";
      return chat.reply(res, body.messages, system, checked.settings);
    }

    const ws = needWorkspace();
    if (route === "GET /api/models") return sendJson(res, 200, { models: ws.listModels() });
    if (route === "GET /api/checkpoints") {
      return sendJson(res, 200, { checkpoints: ws.listCheckpoints(url.searchParams.get("model") ?? "", url.searchParams.get("finetuning_type") ?? "lora") });
    }
    if (route === "GET /api/datasets") return sendJson(res, 200, ws.listDatasets(url.searchParams.get("dataset_dir") ?? "data"));
    if (route === "POST /api/check") {
      const job = jobOf(body);
      const result = checkJob(job, objectField(body, "values"), ws);
      return sendJson(res, 200, { ...result, settings: undefined, command: `lmf ${schema.jobs[job].command} <config.yaml>` });
    }
    if (route === "POST /api/preview") {
      const view = stringField(body, "view", /^(raw|tokenized)$/);
      const dataset = stringField(body, "dataset");
      const offset = intField(body, "offset", 0, 0, PREVIEW_MAX_OFFSET);
      const limit = intField(body, "limit", 2, 1, PREVIEW_MAX_ROWS);
      const values = objectField(body, "values");
      if (view === "raw") return sendJson(res, 200, await rawPage(ws, String(values.dataset_dir ?? "data"), dataset, offset, limit));
      const checked = checkJob("train", values, ws, { full: false });
      if (!checked.ok) return sendJson(res, 422, { error: "Fix the fields marked in the form first.", errors: checked.errors });
      return sendJson(res, 200, await tokenizedPage(absolutePaths(checked.settings, ws), dataset, offset, limit));
    }
    if (route === "GET /api/runs") return sendJson(res, 200, { runs: runs!.list() });
    if (route === "POST /api/runs") {
      const job = jobOf(body);
      if (job === "chat") throw new HttpError(400, "Chat is not a run: load the model in the Chat tab.");
      const checked = checkJob(job, objectField(body, "values"), ws);
      if (!checked.ok) return sendJson(res, 422, { error: checked.message ?? "Some arguments are invalid: see the marked fields.", errors: checked.errors, message: checked.message });
      return sendJson(res, 200, { run: runs!.start(job, checked.yaml, outputDirOf(job, checked.settings, ws)) });
    }
    if (runMatch && req.method === "GET" && !runMatch[2]) return sendJson(res, 200, runDetail(runMatch[1]!, url));
    if (runMatch && req.method === "POST" && runMatch[2] === "/stop") return sendJson(res, 200, { run: runs!.stop(runMatch[1]!) });
    if (runMatch && req.method === "POST" && runMatch[2] === "/resume") return sendJson(res, 200, { run: runs!.resume(runMatch[1]!) });
    if (route === "GET /api/configs") return sendJson(res, 200, { names: ws.listSavedArgs() });
    if (configMatch && req.method === "GET") return sendJson(res, 200, { values: ws.loadArgs(decodeURIComponent(configMatch[1]!)) });
    if (route === "POST /api/configs") {
      const job = jobOf(body);
      const checked = checkJob(job, objectField(body, "values"), ws, { full: false });
      if (!checked.ok) return sendJson(res, 422, { error: "Some values cannot be saved: see the marked fields.", errors: checked.errors });
      return sendJson(res, 200, { path: ws.saveArgs(stringField(body, "name"), checked.yaml) });
    }
    if (route === "POST /api/chat/load") {
      const checked = checkJob("chat", objectField(body, "values"), ws);
      if (!checked.ok) return sendJson(res, 422, { error: checked.message ?? "Some arguments are invalid: see the marked fields.", errors: checked.errors, message: checked.message });
      const load = Object.fromEntries(Object.entries(checked.settings).filter(([name]) => (TOP_BAR as readonly string[]).includes(name) || schema.fields[name]?.group !== "generating"));
      return sendJson(res, 200, await chat.load(load, modelLabel(checked.settings)));
    }
    if (route === "POST /api/chat/unload") return sendJson(res, 200, chat.unload());
    throw new HttpError(404, `No such route: ${route}.`);
  }

  function page(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const name = url.pathname === "/" ? "index.html" : url.pathname.startsWith("/static/") ? url.pathname.slice(8) : "";
    const file = files.get(name);
    if (req.method !== "GET" || !file) throw new HttpError(404, `Not found: ${url.pathname}`);
    res.writeHead(200, { ...COMMON_HEADERS, "cache-control": "no-cache", "content-type": file.type, "content-length": file.body.length });
    res.end(file.body);
  }

  function fail(res: ServerResponse, url: URL, error: unknown): void {
    if (res.headersSent) {
      if (!res.destroyed) res.end(`${JSON.stringify({ error: error instanceof Error ? error.message : String(error) })}\n`);
      return;
    }
    if (error instanceof HttpError) {
      if (!url.pathname.startsWith("/api/")) {
        res.writeHead(error.status, { ...COMMON_HEADERS, "content-type": "text/plain; charset=utf-8" });
        res.end(`${error.message}\n`);
        return;
      }
      return sendJson(res, error.status, { error: error.message, ...error.details });
    }
    if (isUserError(error)) return sendJson(res, 400, { error: userMessage(error as UserError) });
    log(`lmf webui: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    sendJson(res, 500, { error: "The board had an unexpected error; see its terminal." });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://board");
    try {
      const access = checkRequest(req, url, serving, boundPort);
      if (access === "set-cookie" && req.method === "GET" && !url.pathname.startsWith("/api/")) {
        // The token from the printed address becomes a cookie, and leaves the address bar.
        url.searchParams.delete("token");
        res.writeHead(303, {
          ...COMMON_HEADERS,
          "set-cookie": `${tokenCookie(boundPort)}=${encodeURIComponent(serving.token!)}; HttpOnly; SameSite=Strict; Path=/`,
          location: `${url.pathname}${url.search}`,
        });
        res.end();
        return;
      }
      if (url.pathname.startsWith("/api/")) await api(req, res, url);
      else page(req, res, url);
    } catch (error) {
      if (req.method === "POST" && !req.complete) req.resume();
      fail(res, url, error);
    }
  }

  const server: Server = createServer((req, res) => void handle(req, res));
  // Chat replies stream for as long as they generate.
  server.requestTimeout = 0;
  server.on("clientError", (_error, socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(error.code === "EADDRINUSE" ? new UserError(`port ${serving.port} on ${serving.host} is in use`, "--port", "choose another port (or GRADIO_SERVER_PORT), or 0 for a free one") : error),
    );
    server.listen(serving.port, serving.host, () => resolve());
  });
  boundPort = (server.address() as AddressInfo).port;
  const urlHost = serving.host.includes(":") ? `[${serving.host}]` : serving.host;
  return {
    url: `http://${urlHost}:${boundPort}/`,
    port: boundPort,
    chat,
    runs,
    close: () =>
      new Promise<void>((resolve) => {
        chat.unload();
        runs?.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
