// The built-in chat templates: a data table with LLaMA-Factory's names and slots, copied from
// `register_template(...)` calls in its `data/template.py`. The mechanism is in template.ts;
// unset fields take register_template's defaults there.
import { BOS, EOS, type TemplateSpec, token } from "./template.ts";

const CHATML_USER = "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n";
const CHATML_ASSISTANT = "{{content}}<|im_end|>\n";
const CHATML_SYSTEM = "<|im_start|>system\n{{content}}<|im_end|>\n";
const CHATML_TOOL = "<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n";
const QWEN_OBSERVATION = "<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n";

const LLAMA3_USER = "<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
const LLAMA3_OBSERVATION = "<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";

const VICUNA_SYSTEM =
  "A chat between a curious user and an artificial intelligence assistant. " +
  "The assistant gives helpful, detailed, and polite answers to the user's questions.";

const INTERN_SYSTEM =
  "You are an AI assistant whose name is InternLM (书生·浦语).\n" +
  "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI Laboratory " +
  "(上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n" +
  "- InternLM (书生·浦语) can understand and communicate fluently in the language " +
  "chosen by the user such as English and 中文.";

/** Qwen 2.5 / Qwen 3 ChatML with Hermes-style tool calls. */
const qwenFamily: TemplateSpec = {
  user: [CHATML_USER],
  assistant: [CHATML_ASSISTANT],
  system: [CHATML_SYSTEM],
  function: ["{{content}}<|im_end|>\n"],
  observation: [QWEN_OBSERVATION],
  toolFormat: "qwen",
  stopWords: ["<|im_end|>"],
  replaceEos: true,
};

const llama3Family: TemplateSpec = {
  user: [LLAMA3_USER],
  assistant: ["{{content}}<|eot_id|>"],
  system: ["<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>"],
  function: ["{{content}}<|eot_id|>"],
  observation: [LLAMA3_OBSERVATION],
  toolFormat: "llama3",
  prefix: [BOS],
  stopWords: ["<|eot_id|>", "<|eom_id|>"],
  replaceEos: true,
};

const glm4Family: TemplateSpec = {
  user: ["<|user|>\n{{content}}<|assistant|>"],
  assistant: ["\n{{content}}"],
  system: ["<|system|>\n{{content}}"],
  function: ["{{content}}"],
  observation: ["<|observation|>\n{{content}}<|assistant|>"],
  toolFormat: "glm4",
  prefix: ["[gMASK]<sop>"],
  stopWords: ["<|user|>", "<|observation|>"],
  efficientEos: true,
};

const gemmaFamily: TemplateSpec = {
  user: ["<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n"],
  assistant: ["{{content}}<end_of_turn>\n"],
  system: ["{{content}}\n\n"],
  observation: ["<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n"],
  prefix: [BOS],
  style: "llama2",
};

const mistralFamily: TemplateSpec = {
  user: ["[INST] {{content}}[/INST]"],
  assistant: [" {{content}}", EOS],
  system: ["{{content}}\n\n"],
  function: ["[TOOL_CALLS] {{content}}", EOS],
  observation: ['[TOOL_RESULTS] {"content": {{content}}}[/TOOL_RESULTS]'],
  toolFormat: "mistral",
  prefix: [BOS],
  style: "llama2",
};

export const BUILTIN_TEMPLATES: Record<string, TemplateSpec> = {
  alpaca: {
    user: ["### Instruction:\n{{content}}\n\n### Response:\n"],
    assistant: ["{{content}}", EOS, "\n\n"],
    defaultSystem: "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n",
    replaceJinjaTemplate: true,
  },
  baichuan2: {
    user: ["<reserved_106>{{content}}<reserved_107>"],
    efficientEos: true,
  },
  chatglm3: {
    user: [token("<|user|>"), "\n", "{{content}}", token("<|assistant|>")],
    assistant: ["\n", "{{content}}"],
    system: [token("<|system|>"), "\n", "{{content}}"],
    function: ["{{content}}"],
    observation: [token("<|observation|>"), "\n", "{{content}}", token("<|assistant|>")],
    toolFormat: "glm4",
    prefix: [token("[gMASK]"), token("sop")],
    stopWords: ["<|user|>", "<|observation|>"],
    efficientEos: true,
  },
  chatml: {
    user: [CHATML_USER],
    assistant: [CHATML_ASSISTANT],
    system: [CHATML_SYSTEM],
    observation: [CHATML_TOOL],
    stopWords: ["<|im_end|>", "<|im_start|>"],
    replaceEos: true,
    replaceJinjaTemplate: true,
  },
  chatml_de: {
    user: [CHATML_USER],
    assistant: [CHATML_ASSISTANT],
    system: [CHATML_SYSTEM],
    observation: [CHATML_TOOL],
    defaultSystem: "Du bist ein freundlicher und hilfsbereiter KI-Assistent.",
    stopWords: ["<|im_end|>", "<|im_start|>"],
    replaceEos: true,
    replaceJinjaTemplate: true,
  },
  cohere: {
    user: ["<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"],
    system: ["<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>"],
    prefix: [BOS],
  },
  deepseek: {
    user: ["User: {{content}}\n\nAssistant:"],
    system: ["{{content}}\n\n"],
    prefix: [BOS],
  },
  deepseek3: {
    user: ["<｜User｜>{{content}}<｜Assistant｜>"],
    prefix: [BOS],
  },
  deepseekr1: {
    user: ["<｜User｜>{{content}}<｜Assistant｜>"],
    prefix: [BOS],
    style: "reasoning",
  },
  default: {
    user: ["Human: {{content}}", EOS, "\nAssistant:"],
    assistant: ["{{content}}", EOS, "\n"],
    system: ["System: {{content}}", EOS, "\n"],
    replaceJinjaTemplate: true,
  },
  empty: {
    assistant: ["{{content}}"],
  },
  falcon: {
    user: ["User: {{content}}\nFalcon:"],
    assistant: ["{{content}}\n"],
    efficientEos: true,
  },
  gemma: { ...gemmaFamily, stopWords: ["<end_of_turn>"], replaceEos: true },
  gemma2: { ...gemmaFamily, stopWords: ["<eos>", "<end_of_turn>"], efficientEos: true },
  glm4: glm4Family,
  intern2: {
    user: [CHATML_USER],
    assistant: [CHATML_ASSISTANT],
    system: [CHATML_SYSTEM],
    prefix: [BOS],
    defaultSystem: INTERN_SYSTEM,
    stopWords: ["<|im_end|>"],
  },
  llama2: {
    user: [BOS, "[INST] {{content}} [/INST]"],
    system: ["<<SYS>>\n{{content}}\n<</SYS>>\n\n"],
    style: "llama2",
  },
  llama2_zh: {
    user: [BOS, "[INST] {{content}} [/INST]"],
    system: ["<<SYS>>\n{{content}}\n<</SYS>>\n\n"],
    defaultSystem: "You are a helpful assistant. 你是一个乐于助人的助手。",
    style: "llama2",
  },
  llama3: llama3Family,
  mistral: mistralFamily,
  openchat: {
    user: ["GPT4 Correct User: {{content}}", EOS, "GPT4 Correct Assistant:"],
    prefix: [BOS],
  },
  phi: {
    user: ["<|user|>\n{{content}}<|end|>\n<|assistant|>\n"],
    assistant: ["{{content}}<|end|>\n"],
    system: ["<|system|>\n{{content}}<|end|>\n"],
    stopWords: ["<|end|>"],
    replaceEos: true,
  },
  phi4: {
    user: ["<|im_start|>user<|im_sep|>{{content}}<|im_end|><|im_start|>assistant<|im_sep|>"],
    assistant: ["{{content}}<|im_end|>"],
    system: ["<|im_start|>system<|im_sep|>{{content}}<|im_end|>"],
    stopWords: ["<|im_end|>"],
    replaceEos: true,
  },
  qwen: { ...qwenFamily, defaultSystem: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." },
  qwen3: { ...qwenFamily, style: "reasoning" },
  qwen3_nothink: qwenFamily,
  solar: {
    user: ["### User:\n{{content}}\n\n### Assistant:\n"],
    system: ["### System:\n{{content}}\n\n"],
    efficientEos: true,
  },
  starchat: {
    user: ["<|user|>\n{{content}}<|end|>\n<|assistant|>"],
    assistant: ["{{content}}<|end|>\n"],
    system: ["<|system|>\n{{content}}<|end|>\n"],
    stopWords: ["<|end|>"],
  },
  vicuna: {
    user: ["USER: {{content}} ASSISTANT:"],
    defaultSystem: VICUNA_SYSTEM,
    replaceJinjaTemplate: true,
  },
  yi: {
    user: [CHATML_USER],
    assistant: [CHATML_ASSISTANT],
    system: [CHATML_SYSTEM],
    stopWords: ["<|im_end|>"],
  },
  zephyr: {
    user: ["<|user|>\n{{content}}", EOS, "<|assistant|>\n"],
    system: ["<|system|>\n{{content}}", EOS],
    defaultSystem: "You are Zephyr, a helpful assistant.",
  },
};
