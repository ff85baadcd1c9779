// `lmf eval`: the multiple-choice evaluator of LLaMA-Factory (`eval/evaluator.py`, prompts from
// `eval/template.py`). A task `<name>_<split>` reads `<task_dir>/<name>/mapping.json` and one CSV per
// subject and split (MMLU / C-Eval / CMMLU layouts); each question becomes an n-shot chat rendered
// with the chat template, and the answer is the choice letter whose next-token logit is highest.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Message } from "../data/types.ts";
import { UserError } from "../errors.ts";
import type { EvalArgs } from "../hparams/index.ts";
import type { ChatModel } from "../infer/chat_model.ts";
import { loadChatModelFromArgs } from "../infer/from_args.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { type Tensor, noGrad, seededRandom, shuffled, tensor, tidy } from "../torch/index.ts";

export const CHOICES = ["A", "B", "C", "D"] as const;

/** Categories in LLaMA-Factory's order (`SUBJECTS` in eval/evaluator.py); Average covers all. */
export const CATEGORIES = ["Average", "STEM", "Social Sciences", "Humanities", "Other"] as const;

export interface EvalTemplate {
  system: string;
  choice: string;
  answer: string;
}

export const EVAL_TEMPLATES: Record<"en" | "zh", EvalTemplate> = {
  en: {
    system: "The following are multiple choice questions (with answers) about {subject}.\n\n",
    choice: "\n{choice}. {content}",
    answer: "\nAnswer:",
  },
  zh: {
    system: "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n",
    choice: "\n{choice}. {content}",
    answer: "\n答案：",
  },
};

export interface Question {
  question: string;
  A: string;
  B: string;
  C: string;
  D: string;
  /** The right letter; empty where a benchmark hides it (C-Eval's test split). */
  answer: string;
}

/** The question with its lettered choices and the answer cue, and the expected letter. */
function parseExample(template: EvalTemplate, example: Question): [string, string] {
  const choices = CHOICES.map((letter) => template.choice.replace("{choice}", letter).replace("{content}", example[letter]));
  return [[example.question, ...choices, template.answer].join(""), example.answer];
}

/**
 * EvalTemplate.format_example: each support example becomes a user/assistant pair, then the target
 * question (its assistant turn holds the expected letter); the system text opens the first user turn.
 */
export function formatExample(template: EvalTemplate, target: Question, supportSet: readonly Question[], subjectName: string): Message[] {
  const messages: Message[] = [];
  for (const example of [...supportSet, target]) {
    const [prompt, response] = parseExample(template, example);
    messages.push({ role: "user", content: prompt }, { role: "assistant", content: response });
  }
  messages[0]!.content = template.system.replace("{subject}", subjectName) + messages[0]!.content;
  return messages;
}

// --- the task folder ---------------------------------------------------------------------------

export interface SubjectInfo {
  subject: string;
  name: string;
  category: string;
}

/** Split names in a task id, mapped to the folder that holds them (`train` is the dev set). */
const SPLIT_FOLDERS: Record<string, "dev" | "val" | "test"> = { dev: "dev", train: "dev", val: "val", validation: "val", test: "test" };

/** `mmlu_test` -> ["mmlu", "test"]; the split is after the last underscore, as names may hold one. */
export function parseTask(task: string): { name: string; split: "dev" | "val" | "test" } {
  const cut = task.lastIndexOf("_");
  const split = SPLIT_FOLDERS[task.slice(cut + 1)];
  if (cut <= 0 || !split) {
    throw new UserError(`task '${task}' is not name_split`, "task", "write e.g. mmlu_test, ceval_validation or tinyfacts_test (split: test, validation, dev)");
  }
  return { name: task.slice(0, cut), split };
}

export function readMapping(taskFolder: string): SubjectInfo[] {
  const file = join(taskFolder, "mapping.json");
  if (!existsSync(file)) {
    throw new UserError(`no mapping.json in ${taskFolder}`, "task_dir", "point task_dir at the folder that holds the task folder (e.g. evaluation for evaluation/mmlu/mapping.json)");
  }
  let mapping: unknown;
  try {
    mapping = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new UserError(`mapping.json is not valid JSON (${(error as Error).message})`, file);
  }
  if (!mapping || typeof mapping !== "object" || Array.isArray(mapping)) throw new UserError("mapping.json must be an object {subject: {name, category}}", file);
  return Object.entries(mapping as Record<string, { name?: unknown; category?: unknown }>).map(([subject, info]) => {
    if (typeof info?.name !== "string" || typeof info?.category !== "string") {
      throw new UserError(`subject '${subject}' needs string fields name and category`, file);
    }
    return { subject, name: info.name, category: info.category };
  });
}

/** Where a subject's split lives: MMLU `dev/x_dev.csv` (or under `data/`), CMMLU `dev/x.csv`. */
function splitFile(taskFolder: string, subject: string, split: string): string | null {
  const candidates = [
    join(taskFolder, split, `${subject}_${split}.csv`),
    join(taskFolder, "data", split, `${subject}_${split}.csv`),
    join(taskFolder, split, `${subject}.csv`),
  ];
  return candidates.find((file) => existsSync(file)) ?? null;
}

/** RFC 4180 records: `,` separators, `"` quoting with `""` escapes, newlines inside quotes, CRLF or LF. */
function csvRecords(text: string): { fields: string[]; line: number }[] {
  const records: { fields: string[]; line: number }[] = [];
  let fields: string[] = [];
  let field = "";
  let quoted = false;
  let line = 1;
  let recordLine = 1;
  for (let i = 0; i < text.length; i++) {
    const char = text[i]!;
    if (quoted) {
      if (char === '"' && text[i + 1] === '"') (field += '"'), i++;
      else if (char === '"') quoted = false;
      else {
        if (char === "\n") line++;
        field += char;
      }
    } else if (char === '"' && field === "") quoted = true;
    else if (char === ",") fields.push(field), (field = "");
    else if (char === "\n" || char === "\r") {
      if (char === "\r" && text[i + 1] === "\n") i++;
      fields.push(field);
      records.push({ fields, line: recordLine });
      fields = [];
      field = "";
      recordLine = ++line;
    } else field += char;
  }
  if (field !== "" || fields.length) records.push({ fields: [...fields, field], line: recordLine });
  return records.filter((record) => !(record.fields.length === 1 && record.fields[0] === ""));
}

/**
 * One subject's questions. A header row naming question/A/B/C/D/answer (any case, other columns such
 * as C-Eval's id and explanation ignored) maps columns by name; without one (MMLU) the six columns
 * are question, A, B, C, D, answer in that order.
 */
export function readQuestions(file: string): Question[] {
  const records = csvRecords(readFileSync(file, "utf8").replace(/^\uFEFF/, ""));
  const header = records[0]?.fields.map((cell) => cell.trim().toLowerCase()) ?? [];
  const named = ["question", "a", "b", "c", "d", "answer"].every((column) => header.includes(column));
  const columns = named ? ["question", "a", "b", "c", "d", "answer"].map((column) => header.indexOf(column)) : [0, 1, 2, 3, 4, 5];
  const rows = named ? records.slice(1) : records;
  return rows.map(({ fields, line }) => {
    const width = named ? header.length : 6;
    if (fields.length !== width) {
      throw new UserError(`row has ${fields.length} columns, expected ${width}${named ? ` (${header.join(",")})` : " (question,A,B,C,D,answer)"}`, `${file}:${line}`, "quote fields that contain commas or newlines");
    }
    const [question, a, b, c, d, answer] = columns.map((index) => fields[index]!);
    const letter = answer!.trim().toUpperCase();
    if (letter !== "" && !(CHOICES as readonly string[]).includes(letter)) {
      throw new UserError(`answer '${answer}' is not one of A, B, C, D`, `${file}:${line}`);
    }
    return { question: question!, A: a!, B: b!, C: c!, D: d!, answer: letter };
  });
}

export function loadSubjectSplit(taskFolder: string, subject: string, split: "dev" | "val" | "test"): Question[] {
  const file = splitFile(taskFolder, subject, split);
  if (!file) {
    throw new UserError(`no ${split} file for subject '${subject}'`, taskFolder, `expected ${join(split, `${subject}_${split}.csv`)} (or ${join("data", split, `${subject}_${split}.csv`)}, ${join(split, `${subject}.csv`)})`);
  }
  return readQuestions(file);
}

// --- scoring -----------------------------------------------------------------------------------

/** The token id of each choice letter: the last id of its encoding, as LLaMA-Factory takes it. */
export function choiceTokenIds(tokenizer: Tokenizer): number[] {
  return CHOICES.map((letter) => {
    const ids = tokenizer.encode(letter, { addSpecialTokens: false });
    if (ids.length === 0) throw new UserError(`the tokenizer gives no token for '${letter}'`, "tokenizer");
    return ids[ids.length - 1]!;
  });
}

/** Softmax over the choice logits [B, 4] and the most likely letter per row (first on ties). */
export function pickChoices(choiceLogits: Tensor): { probabilities: number[][]; letters: string[] } {
  const [B, N] = [choiceLogits.shape[0]!, choiceLogits.shape[1]!];
  const flat = tidy(() => choiceLogits.to("float32").softmax(-1).toFlatArray());
  const probabilities = Array.from({ length: B }, (_, row) => flat.slice(row * N, (row + 1) * N));
  const letters = probabilities.map((row) => CHOICES[row.indexOf(Math.max(...row))]!);
  return { probabilities, letters };
}

/**
 * Predicted letters for a batch of prompts: left-padded into one [B, T] batch (positions come from
 * the mask, so every prompt sees the positions it would alone); the logits at the last column are
 * the next-token logits of every prompt.
 */
export function predictBatch(chat: ChatModel, prompts: number[][], choiceIds: number[]): string[] {
  const width = Math.max(...prompts.map((ids) => ids.length));
  const padId = chat.tokenizer.padTokenId ?? 0;
  const ids = prompts.map((row) => [...Array<number>(width - row.length).fill(padId), ...row]);
  const mask = prompts.map((row) => [...Array<number>(width - row.length).fill(0), ...row.map(() => 1)]);
  return noGrad(() =>
    tidy(() => {
      const inputIds = tensor(ids, { dtype: "int64" });
      const attentionMask = tensor(mask, { dtype: "int64" });
      const logits = chat.model.forward(inputIds, { attentionMask, logitsToKeep: 1 }); // [B, 1, V]
      const last = logits.select(1, 0); // [B, V]
      return pickChoices(last.indexSelect(1, tensor(choiceIds, { dtype: "int64" }))).letters;
    }),
  );
}

// --- the run -----------------------------------------------------------------------------------

/** `n` examples drawn without replacement (a shuffle, then the first n, as `shuffle().select`). */
function drawSupportSet(dev: readonly Question[], n: number, random: () => number): Question[] {
  return shuffled(dev, random).slice(0, Math.min(n, dev.length));
}

/** LLaMA-Factory's score lines, `{category:>15}: {100·mean:.2f}`, for categories with questions. */
export function formatScores(corrects: ReadonlyMap<string, boolean[]>): string {
  return [...corrects]
    .filter(([, values]) => values.length > 0)
    .map(([category, values]) => `${category.padStart(15)}: ${((100 * values.filter(Boolean).length) / values.length).toFixed(2)}`)
    .join("\n");
}

export interface EvalResult {
  /** Accuracy in percent per category (Average included), then per subject. */
  categoryAccuracy: Record<string, number>;
  subjectAccuracy: Record<string, number>;
  /** results.json: per subject, question index -> predicted letter. */
  predictions: Record<string, Record<string, string>>;
  /** The printed table (also results.log). */
  report: string;
}

export interface RunEvalOptions {
  print?: (line: string) => void;
}

export async function runEval(args: EvalArgs, options: RunEvalOptions = {}): Promise<EvalResult> {
  const print = options.print ?? ((line: string) => process.stdout.write(line + "\n"));
  const { model, evaluation } = args;
  if (!evaluation.task) throw new UserError("`task` is required for lmf eval", "task", "set e.g. task: mmlu_test");
  const saveDir = evaluation.save_dir ?? null;
  if (saveDir && existsSync(saveDir)) throw new UserError(`\`save_dir\` ${saveDir} already exists`, "save_dir", "choose a new `save_dir` so earlier results are not overwritten");
  if (!model.model_name_or_path) throw new UserError("`model_name_or_path` is required", "model_name_or_path");

  const { name, split } = parseTask(evaluation.task);
  const taskFolder = join(evaluation.task_dir, name);
  if (!existsSync(taskFolder)) {
    throw new UserError(`task folder ${taskFolder} does not exist`, "task", `put the benchmark at ${taskFolder} (mapping.json and dev/val/test CSVs), or set task_dir`);
  }
  const subjects = readMapping(taskFolder);
  // Read every file before loading the model, so a bad row costs no model load.
  const loaded = subjects.map((info) => ({
    info,
    dev: evaluation.n_shot > 0 ? loadSubjectSplit(taskFolder, info.subject, "dev") : [],
    target: loadSubjectSplit(taskFolder, info.subject, split),
  }));

  const chat = loadChatModelFromArgs(args);
  try {
    const template = EVAL_TEMPLATES[evaluation.lang];
    const choiceIds = choiceTokenIds(chat.tokenizer);
    const random = seededRandom(evaluation.seed);
    const corrects = new Map<string, boolean[]>(CATEGORIES.map((category) => [category, []]));
    const subjectAccuracy: Record<string, number> = {};
    const predictions: Record<string, Record<string, string>> = {};
    for (const { info, dev, target } of loaded) {
      const prompts: number[][] = [];
      const labels: string[] = [];
      for (const question of target) {
        const messages = formatExample(template, question, drawSupportSet(dev, evaluation.n_shot, random), info.name);
        prompts.push(chat.template.encodeOneturn(chat.tokenizer, messages)[0]);
        labels.push(question.answer);
      }
      const outputs: string[] = [];
      for (let start = 0; start < prompts.length; start += evaluation.batch_size) {
        outputs.push(...predictBatch(chat, prompts.slice(start, start + evaluation.batch_size), choiceIds));
      }
      const subjectCorrects = outputs.map((letter, i) => letter === labels[i]);
      if (!corrects.has(info.category)) corrects.set(info.category, []);
      corrects.get(info.category)!.push(...subjectCorrects);
      corrects.get("Average")!.push(...subjectCorrects);
      subjectAccuracy[info.subject] = subjectCorrects.length ? (100 * subjectCorrects.filter(Boolean).length) / subjectCorrects.length : 0;
      predictions[info.subject] = Object.fromEntries(outputs.map((letter, i) => [String(i), letter]));
    }

    const categoryAccuracy = Object.fromEntries(
      [...corrects].filter(([, values]) => values.length).map(([category, values]) => [category, (100 * values.filter(Boolean).length) / values.length]),
    );
    const subjectWidth = Math.max(15, ...subjects.map((info) => info.name.length));
    const subjectLines = subjects.map((info) => `${info.name.padStart(subjectWidth)}: ${subjectAccuracy[info.subject]!.toFixed(2)}`);
    const report = `${formatScores(corrects)}\n\n${subjectLines.join("\n")}`;
    print(report);
    if (saveDir) {
      mkdirSync(saveDir, { recursive: true });
      writeFileSync(join(saveDir, "results.json"), JSON.stringify(predictions, null, 2));
      writeFileSync(join(saveDir, "results.log"), report);
    }
    return { categoryAccuracy, subjectAccuracy, predictions, report };
  } finally {
    chat.dispose();
  }
}
