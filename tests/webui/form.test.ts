// The web board's forms and checks come from the parameter declarations: every field of each job's
// command is on its form once, with its declared help, default, choices and bounds; a field added
// to a declaration appears on the form and is checked; the messages beside the fields are the
// parameter system's own; path fields stay inside the opened folders; the YAML a run starts with
// parses back to the same arguments; dataset_info.json problems are spelled out.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { UserError } from "../../src/errors.ts";
import { allGroups, parseTrainArgs } from "../../src/hparams/index.ts";
import { dataGroup } from "../../src/hparams/data.ts";
import { readConfigFile, coerceValue } from "../../src/hparams/parser.ts";
import { int } from "../../src/hparams/schema.ts";
import { checkJob } from "../../src/webui/form_args.ts";
import { FIXED, IN_VIEW, JOB_COMMAND, JOB_NAMES, TOP_BAR, buildFormSchema, commandFields } from "../../src/webui/form_schema.ts";
import { PATH_FIELDS, Workspace } from "../../src/webui/workspace.ts";
import { BAD_DATASET_INFO, makeWorkspace } from "./board_fixture.ts";

const WORK = makeWorkspace();
const workspace = new Workspace([WORK]);
const TRAIN = { model_name_or_path: "models/tiny", template: "chatml", dataset: "alpaca", output_dir: "saves/tiny/lora/a", max_steps: "2" };

/** The message a UserError shows beside its field: what, then the fix. */
const shown = (error: UserError) => `${error.what}${error.fix ? ` (${error.fix})` : ""}`;
function userErrorOf(run: () => unknown): UserError {
  try {
    run();
  } catch (error) {
    if (error instanceof UserError) return error;
    throw error;
  }
  throw new Error("no UserError");
}

describe("web board forms", () => {
  test("every field of each job's command is on its form exactly once, as declared", () => {
    const schema = buildFormSchema();
    for (const job of JOB_NAMES) {
      const declared = commandFields(JOB_COMMAND[job]);
      const placed = [...TOP_BAR, ...IN_VIEW[job], ...Object.keys(FIXED[job]), ...schema.jobs[job].sections.flatMap((section) => section.fields)];
      assert.equal(new Set(placed).size, placed.length, `${job}: a field placed twice`);
      assert.deepEqual(new Set(placed), new Set(declared.keys()), job);
      for (const [name, { spec }] of declared) {
        const field = schema.fields[name]!;
        assert.equal(field.help, spec.help, name);
        assert.deepEqual(field.default, spec.default, name);
        assert.deepEqual(field.choices, spec.choices, name);
        assert.equal(field.min, spec.min, name);
        assert.equal(field.max, spec.max, name);
        assert.equal(field.tier, spec.tier, name);
      }
    }
  });

  test("a field added to a declaration appears on the form, with its checks", () => {
    const section = dataGroup.sections[0]![1] as Record<string, unknown>;
    const fields = dataGroup.fields as Record<string, unknown>;
    const added = int(3, "A field added for this test.", { min: 1 });
    section.webui_test_field = added;
    fields.webui_test_field = added;
    try {
      const schema = buildFormSchema();
      assert.equal(schema.fields.webui_test_field?.help, "A field added for this test.");
      assert.ok(schema.jobs.train.sections.some((s) => s.fields.includes("webui_test_field")));
      const result = checkJob("train", { ...TRAIN, webui_test_field: "0" }, workspace);
      assert.equal(result.errors.webui_test_field, "`webui_test_field` must be at least 1, got 0");
    } finally {
      delete section.webui_test_field;
      delete fields.webui_test_field;
    }
    assert.equal(buildFormSchema().fields.webui_test_field, undefined);
  });

  test("messages beside the fields are the parameter system's, for types, rules and tiers", () => {
    const typeError = checkJob("train", { ...TRAIN, lora_rank: "abc" }, workspace);
    const spec = allGroups.find((group) => group.key === "finetuning")!.fields.lora_rank!;
    assert.equal(typeError.errors.lora_rank, shown(userErrorOf(() => coerceValue("lora_rank", spec, "abc", "form"))));
    assert.equal(typeError.ok, false);

    const ruleValues = { ...TRAIN, stage: "pt", neat_packing: true };
    const rule = checkJob("train", ruleValues, workspace);
    const expected = shown(userErrorOf(() => parseTrainArgs({ ...ruleValues, dataset: ["alpaca"], max_steps: 2 }, { onWarning: () => undefined })));
    assert.equal(rule.errors.neat_packing, expected);
    assert.equal(rule.errors.stage, expected);

    const tier = checkJob("train", { ...TRAIN, finetuning_type: "full", use_galore: true }, workspace);
    assert.match(tier.errors.use_galore!, /not yet supported by lmfactory: `use_galore: true`/);

    const unknown = checkJob("train", { ...TRAIN, lora_rnak: "8" }, workspace);
    assert.match(unknown.errors.lora_rnak!, /did you mean `lora_rank`\?/);

    const notice = checkJob("train", { ...TRAIN, trust_remote_code: true }, workspace);
    assert.ok(notice.ok, JSON.stringify(notice.errors));
    assert.match(notice.notices.join("\n"), /`trust_remote_code: true` has no effect/);
  });

  test("the datasets and the model are looked up before anything starts", () => {
    const missing = checkJob("train", { ...TRAIN, dataset: "alpacca" }, workspace);
    assert.match(missing.errors.dataset!, /undefined dataset "alpacca" in .*dataset_info\.json \(did you mean "alpaca"\?\)/);
    const noModel = checkJob("train", { ...TRAIN, model_name_or_path: "models/none" }, workspace);
    assert.match(noModel.errors.model_name_or_path!, /neither a local folder nor in a Hugging Face cache/);
  });

  test("the YAML a run starts with parses back to the same arguments", () => {
    const result = checkJob("train", { ...TRAIN, lora_rank: "4", lora_target: "q_proj,v_proj", learning_rate: "1e-3" }, workspace);
    assert.ok(result.ok, JSON.stringify(result.errors));
    const path = join(mkdtempSync(join(tmpdir(), "lmf-webui-yaml-")), "config.yaml");
    writeFileSync(path, result.yaml);
    const fromFile = Object.fromEntries([...readConfigFile(path)].map(([key, setting]) => [key, setting.value]));
    assert.deepEqual(parseTrainArgs([path], { onWarning: () => undefined }), parseTrainArgs(result.settings, { onWarning: () => undefined }));
    assert.deepEqual(fromFile.lora_target, ["q_proj", "v_proj"]);
    assert.equal(fromFile.do_train, true);
    assert.equal(fromFile.learning_rate, 1e-3);
  });

  test("path fields must stay inside the opened folders (links followed); hub ids pass", () => {
    const outside = mkdtempSync(join(tmpdir(), "lmf-webui-outside-"));
    symlinkSync(outside, join(WORK, "link-out"));
    assert.match(checkJob("train", { ...TRAIN, output_dir: "/etc/lmf" }, workspace).errors.output_dir!, /outside the folders this board was opened with/);
    assert.match(checkJob("train", { ...TRAIN, output_dir: "link-out/run" }, workspace).errors.output_dir!, /outside the folders/);
    assert.match(checkJob("train", { ...TRAIN, dataset_dir: "../.." }, workspace).errors.dataset_dir!, /outside the folders/);
    assert.match(checkJob("train", { ...TRAIN, adapter_name_or_path: "saves/a,/tmp" }, workspace).errors.adapter_name_or_path!, /\/tmp is outside/);
    assert.match(checkJob("train", { ...TRAIN, adapter_name_or_path: "saves/a", adapter_folder: "../../../etc" }, workspace).errors.adapter_folder!, /outside/);
    assert.equal(checkJob("train", { ...TRAIN, model_name_or_path: "Qwen/Qwen3-0.6B" }, workspace, { full: false }).errors.model_name_or_path, undefined);
    assert.match(checkJob("train", { ...TRAIN, model_name_or_path: "../../x" }, workspace).errors.model_name_or_path!, /outside/);
    // PPO's api reward model is a URL; a reward model folder is a path like any other.
    assert.equal(checkJob("train", { ...TRAIN, stage: "ppo", reward_model_type: "api", reward_model: "http://127.0.0.1:8000/score" }, workspace, { full: false }).errors.reward_model, undefined);
    assert.match(checkJob("train", { ...TRAIN, stage: "ppo", reward_model: "/etc/rm" }, workspace).errors.reward_model!, /outside/);
    // A dataset_info.json entry pointing outside is refused too.
    mkdirSync(join(WORK, "escape"));
    writeFileSync(join(WORK, "escape", "dataset_info.json"), JSON.stringify({ leak: { file_name: "/etc/hostname" } }));
    assert.match(checkJob("train", { ...TRAIN, dataset_dir: "escape", dataset: "leak" }, workspace).errors.dataset!, /outside the folders/);
  });

  test("every declared field that names a folder or file is a path field", () => {
    const fields = allGroups.flatMap((group) => Object.entries(group.fields));
    const names = new Set(fields.map(([name]) => name));
    for (const name of PATH_FIELDS) assert.ok(names.has(name), `${name} is not declared`);
    const textual = fields.filter(([, spec]) => ["str", "list", "json"].includes(spec.kind)).map(([name]) => name);
    const looksLikePath = textual.filter((name) => /(_dir|_path|_folder|_adapters|_logdir)$/.test(name) && name !== "adapter_folder");
    for (const name of looksLikePath) assert.ok((PATH_FIELDS as readonly string[]).includes(name), `${name} should be a path field`);
  });

  test("dataset_info.json problems name the file and what is wrong", () => {
    const bad = workspace.listDatasets("bad_data");
    assert.equal(bad.datasets.length, 0);
    const position = BAD_DATASET_INFO.indexOf('"other"');
    assert.match(bad.error!, /^bad_data\/dataset_info\.json: cannot open .*bad_data\/dataset_info\.json due to .*JSON/);
    assert.match(bad.error!, new RegExp(`line 3, column ${position - BAD_DATASET_INFO.lastIndexOf("\n", position)}`));
    assert.match(workspace.listDatasets("models").error!, /models\/dataset_info\.json not found/);
    assert.match(workspace.listDatasets("nowhere").error!, /the dataset folder nowhere does not exist/);
    mkdirSync(join(WORK, "odd_data"));
    writeFileSync(join(WORK, "odd_data", "dataset_info.json"), JSON.stringify({ typo: { file_nam: "x.json" }, gone: { file_name: "gone.json" } }));
    const odd = workspace.listDatasets("odd_data");
    assert.equal(odd.error, null);
    assert.match(odd.datasets.find((d) => d.name === "typo")!.problem!, /unknown key "file_nam" \(did you mean "file_name"\?\)/);
    assert.match(odd.datasets.find((d) => d.name === "gone")!.problem!, /gone\.json does not exist/);
  });

  test("the checkpoint picker lists LlamaBoard's saves/<model>/<type>/ outputs and their checkpoints", () => {
    const run = join(WORK, "saves", "tiny", "lora", "train_1");
    mkdirSync(join(run, "checkpoint-2"), { recursive: true });
    mkdirSync(join(run, "checkpoint-10"), { recursive: true });
    for (const folder of [run, join(run, "checkpoint-2"), join(run, "checkpoint-10")]) writeFileSync(join(folder, "adapter_config.json"), "{}");
    assert.deepEqual(workspace.listCheckpoints("models/tiny", "lora"), ["saves/tiny/lora/train_1", "saves/tiny/lora/train_1/checkpoint-10", "saves/tiny/lora/train_1/checkpoint-2"]);
    assert.deepEqual(workspace.listCheckpoints("models/tiny", "full"), []);
    assert.deepEqual(workspace.listModels(), ["models/tiny"]);
  });

  test("saved argument sets round-trip; names cannot leave the folder", () => {
    const result = checkJob("train", { ...TRAIN, lora_rank: "4" }, workspace, { full: false });
    assert.equal(workspace.saveArgs("my-set", result.yaml), "lmf_webui/configs/my-set.yaml");
    assert.deepEqual(workspace.listSavedArgs(), ["my-set"]);
    assert.equal(workspace.loadArgs("my-set").lora_rank, 4);
    assert.throws(() => workspace.saveArgs("../x", "a: 1\n"), /not a usable name/);
    assert.throws(() => workspace.loadArgs("../../etc/passwd"), /not a saved argument set/);
  });
});

describe("web board words", async () => {
  // The page's own module (plain JS for the browser), read as it is served.
  const i18n = new URL("../../src/webui/static/i18n.js", import.meta.url).href;
  const { MESSAGES } = (await import(i18n)) as { MESSAGES: Record<"en" | "zh", Record<string, string>> };
  const staticDir = new URL("../../src/webui/static/", import.meta.url).pathname;
  const source = readdirSync(staticDir).filter((name) => /\.(js|html)$/.test(name)).map((name) => readFileSync(join(staticDir, name), "utf8")).join("\n");

  test("the page's modules type-check (JSDoc types, strict, DOM)", () => {
    const tsc = new URL("../../node_modules/typescript/bin/tsc", import.meta.url).pathname;
    const result = spawnSync(process.execPath, [tsc, "-p", join(staticDir, "tsconfig.json")], { encoding: "utf8" });
    assert.equal(result.status, 0, result.stdout + result.stderr);
  });

  test("English and Chinese have the same keys, and every Chinese text differs from the English", () => {
    assert.deepEqual(Object.keys(MESSAGES.zh).sort(), Object.keys(MESSAGES.en).sort());
    for (const [key, text] of Object.entries(MESSAGES.en)) assert.notEqual(MESSAGES.zh[key], text, key);
  });

  test("every key the page uses exists, including the ones it builds from statuses, groups and tiers", () => {
    const literal = [...source.matchAll(/(?:data-i18n(?:-title|-placeholder)?="|label\(\s*"\w+",\s*"|\bt\(")([\w.]+)"/g)].map((match) => match[1]!);
    assert.ok(literal.length > 60, `only ${literal.length} keys found`);
    const built = [
      ...["running", "stopping", "finished", "failed", "stopped", "unknown"].map((status) => `runs.status.${status}`),
      ...JOB_NAMES.map((job) => `runs.job.${job}`),
      ...allGroups.map((group) => `group.${group.key}`),
      ...["later", "out", "noop"].map((tier) => `badge.${tier}`),
      ...["empty", "loading", "ready", "failed"].map((status) => `chat.state.${status}`),
    ];
    for (const key of [...literal, ...built]) assert.ok(key in MESSAGES.en, `missing key ${key}`);
  });
});
