// Reads parameters from CLI tokens, YAML/JSON files with `key=value` overrides, or a plain object,
// and turns them into typed group values: type coercion, choices, bounds, old-name aliases,
// unknown keys with the file line and the closest known key. Follows LLaMA-Factory's
// `read_args`/`_parse_args` (HfArgumentParser conventions for flags, OmegaConf dot-list overrides).
import { existsSync, readFileSync } from "node:fs";
import { LineCounter, isMap, isScalar, parseDocument } from "yaml";
import { UserError } from "../errors.ts";
import { closestName } from "../names.ts";
import { type ForeignKey, foreignKeys } from "./foreign_keys.ts";
import { type Field, type Group, type GroupKey, defaultsOf, formatValue, typeLabel } from "./schema.ts";

/** One raw setting and where it came from (`cfg.yaml:12`, `command line (--lora_rank)`). */
export interface RawSetting {
  value: unknown;
  where: string;
}

/** Settings in the order given; later sources (overrides) replace earlier ones. */
export type RawSettings = Map<string, RawSetting>;

const CONFIG_FILE = /\.(ya?ml|json)$/i;
/** `key=value` after a bare flag is the next override, not the flag's value. */
const OVERRIDE = /^[A-Za-z_][A-Za-z0-9_]*=/;
const NULL_STRINGS = new Set(["null", "None", "NULL", "Null", "~"]);
const TRUE_STRINGS = new Set(["true", "yes", "on", "1", "y"]);
const FALSE_STRINGS = new Set(["false", "no", "off", "0", "n"]);

/**
 * `cfg.yaml key=value ...`, `--key value`, `--key=value`, bare `--flag`, `key=value`.
 * A config file, when given, comes first; everything after it overrides it.
 */
export function readArgv(tokens: readonly string[]): RawSettings {
  const settings: RawSettings = new Map();
  let index = 0;
  if (tokens.length > 0 && !tokens[0]!.startsWith("-") && !tokens[0]!.includes("=")) {
    for (const [key, setting] of readConfigFile(tokens[0]!)) settings.set(key, setting);
    index = 1;
  }
  for (; index < tokens.length; index++) {
    const token = tokens[index]!;
    if (token.startsWith("--")) {
      const body = token.slice(2);
      const equals = body.indexOf("=");
      const key = (equals >= 0 ? body.slice(0, equals) : body).replaceAll("-", "_");
      let value: unknown;
      if (equals >= 0) value = body.slice(equals + 1);
      else if (index + 1 < tokens.length && !tokens[index + 1]!.startsWith("--") && !OVERRIDE.test(tokens[index + 1]!)) {
        value = tokens[++index];
      }
      else value = true;
      settings.set(key, { value, where: `command line (--${key})` });
    } else if (token.includes("=") && !token.startsWith("-")) {
      const equals = token.indexOf("=");
      const key = token.slice(0, equals).trim();
      settings.set(key, { value: token.slice(equals + 1), where: `command line (${token})` });
    } else if (CONFIG_FILE.test(token)) {
      throw new UserError(`a second config file \`${token}\``, "command line", "give one config file, first, then key=value overrides");
    } else {
      throw new UserError(
        `unexpected argument \`${token}\``,
        "command line",
        "give a config file first, then overrides as key=value or --key value",
      );
    }
  }
  return settings;
}

/** A YAML or JSON config file, each key with its line number for error messages. */
export function readConfigFile(path: string): RawSettings {
  if (!CONFIG_FILE.test(path)) {
    throw new UserError(`\`${path}\` is not a config file`, "command line", "config files end in .yaml, .yml or .json");
  }
  if (!existsSync(path)) throw new UserError(`config file not found`, path, "check the path");
  const text = readFileSync(path, "utf8");
  return /\.json$/i.test(path) ? readJsonText(text, path) : readYamlText(text, path);
}

function readYamlText(text: string, path: string): RawSettings {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  const lineOf = (offset: number | undefined) => (offset === undefined ? 0 : lineCounter.linePos(offset).line);
  if (doc.errors.length > 0) {
    const error = doc.errors[0]!;
    throw new UserError(`invalid YAML: ${error.message.split("\n")[0]}`, `${path}:${lineOf(error.pos[0])}`, "fix the YAML syntax");
  }
  const settings: RawSettings = new Map();
  if (doc.contents === null) return settings;
  if (!isMap(doc.contents)) {
    throw new UserError("the config must be a mapping of `key: value` lines", `${path}:${lineOf(doc.contents.range?.[0])}`);
  }
  for (const pair of doc.contents.items) {
    const line = isScalar(pair.key) ? lineOf(pair.key.range?.[0]) : 0;
    const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    const value = pair.value === null ? null : (pair.value as { toJS(doc: unknown): unknown }).toJS(doc);
    settings.set(key, { value: value ?? null, where: `${path}:${line}` });
  }
  return settings;
}

function readJsonText(text: string, path: string): RawSettings {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new UserError(`invalid JSON: ${(error as Error).message}`, path, "fix the JSON syntax");
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new UserError("the config must be a JSON object of key/value pairs", path);
  }
  const settings: RawSettings = new Map();
  for (const [key, value] of Object.entries(parsed)) {
    const at = text.search(new RegExp(`"${key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}"\\s*:`));
    const line = at < 0 ? 0 : text.slice(0, at).split("\n").length;
    settings.set(key, { value, where: `${path}:${line}` });
  }
  return settings;
}

/** Programmatic input (`parseTrainArgs({ model_name_or_path: ... })`). */
export function readObject(values: Record<string, unknown>, where = "arguments"): RawSettings {
  return new Map(Object.entries(values).map(([key, value]) => [key, { value, where: `${where} (${key})` }]));
}

/** Checks and converts one value to its declared type; throws a `UserError` naming field, value and what is allowed. */
export function coerceValue(name: string, spec: Field, value: unknown, where: string): unknown {
  if (value === undefined || value === null || (typeof value === "string" && NULL_STRINGS.has(value))) {
    if (spec.nullable) return null;
    throw new UserError(`\`${name}\` cannot be null`, where, `give a ${typeLabel(spec)}; its default is ${formatValue(spec.default)}`);
  }
  const wrongType = (): never => {
    throw new UserError(`\`${name}\` must be ${describeKind(spec)}, got ${JSON.stringify(value)}`, where, allowedText(spec));
  };
  switch (spec.kind) {
    case "bool": {
      if (typeof value === "boolean") return value;
      if (value === 0 || value === 1) return value === 1;
      if (typeof value === "string") {
        const lower = value.trim().toLowerCase();
        if (TRUE_STRINGS.has(lower)) return true;
        if (FALSE_STRINGS.has(lower)) return false;
      }
      return wrongType();
    }
    case "int":
    case "float": {
      const number = toNumber(value);
      if (number === null || (spec.kind === "int" && !Number.isInteger(number))) return wrongType();
      checkNumber(name, spec, number, where);
      return number;
    }
    case "str":
      if (typeof value === "string") return value;
      if (typeof value === "number") return String(value);
      return wrongType();
    case "enum": {
      if (typeof value !== "string" && typeof value !== "number") return wrongType();
      const text = String(value);
      if (!spec.choices!.includes(text)) {
        const guess = closestName(text, spec.choices!.map(String));
        throw new UserError(
          `\`${name}: ${text}\` is not one of its choices`,
          where,
          `allowed: ${spec.choices!.join(", ")}${guess ? `; did you mean \`${guess}\`?` : ""}`,
        );
      }
      return text;
    }
    case "list": {
      const items = typeof value === "string" ? splitList(value) : Array.isArray(value) ? value : null;
      if (items === null || items.some((item) => typeof item !== "string" && typeof item !== "number")) return wrongType();
      const kept = items.map((item) => String(item).trim()).filter((item) => item.length > 0);
      // An empty optional list means none, as null does (HF's `fsdp: ""` turns FSDP off).
      return kept.length === 0 && spec.nullable ? null : kept;
    }
    case "floats": {
      const items = typeof value === "string" ? splitList(value) : Array.isArray(value) ? value : typeof value === "number" ? [value] : null;
      const numbers = items?.map(toNumber);
      if (!numbers || numbers.some((number) => number === null)) return wrongType();
      return numbers as number[];
    }
    case "json": {
      if (typeof value === "object" && !Array.isArray(value)) return value;
      if (typeof value !== "string") return wrongType();
      if (!value.trim().startsWith("{")) return value;
      try {
        return JSON.parse(value) as unknown;
      } catch (error) {
        throw new UserError(`\`${name}\` is not valid JSON: ${(error as Error).message}`, where, "give a dict or a JSON object string");
      }
    }
  }
}

function checkNumber(name: string, spec: Field, number: number, where: string): void {
  if (spec.choices && !spec.choices.includes(number)) {
    throw new UserError(`\`${name}: ${number}\` is not one of its choices`, where, `allowed: ${spec.choices.join(", ")} or null`);
  }
  if (spec.min !== undefined && number < spec.min) {
    throw new UserError(`\`${name}\` must be at least ${spec.min}, got ${number}`, where);
  }
  if (spec.max !== undefined && number > spec.max) {
    throw new UserError(`\`${name}\` must be at most ${spec.max}, got ${number}`, where);
  }
}

function toNumber(value: unknown): number | null {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value !== "string" || value.trim() === "") return null;
  const number = Number(value.trim());
  return Number.isFinite(number) ? number : null;
}

function splitList(text: string): string[] {
  return text.split(",").map((item) => item.trim()).filter((item) => item.length > 0);
}

function describeKind(spec: Field): string {
  const names: Record<string, string> = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    enum: "one of its choices",
    list: "a list (YAML list or comma-separated string)",
    floats: "a list of numbers",
    json: "a dict or a JSON string",
  };
  return names[spec.kind]! + (spec.nullable ? " (or null)" : "");
}

function allowedText(spec: Field): string {
  if (spec.choices) return `allowed: ${spec.choices.join(", ")}${spec.nullable ? ", null" : ""}`;
  return `expected ${typeLabel(spec)}; default ${formatValue(spec.default)}`;
}

export interface ResolveOptions {
  /** The groups this command fills. */
  used: readonly Group[];
  /** Every other group: their keys are known but not for this command. */
  others: readonly Group[];
  /** The command's name, for messages (`lmf chat`). */
  command: string;
  /** Refuse keys of other groups (train) instead of ignoring them with one notice (chat, export, eval). */
  strictOthers: boolean;
  onWarning: (message: string) => void;
}

/** Fills each used group from its defaults and the given settings; returns values keyed by group. */
export function resolveGroups(settings: RawSettings, options: ResolveOptions): Record<GroupKey, Record<string, unknown>> {
  const result = {} as Record<GroupKey, Record<string, unknown>>;
  for (const group of options.used) result[group.key] = defaultsOf(group.fields);

  const aliases = new Map<string, string>();
  for (const group of [...options.used, ...options.others]) {
    for (const [name, spec] of Object.entries(group.fields)) for (const alias of spec.aliases ?? []) aliases.set(alias, name);
  }
  const usedSpecs = (name: string) =>
    options.used.filter((group) => name in group.fields).map((group) => [group, group.fields[name]!] as const);
  const otherGroup = (name: string) => options.others.find((group) => name in group.fields);
  const allNames = [...new Set([...options.used, ...options.others].flatMap((group) => Object.keys(group.fields))), ...aliases.keys()];

  const seen = new Map<string, string>();
  const ignored: string[] = [];
  for (const [givenKey, setting] of settings) {
    let key = givenKey;
    let value = setting.value;
    const canonical = aliases.get(key);
    if (canonical) {
      options.onWarning(`${setting.where}: \`${key}\` is an old name; use \`${canonical}\``);
      key = canonical;
    } else if (key.startsWith("no_") && value === true && usedSpecs(key.slice(3)).some(([, spec]) => spec.kind === "bool")) {
      // HfArgumentParser's `--no_<flag>` for flags that default to true.
      key = key.slice(3);
      value = false;
    }
    if (seen.has(key)) {
      throw new UserError(
        `\`${key}\` is given twice (also as \`${seen.get(key)}\`)`,
        setting.where,
        `keep only \`${key}\``,
      );
    }
    const specs = usedSpecs(key);
    if (specs.length === 0) {
      const other = otherGroup(key);
      if (other && !options.strictOthers) {
        ignored.push(key);
        continue;
      }
      if (other) {
        throw new UserError(
          `\`${key}\` belongs to ${other.name}, which \`${options.command}\` does not use`,
          setting.where,
          "remove it, or run the command it belongs to",
        );
      }
      const foreign = foreignKeys[givenKey];
      if (foreign) throw foreignKeyError(givenKey, foreign, setting.where);
      const guess = closestName(key, allNames);
      const fix = guess ? `did you mean \`${guess}\`?` : "see `lmf help` for every key";
      throw new UserError(`unknown key \`${givenKey}\``, setting.where, fix);
    }
    for (const [group, spec] of specs) {
      if (spec.derived) {
        throw new UserError(`\`${key}\` is set by lmfactory, not by users`, setting.where, `remove it; ${spec.help}`);
      }
      result[group.key][key] = coerceValue(key, spec, value, setting.where);
    }
    seen.set(key, givenKey);
  }
  if (ignored.length > 0) {
    options.onWarning(`\`${options.command}\` ignores keys it does not use: ${ignored.join(", ")}`);
  }
  return result;
}

/** A key of another trainer's config: says whose it is, and the lmfactory key to use where there is one. */
export function foreignKeyError(key: string, foreign: ForeignKey, where: string): UserError {
  return new UserError(`\`${key}\` is ${foreign.trainer}`, where, foreign.instead ? `in lmfactory: ${foreign.instead}` : "remove it");
}
