// Chat templates. Golden tests: each built-in renders a multi-turn conversation with a system
// message, tools, a function call and an observation to text written here by hand from the
// family's documented format (as LLaMA-Factory lays it out), with ids equal to the text's encoding.
// Parity: qwen and llama3 equal the real tokenizers' own Jinja chat_template (rendered here
// directly with @huggingface/jinja); `template: auto` equals the built-ins; train = chat prompt.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Template as Jinja } from "@huggingface/jinja";
import { UserError } from "../../src/errors.ts";
import { type Tokenizer, loadTokenizer } from "../../src/data/tokenizer.ts";
import { builtinTemplateNames, getTemplate, getTemplateAndFixTokenizer } from "../../src/data/templates/index.ts";
import { Template } from "../../src/data/templates/template.ts";
import type { Message } from "../../src/data/types.ts";
import { LLAMA3_TOKENIZER_DIR, QWEN3_TOKENIZER_DIR } from "../fixtures/tokenizers.ts";

const qwenBase = loadTokenizer(QWEN3_TOKENIZER_DIR);
const llamaBase = loadTokenizer(LLAMA3_TOKENIZER_DIR);

/** A byte-level tokenizer (Qwen3's) with a family's BOS/EOS and extra special tokens, so any template's text round-trips. */
function familyTokenizer(bos: string | null, eos: string, extra: string[] = []): Tokenizer {
  const tokenizer = qwenBase.clone();
  tokenizer.addSpecialTokens({ eos_token: eos, additional_special_tokens: extra });
  if (bos) tokenizer.addSpecialTokens({ bos_token: bos });
  tokenizer.padToken = null;
  return tokenizer;
}

const SYSTEM = "You are a helpful assistant.";
const TOOLS = JSON.stringify([
  {
    name: "get_weather",
    description: "Get the current weather",
    parameters: { type: "object", properties: { city: { type: "string", description: "The city name" } }, required: ["city"] },
  },
]);
const CONVERSATION: Message[] = [
  { role: "user", content: "Hi!" },
  { role: "assistant", content: "Hello! How can I help?" },
  { role: "user", content: "What is the weather in Paris?" },
  { role: "function", content: '{"name": "get_weather", "arguments": {"city": "Paris"}}' },
  { role: "observation", content: '{"temperature": 20}' },
  { role: "assistant", content: "It is 20 degrees in Paris." },
];
const A1 = "Hello! How can I help?";
const Q2 = "What is the weather in Paris?";
const OBS = '{"temperature": 20}';
const A3 = "It is 20 degrees in Paris.";

// Tool prompts and calls, by tool format, written out by hand.
const DEFAULT_TOOLS =
  "You have access to the following tools:\n" +
  "> Tool Name: get_weather\nTool Description: Get the current weather\nTool Args:\n  - city (string, required): The city name\n\n" +
  "Use the following format if using a tool:\n```\nAction: tool name (one of [get_weather])\n" +
  'Action Input: the input to the tool, in a JSON format representing the kwargs (e.g. ```{"input": "hello world", "num_beams": 5}```)\n```\n';
const DEFAULT_CALL = 'Action: get_weather\nAction Input: {"city": "Paris"}';
const WRAPPED_TOOL =
  '{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather", ' +
  '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name"}}, "required": ["city"]}}}';
const QWEN_TOOLS =
  "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
  `You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n${WRAPPED_TOOL}\n</tools>\n\n` +
  "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
  '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>';
const QWEN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>';
const LLAMA3_TOOLS =
  "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
  "You have access to the following functions. To call a function, please respond with JSON for a function call. " +
  'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.\n\n' +
  '{\n    "type": "function",\n    "function": {\n        "name": "get_weather",\n        "description": "Get the current weather",\n' +
  '        "parameters": {\n            "type": "object",\n            "properties": {\n                "city": {\n' +
  '                    "type": "string",\n                    "description": "The city name"\n                }\n            },\n' +
  '            "required": [\n                "city"\n            ]\n        }\n    }\n}\n\n';
const LLAMA3_CALL = '{"name": "get_weather", "parameters": {"city": "Paris"}}';
const GLM4_TOOLS =
  "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n" +
  "# 可用工具\n\n## get_weather\n\n" +
  '{\n    "name": "get_weather",\n    "description": "Get the current weather",\n    "parameters": {\n        "type": "object",\n' +
  '        "properties": {\n            "city": {\n                "type": "string",\n                "description": "The city name"\n            }\n        },\n' +
  '        "required": [\n            "city"\n        ]\n    }\n}\n在调用上述函数时，请使用 Json 格式表示调用的参数。';
const GLM4_CALL = 'get_weather\n{"city": "Paris"}';
const MISTRAL_TOOLS = `[AVAILABLE_TOOLS] [${WRAPPED_TOOL}][/AVAILABLE_TOOLS]`;
const MISTRAL_CALL = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]';

const CHATML_USER = (q: string) => `<|im_start|>user\n${q}<|im_end|>\n<|im_start|>assistant\n`;
const THINK = "<think>\n\n</think>\n\n";
const GRANITE_USER = (q: string) => `<|start_of_role|>user<|end_of_role|>${q}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>`;
const MOON_USER = (q: string) => `<|im_user|>user<|im_middle|>${q}<|im_end|><|im_assistant|>assistant<|im_middle|>`;
const OPENCHAT36_USER = (q: string) =>
  `<|start_header_id|>GPT4 Correct User<|end_header_id|>\n\n${q}<|eot_id|><|start_header_id|>GPT4 Correct Assistant<|end_header_id|>\n\n`;

interface Golden {
  tokenizer: () => Tokenizer;
  /** Whether the ids must equal a one-shot encoding of each expected segment (slot boundaries fall on special tokens). */
  oneShotIds?: boolean;
  options?: { enableThinking?: boolean | null };
  pairs: Array<[string, string]>;
}

const S_DEFAULT = SYSTEM + DEFAULT_TOOLS;

/** ChatML with the default tool format and a `tool` role, after `prefix` (chatml and its copies). */
const chatmlToolPairs = (prefix: string): Array<[string, string]> => [
  [`${prefix}<|im_start|>system\n${S_DEFAULT}<|im_end|>\n${CHATML_USER("Hi!")}`, `${A1}<|im_end|>\n`],
  [CHATML_USER(Q2), `${DEFAULT_CALL}<|im_end|>\n`],
  [`<|im_start|>tool\n${OBS}<|im_end|>\n<|im_start|>assistant\n`, `${A3}<|im_end|>\n`],
];

/** Qwen 3 (and MiMo): qwen tools, the empty thought before each answer. */
const QWEN3_PAIRS: Array<[string, string]> = [
  [`<|im_start|>system\n${SYSTEM}${QWEN_TOOLS}<|im_end|>\n${CHATML_USER("Hi!")}`, `${THINK}${A1}<|im_end|>\n`],
  [CHATML_USER(Q2), `${THINK}${QWEN_CALL}<|im_end|>\n`],
  [`<|im_start|>user\n<tool_response>\n${OBS}\n</tool_response><|im_end|>\n<|im_start|>assistant\n`, `${THINK}${A3}<|im_end|>\n`],
];

const GOLDENS: Record<string, Golden> = {
  default: {
    tokenizer: () => familyTokenizer(null, "</s>"),
    pairs: [
      [`System: ${S_DEFAULT}</s>\nHuman: Hi!</s>\nAssistant:`, `${A1}</s>\n`],
      [`Human: ${Q2}</s>\nAssistant:`, `${DEFAULT_CALL}</s>\n`],
      [`Human: ${OBS}</s>\nAssistant:`, `${A3}</s>\n`],
    ],
  },
  empty: {
    tokenizer: () => familyTokenizer(null, "</s>"),
    pairs: [
      [`${S_DEFAULT}Hi!`, A1],
      [Q2, DEFAULT_CALL],
      [OBS, A3],
    ],
  },
  alpaca: {
    tokenizer: () => familyTokenizer("<s>", "</s>"),
    pairs: [
      [`${S_DEFAULT}### Instruction:\nHi!\n\n### Response:\n`, `${A1}</s>\n\n`],
      [`### Instruction:\n${Q2}\n\n### Response:\n`, `${DEFAULT_CALL}</s>\n\n`],
      [`### Instruction:\n${OBS}\n\n### Response:\n`, `${A3}</s>\n\n`],
    ],
  },
  vicuna: {
    tokenizer: () => familyTokenizer("<s>", "</s>"),
    pairs: [
      [`${S_DEFAULT}USER: Hi! ASSISTANT:`, `${A1}</s>`],
      [`USER: ${Q2} ASSISTANT:`, `${DEFAULT_CALL}</s>`],
      [`USER: ${OBS} ASSISTANT:`, `${A3}</s>`],
    ],
  },
  llama2: {
    tokenizer: () => familyTokenizer("<s>", "</s>"),
    pairs: [
      [`<s>[INST] <<SYS>>\n${S_DEFAULT}\n<</SYS>>\n\nHi! [/INST]`, `${A1}</s>`],
      [`<s>[INST] ${Q2} [/INST]`, `${DEFAULT_CALL}</s>`],
      [`<s>[INST] ${OBS} [/INST]`, `${A3}</s>`],
    ],
  },
  llama3: {
    tokenizer: () => llamaBase.clone(),
    oneShotIds: true,
    pairs: [
      [
        `<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n${SYSTEM}${LLAMA3_TOOLS}<|eot_id|>` +
          "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        `${A1}<|eot_id|>`,
      ],
      [`<|start_header_id|>user<|end_header_id|>\n\n${Q2}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`, `${LLAMA3_CALL}<|eot_id|>`],
      [`<|start_header_id|>ipython<|end_header_id|>\n\n${OBS}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`, `${A3}<|eot_id|>`],
    ],
  },
  mistral: {
    tokenizer: () => familyTokenizer("<s>", "</s>", ["[INST]", "[/INST]", "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]),
    pairs: [
      [`<s>[INST] ${SYSTEM}${MISTRAL_TOOLS}\n\nHi![/INST]`, ` ${A1}</s>`],
      [`[INST] ${Q2}[/INST]`, `[TOOL_CALLS] ${MISTRAL_CALL}</s>`],
      [`[TOOL_RESULTS] {"content": ${OBS}}[/TOOL_RESULTS]`, ` ${A3}</s>`],
    ],
  },
  qwen: {
    tokenizer: () => qwenBase.clone(),
    oneShotIds: true,
    pairs: [
      [`<|im_start|>system\n${SYSTEM}${QWEN_TOOLS}<|im_end|>\n${CHATML_USER("Hi!")}`, `${A1}<|im_end|>\n`],
      [CHATML_USER(Q2), `${QWEN_CALL}<|im_end|>\n`],
      [`<|im_start|>user\n<tool_response>\n${OBS}\n</tool_response><|im_end|>\n<|im_start|>assistant\n`, `${A3}<|im_end|>\n`],
    ],
  },
  qwen3: {
    tokenizer: () => qwenBase.clone(),
    oneShotIds: true,
    pairs: QWEN3_PAIRS,
  },
  qwen3_nothink: {
    tokenizer: () => qwenBase.clone(),
    oneShotIds: true,
    pairs: [
      [`<|im_start|>system\n${SYSTEM}${QWEN_TOOLS}<|im_end|>\n${CHATML_USER("Hi!")}`, `${A1}<|im_end|>\n`],
      [CHATML_USER(Q2), `${QWEN_CALL}<|im_end|>\n`],
      [`<|im_start|>user\n<tool_response>\n${OBS}\n</tool_response><|im_end|>\n<|im_start|>assistant\n`, `${A3}<|im_end|>\n`],
    ],
  },
  chatml: {
    tokenizer: () => qwenBase.clone(),
    oneShotIds: true,
    pairs: chatmlToolPairs(""),
  },
  chatglm3: {
    tokenizer: () => familyTokenizer(null, "</s>", ["[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]),
    pairs: [
      [`[gMASK]sop<|system|>\n${SYSTEM}${GLM4_TOOLS}<|user|>\nHi!<|assistant|>`, `\n${A1}`],
      [`<|user|>\n${Q2}<|assistant|>`, GLM4_CALL],
      [`<|observation|>\n${OBS}<|assistant|>`, `\n${A3}`],
    ],
  },
  glm4: {
    tokenizer: () => familyTokenizer(null, "<|endoftext|>", ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]),
    pairs: [
      [`[gMASK]<sop><|system|>\n${SYSTEM}${GLM4_TOOLS}<|user|>\nHi!<|assistant|>`, `\n${A1}`],
      [`<|user|>\n${Q2}<|assistant|>`, GLM4_CALL],
      [`<|observation|>\n${OBS}<|assistant|>`, `\n${A3}`],
    ],
  },
  gemma: {
    tokenizer: () => familyTokenizer("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    pairs: [
      [`<bos><start_of_turn>user\n${S_DEFAULT}\n\nHi!<end_of_turn>\n<start_of_turn>model\n`, `${A1}<end_of_turn>\n`],
      [`<start_of_turn>user\n${Q2}<end_of_turn>\n<start_of_turn>model\n`, `${DEFAULT_CALL}<end_of_turn>\n`],
      [`<start_of_turn>tool\n${OBS}<end_of_turn>\n<start_of_turn>model\n`, `${A3}<end_of_turn>\n`],
    ],
  },
  phi: {
    tokenizer: () => familyTokenizer(null, "<|endoftext|>", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
    pairs: [
      [`<|system|>\n${S_DEFAULT}<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\n`, `${A1}<|end|>\n`],
      [`<|user|>\n${Q2}<|end|>\n<|assistant|>\n`, `${DEFAULT_CALL}<|end|>\n`],
      [`<|user|>\n${OBS}<|end|>\n<|assistant|>\n`, `${A3}<|end|>\n`],
    ],
  },
  deepseek: {
    tokenizer: () => familyTokenizer("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    pairs: [
      [`<｜begin▁of▁sentence｜>${S_DEFAULT}\n\nUser: Hi!\n\nAssistant:`, `${A1}<｜end▁of▁sentence｜>`],
      [`User: ${Q2}\n\nAssistant:`, `${DEFAULT_CALL}<｜end▁of▁sentence｜>`],
      [`User: ${OBS}\n\nAssistant:`, `${A3}<｜end▁of▁sentence｜>`],
    ],
  },
  yi: {
    tokenizer: () => familyTokenizer(null, "<|endoftext|>"),
    oneShotIds: true,
    pairs: [
      [`<|im_start|>system\n${S_DEFAULT}<|im_end|>\n${CHATML_USER("Hi!")}`, `${A1}<|im_end|>\n`],
      [CHATML_USER(Q2), `${DEFAULT_CALL}<|im_end|>\n`],
      [CHATML_USER(OBS), `${A3}<|im_end|>\n`],
    ],
  },
  baichuan2: {
    tokenizer: () => familyTokenizer(null, "</s>", ["<reserved_106>", "<reserved_107>"]),
    pairs: [
      [`${S_DEFAULT}<reserved_106>Hi!<reserved_107>`, A1],
      [`<reserved_106>${Q2}<reserved_107>`, DEFAULT_CALL],
      [`<reserved_106>${OBS}<reserved_107>`, A3],
    ],
  },
  breeze: {
    tokenizer: () => familyTokenizer("<s>", "</s>"),
    pairs: [
      [`<s>${S_DEFAULT}[INST] Hi! [/INST] `, A1],
      [`[INST] ${Q2} [/INST] `, DEFAULT_CALL],
      [`[INST] ${OBS} [/INST] `, A3],
    ],
  },
  cpm4: {
    tokenizer: () => familyTokenizer("<s>", "</s>"),
    pairs: chatmlToolPairs("<s>"),
  },
  dbrx: {
    tokenizer: () => familyTokenizer(null, "<|endoftext|>"),
    pairs: chatmlToolPairs(""),
  },
  deepseekcoder: {
    tokenizer: () => familyTokenizer("<｜begin▁of▁sentence｜>", "<|EOT|>"),
    pairs: [
      [`<｜begin▁of▁sentence｜>${S_DEFAULT}### Instruction:\nHi!\n### Response:`, `\n${A1}\n<|EOT|>\n`],
      [`### Instruction:\n${Q2}\n### Response:`, `\n${DEFAULT_CALL}\n<|EOT|>\n`],
      [`### Instruction:\n${OBS}\n### Response:`, `\n${A3}\n<|EOT|>\n`],
    ],
  },
  ernie_nothink: {
    tokenizer: () => familyTokenizer(null, "</s>", ["<|begin_of_sentence|>", "<|end_of_sentence|>"]),
    pairs: [
      [`<|begin_of_sentence|>${S_DEFAULT}\nUser: Hi!\nAssistant: `, `${A1}<|end_of_sentence|>`],
      [`User: ${Q2}\nAssistant: `, `${DEFAULT_CALL}<|end_of_sentence|>`],
      [`User: ${OBS}\nAssistant: `, `${A3}<|end_of_sentence|>`],
    ],
  },
  exaone: {
    tokenizer: () => familyTokenizer(null, "[|endofturn|]"),
    pairs: [
      [`[|system|]${S_DEFAULT}[|endofturn|]\n[|user|]Hi!\n[|assistant|]`, `${A1}[|endofturn|]\n`],
      [`[|user|]${Q2}\n[|assistant|]`, `${DEFAULT_CALL}[|endofturn|]\n`],
      [`[|user|]${OBS}\n[|assistant|]`, `${A3}[|endofturn|]\n`],
    ],
  },
  falcon_h1: {
    tokenizer: () => familyTokenizer("<|begin_of_text|>", "<|end_of_text|>"),
    pairs: chatmlToolPairs("<|begin_of_text|>"),
  },
  gemma3: {
    tokenizer: () => familyTokenizer("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    pairs: [
      [`<bos><start_of_turn>user\n${S_DEFAULT}\n\nHi!<end_of_turn>\n<start_of_turn>model\n`, `${A1}<end_of_turn>\n`],
      [`<start_of_turn>user\n${Q2}<end_of_turn>\n<start_of_turn>model\n`, `${DEFAULT_CALL}<end_of_turn>\n`],
      [`<start_of_turn>tool\n${OBS}<end_of_turn>\n<start_of_turn>model\n`, `${A3}<end_of_turn>\n`],
    ],
  },
  granite3: {
    tokenizer: () => familyTokenizer(null, "<|end_of_text|>", ["<|start_of_role|>", "<|end_of_role|>"]),
    pairs: [
      [`<|start_of_role|>system<|end_of_role|>${S_DEFAULT}<|end_of_text|>\n${GRANITE_USER("Hi!")}`, `${A1}<|end_of_text|>\n`],
      [GRANITE_USER(Q2), `${DEFAULT_CALL}<|end_of_text|>\n`],
      [GRANITE_USER(OBS), `${A3}<|end_of_text|>\n`],
    ],
  },
  granite4: {
    tokenizer: () => familyTokenizer(null, "<|end_of_text|>", ["<|start_of_role|>", "<|end_of_role|>"]),
    pairs: [
      [`<|start_of_role|>system<|end_of_role|>${S_DEFAULT}<|end_of_text|>\n${GRANITE_USER("Hi!")}`, `${A1}<|end_of_text|>\n`],
      [GRANITE_USER(Q2), `${DEFAULT_CALL}<|end_of_text|>\n`],
      [`<|start_of_role|>tool<|end_of_role|>${OBS}<|end_of_text|>\n<|start_of_role|>assistant\n`, `${A3}<|end_of_text|>\n`],
    ],
  },
  hunyuan: {
    tokenizer: () => familyTokenizer(null, "<|eos|>", ["<|startoftext|>", "<|extra_0|>", "<|extra_4|>"]),
    pairs: [
      [`<|startoftext|>${S_DEFAULT}<|extra_4|>Hi!<|extra_0|>`, `${A1}<|eos|>`],
      [`${Q2}<|extra_0|>`, `${DEFAULT_CALL}<|eos|>`],
      [`${OBS}<|extra_0|>`, `${A3}<|eos|>`],
    ],
  },
  index: {
    tokenizer: () => familyTokenizer(null, "</s>"),
    pairs: [
      [`<unk>${S_DEFAULT}reserved_0Hi!reserved_1`, A1],
      [`reserved_0${Q2}reserved_1`, DEFAULT_CALL],
      [`reserved_0${OBS}reserved_1`, A3],
    ],
  },
  llama4: {
    tokenizer: () => familyTokenizer("<|begin_of_text|>", "<|end_of_text|>", ["<|header_start|>", "<|header_end|>", "<|eot|>", "<|eom|>"]),
    pairs: [
      [
        `<|begin_of_text|><|header_start|>system<|header_end|>\n\n${SYSTEM}${LLAMA3_TOOLS}<|eot|>` +
          "<|header_start|>user<|header_end|>\n\nHi!<|eot|><|header_start|>assistant<|header_end|>\n\n",
        `${A1}<|eot|>`,
      ],
      [`<|header_start|>user<|header_end|>\n\n${Q2}<|eot|><|header_start|>assistant<|header_end|>\n\n`, `${LLAMA3_CALL}<|eot|>`],
      [`<|header_start|>ipython<|header_end|>\n\n${OBS}<|eot|><|header_start|>assistant<|header_end|>\n\n`, `${A3}<|eot|>`],
    ],
  },
  mimo: {
    tokenizer: () => qwenBase.clone(),
    oneShotIds: true,
    pairs: QWEN3_PAIRS,
  },
  ministral: {
    tokenizer: () => familyTokenizer("<s>", "</s>", ["[INST]", "[/INST]", "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]),
    pairs: [
      [`<s>[INST]${SYSTEM}${MISTRAL_TOOLS}\n\nHi![/INST]`, `${A1}</s>`],
      [`[INST]${Q2}[/INST]`, `[TOOL_CALLS]${MISTRAL_CALL}</s>`],
      [`[TOOL_RESULTS]{"content": ${OBS}}[/TOOL_RESULTS]`, `${A3}</s>`],
    ],
  },
  mistral_small: {
    tokenizer: () =>
      familyTokenizer("<s>", "</s>", ["[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]),
    pairs: [
      [`<s>[SYSTEM_PROMPT]${SYSTEM}${MISTRAL_TOOLS}[/SYSTEM_PROMPT][INST]Hi![/INST]`, `${A1}</s>`],
      [`[INST]${Q2}[/INST]`, `[TOOL_CALLS]${MISTRAL_CALL}</s>`],
      [`[TOOL_RESULTS]{"content": ${OBS}}[/TOOL_RESULTS]`, `${A3}</s>`],
    ],
  },
  moonlight: {
    tokenizer: () => familyTokenizer(null, "[EOS]", ["<|im_user|>", "<|im_assistant|>", "<|im_system|>", "<|im_middle|>", "<|im_end|>"]),
    pairs: [
      [`<|im_system|>system<|im_middle|>${S_DEFAULT}<|im_end|>${MOON_USER("Hi!")}`, `${A1}<|im_end|>`],
      [MOON_USER(Q2), `${DEFAULT_CALL}<|im_end|>`],
      [MOON_USER(OBS), `${A3}<|im_end|>`],
    ],
  },
  olmo: {
    tokenizer: () => familyTokenizer(null, "<|endoftext|>"),
    pairs: [
      [`<|endoftext|>${S_DEFAULT}<|user|>\nHi!<|assistant|>\n`, `${A1}<|endoftext|>`],
      [`<|user|>\n${Q2}<|assistant|>\n`, `${DEFAULT_CALL}<|endoftext|>`],
      [`<|user|>\n${OBS}<|assistant|>\n`, `${A3}<|endoftext|>`],
    ],
  },
  "openchat-3.6": {
    tokenizer: () => llamaBase.clone(),
    oneShotIds: true,
    pairs: [
      [`<|begin_of_text|>${S_DEFAULT}${OPENCHAT36_USER("Hi!")}`, `${A1}<|end_of_text|>`],
      [OPENCHAT36_USER(Q2), `${DEFAULT_CALL}<|end_of_text|>`],
      [OPENCHAT36_USER(OBS), `${A3}<|end_of_text|>`],
    ],
  },
  opencoder: {
    tokenizer: () => familyTokenizer(null, "<|endoftext|>"),
    pairs: chatmlToolPairs(""),
  },
  phi_small: {
    tokenizer: () => familyTokenizer(null, "<|endoftext|>", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
    pairs: [
      [`<|system|>\n${S_DEFAULT}<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\n`, `${A1}<|end|>\n`],
      [`<|user|>\n${Q2}<|end|>\n<|assistant|>\n`, `${DEFAULT_CALL}<|end|>\n`],
      [`<|user|>\n${OBS}<|end|>\n<|assistant|>\n`, `${A3}<|end|>\n`],
    ],
  },
  phi4_mini: {
    tokenizer: () => familyTokenizer(null, "<|endoftext|>", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>"]),
    pairs: [
      [`<|system|>${SYSTEM}<|tool|>${TOOLS}<|/tool|><|end|><|user|>Hi!<|end|><|assistant|>`, `${A1}<|end|>`],
      [`<|user|>${Q2}<|end|><|assistant|>`, `${DEFAULT_CALL}<|end|>`],
      [`<|user|>${OBS}<|end|><|assistant|>`, `${A3}<|end|>`],
    ],
  },
  intern2: {
    tokenizer: () => familyTokenizer("<s>", "</s>"),
    pairs: [
      [`<s><|im_start|>system\n${S_DEFAULT}<|im_end|>\n${CHATML_USER("Hi!")}`, `${A1}<|im_end|>\n`],
      [CHATML_USER(Q2), `${DEFAULT_CALL}<|im_end|>\n`],
      [CHATML_USER(OBS), `${A3}<|im_end|>\n`],
    ],
  },
};

function build(name: string, golden: Golden): { template: Template; tokenizer: Tokenizer } {
  const tokenizer = golden.tokenizer();
  const template = getTemplate(name, tokenizer, golden.options ?? {}) as Template;
  template.toolDate = () => new Date(2024, 6, 26);
  return { template, tokenizer };
}

describe("built-in templates: golden text and ids", () => {
  for (const [name, golden] of Object.entries(GOLDENS)) {
    test(name, () => {
      const { template, tokenizer } = build(name, golden);
      assert.deepEqual(template.renderMultiturn(tokenizer, CONVERSATION, SYSTEM, TOOLS), golden.pairs);
      const pairs = template.encodeMultiturn(tokenizer, CONVERSATION, SYSTEM, TOOLS);
      assert.equal(pairs.length, golden.pairs.length);
      pairs.forEach(([source, target], i) => {
        const [sourceText, targetText] = golden.pairs[i]!;
        assert.equal(tokenizer.decode(source), sourceText);
        assert.equal(tokenizer.decode(target), targetText);
        if (golden.oneShotIds) {
          assert.deepEqual(source, tokenizer.encode(sourceText, { addSpecialTokens: false }));
          assert.deepEqual(target, tokenizer.encode(targetText, { addSpecialTokens: false }));
        }
      });
    });
  }
  test("every golden template is registered", () => {
    for (const name of Object.keys(GOLDENS)) assert.ok(builtinTemplateNames().includes(name), name);
  });
});

describe("template details", () => {
  test("qwen injects its default system; qwen3 has none", () => {
    const tokenizer = qwenBase.clone();
    const [[qwenSource]] = getTemplate("qwen", tokenizer).renderMultiturn(tokenizer, CONVERSATION.slice(0, 2));
    assert.equal(qwenSource, `<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n${CHATML_USER("Hi!")}`);
    const [[qwen3Source]] = getTemplate("qwen3", tokenizer).renderMultiturn(tokenizer, CONVERSATION.slice(0, 2));
    assert.equal(qwen3Source, CHATML_USER("Hi!"));
  });

  test("default_system overrides the template's", () => {
    const tokenizer = qwenBase.clone();
    const [[source]] = getTemplate("qwen", tokenizer, { defaultSystem: "Be brief." }).renderMultiturn(tokenizer, CONVERSATION.slice(0, 2));
    assert.equal(source, `<|im_start|>system\nBe brief.<|im_end|>\n${CHATML_USER("Hi!")}`);
  });

  test("qwen3 thinking: empty thought trained when on, in the prompt when off or null; real thoughts kept", () => {
    const tokenizer = qwenBase.clone();
    const messages: Message[] = [
      { role: "user", content: "1+1?" },
      { role: "assistant", content: "<think>\nadd\n</think>\n\n2" },
      { role: "user", content: "2+2?" },
      { role: "assistant", content: "4" },
    ];
    assert.deepEqual(getTemplate("qwen3", tokenizer, { enableThinking: true }).renderMultiturn(tokenizer, messages), [
      [CHATML_USER("1+1?"), "<think>\nadd\n</think>\n\n2<|im_end|>\n"],
      [CHATML_USER("2+2?"), `${THINK}4<|im_end|>\n`],
    ]);
    for (const enableThinking of [false, null]) {
      const expectedFirst = enableThinking === false ? [CHATML_USER("1+1?") + THINK, "2<|im_end|>\n"] : [CHATML_USER("1+1?"), "<think>\nadd\n</think>\n\n2<|im_end|>\n"];
      assert.deepEqual(getTemplate("qwen3", tokenizer, { enableThinking }).renderMultiturn(tokenizer, messages), [expectedFirst, [CHATML_USER("2+2?") + THINK, "4<|im_end|>\n"]]);
    }
    // mask_history without preserve_thinking: history thoughts dropped, the empty thought only on the last turn.
    assert.deepEqual(getTemplate("qwen3", tokenizer).renderMultiturn(tokenizer, messages, undefined, undefined, { discardingHistoryCot: true }), [
      [CHATML_USER("1+1?"), "2<|im_end|>\n"],
      [CHATML_USER("2+2?"), `${THINK}4<|im_end|>\n`],
    ]);
  });

  test("replace_eos and stop words fix the tokenizer (llama3: eos and pad <|eot_id|>, stops eot and eom)", () => {
    const tokenizer = llamaBase.clone();
    const { template, addedTokens } = getTemplateAndFixTokenizer("llama3", tokenizer);
    assert.equal(tokenizer.eosToken, "<|eot_id|>");
    assert.equal(tokenizer.padToken, "<|eot_id|>");
    // Llama 3.0 files predate <|eom_id|> (Llama 3.1's 128008), so the stop word is added as a new token.
    assert.equal(addedTokens, 1);
    assert.deepEqual(new Set(template.getStopTokenIds(tokenizer)), new Set([128009, tokenizer.convertTokensToIds("<|eom_id|>")!]));
    assert.equal(tokenizer.convertTokensToIds("<|eom_id|>"), 128256);
  });

  test("tool calls are extracted back from replies", () => {
    const tokenizer = qwenBase.clone();
    assert.deepEqual(getTemplate("qwen", tokenizer).extractTool(QWEN_CALL), [{ name: "get_weather", arguments: '{"city": "Paris"}' }]);
    assert.deepEqual(getTemplate("default", familyTokenizer(null, "</s>")).extractTool(DEFAULT_CALL), [{ name: "get_weather", arguments: '{"city": "Paris"}' }]);
    assert.equal(getTemplate("qwen", tokenizer).extractTool("just text"), "just text");
  });

  test("a thought before a tool call is kept in front of the formatted call", () => {
    const tokenizer = qwenBase.clone();
    const messages: Message[] = [
      { role: "user", content: Q2 },
      { role: "function", content: '<think>\nneed weather\n</think>\n\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' },
    ];
    const [[, target]] = getTemplate("qwen3", tokenizer).renderMultiturn(tokenizer, messages);
    assert.equal(target, `<think>\nneed weather\n</think>\n\n${QWEN_CALL}<|im_end|>\n`);
  });

  test("an unknown template name is a UserError naming the nearest and the choices", () => {
    assert.throws(
      () => getTemplate("lama3", qwenBase.clone()),
      (error: unknown) => error instanceof UserError && /did you mean "llama3"/.test(error.message) && /qwen3_nothink/.test(error.message),
    );
  });

  test("train_on_prompt is refused with efficient-EOS templates", () => {
    assert.throws(() => getTemplate("glm4", familyTokenizer(null, "<|endoftext|>"), { trainOnPrompt: true }), UserError);
  });

  test("invalid function JSON is a UserError", () => {
    const tokenizer = qwenBase.clone();
    const messages: Message[] = [{ role: "user", content: "x" }, { role: "function", content: "not json" }];
    assert.throws(() => getTemplate("qwen", tokenizer).encodeMultiturn(tokenizer, messages), UserError);
  });
});

describe("train render equals chat render for the prompt", () => {
  for (const [name, golden] of Object.entries(GOLDENS)) {
    test(name, () => {
      const { template, tokenizer } = build(name, golden);
      // Reasoning templates show history answers without thoughts at chat time; train the same way (mask_history).
      const options = { discardingHistoryCot: template.style === "reasoning" };
      const train = template.encodeMultiturn(tokenizer, CONVERSATION, SYSTEM, TOOLS, options);
      const trainPrompt = [...train.slice(0, -1).flatMap(([source, target]) => [...source, ...target]), ...train[train.length - 1]![0]];
      const [chatPrompt] = template.encodeOneturn(tokenizer, [...CONVERSATION.slice(0, -1), { role: "assistant", content: "" }], SYSTEM, TOOLS);
      assert.deepEqual(chatPrompt, trainPrompt);
    });
  }
});

/** The conversation as transformers passes it to a chat template. */
function hfMessages(withTools: boolean): Array<Record<string, unknown>> {
  return [
    { role: "system", content: SYSTEM },
    { role: "user", content: "Hi!" },
    { role: "assistant", content: A1 },
    { role: "user", content: Q2 },
    ...(withTools
      ? [
          { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris" } } }] },
          { role: "tool", content: OBS },
        ]
      : [
          { role: "assistant", content: "Sunny." },
          { role: "user", content: "Thanks!" },
        ]),
  ];
}

describe("parity with the tokenizers' own Jinja chat_template", () => {
  test("qwen renders every prompt as Qwen's chat_template does (system, tools, tool call, observation)", () => {
    const tokenizer = qwenBase.clone();
    const jinja = new Jinja(tokenizer.chatTemplate!);
    const template = getTemplate("qwen", tokenizer);
    const tools = (JSON.parse(TOOLS) as unknown[]).map((tool) => ({ type: "function", function: tool }));
    const reference = hfMessages(true);
    const pairs = template.encodeMultiturn(tokenizer, CONVERSATION, SYSTEM, TOOLS);
    // Prompts end at message 1 (user), 3 (user) and 5 (tool) of the HF list (after the system).
    [2, 4, 6].forEach((end, turn) => {
      const expected = jinja.render({ messages: reference.slice(0, end), tools, add_generation_prompt: true, bos_token: "", eos_token: tokenizer.eosToken });
      const ours = pairs.slice(0, turn).flatMap(([s, t]) => [...s, ...t]).concat(pairs[turn]![0]);
      assert.equal(tokenizer.decode(ours), expected);
      assert.deepEqual(ours, tokenizer.encode(expected, { addSpecialTokens: false }));
    });
  });

  test("llama3 renders the conversation as Llama 3's chat_template does", () => {
    const tokenizer = llamaBase.clone();
    const jinja = new Jinja(tokenizer.chatTemplate!);
    const template = getTemplate("llama3", tokenizer);
    const reference = hfMessages(false);
    const messages: Message[] = [
      { role: "user", content: "Hi!" },
      { role: "assistant", content: A1 },
      { role: "user", content: Q2 },
      { role: "assistant", content: "Sunny." },
      { role: "user", content: "Thanks!" },
      { role: "assistant", content: "" },
    ];
    const [prompt] = template.encodeOneturn(tokenizer, messages, SYSTEM);
    // This template always ends with the assistant header, i.e. it renders the generation prompt.
    const expected = jinja.render({ messages: reference, bos_token: tokenizer.bosToken, eos_token: tokenizer.eosToken, add_generation_prompt: true });
    assert.equal(tokenizer.decode(prompt), expected);
    assert.deepEqual(prompt, tokenizer.encode(expected, { addSpecialTokens: false }));
  });
});

describe("template: auto (the tokenizer's Jinja template, split by rendering prefixes)", () => {
  test("Qwen3's chat_template gives the qwen3 built-in's segments and ids, tools included", () => {
    for (const enableThinking of [true, false]) {
      const autoTokenizer = qwenBase.clone();
      const auto = getTemplate("auto", autoTokenizer, { enableThinking });
      const builtinTokenizer = qwenBase.clone();
      const builtin = getTemplate("qwen3", builtinTokenizer, { enableThinking });
      assert.deepEqual(auto.renderMultiturn(autoTokenizer, CONVERSATION, SYSTEM, TOOLS), builtin.renderMultiturn(builtinTokenizer, CONVERSATION, SYSTEM, TOOLS));
      assert.deepEqual(auto.encodeMultiturn(autoTokenizer, CONVERSATION, SYSTEM, TOOLS), builtin.encodeMultiturn(builtinTokenizer, CONVERSATION, SYSTEM, TOOLS));
    }
  });

  test("Llama 3's chat_template (which always appends the assistant header) gives the llama3 built-in's segments", () => {
    const messages = CONVERSATION.slice(0, 2).concat([{ role: "user", content: Q2 }, { role: "assistant", content: "Sunny." }]);
    const autoTokenizer = llamaBase.clone();
    const builtinTokenizer = llamaBase.clone();
    const auto = getTemplate(null, autoTokenizer);
    const builtin = getTemplate("llama3", builtinTokenizer);
    assert.deepEqual(auto.renderMultiturn(autoTokenizer, messages, SYSTEM), builtin.renderMultiturn(builtinTokenizer, messages, SYSTEM));
    assert.deepEqual(auto.encodeMultiturn(autoTokenizer, messages, SYSTEM), builtin.encodeMultiturn(builtinTokenizer, messages, SYSTEM));
  });

  test("without a chat_template, auto falls back to the empty template", () => {
    const tokenizer = qwenBase.clone();
    tokenizer.chatTemplate = null;
    assert.equal(getTemplate(null, tokenizer).name, "empty");
  });
});
