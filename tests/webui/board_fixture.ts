// What the web board's tests need: a work folder with a tiny model (the demo tokenizer), the
// 12-row alpaca dataset, and a dataset folder whose dataset_info.json is malformed; and the real
// `lmf webui` / `lmf webchat` started as a child process, its address read from what it prints.
import { type ChildProcess, spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { alpacaDataDir, tinyModelWithTokenizer } from "../fixtures/tiny_run.ts";

const BIN = new URL("../../bin/lmf.mjs", import.meta.url).pathname;
/** The malformed file's text: a comma is missing at the end of line 2. */
export const BAD_DATASET_INFO = '{\n  "alpaca": {"file_name": "alpaca.json"}\n  "other": {"file_name": "other.json"}\n}\n';

const made: string[] = [];
process.on("exit", () => {
  for (const folder of made) rmSync(folder, { recursive: true, force: true });
});

/** models/tiny, data/ (alpaca) and bad_data/ (malformed dataset_info.json) in a fresh folder. */
export function makeWorkspace(): string {
  const root = mkdtempSync(join(tmpdir(), "lmf-webui-"));
  made.push(root);
  cpSync(tinyModelWithTokenizer(), join(root, "models", "tiny"), { recursive: true });
  cpSync(alpacaDataDir(), join(root, "data"), { recursive: true });
  mkdirSync(join(root, "bad_data"));
  writeFileSync(join(root, "bad_data", "dataset_info.json"), BAD_DATASET_INFO);
  return root;
}

export interface RunningBoard {
  /** The address printed at start (with ?token=... when one is needed). */
  address: string;
  /** Scheme, host and port. */
  origin: string;
  token: string | null;
  child: ChildProcess;
  output: () => string;
  stop: () => Promise<void>;
}

/** Starts `lmf <command> ...args` and waits (at most `timeoutMs`) for the address it prints. */
export function startBoardProcess(command: "webui" | "webchat", args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<RunningBoard> {
  const child = spawn(process.execPath, [BIN, command, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`lmf ${command} printed no address within ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8");
      const match = /open (http:\/\/\S+)/.exec(output);
      if (!match) return;
      clearTimeout(timer);
      const address = match[1]!;
      const url = new URL(address);
      resolve({ address, origin: `http://127.0.0.1:${url.port}`, token: url.searchParams.get("token"), child, output: () => output, stop });
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`lmf ${command} exited with ${code} before printing its address:\n${output}`));
    });
  });
}
