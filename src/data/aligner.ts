// Format aligners: alpaca, sharegpt and openai rows to AlignedExample, after LLaMA-Factory's
// `data/converter.py` (AlpacaDatasetConverter, SharegptDatasetConverter, OpenAIDatasetConverter).
// Where upstream silently drops or mis-trains a broken row (bad role order, missing column, empty
// answer, non-string content), this port reports it: a UserError naming file, row, problem and fix,
// or, with `skipBadRows`, a count and the first few locations.
import { UserError } from "../errors.ts";
import { type RawRow, rowLocation } from "./loaders.ts";
import { ALPACA_COLUMNS, type ColumnMap, type DatasetAttr, type Formatting, OPENAI_TAGS, SHAREGPT_TAGS, type TagMap } from "./registry.ts";
import type { AlignedExample, Message, Role } from "./types.ts";

export interface AlignSpec {
  formatting: Formatting;
  ranking: boolean;
  columns: ColumnMap;
  tags: TagMap;
}

/** Why a row cannot be used, and what the user should change. */
export interface RowProblem {
  problem: string;
  fix: string;
}

export type AlignResult = { example: AlignedExample } | RowProblem;

class RowRejected extends Error {
  constructor(readonly problem: string, readonly fix: string) {
    super(problem);
  }
}

function reject(problem: string, fix: string): never {
  throw new RowRejected(problem, fix);
}

const OPENAI_NO_THINKING = "detailed thinking off";

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** CSV cells hold nested values as JSON text. */
function structured(value: unknown): unknown {
  if (typeof value !== "string") return value;
  const trimmed = value.trim();
  if (!(trimmed.startsWith("[") || trimmed.startsWith("{"))) return value;
  try {
    return JSON.parse(trimmed);
  } catch {
    return value;
  }
}

function requiredColumn(row: Record<string, unknown>, column: string): unknown {
  const value = row[column];
  if (value === undefined || value === null) {
    const present = Object.keys(row);
    reject(
      `missing column "${column}" (the row has: ${present.length ? present.join(", ") : "no columns"})`,
      `add "${column}" to every row, or map the right column in dataset_info.json "columns"`,
    );
  }
  return value;
}

function optionalString(row: Record<string, unknown>, column: string | null, what: string): string {
  if (column === null) return "";
  const value = row[column];
  if (value === undefined || value === null) return "";
  if (typeof value !== "string") reject(`${what} column "${column}" is ${describe(value)}, not a string`, `write "${column}" as a string`);
  return value;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  return typeof value === "object" ? "an object" : `a ${typeof value} (${JSON.stringify(value)})`;
}

function toolsOf(row: Record<string, unknown>, column: string | null): string {
  if (column === null) return "";
  const value = row[column];
  if (value === undefined || value === null || value === "") return "";
  if (typeof value === "string") return value;
  if (typeof value === "object") return JSON.stringify(value);
  reject(`tools column "${column}" is ${describe(value)}`, "write the tool definitions as a JSON list (or a JSON string of one)");
}

function ktoTagOf(row: Record<string, unknown>, column: string): boolean {
  const value = row[column];
  if (typeof value === "boolean") return value;
  if (value === "true" || value === "True") return true;
  if (value === "false" || value === "False") return false;
  if (value === undefined || value === null) reject(`missing column "${column}" (the KTO label)`, `give every row "${column}": true (desirable) or false (undesirable)`);
  reject(`KTO label column "${column}" is ${describe(value)}`, `write "${column}" as true (desirable) or false (undesirable)`);
}

function nonEmptyAnswer(content: string, what: string): void {
  if (content.trim() === "") reject(`empty ${what}`, "give the row a non-empty answer, or remove the row");
}

function ktoResponse(answer: Message, tag: boolean): Message[] {
  const empty: Message = { role: "assistant", content: "" };
  return tag ? [answer, empty] : [empty, answer];
}

/** LLaMA-Factory's AlpacaDatasetConverter. */
export function alignAlpaca(row: Record<string, unknown>, spec: AlignSpec): AlignedExample {
  const { columns } = spec;
  const prompt: Message[] = [];
  if (columns.history !== null) {
    const history = structured(row[columns.history]);
    if (history !== undefined && history !== null && history !== "") {
      if (!Array.isArray(history)) reject(`history column "${columns.history}" is ${describe(history)}, not a list of [question, answer] pairs`, 'write it as [["q1", "a1"], ["q2", "a2"]]');
      history.forEach((pair, index) => {
        if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string") {
          reject(`history turn ${index + 1} is not a [question, answer] pair of strings`, 'write history as [["q1", "a1"], ["q2", "a2"]]');
        }
        prompt.push({ role: "user", content: pair[0] }, { role: "assistant", content: pair[1] });
      });
    }
  }

  const queryParts: string[] = [];
  for (const [column, what] of [
    [columns.prompt, "prompt"],
    [columns.query, "query"],
  ] as const) {
    if (column === null) continue;
    const value = what === "prompt" ? requiredColumn(row, column) : row[column];
    if (value === undefined || value === null) continue;
    if (typeof value !== "string") reject(`${what} column "${column}" is ${describe(value)}, not a string`, `write "${column}" as a string`);
    if (value) queryParts.push(value);
  }
  const userText = queryParts.join("\n");
  if (userText.trim() === "") {
    const named = [columns.prompt, columns.query].filter((column) => column !== null).join('" / "');
    reject(`empty prompt ("${named}" hold no text)`, "give the row an instruction, or remove the row");
  }
  prompt.push({ role: "user", content: userText });

  let response: Message[] = [];
  let ktoTag: boolean | null = null;
  if (columns.kto_tag !== null) {
    ktoTag = ktoTagOf(row, columns.kto_tag);
    const answer = alpacaAnswer(row, columns.response, "response");
    response = ktoResponse(answer, ktoTag);
  } else if (spec.ranking) {
    const chosen = alpacaAnswer(row, columns.chosen ?? "chosen", "chosen answer");
    const rejected = alpacaAnswer(row, columns.rejected ?? "rejected", "rejected answer");
    response = [chosen, rejected];
  } else if (columns.response !== null) {
    response = [alpacaAnswer(row, columns.response, "response")];
  }

  const example: AlignedExample = {
    _prompt: prompt,
    _response: response,
    _system: optionalString(row, columns.system, "system"),
    _tools: toolsOf(row, columns.tools),
  };
  if (ktoTag !== null) example._kto_tag = ktoTag;
  return example;
}

function alpacaAnswer(row: Record<string, unknown>, column: string | null, what: string): Message {
  if (column === null) reject(`no ${what} column is mapped`, `map it in dataset_info.json "columns"`);
  const value = requiredColumn(row, column);
  if (typeof value !== "string") reject(`${what} column "${column}" is ${describe(value)}, not a string`, `write "${column}" as a string`);
  nonEmptyAnswer(value, `${what} ("${column}")`);
  return { role: "assistant", content: value };
}

interface Turn {
  tag: string;
  content: string;
}

function messageOf(raw: unknown, tags: TagMap, where: string): { tag: string; content: unknown; message: Record<string, unknown> } {
  if (!isObject(raw)) reject(`${where} is ${describe(raw)}, not a message object`, `write messages as {"${tags.role_tag}": ..., "${tags.content_tag}": ...}`);
  const tag = raw[tags.role_tag!];
  if (typeof tag !== "string") {
    reject(
      `${where} has no "${tags.role_tag}" role key (it has: ${Object.keys(raw).join(", ")})`,
      `set "tags": {"role_tag": ..., "content_tag": ...} in dataset_info.json to the keys the messages use`,
    );
  }
  return { tag, content: raw[tags.content_tag!], message: raw };
}

function contentString(content: unknown, where: string, tags: TagMap): string {
  if (typeof content === "string") return content;
  if (content === undefined) reject(`${where} has no "${tags.content_tag}" content key`, "give every message a text content, or set tags.content_tag");
  reject(`${where} content is ${describe(content)}, not a string`, "write message contents as text");
}

function roleOf(tag: string, tags: TagMap): Role | null {
  if (tag === tags.user_tag) return "user";
  if (tag === tags.assistant_tag) return "assistant";
  if (tag === tags.observation_tag) return "observation";
  if (tag === tags.function_tag) return "function";
  if (tag === tags.system_tag) return "system";
  return null;
}

function knownTags(tags: TagMap): string {
  return [tags.user_tag, tags.assistant_tag, tags.observation_tag, tags.function_tag, tags.system_tag].filter(Boolean).join(", ");
}

/**
 * The role checks shared by sharegpt and openai: odd positions (1-based) are user or observation
 * turns, even ones assistant or function turns; a plain row ends with an answer, a ranking row with
 * a question (its answers are the chosen/rejected columns).
 */
function checkOrder(turns: readonly { role: Role }[], ranking: boolean, tags: TagMap): void {
  if (turns.length === 0) reject("empty conversation", "give the row at least one question and one answer, or remove it");
  turns.forEach((turn, index) => {
    const wantsQuestion = index % 2 === 0;
    const ok = wantsQuestion ? turn.role === "user" || turn.role === "observation" : turn.role === "assistant" || turn.role === "function";
    if (!ok) {
      const expected = wantsQuestion ? `${tags.user_tag} or ${tags.observation_tag}` : `${tags.assistant_tag} or ${tags.function_tag}`;
      reject(
        `wrong role order: message ${index + 1} is a ${turn.role} turn where ${expected} is expected`,
        "messages must alternate question (user/observation) and answer (assistant/function), with at most one system message first",
      );
    }
  });
  if (!ranking && turns.length % 2 !== 0) {
    reject("wrong role order: the conversation ends with a question, not an answer", "end every conversation with an assistant turn (or set \"ranking\": true for chosen/rejected data)");
  }
  if (ranking && turns.length % 2 === 0) {
    reject("wrong role order: a ranking conversation must end with a question", "end it with a user turn; the answers go in the chosen and rejected columns");
  }
}

function splitSystem(messages: readonly unknown[], tags: TagMap): { system: string | null; rest: readonly unknown[] } {
  if (messages.length === 0 || tags.system_tag === null) return { system: null, rest: messages };
  const first = messageOf(messages[0], tags, "message 1");
  if (first.tag !== tags.system_tag) return { system: null, rest: messages };
  return { system: contentString(first.content, "message 1 (system)", tags), rest: messages.slice(1) };
}

function messagesColumn(row: Record<string, unknown>, columns: ColumnMap): unknown[] {
  const column = columns.messages ?? "conversations";
  const messages = structured(requiredColumn(row, column));
  if (!Array.isArray(messages)) reject(`messages column "${column}" is ${describe(messages)}, not a list of messages`, "write the conversation as a JSON list of message objects");
  return messages;
}

/** The answers of a row after its prompt: KTO, ranking or plain, shared by sharegpt and openai. */
function answersOf(row: Record<string, unknown>, spec: AlignSpec, aligned: Message[]): { prompt: Message[]; response: Message[]; ktoTag: boolean | null } {
  const { columns, tags } = spec;
  if (columns.kto_tag !== null) {
    const ktoTag = ktoTagOf(row, columns.kto_tag);
    const answer = aligned[aligned.length - 1]!;
    nonEmptyAnswer(answer.content, "answer (the last message)");
    return { prompt: aligned.slice(0, -1), response: ktoResponse(answer, ktoTag), ktoTag };
  }
  if (spec.ranking) {
    const response = (["chosen", "rejected"] as const).map((which) => {
      const column = columns[which] ?? which;
      const raw = structured(requiredColumn(row, column));
      const { tag, content } = messageOf(raw, tags, `${which} answer ("${column}")`);
      const role = roleOf(tag, tags);
      if (role !== "assistant" && role !== "function") {
        reject(`wrong role order: the ${which} answer has role "${tag}"`, `give chosen and rejected the role "${tags.assistant_tag}" (or "${tags.function_tag}")`);
      }
      const text = contentString(content, `${which} answer`, tags);
      nonEmptyAnswer(text, `${which} answer`);
      return { role, content: text };
    });
    return { prompt: aligned, response, ktoTag: null };
  }
  const answer = aligned[aligned.length - 1]!;
  nonEmptyAnswer(answer.content, "answer (the last message)");
  return { prompt: aligned.slice(0, -1), response: [answer], ktoTag: null };
}

function finish(prompt: Message[], response: Message[], system: string, tools: string, ktoTag: boolean | null): AlignedExample {
  const example: AlignedExample = { _prompt: prompt, _response: response, _system: system, _tools: tools };
  if (ktoTag !== null) example._kto_tag = ktoTag;
  return example;
}

/** LLaMA-Factory's SharegptDatasetConverter. */
export function alignSharegpt(row: Record<string, unknown>, spec: AlignSpec): AlignedExample {
  const { columns, tags } = spec;
  const { system: firstSystem, rest } = splitSystem(messagesColumn(row, columns), tags);
  const aligned: Message[] = rest.map((raw, index) => {
    const where = `message ${index + 1 + (firstSystem === null ? 0 : 1)}`;
    const { tag, content } = messageOf(raw, tags, where);
    const role = roleOf(tag, tags);
    if (role === null) reject(`${where} has unknown role "${tag}" (known: ${knownTags(tags)})`, 'map the dataset\'s role names in dataset_info.json "tags" (user_tag, assistant_tag, ...)');
    return { role, content: contentString(content, where, tags) };
  });
  checkOrder(aligned, spec.ranking, tags);
  const { prompt, response, ktoTag } = answersOf(row, spec, aligned);
  const system = firstSystem ?? optionalString(row, columns.system, "system");
  return finish(prompt, response, system, toolsOf(row, columns.tools), ktoTag);
}

/**
 * LLaMA-Factory's OpenAIDatasetConverter: assistant `tool_calls` become a function turn (the JSON
 * list of their `function` objects), consecutive tool messages merge into one observation, and the
 * system prompt gets upstream's "detailed thinking off" suffix, reproduced for identical training data.
 */
export function alignOpenai(row: Record<string, unknown>, spec: AlignSpec): AlignedExample {
  const { columns, tags } = spec;
  const { system: firstSystem, rest } = splitSystem(messagesColumn(row, columns), tags);
  const aligned: Message[] = [];
  const toolResponses: string[] = [];
  const flushToolResponses = (): void => {
    if (toolResponses.length === 0) return;
    aligned.push({ role: "observation", content: toolResponses.join("\n</tool_response>\n<tool_response>\n") });
    toolResponses.length = 0;
  };
  rest.forEach((raw, index) => {
    const where = `message ${index + 1 + (firstSystem === null ? 0 : 1)}`;
    const { tag, content, message } = messageOf(raw, tags, where);
    let role = roleOf(tag, tags);
    if (role === null) reject(`${where} has unknown role "${tag}" (known: ${knownTags(tags)})`, 'map the dataset\'s role names in dataset_info.json "tags"');
    let text: string;
    const toolCalls = message.tool_calls;
    if ((role === "assistant" || role === "function") && Array.isArray(toolCalls) && toolCalls.length > 0) {
      const functions = toolCalls.map((call, callIndex) => {
        if (!isObject(call) || call.function === undefined) reject(`${where} tool call ${callIndex + 1} has no "function"`, 'write tool calls as {"type": "function", "function": {"name": ..., "arguments": ...}}');
        return call.function;
      });
      text = JSON.stringify(functions);
      role = "function";
    } else {
      text = contentString(content, where, tags);
    }
    if (role === "observation") {
      toolResponses.push(text);
      return;
    }
    flushToolResponses();
    aligned.push({ role, content: text });
  });
  flushToolResponses();
  checkOrder(aligned, spec.ranking, tags);
  const { prompt, response, ktoTag } = answersOf(row, spec, aligned);
  let system = firstSystem ?? optionalString(row, columns.system, "system");
  const tools = toolsOf(row, columns.tools);
  if (!system) {
    if (!tools) system = OPENAI_NO_THINKING;
  } else if (tools) {
    system += "\n";
  } else if (!system.includes("detailed thinking on") && !system.includes(OPENAI_NO_THINKING)) {
    system += "\n" + OPENAI_NO_THINKING;
  }
  return finish(prompt, response, system, tools, ktoTag);
}

export function alignRow(data: unknown, spec: AlignSpec): AlignResult {
  if (!isObject(data)) return { problem: `the row is ${describe(data)}, not an object of columns`, fix: "write every row as a JSON object" };
  try {
    if (spec.formatting === "alpaca") return { example: alignAlpaca(data, spec) };
    if (spec.formatting === "sharegpt") return { example: alignSharegpt(data, spec) };
    return { example: alignOpenai(data, spec) };
  } catch (error) {
    if (error instanceof RowRejected) return { problem: error.problem, fix: error.fix };
    throw error;
  }
}

/**
 * Recognises the format of a dataset given as a bare path from its first row: `conversations` or
 * `messages` lists (sharegpt, with from/value or role/content keys), `instruction`/`output`
 * (alpaca), `chosen`/`rejected` (ranking), a boolean `label`/`kto_tag` (KTO), or `text` (plain text).
 */
export function detectSpec(first: unknown, where: string): AlignSpec {
  const fix = "add an entry for it to dataset_info.json that names its formatting and columns";
  if (!isObject(first)) throw new UserError(`cannot tell the dataset format: the first row is ${describe(first)}`, where, fix);
  const has = (key: string): boolean => first[key] !== undefined;
  const columns: ColumnMap = { ...ALPACA_COLUMNS, prompt: null, query: null, response: null };
  const ranking = has("chosen") && has("rejected");
  if (ranking) Object.assign(columns, { chosen: "chosen", rejected: "rejected" });
  for (const key of ["kto_tag", "label"]) if (typeof first[key] === "boolean") columns.kto_tag = key;
  if (has("system")) columns.system = "system";
  if (has("tools")) columns.tools = "tools";

  const messagesKey = ["conversations", "messages"].find((key) => Array.isArray(structured(first[key])));
  if (messagesKey) {
    columns.messages = messagesKey;
    const firstMessage = (structured(first[messagesKey]) as unknown[])[0];
    const roleContent = isObject(firstMessage) && firstMessage.role !== undefined;
    return { formatting: "sharegpt", ranking, columns, tags: { ...(roleContent ? OPENAI_TAGS : SHAREGPT_TAGS) } };
  }
  if (has("instruction") || has("output") || ranking) {
    Object.assign(columns, { prompt: has("instruction") ? "instruction" : null, query: has("input") ? "input" : null, response: has("output") ? "output" : null });
    if (has("history")) columns.history = "history";
    if (columns.prompt === null && has("prompt")) columns.prompt = "prompt";
    return { formatting: "alpaca", ranking, columns, tags: { ...SHAREGPT_TAGS } };
  }
  if (typeof first.text === "string") return { formatting: "alpaca", ranking: false, columns: { ...columns, prompt: "text" }, tags: { ...SHAREGPT_TAGS } };
  throw new UserError(`cannot tell the dataset format from its first row (columns: ${Object.keys(first).join(", ")})`, where, fix);
}

/** Bad rows met while aligning one or more datasets, for the skip report. */
export class BadRowReport {
  count = 0;
  readonly byProblem = new Map<string, number>();
  readonly firstLocations: string[] = [];

  add(location: string, problem: string): void {
    this.count++;
    const kind = problem.replace(/".*?"|\d+/g, "…").slice(0, 80);
    this.byProblem.set(kind, (this.byProblem.get(kind) ?? 0) + 1);
    if (this.firstLocations.length < 5) this.firstLocations.push(`${location}: ${problem}`);
  }

  /** One human-readable paragraph, or "" when nothing was skipped. */
  summary(): string {
    if (this.count === 0) return "";
    const kinds = [...this.byProblem].map(([kind, count]) => `${count} × ${kind}`).join("; ");
    return `skipped ${this.count} bad row${this.count === 1 ? "" : "s"} (${kinds}); first: ${this.firstLocations.join(" | ")}`;
  }
}

export interface AlignOptions {
  /** Count and report bad rows instead of stopping at the first one (`skip_bad_rows`). */
  skipBadRows?: boolean;
  /** Where skipped rows are counted; shared across datasets to report them together. */
  report?: BadRowReport;
}

/** Aligns a stream of raw rows. `attr.formatting` "auto" is resolved from the first row. */
export async function* alignRows(rows: AsyncIterable<RawRow>, attr: Pick<DatasetAttr, "name" | "formatting" | "ranking" | "columns" | "tags">, options: AlignOptions = {}): AsyncGenerator<AlignedExample> {
  let spec: AlignSpec | null = attr.formatting === "auto" ? null : { formatting: attr.formatting, ranking: attr.ranking, columns: attr.columns, tags: attr.tags };
  for await (const row of rows) {
    const location = rowLocation(row);
    let result: AlignResult;
    if (row.parseError !== undefined) {
      result = { problem: row.parseError, fix: "fix or remove this row" };
    } else {
      spec ??= detectSpec(row.data, `dataset "${attr.name}" (${row.file})`);
      result = alignRow(row.data, spec);
    }
    if ("example" in result) {
      yield result.example;
      continue;
    }
    if (!options.skipBadRows) {
      throw new UserError(result.problem, `dataset "${attr.name}", ${location}`, `${result.fix}; or set skip_bad_rows: true to skip such rows`);
    }
    options.report?.add(location, result.problem);
  }
}
