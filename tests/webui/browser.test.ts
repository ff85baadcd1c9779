// The web board in a real headless Chromium (Debian's chromium driven by playwright-core), against
// the real `lmf webui` / `lmf webchat` child processes and a tiny model: the page loads without
// console errors, every label changes language, a malformed dataset_info.json and invalid
// arguments show their messages, the dataset preview marks trained tokens as `lmf data inspect`
// does, a run trains to the end from the form, a refreshed page shows a running run with its
// history, Stop ends its process tree and Resume continues from its checkpoint, evaluation shows its
// results, export runs lmf export, chat streams the model's reply, the token is required off
// loopback. Screenshots of each tab go to docs/webui/.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type Browser, type Page, chromium } from "playwright-core";
import { parseInferArgs } from "../../src/hparams/index.ts";
import { loadChatModelFromArgs } from "../../src/infer/from_args.ts";
import { type RunningBoard, makeWorkspace, startBoardProcess } from "./board_fixture.ts";

const CHROMIUM = process.env.LMF_CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const missing = existsSync(CHROMIUM) ? false : `chromium is not installed at ${CHROMIUM}: run scripts/setup.sh (it installs Debian's chromium with apt) or set LMF_CHROMIUM to a Chromium binary`;
if (missing) process.stderr.write(`\nSKIPPED: the web board's browser tests: ${missing}\n\n`);

const BIN = new URL("../../bin/lmf.mjs", import.meta.url).pathname;
/** The README's screenshots are rewritten only when asked (LMF_UPDATE_SCREENSHOTS=1); otherwise they go to a temporary folder. */
const SHOTS = process.env.LMF_UPDATE_SCREENSHOTS === "1" ? new URL("../../docs/webui/", import.meta.url).pathname : mkdtempSync(join(tmpdir(), "lmf-webui-shots-"));
const VIEWPORT = { width: 1280, height: 860 };
/** A run of another stage, recorded earlier, whose log has reward curves. */
const RLHF_RUN = "20200101-000000-0dd0";

describe("the web board in Chromium", { skip: missing }, () => {
  const work = makeWorkspace();
  let board: RunningBoard;
  let browser: Browser;
  let page: Page;
  const consoleErrors: string[] = [];
  let trainedOutput = "";

  /** Console errors since the last call (422 answers are expected where a test provokes them). */
  function takeConsoleErrors(allowed: RegExp | null = null): string[] {
    const found = consoleErrors.splice(0).filter((text) => !allowed || !allowed.test(text));
    return found;
  }

  async function openTab(name: string) {
    await page.click(`#tabs button[data-tab=${name}]`);
    await page.waitForSelector(`#tab-${name}:not([hidden])`);
  }

  async function shot(name: string) {
    mkdirSync(SHOTS, { recursive: true });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: join(SHOTS, `${name}.png`) });
    assert.ok(statSync(join(SHOTS, `${name}.png`)).size > 1000, `${name}.png`);
  }

  /** The run detail's status, once it is one of `statuses` (bounded wait). */
  async function waitForStatus(statuses: string[], timeout = 90_000) {
    await page.waitForFunction((wanted) => wanted.includes(document.querySelector("#run-status")?.getAttribute("data-status") ?? ""), statuses, { timeout });
    return page.getAttribute("#run-status", "data-status");
  }

  const runId = () => page.evaluate(() => location.hash.replace(/^#runs\//, ""));
  const runRecord = (id: string) => JSON.parse(readFileSync(join(work, "lmf_webui", "runs", id, "run.json"), "utf8"));

  before(async () => {
    // A finished DPO-style run from an earlier board: its log carries reward keys.
    const rlhfOutput = join(work, "saves", "tiny", "lora", "dpo_old");
    mkdirSync(rlhfOutput, { recursive: true });
    const rewards = [1, 2, 3].map((step) => JSON.stringify({ current_steps: step, total_steps: 3, loss: 0.7 - step / 10, "rewards/chosen": step / 10, "rewards/rejected": -step / 10, "rewards/accuracies": step / 3, percentage: (100 * step) / 3, elapsed_time: "0:00:01", remaining_time: "0:00:00" }));
    writeFileSync(join(rlhfOutput, "trainer_log.jsonl"), `${rewards.join("\n")}\n`);
    const runDir = join(work, "lmf_webui", "runs", RLHF_RUN);
    mkdirSync(runDir, { recursive: true });
    writeFileSync(join(runDir, "config.yaml"), "stage: dpo\n");
    writeFileSync(join(runDir, "output.log"), "an earlier run\n");
    writeFileSync(join(runDir, "run.json"), JSON.stringify({ id: RLHF_RUN, job: "train", commandLine: "lmf train config.yaml", config: join(runDir, "config.yaml"), outputDir: rlhfOutput, pid: null, startedAt: "2020-01-01T00:00:00.000Z", endedAt: "2020-01-01T00:01:00.000Z", status: "finished", exitCode: 0, signal: null, resumes: null }));

    board = await startBoardProcess("webui", ["--dir", work, "--port", "0"], { LMF_WEBUI_TOKEN: "", GRADIO_SERVER_NAME: "", GRADIO_SERVER_PORT: "" });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: VIEWPORT });
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => consoleErrors.push(`page error: ${error.message}`));
    page.setDefaultTimeout(30_000);
  });

  after(async () => {
    for (const id of readdirSync(join(work, "lmf_webui", "runs"))) {
      const run = runRecord(id);
      if (run.status === "running" && run.pid) {
        try {
          process.kill(-run.pid, "SIGKILL");
        } catch {
          // Gone already.
        }
      }
    }
    await browser?.close();
    await board?.stop();
  });

  test("the page loads with no console errors", async () => {
    const response = await page.goto(board.origin);
    assert.equal(response?.status(), 200);
    await page.waitForSelector("body[data-ready=true]");
    await page.waitForSelector("#train-dataset input[value=alpaca]");
    assert.equal(await page.textContent("#tabs button.active"), "Train");
    assert.deepEqual(takeConsoleErrors(), []);
  });

  test("switching the language changes every visible label", async () => {
    const labels = () =>
      page.$$eval("[data-i18n]", (elements) =>
        elements.filter((element) => (element as HTMLElement).getClientRects().length > 0).map((element) => ({ key: element.getAttribute("data-i18n")!, text: element.textContent ?? "" })),
      );
    await page.selectOption("#lang", "en");
    const english = await labels();
    assert.ok(english.length > 40, `only ${english.length} labels`);
    await page.selectOption("#lang", "zh");
    const chinese = await labels();
    assert.equal(await page.getAttribute("html", "lang"), "zh-CN");
    assert.equal(chinese.length, english.length);
    chinese.forEach((label, i) => {
      assert.equal(label.key, english[i]!.key);
      assert.notEqual(label.text, english[i]!.text, `${label.key} did not change`);
      assert.match(label.text, /[\u4e00-\u9fff]/, `${label.key}: ${label.text}`);
    });
    await page.selectOption("#lang", "en");
    assert.deepEqual(await labels(), english);
    assert.deepEqual(takeConsoleErrors(), []);
  });

  test("a malformed dataset_info.json shows which file and what is wrong", async () => {
    await page.fill("#train-dataset_dir", "bad_data");
    await page.dispatchEvent("#train-dataset_dir", "change");
    await page.waitForSelector("#datasets-error-train:not([hidden])");
    const message = await page.textContent("#datasets-error-train");
    assert.match(message!, /^bad_data\/dataset_info\.json: cannot open .*bad_data\/dataset_info\.json due to .*JSON.*\(line 3, column 3\)/);
    assert.equal(await page.locator("#train-dataset input").count(), 0);
    await page.fill("#train-dataset_dir", "data");
    await page.dispatchEvent("#train-dataset_dir", "change");
    await page.waitForSelector("#datasets-error-train[hidden]", { state: "attached" });
    await page.waitForSelector("#train-dataset input[value=alpaca]");
    assert.deepEqual(takeConsoleErrors(), []);
  });

  test("invalid arguments show the parameter system's message beside the field, and nothing starts", async () => {
    await page.fill("#top-model_name_or_path", "models/tiny");
    await page.selectOption("#top-template", "chatml");
    await page.check("#train-dataset input[value=alpaca]");
    await page.fill("#train-lora_rank", "abc");
    const rankError = page.locator("#tab-train .field[data-field=lora_rank] .error");
    await rankError.filter({ hasText: "must be an integer" }).waitFor();
    assert.equal(await rankError.textContent(), '`lora_rank` must be an integer, got "abc" (expected int; default 8)');
    const runsBefore = (await (await fetch(`${board.origin}/api/runs`)).json()).runs.length;
    await page.click("#start-train");
    await page.locator("#status-train.bad").waitFor();
    assert.equal((await (await fetch(`${board.origin}/api/runs`)).json()).runs.length, runsBefore);
    await page.fill("#train-lora_rank", "8");
    await page.locator("#status-train.good").waitFor();
    assert.equal(await rankError.textContent(), "");
    // A value whose feature is not built: the tier's message, beside the field.
    const laterStage = await page.$$eval("#train-stage option", (options) => options.find((option) => option.textContent!.includes("not yet supported"))?.getAttribute("value") ?? null);
    if (laterStage) {
      await page.selectOption("#train-stage", laterStage);
      await page.locator("#tab-train .field[data-field=stage] .error", { hasText: `not yet supported by lmfactory: \`stage: ${laterStage}\`` }).waitFor();
      await page.selectOption("#train-stage", "sft");
      await page.locator("#status-train.good").waitFor();
    }
    assert.deepEqual(takeConsoleErrors(/status of 422/), []);
  });

  test("the dataset preview pages through raw rows and marks the trained tokens as lmf data inspect does", async () => {
    await page.click("#preview-open");
    await page.click("#preview-raw");
    await page.waitForSelector("#preview-content[data-view=raw] pre.raw-row");
    assert.match((await page.locator("pre.raw-row").first().textContent())!, /"instruction": "Count to 1\."/);
    await page.click("#preview-next");
    await page.locator("#preview-position", { hasText: "Rows 3 to 4" }).waitFor();
    assert.match((await page.locator("pre.raw-row").first().textContent())!, /"instruction": "Count to 3\."/);
    await page.click("#preview-tokenized");
    await page.waitForSelector("#preview-content[data-view=tokenized] .tok.trained");
    const shown = await page.$$eval("#preview-content .example", (examples) =>
      examples.map((example) => [...example.querySelectorAll(".tok")].map((token) => ({ id: Number(token.getAttribute("title")!.slice(3)), trained: token.classList.contains("trained") }))),
    );
    const inspect = spawnSync(process.execPath, [BIN, "data", "inspect", "--model_name_or_path", "models/tiny", "--template", "chatml", "--dataset", "alpaca", "--dataset_dir", "data", "--n", "2", "--json"], { cwd: work, encoding: "utf8" });
    assert.equal(inspect.status, 0, inspect.stderr);
    const rows = JSON.parse(inspect.stdout) as { input_ids: number[]; labels: number[] }[];
    assert.deepEqual(
      shown,
      rows.map((row) => row.input_ids.map((id, t) => ({ id, trained: row.labels[t] !== -100 }))),
    );
    assert.ok(shown[0]!.some((token) => token.trained) && shown[0]!.some((token) => !token.trained));
    // The whole form's top and the preview in one picture.
    await page.setViewportSize({ width: VIEWPORT.width, height: 1400 });
    await shot("train");
    await page.setViewportSize(VIEWPORT);
    await page.click("#preview-open");
    assert.deepEqual(takeConsoleErrors(), []);
  });

  test("a tiny model trains to the end from the form: progress reaches 100 %, the loss chart has its points, the outputs exist", async () => {
    for (const [name, value] of Object.entries({ max_steps: "6", logging_steps: "1", save_steps: "2", per_device_train_batch_size: "2", gradient_accumulation_steps: "1", cutoff_len: "32" })) {
      await page.fill(`#train-${name}`, value);
    }
    trainedOutput = (await page.inputValue("#train-output_dir"))!;
    await page.locator("#status-train.good").waitFor();
    await page.click("#start-train");
    await page.waitForSelector("#tab-runs:not([hidden]) #run-status");
    assert.equal(await waitForStatus(["finished", "failed"]), "finished", (await page.textContent("#run-log")) ?? "");
    await page.waitForSelector("#run-progress-text[data-percentage='100']");
    assert.match((await page.textContent("#run-progress-text"))!, /^Step 6 of 6 · 100 % · elapsed \d+:\d\d:\d\d · ETA 0:00:00 · \d+ tokens\/s$/);
    assert.equal(await page.getAttribute("#loss-chart .series[data-name=loss]", "data-count"), "6");
    assert.equal(await page.locator("#loss-chart .series[data-name=loss] circle").count(), 6);
    const output = join(work, trainedOutput);
    for (const file of ["adapter_model.safetensors", "adapter_config.json", "trainer_log.jsonl", "checkpoint-6"]) assert.ok(existsSync(join(output, file)), file);
    assert.equal(readFileSync(join(output, "trainer_log.jsonl"), "utf8").trim().split("\n").length, 6);
    assert.match((await page.textContent("#run-results"))!, /train_loss/);
    await shot("runs");
    assert.deepEqual(takeConsoleErrors(), []);
  });

  test("a refreshed page shows a running run with its whole history; Stop ends its process tree; Resume continues from its checkpoint", async () => {
    await openTab("train");
    await page.fill("#train-max_steps", "100000");
    await page.fill("#train-logging_steps", "5");
    await page.fill("#train-save_steps", "20");
    await page.locator("#status-train.good").waitFor();
    await page.click("#start-train");
    await page.waitForSelector("#tab-runs:not([hidden]) #run-status[data-status=running]");
    await page.waitForFunction(() => Number(/Step (\d+)/.exec(document.querySelector("#run-progress-text")?.textContent ?? "")?.[1] ?? 0) >= 25, null, { timeout: 90_000 });
    const id = await runId();
    const { outputDir, pid } = runRecord(id);

    await page.reload();
    await page.waitForSelector("body[data-ready=true]");
    await page.waitForSelector(`#run-list [data-run='${id}'].selected`);
    // The forms come back as they were left.
    assert.equal(await page.inputValue("#top-model_name_or_path"), "models/tiny");
    assert.equal(await page.inputValue("#train-max_steps"), "100000");
    assert.equal(await waitForStatus(["running"]), "running");
    await page.waitForSelector("#loss-chart .series[data-name=loss]");

    // The Train tab's Stop ends the run it started.
    await openTab("train");
    await page.click("#stop-train");
    await page.waitForSelector(`#tab-runs:not([hidden]) #run-list [data-run='${id}'].selected`);
    assert.equal(await waitForStatus(["stopped"], 30_000), "stopped");
    assert.throws(() => process.kill(-pid, 0), /ESRCH/, "the run's process group is gone");
    const lines = readFileSync(join(outputDir, "trainer_log.jsonl"), "utf8").trim().split("\n").length;
    await page.waitForFunction((count) => document.querySelector("#loss-chart .series[data-name=loss]")?.getAttribute("data-count") === String(count), lines);
    const checkpoints = readdirSync(outputDir).filter((name) => /^checkpoint-\d+$/.test(name)).map((name) => Number(name.slice(11)));
    assert.ok(checkpoints.length > 0, readdirSync(outputDir).join(", "));
    const last = Math.max(...checkpoints);

    await page.click("#run-resume");
    await page.waitForFunction((old) => location.hash !== `#runs/${old}`, id);
    const resumed = await runId();
    assert.equal(runRecord(resumed).resumes, id);
    await page.locator("#run-log", { hasText: new RegExp(`resuming training from \\S*/checkpoint-${last} `) }).waitFor({ timeout: 60_000 });
    await page.waitForFunction((step) => Number(/Step (\d+)/.exec(document.querySelector("#run-progress-text")?.textContent ?? "")?.[1] ?? 0) > step, last, { timeout: 60_000 });
    await page.click("#run-stop");
    assert.equal(await waitForStatus(["stopped"], 30_000), "stopped");
    assert.deepEqual(takeConsoleErrors(), []);
  });

  test("evaluate & predict runs lmf train on the trained adapter and shows the results when done", async () => {
    await openTab("eval");
    await page.waitForSelector(`#top-checkpoints input[value='${trainedOutput}']`);
    await page.check(`#top-checkpoints input[value='${trainedOutput}']`);
    await page.waitForSelector("#eval-eval_dataset input[value=alpaca]");
    await page.check("#eval-eval_dataset input[value=alpaca]");
    for (const [name, value] of Object.entries({ max_samples: "4", max_new_tokens: "6", per_device_eval_batch_size: "4", cutoff_len: "64" })) await page.fill(`#eval-${name}`, value);
    await page.locator("#status-eval.good").waitFor();
    await shot("eval");
    await page.click("#start-eval");
    await page.waitForSelector("#tab-runs:not([hidden]) #run-status");
    assert.equal(await waitForStatus(["finished", "failed"]), "finished", (await page.textContent("#run-log")) ?? "");
    await page.waitForSelector("#run-results");
    assert.match((await page.textContent("#run-results"))!, /predict_bleu-4/);
    assert.equal(await page.locator("#run-predictions tbody tr").count(), 4);
    const config = readFileSync(runRecord(await runId()).config, "utf8");
    assert.match(config, new RegExp(`adapter_name_or_path:\\n  - ${trainedOutput}\\n`));
    assert.match(config, /do_train: false/);
    assert.deepEqual(takeConsoleErrors(), []);
  });

  test("export runs lmf export with its arguments and shows how it ended", async () => {
    await openTab("export");
    const exportDir = page.locator("#export-export_dir");
    // Without export_dir the parameter system's message stands beside the field and nothing starts.
    await exportDir.fill("");
    await page.locator("#tab-export .field[data-field=export_dir] .error", { hasText: "`lmf export` needs `export_dir`" }).waitFor();
    const runsBefore = (await (await fetch(`${board.origin}/api/runs`)).json()).runs.length;
    await page.click("#start-export");
    await page.locator("#status-export.bad").waitFor();
    assert.equal((await (await fetch(`${board.origin}/api/runs`)).json()).runs.length, runsBefore);
    assert.deepEqual(takeConsoleErrors(/status of 422/), []);
    await exportDir.fill("exports/tiny");
    await page.locator("#status-export.good").waitFor();
    await shot("export");
    await page.click("#start-export");
    await page.waitForSelector("#tab-runs:not([hidden]) #run-status");
    const status = await waitForStatus(["finished", "failed"]);
    const run = runRecord(await runId());
    assert.match(run.commandLine, /^lmf export lmf_webui\/runs\/[\w-]+\/config\.yaml$/);
    const log = readFileSync(join(work, "lmf_webui", "runs", run.id, "output.log"), "utf8");
    await page.locator("#run-log", { hasText: log.trim().split("\n").at(-1)! }).waitFor();
    assert.equal(status, "finished", log);
    assert.equal(run.exitCode, 0);
    for (const file of ["config.json", "model.safetensors", "tokenizer.json", "Modelfile"]) assert.ok(existsSync(join(work, "exports", "tiny", file)), file);
    // A check of the empty export_dir above may answer its 422 after the field was filled again.
    assert.deepEqual(takeConsoleErrors(/status of 422/), []);
  });

  test("chat loads the model and streams its reply token by token", async () => {
    await openTab("chat");
    await page.uncheck(`#top-checkpoints input[value='${trainedOutput}']`);
    await page.click("#chat-load");
    await page.waitForSelector("#chat-state[data-status=ready]", { timeout: 60_000 });
    await page.fill("#chat-max_new_tokens", "12");
    await page.uncheck("#chat-do_sample");
    await page.fill("#chat-system", "You count.");
    await page.fill("#chat-input", "Count to 2.");
    await page.click("#chat-send");
    await page.waitForSelector(".message.assistant[data-done=true]", { timeout: 60_000 });
    const answer = await page.textContent(".message.assistant .text");
    // One piece per generated token, each shown as it came (a tiny model is too fast to watch it grow).
    const pieces = Number(await page.getAttribute(".message.assistant", "data-pieces"));
    assert.ok(pieces >= 2, `the reply came in ${pieces} piece(s)`);
    // The same model and settings in this process: greedy, so the same text.
    const chat = loadChatModelFromArgs(parseInferArgs({ model_name_or_path: join(work, "models", "tiny"), template: "chatml" }, { onWarning: () => undefined }));
    const [expected] = chat.chat([[{ role: "user", content: "Count to 2." }]], { doSample: false, maxNewTokens: 12 }, "You count.");
    chat.dispose();
    assert.equal(answer, expected!.text);
    await shot("chat");
    await page.click("#chat-clear");
    assert.equal(await page.locator("#chat-messages .message").count(), 0);
    await page.click("#chat-unload");
    await page.waitForSelector("#chat-state[data-status=empty]");
    assert.deepEqual(takeConsoleErrors(), []);
  });

  test("runs of other stages show their reward curves beside the loss", async () => {
    await openTab("runs");
    await page.click(`#run-list [data-run='${RLHF_RUN}']`);
    await page.waitForSelector("#metrics-chart");
    for (const key of ["rewards/chosen", "rewards/rejected", "rewards/accuracies"]) {
      assert.equal(await page.getAttribute(`#metrics-chart .series[data-name='${key}']`, "data-count"), "3", key);
    }
    assert.equal(await page.getAttribute("#loss-chart .series[data-name=loss]", "data-count"), "3");
    assert.deepEqual(takeConsoleErrors(), []);
  });

  test("off loopback the page needs its token: 401 without it, the printed address works", async () => {
    const open = await startBoardProcess("webui", ["--dir", work, "--host", "0.0.0.0", "--port", "0"], { LMF_WEBUI_TOKEN: "" });
    const other = await browser.newPage({ viewport: VIEWPORT });
    try {
      const refused = await other.goto(open.origin);
      assert.equal(refused?.status(), 401);
      assert.match((await other.textContent("body"))!, /needs its token/);
      const address = open.address.replace(/^http:\/\/[^/]+/, open.origin);
      await other.goto(address);
      await other.waitForSelector("body[data-ready=true]");
      assert.equal(new URL(other.url()).search, "");
      await other.reload();
      await other.waitForSelector("body[data-ready=true]");
    } finally {
      await other.close();
      await open.stop();
    }
  });

  test("lmf webchat opens the chat page alone, its model loaded, and streams replies", async () => {
    const webchat = await startBoardProcess("webchat", ["--model_name_or_path", join(work, "models", "tiny"), "--template", "chatml", "--port", "0"]);
    const chatPage = await browser.newPage({ viewport: VIEWPORT });
    try {
      await chatPage.goto(webchat.origin);
      await chatPage.waitForSelector("body[data-ready=true]");
      await chatPage.waitForSelector("#chat-state[data-status=ready]");
      assert.equal(await chatPage.isVisible("#tabs"), false);
      assert.equal(await chatPage.isVisible("#chat-load"), false);
      await chatPage.fill("#chat-max_new_tokens", "6");
      await chatPage.fill("#chat-input", "Hello");
      await chatPage.click("#chat-send");
      await chatPage.waitForSelector(".message.assistant[data-done=true]");
      assert.ok(((await chatPage.textContent(".message.assistant .text")) ?? "").length > 0);
      assert.equal((await fetch(`${webchat.origin}/api/runs`)).status, 404);
    } finally {
      await chatPage.close();
      await webchat.stop();
    }
  });
});
