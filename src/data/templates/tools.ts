// Tool (function-calling) formats, after LLaMA-Factory's `data/tool_utils.py`: how a list of tool
// schemas becomes system-prompt text, how a function-call message becomes assistant text, and the
// inverse used by the API. The JSON is written the way Python's `json.dumps(..., ensure_ascii=False)` writes it.
import { UserError } from "../../errors.ts";

export interface FunctionCall {
  name: string;
  /** The arguments as a JSON string. */
  arguments: string;
}

type Json = Record<string, unknown>;

/** Python's `json.dumps(value, ensure_ascii=False, indent=indent)`: `", "` and `": "` separators without indent. */
export function pyJsonDumps(value: unknown, indent?: number, level = 0): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") {
    if (Number.isNaN(value)) return "NaN";
    if (!Number.isFinite(value)) return value > 0 ? "Infinity" : "-Infinity";
    return String(value);
  }
  const pad = (depth: number) => (indent === undefined ? "" : "\n" + " ".repeat(indent * depth));
  const join = indent === undefined ? ", " : ",";
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    const items = value.map((item) => pyJsonDumps(item, indent, level + 1));
    return "[" + pad(level + 1) + items.join(join + pad(level + 1)) + pad(level) + "]";
  }
  const entries = Object.entries(value as Json);
  if (entries.length === 0) return "{}";
  const items = entries.map(([key, item]) => `${JSON.stringify(key)}: ${pyJsonDumps(item, indent, level + 1)}`);
  return "{" + pad(level + 1) + items.join(join + pad(level + 1)) + pad(level) + "}";
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return { ok: false };
  }
}

export interface ToolContext {
  /** "Today" for formats that print a date (llama3); fixed in tests. */
  date: Date;
}

export interface ToolUtils {
  /** The system-prompt text describing the tools. */
  toolFormatter(tools: Json[], context: ToolContext): string;
  /** The assistant text of one or more tool calls. */
  functionFormatter(calls: FunctionCall[]): string;
  /** Tool calls found in a model reply, or the reply itself when it holds none. */
  toolExtractor(content: string): string | FunctionCall[];
}

/** `{"type": "function", "function": {...}}` or the bare function schema. */
function unwrap(tool: Json): Json {
  return tool.type === "function" ? ((tool.function ?? {}) as Json) : tool;
}

function wrap(tool: Json): Json {
  return tool.type === "function" ? tool : { type: "function", function: tool };
}

const DEFAULT_TOOL_PROMPT = (toolText: string, toolNames: string) =>
  `You have access to the following tools:\n${toolText}` +
  "Use the following format if using a tool:\n" +
  "```\n" +
  `Action: tool name (one of [${toolNames}])\n` +
  "Action Input: the input to the tool, in a JSON format representing the kwargs " +
  '(e.g. ```{"input": "hello world", "num_beams": 5}```)\n' +
  "```\n";

const QWEN_TOOL_PROMPT = (toolText: string) =>
  "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
  `You are provided with function signatures within <tools></tools> XML tags:\n<tools>${toolText}` +
  "\n</tools>\n\nFor each function call, return a json object with function name and arguments within " +
  '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, ' +
  '"arguments": <args-json-object>}\n</tool_call>';

const GLM4_TOOL_PROMPT = (toolText: string) =>
  "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，" +
  `你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具${toolText}`;

const LLAMA3_TOOL_PROMPT = (date: string, toolText: string) =>
  `Cutting Knowledge Date: December 2023\nToday Date: ${date}\n\n` +
  "You have access to the following functions. To call a function, please respond with JSON for a function call. " +
  'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. ' +
  `Do not use variables.\n\n${toolText}`;

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** Python's `strftime("%d %b %Y")`. */
function llamaDate(date: Date): string {
  return `${String(date.getDate()).padStart(2, "0")} ${MONTHS[date.getMonth()]} ${date.getFullYear()}`;
}

const defaultTools: ToolUtils = {
  toolFormatter(tools) {
    let toolText = "";
    const toolNames: string[] = [];
    for (const raw of tools) {
      const tool = unwrap(raw);
      const parameters = (tool.parameters ?? {}) as { properties?: Record<string, Json>; required?: string[] };
      let paramText = "";
      for (const [name, param] of Object.entries(parameters.properties ?? {})) {
        const required = (parameters.required ?? []).includes(name) ? ", required" : "";
        const enumValues = Array.isArray(param.enum) && param.enum.length ? `, should be one of [${param.enum.map(String).join(", ")}]` : "";
        const items = param.items ? `, where each item should be ${String((param.items as Json).type ?? "")}` : "";
        paramText += `  - ${name} (${String(param.type ?? "")}${required}): ${String(param.description ?? "")}${enumValues}${items}\n`;
      }
      toolText += `> Tool Name: ${String(tool.name)}\nTool Description: ${String(tool.description ?? "")}\nTool Args:\n${paramText}\n`;
      toolNames.push(String(tool.name));
    }
    return DEFAULT_TOOL_PROMPT(toolText, toolNames.join(", "));
  },
  functionFormatter(calls) {
    return calls.map((call) => `Action: ${call.name}\nAction Input: ${call.arguments}`).join("\n");
  },
  toolExtractor(content) {
    const regex = /Action:\s*([a-zA-Z0-9_]+)\s*Action Input:\s*([\s\S]+?)(?=\s*Action:|\s*$)/g;
    const matches = [...content.matchAll(regex)];
    if (matches.length === 0) return content;
    const results: FunctionCall[] = [];
    for (const match of matches) {
      const input = stripChars(stripChars(match[2]!.trim(), '"'), "`");
      const parsed = parseJson(input);
      if (!parsed.ok) return content;
      results.push({ name: match[1]!.trim(), arguments: pyJsonDumps(parsed.value) });
    }
    return results;
  },
};

/** Python's `str.strip(chars)`. */
function stripChars(text: string, chars: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && chars.includes(text[start]!)) start += 1;
  while (end > start && chars.includes(text[end - 1]!)) end -= 1;
  return text.slice(start, end);
}

const qwenTools: ToolUtils = {
  toolFormatter(tools) {
    return QWEN_TOOL_PROMPT(tools.map((tool) => "\n" + pyJsonDumps(wrap(tool))).join(""));
  },
  functionFormatter(calls) {
    return calls
      .map((call) => `<tool_call>\n${pyJsonDumps({ name: call.name, arguments: JSON.parse(call.arguments) })}\n</tool_call>`)
      .join("\n");
  },
  toolExtractor(content) {
    const matches = [...content.matchAll(/<tool_call>([\s\S]+?)<\/tool_call>(?=\s*<tool_call>|\s*$)/g)];
    if (matches.length === 0) return content;
    const results: FunctionCall[] = [];
    for (const match of matches) {
      const parsed = parseJson(match[1]!.trim());
      if (!parsed.ok || typeof parsed.value !== "object" || parsed.value === null) return content;
      const call = parsed.value as Json;
      if (!("name" in call) || !("arguments" in call)) return content;
      results.push({ name: String(call.name), arguments: pyJsonDumps(call.arguments) });
    }
    return results;
  },
};

const llama3Tools: ToolUtils = {
  toolFormatter(tools, context) {
    const toolText = tools.map((tool) => pyJsonDumps(wrap(tool), 4) + "\n\n").join("");
    return LLAMA3_TOOL_PROMPT(llamaDate(context.date), toolText);
  },
  functionFormatter(calls) {
    const objects = calls.map((call) => ({ name: call.name, parameters: JSON.parse(call.arguments) as unknown }));
    return pyJsonDumps(objects.length === 1 ? objects[0] : objects);
  },
  toolExtractor(content) {
    const parsed = parseJson(content.trim());
    if (!parsed.ok) return content;
    const calls = Array.isArray(parsed.value) ? parsed.value : [parsed.value];
    if (!calls.every((call) => call && typeof call === "object" && "name" in call && "parameters" in call)) return content;
    return calls.map((call) => ({ name: String((call as Json).name), arguments: pyJsonDumps((call as Json).parameters) }));
  },
};

const glm4Tools: ToolUtils = {
  toolFormatter(tools) {
    const toolText = tools
      .map((raw) => {
        const tool = unwrap(raw);
        return `\n\n## ${String(tool.name)}\n\n${pyJsonDumps(tool, 4)}\n在调用上述函数时，请使用 Json 格式表示调用的参数。`;
      })
      .join("");
    return GLM4_TOOL_PROMPT(toolText);
  },
  functionFormatter(calls) {
    if (calls.length > 1) throw new UserError("GLM-4 does not support parallel functions", undefined, "give one tool call per function message");
    return `${calls[0]!.name}\n${calls[0]!.arguments}`;
  },
  toolExtractor(content) {
    const newline = content.indexOf("\n");
    if (newline < 0) return content;
    const parsed = parseJson(content.slice(newline + 1).trim());
    if (!parsed.ok) return content;
    return [{ name: content.slice(0, newline), arguments: pyJsonDumps(parsed.value) }];
  },
};

const mistralTools: ToolUtils = {
  toolFormatter(tools) {
    return "[AVAILABLE_TOOLS] " + pyJsonDumps(tools.map(wrap)) + "[/AVAILABLE_TOOLS]";
  },
  functionFormatter(calls) {
    return pyJsonDumps(calls.map((call) => ({ name: call.name, arguments: JSON.parse(call.arguments) as unknown })));
  },
  toolExtractor(content) {
    const parsed = parseJson(content.trim());
    if (!parsed.ok) return content;
    const calls = Array.isArray(parsed.value) ? parsed.value : [parsed.value];
    if (!calls.every((call) => call && typeof call === "object" && "name" in call && "arguments" in call)) return content;
    return calls.map((call) => ({ name: String((call as Json).name), arguments: pyJsonDumps((call as Json).arguments) }));
  },
};

/** The tool formats, by LLaMA-Factory's `tool_format` names. */
export const TOOL_FORMATS: Record<string, ToolUtils> = {
  default: defaultTools,
  qwen: qwenTools,
  llama3: llama3Tools,
  glm4: glm4Tools,
  mistral: mistralTools,
};

export function getToolUtils(name: string): ToolUtils {
  const utils = TOOL_FORMATS[name];
  if (!utils) {
    throw new UserError(`unknown tool_format "${name}"`, "tool_format", `use one of: ${Object.keys(TOOL_FORMATS).join(", ")}`);
  }
  return utils;
}

/** The system text for a `_tools` JSON string ("" for an empty list), as LLaMA-Factory's ToolFormatter. */
export function formatTools(format: ToolUtils, toolsJson: string, context: ToolContext): string {
  const parsed = parseJson(toolsJson);
  if (!parsed.ok) throw new UserError(`invalid JSON in tool description: ${JSON.stringify(toolsJson.slice(0, 200))}`, "_tools", "give tools as a JSON list of function schemas");
  const tools = Array.isArray(parsed.value) ? parsed.value : [parsed.value];
  return tools.length === 0 ? "" : format.toolFormatter(tools as Json[], context);
}

/** Parses a function message: a JSON tool call `{"name", "arguments"}` or a list of them. */
export function parseFunctionCalls(jsonText: string, original: string): FunctionCall[] {
  const parsed = parseJson(jsonText);
  if (!parsed.ok) {
    throw new UserError(`invalid JSON in function message: ${JSON.stringify(original.slice(0, 200))}`, "function message", 'write it as {"name": ..., "arguments": {...}} or a list of those');
  }
  const calls = Array.isArray(parsed.value) ? parsed.value : [parsed.value];
  return calls.map((call) => {
    if (!call || typeof call !== "object" || !("name" in call) || !("arguments" in call)) {
      throw new UserError(`function message lacks "name" or "arguments": ${JSON.stringify(original.slice(0, 200))}`, "function message", 'write it as {"name": ..., "arguments": {...}}');
    }
    return { name: String((call as Json).name), arguments: pyJsonDumps((call as Json).arguments) };
  });
}
