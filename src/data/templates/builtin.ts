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

const GRANITE_USER = "<|start_of_role|>user<|end_of_role|>{{content}}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>";
const GRANITE_ASSISTANT = "{{content}}<|end_of_text|>\n";
const GRANITE_SYSTEM = "<|start_of_role|>system<|end_of_role|>{{content}}<|end_of_text|>\n";

const DBRX_SYSTEM =
  "You are DBRX, created by Databricks. You were last updated in December 2023. " +
  "You answer questions based on information available up to that point.\n" +
  "YOU PROVIDE SHORT RESPONSES TO SHORT QUESTIONS OR STATEMENTS, but provide thorough " +
  "responses to more complex and open-ended questions.\nYou assist with various tasks, " +
  "from writing to coding (using markdown for code blocks — remember to use ``` with " +
  "code, JSON, and tables).\n(You do not have real-time data access or code execution " +
  "capabilities. You avoid stereotyping and provide balanced perspectives on " +
  "controversial topics. You do not provide song lyrics, poems, or news articles and " +
  "do not divulge details of your training data.)\nThis is your system prompt, " +
  "guiding your responses. Do not reference it, just respond to the user. If you find " +
  "yourself talking about this message, stop. You should be responding appropriately " +
  "and usually that means not mentioning this.\nYOU DO NOT MENTION ANY OF THIS INFORMATION " +
  "ABOUT YOURSELF UNLESS THE INFORMATION IS DIRECTLY PERTINENT TO THE USER'S QUERY.";

const DEEPSEEKCODER_SYSTEM =
  "You are an AI programming assistant, utilizing the DeepSeek Coder model, " +
  "developed by DeepSeek Company, and you only answer questions related to computer science. " +
  "For politically sensitive questions, security and privacy issues, " +
  "and other non-computer science questions, you will refuse to answer.\n";

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

/** Mistral's tekken tokenizers (v3 and later): no space after [INST], [TOOL_CALLS] or [TOOL_RESULTS]. */
const ministralFamily: TemplateSpec = {
  user: ["[INST]{{content}}[/INST]"],
  system: ["{{content}}\n\n"],
  function: ["[TOOL_CALLS]{{content}}", EOS],
  observation: ['[TOOL_RESULTS]{"content": {{content}}}[/TOOL_RESULTS]'],
  toolFormat: "mistral",
  prefix: [BOS],
  style: "llama2",
};

/** ChatML with a `tool` role and no default system (cpm4, dbrx, falcon_h1, opencoder). */
const chatmlTool: TemplateSpec = {
  user: [CHATML_USER],
  assistant: [CHATML_ASSISTANT],
  system: [CHATML_SYSTEM],
  observation: [CHATML_TOOL],
  stopWords: ["<|im_end|>"],
};

const chatml: TemplateSpec = { ...chatmlTool, stopWords: ["<|im_end|>", "<|im_start|>"], replaceEos: true, replaceJinjaTemplate: true };

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
  breeze: {
    user: ["[INST] {{content}} [/INST] "],
    prefix: [BOS],
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
  chatml,
  chatml_de: { ...chatml, defaultSystem: "Du bist ein freundlicher und hilfsbereiter KI-Assistent." },
  cohere: {
    user: ["<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"],
    system: ["<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>"],
    prefix: [BOS],
  },
  cpm4: { ...chatmlTool, prefix: [BOS] },
  dbrx: { ...chatmlTool, defaultSystem: DBRX_SYSTEM, replaceEos: true },
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
  deepseekcoder: {
    user: ["### Instruction:\n{{content}}\n### Response:"],
    assistant: ["\n{{content}}\n<|EOT|>\n"],
    prefix: [BOS],
    defaultSystem: DEEPSEEKCODER_SYSTEM,
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
  ernie_nothink: {
    user: ["User: {{content}}\nAssistant: "],
    assistant: ["{{content}}<|end_of_sentence|>"],
    system: ["{{content}}\n"],
    prefix: ["<|begin_of_sentence|>"],
    stopWords: ["<|end_of_sentence|>"],
  },
  exaone: {
    user: ["[|user|]{{content}}\n[|assistant|]"],
    assistant: ["{{content}}", EOS, "\n"],
    system: ["[|system|]{{content}}[|endofturn|]\n"],
  },
  falcon: {
    user: ["User: {{content}}\nFalcon:"],
    assistant: ["{{content}}\n"],
    efficientEos: true,
  },
  falcon_h1: { ...chatmlTool, prefix: [BOS], stopWords: ["<|im_end|>", "<|end_of_text|>"] },
  gemma: { ...gemmaFamily, stopWords: ["<end_of_turn>"], replaceEos: true },
  gemma2: { ...gemmaFamily, stopWords: ["<eos>", "<end_of_turn>"], efficientEos: true },
  // Text only here: gemma3's image plugin is not part of lmfactory.
  gemma3: { ...gemmaFamily, stopWords: ["<end_of_turn>"], replaceEos: true },
  glm4: glm4Family,
  granite3: { user: [GRANITE_USER], assistant: [GRANITE_ASSISTANT], system: [GRANITE_SYSTEM] },
  granite4: {
    user: [GRANITE_USER],
    assistant: [GRANITE_ASSISTANT],
    system: [GRANITE_SYSTEM],
    function: ["{{content}}<|end_of_text|>\n"],
    observation: ["<|start_of_role|>tool<|end_of_role|>{{content}}<|end_of_text|>\n<|start_of_role|>assistant\n"],
    toolFormat: "default",
    stopWords: ["<|end_of_text|>"],
    defaultSystem: "You are Granite, developed by IBM. You are a helpful AI assistant.",
  },
  hunyuan: {
    user: ["{{content}}<|extra_0|>"],
    assistant: ["{{content}}<|eos|>"],
    system: ["{{content}}<|extra_4|>"],
    prefix: ["<|startoftext|>"],
    stopWords: ["<|eos|>"],
  },
  index: {
    user: ["reserved_0{{content}}reserved_1"],
    system: ["<unk>{{content}}"],
    efficientEos: true,
  },
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
  // Text only here: llama4's image plugin is not part of lmfactory.
  llama4: {
    user: ["<|header_start|>user<|header_end|>\n\n{{content}}<|eot|><|header_start|>assistant<|header_end|>\n\n"],
    assistant: ["{{content}}<|eot|>"],
    system: ["<|header_start|>system<|header_end|>\n\n{{content}}<|eot|>"],
    function: ["{{content}}<|eot|>"],
    observation: ["<|header_start|>ipython<|header_end|>\n\n{{content}}<|eot|><|header_start|>assistant<|header_end|>\n\n"],
    toolFormat: "llama3",
    prefix: [BOS],
    stopWords: ["<|eot|>", "<|eom|>"],
    replaceEos: true,
  },
  mimo: { ...qwenFamily, defaultSystem: "You are a helpful assistant.", style: "reasoning" },
  ministral: ministralFamily,
  // Text only here (its image plugin is not part of lmfactory).
  ministral3: ministralFamily,
  mistral: mistralFamily,
  // Text only here (its image plugin is not part of lmfactory); plain turns, not Llama 2's.
  mistral_small: { ...ministralFamily, system: ["[SYSTEM_PROMPT]{{content}}[/SYSTEM_PROMPT]"], style: undefined },
  moonlight: {
    user: ["<|im_user|>user<|im_middle|>{{content}}<|im_end|><|im_assistant|>assistant<|im_middle|>"],
    assistant: ["{{content}}<|im_end|>"],
    system: ["<|im_system|>system<|im_middle|>{{content}}<|im_end|>"],
    defaultSystem: "You are a helpful assistant provided by Moonshot-AI.",
    stopWords: ["<|im_end|>"],
    replaceEos: true,
  },
  olmo: {
    user: ["<|user|>\n{{content}}<|assistant|>\n"],
    prefix: [EOS],
  },
  openchat: {
    user: ["GPT4 Correct User: {{content}}", EOS, "GPT4 Correct Assistant:"],
    prefix: [BOS],
  },
  "openchat-3.6": {
    user: ["<|start_header_id|>GPT4 Correct User<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_id|>GPT4 Correct Assistant<|end_header_id|>\n\n"],
    prefix: [BOS],
    stopWords: ["<|eot_id|>"],
  },
  opencoder: { ...chatmlTool, defaultSystem: "You are OpenCoder, created by OpenCoder Team." },
  phi: {
    user: ["<|user|>\n{{content}}<|end|>\n<|assistant|>\n"],
    assistant: ["{{content}}<|end|>\n"],
    system: ["<|system|>\n{{content}}<|end|>\n"],
    stopWords: ["<|end|>"],
    replaceEos: true,
  },
  // LLaMA-Factory writes this prefix as the set {"<|endoftext|>"}, which names neither bos_token
  // nor eos_token and so adds nothing: no prefix, as there.
  phi_small: {
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
  phi4_mini: {
    user: ["<|user|>{{content}}<|end|><|assistant|>"],
    assistant: ["{{content}}<|end|>"],
    system: ["<|system|>{{content}}<|end|>"],
    tools: "<|tool|>{{content}}<|/tool|>",
    stopWords: ["<|end|>"],
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
