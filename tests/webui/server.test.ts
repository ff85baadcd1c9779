// The web board's server over HTTP: where it listens (flags, GRADIO_SERVER_NAME/PORT, defaults),
// the token off loopback (401 for every request without it, as printed or given), loopback's Host
// and same-origin JSON checks, bounded bodies, only lmfactory's own jobs from checked arguments,
// and runs recorded on disk and read back by the next board.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { DEFAULT_PORT, resolveServing } from "../../src/webui/auth.ts";
import { type Board, MAX_BODY_BYTES, startBoard } from "../../src/webui/server.ts";
import { Workspace } from "../../src/webui/workspace.ts";
import { makeWorkspace, startBoardProcess } from "./board_fixture.ts";

const WORK = makeWorkspace();

/** A raw request, so that headers fetch would fix (Host, Origin) can be set. */
function raw(url: string, options: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? "GET", headers: options.headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end(options.body);
  });
}

const json = { "content-type": "application/json" };

describe("where the board listens", () => {
  test("127.0.0.1:7860 by default; flags first, then GRADIO_SERVER_NAME / GRADIO_SERVER_PORT", () => {
    assert.deepEqual(resolveServing({}, {}), { host: "127.0.0.1", port: DEFAULT_PORT, token: null, tokenGenerated: false });
    assert.deepEqual(resolveServing({}, { GRADIO_SERVER_NAME: "localhost", GRADIO_SERVER_PORT: "7999" }), { host: "localhost", port: 7999, token: null, tokenGenerated: false });
    assert.deepEqual(resolveServing({ host: "127.0.0.2", port: "0" }, { GRADIO_SERVER_NAME: "0.0.0.0", GRADIO_SERVER_PORT: "7999" }), { host: "127.0.0.2", port: 0, token: null, tokenGenerated: false });
  });

  test("off loopback a token is made (or the given one used); a short token or a bad port is refused", () => {
    const made = resolveServing({ host: "0.0.0.0" }, {});
    assert.ok(made.tokenGenerated && made.token!.length >= 20);
    assert.equal(resolveServing({ host: "::" }, { LMF_WEBUI_TOKEN: "secret-token" }).token, "secret-token");
    assert.equal(resolveServing({ token: "on-loopback-too" }, {}).token, "on-loopback-too");
    assert.throws(() => resolveServing({ host: "0.0.0.0", token: "short" }, {}), /at least 8 characters/);
    assert.throws(() => resolveServing({ port: "http" }, {}), /--port: the port must be a whole number from 0 to 65535, got "http"/);
    assert.throws(() => resolveServing({}, { GRADIO_SERVER_PORT: "70000" }), /GRADIO_SERVER_PORT: the port must be/);
  });

  test("lmf webui on 0.0.0.0 (GRADIO_SERVER_NAME) prints its token and answers 401 to every request without it", async () => {
    const board = await startBoardProcess("webui", ["--dir", WORK], { GRADIO_SERVER_NAME: "0.0.0.0", GRADIO_SERVER_PORT: "0", LMF_WEBUI_TOKEN: "" });
    try {
      assert.match(board.output(), /every request needs the token in the address below/);
      const token = board.token!;
      assert.ok(token.length >= 20, board.output());
      for (const [method, path] of [["GET", "/"], ["GET", "/static/app.js"], ["GET", "/api/info"], ["GET", "/api/runs"], ["POST", "/api/runs"], ["GET", "/nothing"]]) {
        const answer = await raw(`${board.origin}${path}`, { method, headers: json, body: method === "POST" ? '{"job":"train"}' : undefined });
        assert.equal(answer.status, 401, `${method} ${path}`);
      }
      assert.equal((await raw(`${board.origin}/api/info`, { headers: { authorization: "Bearer wrong-token-123" } })).status, 401);
      assert.equal((await raw(`${board.origin}/api/info`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
      // The printed address: the token becomes a cookie and leaves the address bar.
      const first = await raw(`${board.origin}/?token=${encodeURIComponent(token)}`);
      assert.equal(first.status, 303);
      assert.equal(first.headers.location, "/");
      const cookie = String(first.headers["set-cookie"]).split(";")[0]!;
      assert.match(String(first.headers["set-cookie"]), /HttpOnly; SameSite=Strict/);
      assert.equal((await raw(`${board.origin}/`, { headers: { cookie } })).status, 200);
      assert.equal((await raw(`${board.origin}/api/info`, { headers: { cookie, host: "board.example:80" } })).status, 200);
    } finally {
      await board.stop();
    }
  });
});

describe("the board's API on loopback", () => {
  let board: Board;
  before(async () => {
    board = await startBoard({ mode: "board", serving: { host: "127.0.0.1", port: 0, token: null, tokenGenerated: false }, workspace: new Workspace([WORK]), log: () => undefined });
  });
  after(async () => board.close());

  const url = (path: string) => `http://127.0.0.1:${board.port}${path}`;

  test("requests addressed to another host name are refused (DNS rebinding)", async () => {
    assert.equal((await raw(url("/api/info"))).status, 200);
    assert.equal((await raw(url("/api/info"), { headers: { host: "localhost:1" } })).status, 200);
    const rebound = await raw(url("/api/info"), { headers: { host: "attacker.example" } });
    assert.equal(rebound.status, 403);
    assert.match(rebound.body, /answers only requests addressed to it/);
  });

  test("POSTs must be same-origin JSON", async () => {
    const form = await raw(url("/api/runs"), { method: "POST", headers: { "content-type": "text/plain" }, body: '{"job":"train"}' });
    assert.equal(form.status, 415);
    const crossSite = await raw(url("/api/runs"), { method: "POST", headers: { ...json, origin: "http://evil.example" }, body: '{"job":"train"}' });
    assert.equal(crossSite.status, 403);
  });

  test("bodies are bounded: one byte over the limit is a 413, before anything is parsed", async () => {
    const big = Buffer.alloc(MAX_BODY_BYTES + 1, 0x20);
    const answer = await raw(url("/api/check"), { method: "POST", headers: json, body: big });
    assert.equal(answer.status, 413);
    assert.match(JSON.parse(answer.body).error, /larger than 1048576 bytes/);
    const justFits = await raw(url("/api/check"), { method: "POST", headers: json, body: `{"job":"train","values":{}}${" ".repeat(MAX_BODY_BYTES - 27)}` });
    assert.equal(justFits.status, 200);
  });

  test("only lmfactory's jobs run, and only from checked arguments", async () => {
    const before = (await (await fetch(url("/api/runs"))).json()).runs.length;
    const unknownJob = await raw(url("/api/runs"), { method: "POST", headers: json, body: JSON.stringify({ job: "sh", values: {} }) });
    assert.equal(unknownJob.status, 400);
    assert.match(JSON.parse(unknownJob.body).error, /'job' must be one of train, eval, export, chat/);
    const invalid = await raw(url("/api/runs"), { method: "POST", headers: json, body: JSON.stringify({ job: "train", values: { model_name_or_path: "models/tiny", dataset: "alpaca", output_dir: "/tmp/escape", lora_rank: "two" } }) });
    assert.equal(invalid.status, 422);
    const errors = JSON.parse(invalid.body).errors;
    assert.match(errors.output_dir, /outside the folders/);
    assert.match(errors.lora_rank, /must be an integer/);
    const injected = await raw(url("/api/runs"), { method: "POST", headers: json, body: JSON.stringify({ job: "train", values: { model_name_or_path: "models/tiny", "--config": "x", dataset: "alpaca; rm -rf /" } }) });
    assert.equal(injected.status, 422);
    assert.equal((await (await fetch(url("/api/runs"))).json()).runs.length, before);
  });

  test("a run starts `lmf train` on the checked config, is recorded on disk, and the next board lists it", async () => {
    const values = { model_name_or_path: "models/tiny", template: "chatml", dataset: "alpaca", output_dir: "saves/tiny/lora/api", max_steps: "2", logging_steps: "1", cutoff_len: "32", per_device_train_batch_size: "2" };
    const started = await raw(url("/api/runs"), { method: "POST", headers: json, body: JSON.stringify({ job: "train", values }) });
    assert.equal(started.status, 200, started.body);
    const { run } = JSON.parse(started.body);
    assert.match(run.commandLine, /^lmf train lmf_webui\/runs\/[\w-]+\/config\.yaml$/);
    assert.match(readFileSync(run.config, "utf8"), /^# lmf train config written by the lmfactory web board[\s\S]*max_steps: 2\n/);
    const deadline = Date.now() + 90_000;
    let detail;
    do {
      await new Promise((resolve) => setTimeout(resolve, 500));
      detail = await (await fetch(url(`/api/runs/${run.id}`))).json();
    } while (detail.run.endedAt === null && Date.now() < deadline);
    assert.equal(detail.run.status, "finished", detail.log.text);
    assert.equal(detail.records.records.at(-1).percentage, 100);
    assert.ok(existsSync(join(WORK, "saves/tiny/lora/api/adapter_model.safetensors")));
    assert.equal(detail.results.train_loss > 0, true);
    // Offsets: asking from where the last answer ended gives nothing new.
    const again = await (await fetch(url(`/api/runs/${run.id}?log=${detail.log.next}&rec=${detail.records.next}`))).json();
    assert.equal(again.log.text, "");
    assert.deepEqual(again.records.records, []);

    const next = await startBoard({ mode: "board", serving: { host: "127.0.0.1", port: 0, token: null, tokenGenerated: false }, workspace: new Workspace([WORK]), log: () => undefined });
    try {
      const listed = (await (await fetch(`http://127.0.0.1:${next.port}/api/runs`)).json()).runs;
      assert.deepEqual(listed.find((item: { id: string }) => item.id === run.id), detail.run);
    } finally {
      await next.close();
    }
  });

  test("unknown routes and runs are 404/400, never a stack trace", async () => {
    assert.equal((await raw(url("/api/nothing"))).status, 404);
    assert.equal((await raw(url("/static/../server.ts"))).status, 404);
    const missing = await raw(url("/api/runs/20990101-000000-abcd"));
    assert.equal(missing.status, 400);
    assert.match(JSON.parse(missing.body).error, /no run 20990101-000000-abcd/);
  });
});
