// The board's side of chat: one model process (chat_worker.ts, forked with the tsx loader by
// absolute path) loaded with checked arguments; one reply at a time, streamed to the page as
// JSON lines ({piece} ... {done} or {error}). A page that goes away stops its reply. Unload ends
// the process, which returns all of the model's memory.
import { type ChildProcess, fork } from "node:child_process";
import type { ServerResponse } from "node:http";
import { fileURLToPath } from "node:url";
import type { ArgsInput } from "../hparams/index.ts";
import type { FromWorker, ToWorker } from "./chat_worker.ts";
import { COMMON_HEADERS, HttpError } from "./http.ts";

/** Compiled (dist/, an installed package) or the TypeScript sources run through tsx (a clone). */
const COMPILED = import.meta.url.endsWith(".js");
const WORKER = fileURLToPath(new URL(COMPILED ? "./chat_worker.js" : "./chat_worker.ts", import.meta.url));
/** The sources' worker runs under the TypeScript loader, by absolute path (as bin/lmf.mjs registers it). */
const WORKER_EXEC_ARGV = COMPILED ? [] : ["--import", import.meta.resolve("tsx")];
/** Stderr kept from the worker, for the message when it fails. */
const STDERR_KEPT = 8 * 1024;

export type ChatStatus = "empty" | "loading" | "ready" | "failed";

export interface ChatState {
  status: ChatStatus;
  /** What is loaded (the model and adapters, as the form named them). */
  model: string | null;
  context: number | null;
  error: string | null;
  replying: boolean;
}

export class ChatManager {
  private worker: ChildProcess | null = null;
  private state: ChatState = { status: "empty", model: null, context: null, error: null, replying: false };
  private nextId = 1;
  private stderr = "";

  constructor(private readonly cwd: string) {}

  get current(): ChatState {
    return { ...this.state };
  }

  /** Starts a model process and waits until it has loaded (or failed to). */
  load(input: ArgsInput, label: string): Promise<ChatState> {
    this.unload();
    this.stderr = "";
    this.state = { status: "loading", model: label, context: null, error: null, replying: false };
    const worker = fork(WORKER, [], { cwd: this.cwd, execArgv: WORKER_EXEC_ARGV, stdio: ["ignore", "ignore", "pipe", "ipc"], serialization: "json" });
    this.worker = worker;
    worker.stderr!.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString("utf8")).slice(-STDERR_KEPT);
    });
    return new Promise((resolve) => {
      const settle = (update: Partial<ChatState>) => {
        worker.off("message", onMessage);
        if (this.worker === worker) this.state = { ...this.state, ...update };
        resolve(this.current);
      };
      const onMessage = (message: FromWorker) => {
        if (message.type === "loaded") settle({ status: "ready", context: message.context });
        else if (message.type === "load-error") {
          settle({ status: "failed", error: message.message });
          worker.kill();
        }
      };
      worker.on("message", onMessage);
      worker.once("exit", (code, signal) => {
        if (this.worker === worker) {
          this.worker = null;
          if (this.state.status !== "failed") this.state = { ...this.state, status: "failed", replying: false, error: this.exitMessage(code, signal) };
        }
        resolve(this.current);
      });
      worker.send({ type: "load", input } satisfies ToWorker);
    });
  }

  unload(): ChatState {
    const worker = this.worker;
    this.worker = null;
    worker?.kill();
    this.state = { status: "empty", model: null, context: null, error: null, replying: false };
    return this.current;
  }

  /** Streams one reply to `res` as JSON lines; the conversation is OpenAI-style messages (user/assistant alternating). */
  reply(res: ServerResponse, messages: unknown, system: string, generation: Record<string, unknown>): void {
    const worker = this.worker;
    if (!worker || this.state.status !== "ready") throw new HttpError(409, "No model is loaded: load one first.");
    if (this.state.replying) throw new HttpError(409, "A reply is being generated: wait for it or stop it.");
    const id = this.nextId++;
    this.state.replying = true;
    res.writeHead(200, { ...COMMON_HEADERS, "content-type": "application/x-ndjson; charset=utf-8" });
    const line = (value: unknown) => {
      if (!res.destroyed) res.write(`${JSON.stringify(value)}\n`);
    };
    const end = () => {
      worker.off("message", onMessage);
      worker.off("exit", onExit);
      res.off("close", onClose);
      this.state.replying = false;
      if (!res.destroyed) res.end();
    };
    const onMessage = (message: FromWorker) => {
      if (!("id" in message) || message.id !== id) return;
      if (message.type === "piece") line({ piece: message.text });
      else if (message.type === "done") {
        line({ done: true, finish_reason: message.finishReason });
        end();
      } else if (message.type === "chat-error") {
        line({ error: message.message });
        end();
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      line({ error: this.exitMessage(code, signal) });
      end();
    };
    // The page went away (or pressed Stop, which aborts its request): the reply stops between two tokens.
    const onClose = () => {
      if (!res.writableFinished) worker.send({ type: "stop", id } satisfies ToWorker);
    };
    worker.on("message", onMessage);
    worker.once("exit", onExit);
    res.on("close", onClose);
    worker.send({ type: "chat", id, messages, system, generation } satisfies ToWorker);
  }

  private exitMessage(code: number | null, signal: NodeJS.Signals | null): string {
    const tail = this.stderr.trim().split("\n").slice(-5).join("\n");
    return `the model process ended (${signal ?? `exit ${code}`})${tail ? `: ${tail}` : ""}`;
  }
}
