// The multiple-choice evaluator (LLaMA-Factory eval/evaluator.py, eval/template.py): the n-shot
// prompt text, choice-letter scoring, the task folder and CSV reading, results files, and a tiny
// model trained with the real trainer on the shipped task scoring above chance on its test split.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getTemplateAndFixTokenizer } from "../../src/data/templates/index.ts";
import { UserError } from "../../src/errors.ts";
import {
  EVAL_TEMPLATES,
  choiceTokenIds,
  formatExample,
  loadSubjectSplit,
  parseTask,
  pickChoices,
  readMapping,
  readQuestions,
  runEval,
} from "../../src/eval/evaluator.ts";
import { parseEvalArgs, parseTrainArgs } from "../../src/hparams/index.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { tensor, tidy } from "../../src/torch/index.ts";
import { runTrain } from "../../src/train/workflow.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const DEMO_TOKENIZER = "examples/demo/tiny-llama";
const TASK_DIR = "evaluation";
const quiet = { onWarning: () => {} };

const fewshot = { question: "Fewshot question", A: "Fewshot1", B: "Fewshot2", C: "Fewshot3", D: "Fewshot4", answer: "B" };
const fewshot2 = { question: "Second shot", A: "x", B: "y", C: "z", D: "w", answer: "D" };
const target = { question: "Target question", A: "Target1", B: "Target2", C: "Target3", D: "Target4", answer: "C" };

test("format_example gives LLaMA-Factory's messages (its golden test, en and zh)", () => {
  assert.deepEqual(formatExample(EVAL_TEMPLATES.en, target, [fewshot], "SubName"), [
    { role: "user", content: "The following are multiple choice questions (with answers) about SubName.\n\nFewshot question\nA. Fewshot1\nB. Fewshot2\nC. Fewshot3\nD. Fewshot4\nAnswer:" },
    { role: "assistant", content: "B" },
    { role: "user", content: "Target question\nA. Target1\nB. Target2\nC. Target3\nD. Target4\nAnswer:" },
    { role: "assistant", content: "C" },
  ]);
  assert.deepEqual(formatExample(EVAL_TEMPLATES.zh, target, [], "科目"), [
    { role: "user", content: "以下是中国关于科目考试的单项选择题，请选出其中的正确答案。\n\nTarget question\nA. Target1\nB. Target2\nC. Target3\nD. Target4\n答案：" },
    { role: "assistant", content: "C" },
  ]);
});

test("a 2-shot prompt rendered with the chatml template is exactly the documented text", () => {
  const tokenizer = loadTokenizer(DEMO_TOKENIZER);
  const { template } = getTemplateAndFixTokenizer("chatml", tokenizer);
  const messages = formatExample(EVAL_TEMPLATES.en, target, [fewshot, fewshot2], "SubName");
  const [promptIds, answerIds] = template.encodeOneturn(tokenizer, messages);
  const expected =
    "<|im_start|>user\nThe following are multiple choice questions (with answers) about SubName.\n\n" +
    "Fewshot question\nA. Fewshot1\nB. Fewshot2\nC. Fewshot3\nD. Fewshot4\nAnswer:<|im_end|>\n" +
    "<|im_start|>assistant\nB<|im_end|>\n" +
    "<|im_start|>user\nSecond shot\nA. x\nB. y\nC. z\nD. w\nAnswer:<|im_end|>\n" +
    "<|im_start|>assistant\nD<|im_end|>\n" +
    "<|im_start|>user\nTarget question\nA. Target1\nB. Target2\nC. Target3\nD. Target4\nAnswer:<|im_end|>\n" +
    "<|im_start|>assistant\n";
  assert.equal(tokenizer.decode(promptIds), expected);
  assert.equal(tokenizer.decode(answerIds), "C<|im_end|>\n");
  // The letter ids are the last token of each letter's own encoding.
  assert.deepEqual(
    choiceTokenIds(tokenizer),
    ["A", "B", "C", "D"].map((letter) => tokenizer.encode(letter, { addSpecialTokens: false }).at(-1)),
  );
});

test("choice scoring is a softmax over the four letter logits and an argmax, checked by hand", () => {
  const logits = [
    [1, 2, 3, 0],
    [0, 0, 0, 0],
    [-1, 5, 5, -2],
    [2, Math.log(2) + 2, 1, 0],
  ];
  const { probabilities, letters } = tidy(() => pickChoices(tensor(logits, { dtype: "float32" })));
  const byHand = logits.map((row) => {
    const exps = row.map((value) => Math.exp(value - Math.max(...row)));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((value) => value / total);
  });
  probabilities.forEach((row, i) => row.forEach((p, j) => assert.ok(Math.abs(p - byHand[i]![j]!) < 1e-6, `row ${i} col ${j}: ${p} vs ${byHand[i]![j]}`)));
  // Ties go to the first letter, as torch.argmax.
  assert.deepEqual(letters, ["C", "A", "B", "B"]);
  assert.ok(Math.abs(probabilities[3]![1]! / probabilities[3]![0]! - 2) < 1e-5);
});

test("task names, the shipped mapping and CSV reading (header or MMLU's headerless rows)", () => {
  assert.deepEqual(parseTask("mmlu_test"), { name: "mmlu", split: "test" });
  assert.deepEqual(parseTask("ceval_validation"), { name: "ceval", split: "val" });
  assert.deepEqual(parseTask("my_bench_dev"), { name: "my_bench", split: "dev" });
  assert.throws(() => parseTask("mmlu"), UserError);
  assert.throws(() => parseTask("mmlu_everything"), /name_split/);

  const subjects = readMapping(join(TASK_DIR, "tinyfacts"));
  assert.equal(subjects.length, 4);
  assert.deepEqual(new Set(subjects.map((s) => s.category)), new Set(["STEM", "Social Sciences", "Humanities", "Other"]));
  for (const { subject } of subjects) {
    const sizes = (["dev", "val", "test"] as const).map((split) => loadSubjectSplit(join(TASK_DIR, "tinyfacts"), subject, split).length);
    assert.deepEqual(sizes, [5, 15, 10], subject);
  }

  const dir = mkdtempSync(join(tmpdir(), "lmf-eval-csv-"));
  writeFileSync(join(dir, "mmlu.csv"), '"What is ""2, 3""?",a,b,"multi\nline",d,C\r\nSecond,1,2,3,4,a\n');
  assert.deepEqual(readQuestions(join(dir, "mmlu.csv")), [
    { question: 'What is "2, 3"?', A: "a", B: "b", C: "multi\nline", D: "d", answer: "C" },
    { question: "Second", A: "1", B: "2", C: "3", D: "4", answer: "A" },
  ]);
  writeFileSync(join(dir, "ceval.csv"), "id,question,A,B,C,D,answer,explanation\n0,Q,a,b,c,d,D,because\n1,Hidden,a,b,c,d,,\n");
  assert.deepEqual(readQuestions(join(dir, "ceval.csv")), [
    { question: "Q", A: "a", B: "b", C: "c", D: "d", answer: "D" },
    { question: "Hidden", A: "a", B: "b", C: "c", D: "d", answer: "" },
  ]);
});

/** A task folder with one subject whose test CSV is given. */
function taskWith(testCsv: string): string {
  const taskDir = mkdtempSync(join(tmpdir(), "lmf-eval-task-"));
  const folder = join(taskDir, "bad");
  for (const split of ["dev", "test"]) mkdirSync(join(folder, split), { recursive: true });
  writeFileSync(join(folder, "mapping.json"), JSON.stringify({ s: { name: "s", category: "Other" } }));
  writeFileSync(join(folder, "dev", "s_dev.csv"), "question,A,B,C,D,answer\nq,a,b,c,d,A\n");
  writeFileSync(join(folder, "test", "s_test.csv"), testCsv);
  return taskDir;
}

test("a missing task folder, a bad CSV row, a bad answer and an existing save_dir are clear UserErrors", async () => {
  const run = (overrides: Record<string, unknown>) =>
    runEval(parseEvalArgs({ model_name_or_path: "/nonexistent-model", task: "tinyfacts_test", ...overrides }, quiet));
  await assert.rejects(run({ task: "nosuch_test" }), (error: unknown) => error instanceof UserError && /evaluation\/nosuch does not exist/.test(error.message));
  await assert.rejects(run({ task_dir: taskWith("question,A,B,C,D,answer\nq,a,b,c,A\n"), task: "bad_test" }), (error: unknown) =>
    error instanceof UserError && /s_test\.csv:2: row has 5 columns, expected 6/.test(error.message),
  );
  await assert.rejects(run({ task_dir: taskWith("q,a,b,c,d,E\n"), task: "bad_test" }), (error: unknown) =>
    error instanceof UserError && /s_test\.csv:1: answer 'E' is not one of A, B, C, D/.test(error.message),
  );
  await assert.rejects(run({ task: "bad_val", task_dir: taskWith("q,a,b,c,d,A\n") }), (error: unknown) =>
    error instanceof UserError && /no val file for subject 's'/.test(error.message),
  );
  const existing = mkdtempSync(join(tmpdir(), "lmf-eval-exists-"));
  // The parameter system refuses it before anything loads (rule eval_save_dir_exists)...
  assert.throws(() => parseEvalArgs({ model_name_or_path: "m", task: "tinyfacts_test", save_dir: existing }, quiet), /save_dir.*already exists/);
  // ...and runEval refuses it too when handed arguments made before the folder appeared.
  const args = parseEvalArgs({ model_name_or_path: "/nonexistent-model", task: "tinyfacts_test" }, quiet);
  args.evaluation.save_dir = existing;
  await assert.rejects(runEval(args), (error: unknown) => error instanceof UserError && /already exists/.test(error.message));
});

test("scripts/make-eval-task.ts reproduces evaluation/tinyfacts byte for byte", () => {
  const out = mkdtempSync(join(tmpdir(), "lmf-eval-data-"));
  execFileSync(process.execPath, ["--import", "tsx", "scripts/make-eval-task.ts"], { env: { ...process.env, EVAL_TASK_OUT: out } });
  const files = (root: string) => ["mapping.json", ...["dev", "val", "test"].flatMap((split) => readdirSync(join(root, split)).map((file) => join(split, file)))].sort();
  assert.deepEqual(files(out), files(join(TASK_DIR, "tinyfacts")));
  for (const file of files(out)) assert.ok(readFileSync(join(out, file)).equals(readFileSync(join(TASK_DIR, "tinyfacts", file))), file);
});

test("a tiny model SFT-trained on the dev+val questions scores above chance on the test split", async () => {
  const taskFolder = join(TASK_DIR, "tinyfacts");
  const subjects = readMapping(taskFolder);
  const examples = subjects.flatMap(({ subject, name }) =>
    (["dev", "val"] as const).flatMap((split) =>
      loadSubjectSplit(taskFolder, subject, split).map((question) => {
        const [prompt, answer] = formatExample(EVAL_TEMPLATES.en, question, [], name);
        return { instruction: prompt!.content, input: "", output: answer!.content };
      }),
    ),
  );
  const dataDir = mkdtempSync(join(tmpdir(), "lmf-eval-sft-"));
  writeFileSync(join(dataDir, "facts.json"), JSON.stringify(examples));
  writeFileSync(join(dataDir, "dataset_info.json"), JSON.stringify({ facts: { file_name: "facts.json" } }));

  const modelDir = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null, hidden_size: 64, intermediate_size: 128, max_position_embeddings: 256 }, 1);
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(modelDir, file), readFileSync(join(DEMO_TOKENIZER, file)));
  const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-eval-sft-out-")), "out");
  await runTrain(
    parseTrainArgs(
      {
        model_name_or_path: modelDir,
        stage: "sft",
        do_train: true,
        finetuning_type: "full",
        dataset_dir: dataDir,
        dataset: "facts",
        template: "chatml",
        cutoff_len: 160,
        output_dir: outputDir,
        per_device_train_batch_size: 8,
        learning_rate: 5e-3,
        max_steps: 150,
        lr_scheduler_type: "constant",
        save_strategy: "no",
        logging_steps: 10,
        seed: 42,
      },
      quiet,
    ),
    { print: () => {} },
  );

  const saveDir = join(mkdtempSync(join(tmpdir(), "lmf-eval-save-")), "results");
  const lines: string[] = [];
  const result = await runEval(
    parseEvalArgs({ model_name_or_path: outputDir, template: "chatml", task: "tinyfacts_test", task_dir: TASK_DIR, n_shot: 0, batch_size: 8, save_dir: saveDir }, quiet),
    { print: (line) => lines.push(line) },
  );
  assert.ok(result.categoryAccuracy.Average! > 40, `accuracy ${result.categoryAccuracy.Average}% (chance 25%)`);

  // results.json: per subject, question index -> predicted letter; results.log: the printed table.
  const saved = JSON.parse(readFileSync(join(saveDir, "results.json"), "utf8"));
  assert.deepEqual(Object.keys(saved), subjects.map((s) => s.subject));
  for (const { subject } of subjects) {
    assert.deepEqual(Object.keys(saved[subject]), Array.from({ length: 10 }, (_, i) => String(i)));
    assert.ok(Object.values(saved[subject]).every((letter) => /^[ABCD]$/.test(letter as string)));
  }
  const log = readFileSync(join(saveDir, "results.log"), "utf8");
  assert.equal(log, lines.join("\n"));
  const categoryLines = log.split("\n\n")[0]!.split("\n");
  assert.deepEqual(categoryLines.map((line) => line.slice(0, 15).trim()), ["Average", "STEM", "Social Sciences", "Humanities", "Other"]);
  assert.match(categoryLines[0]!, /^ {8}Average: \d+\.\d\d$/);

  // The same model with 2 shots and a batch size that leaves a short last batch runs end to end,
  // and a batch gives the same letters as one question at a time (left padding is exact).
  const shots = { model_name_or_path: outputDir, template: "chatml", task: "tinyfacts_test", n_shot: 2, seed: 3 };
  const batched = await runEval(parseEvalArgs({ ...shots, batch_size: 3 }, quiet), { print: () => {} });
  const single = await runEval(parseEvalArgs({ ...shots, batch_size: 1 }, quiet), { print: () => {} });
  assert.deepEqual(batched.predictions, single.predictions);
});

test("lmf eval runs from the command line and writes the score table", () => {
  const modelDir = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null });
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(modelDir, file), readFileSync(join("examples/demo/tiny-llama", file)));
  const saveDir = join(mkdtempSync(join(tmpdir(), "lmf-eval-cli-")), "scores");
  const stdout = execFileSync(
    process.execPath,
    ["bin/lmf.mjs", "eval", "--model_name_or_path", modelDir, "--template", "chatml", "--task", "tinyfacts_test", "--n_shot", "1", "--save_dir", saveDir],
    { encoding: "utf8" },
  );
  assert.match(stdout, /Average: \d+\.\d{2}/);
  assert.match(readFileSync(join(saveDir, "results.log"), "utf8"), /STEM: \d+\.\d{2}/);
  assert.deepEqual(readdirSync(saveDir).sort(), ["results.json", "results.log"]);
});
