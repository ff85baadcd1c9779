// @ts-check
// The board's words in English and Chinese (LlamaBoard's locales.py, the languages it has first).
// Every label of the page is a key here: elements carry `data-i18n` (text), `data-i18n-title` or
// `data-i18n-placeholder`; text made by code goes through `t`. Field labels of the tabs' common
// settings are `field.<name>`; other fields show their parameter name, and help comes from the
// declarations (src/hparams).

/** @typedef {"en" | "zh"} Language */

/** @type {Record<Language, Record<string, string>>} */
export const MESSAGES = {
  en: {
    title: "lmfactory board",
    lang: "Language",
    "top.model": "Model path",
    "top.finetuning_type": "Fine-tuning type",
    "top.checkpoint": "Adapters / checkpoints",
    "top.quantization": "Quantization bits",
    "top.template": "Chat template",
    "top.none": "none",
    "top.auto": "auto (the tokenizer's chat_template)",
    "top.noCheckpoints": "No trained outputs under saves/ for this model and fine-tuning type yet.",
    "top.modelsFound": "Model folders found: {count}",
    "tab.train": "Train",
    "tab.eval": "Evaluate & Predict",
    "tab.chat": "Chat",
    "tab.export": "Export",
    "tab.runs": "Runs",
    "section.common": "Common settings",
    "section.more": "All other arguments, by group",
    "section.changed": "{count} changed",
    "group.model": "Model arguments",
    "group.data": "Data arguments",
    "group.training": "Training arguments",
    "group.finetuning": "Fine-tuning arguments",
    "group.generating": "Generation arguments",
    "group.evaluation": "Evaluation arguments",
    "badge.later": "not yet supported",
    "badge.out": "out of scope",
    "badge.noop": "no effect",
    "field.default": "default",
    "field.unset": "(not set)",
    "datasets.reload": "Reload",
    "datasets.from": "from {file}",
    "datasets.problem": "{name}: {problem}",
    "preview.open": "Preview dataset",
    "preview.close": "Close preview",
    "preview.dataset": "Dataset",
    "preview.raw": "Raw rows",
    "preview.tokenized": "Tokenized examples",
    "preview.prev": "Previous",
    "preview.next": "Next",
    "preview.rows": "Rows {from} to {to}",
    "preview.legend": "Green tokens are trained; grey tokens are masked (label -100).",
    "preview.loading": "Loading…",
    "preview.trained": "{count} of {total} tokens trained",
    "preview.pick": "Choose a dataset first.",
    "cmd.preview": "Command preview",
    "cmd.save": "Save arguments",
    "cmd.load": "Load arguments",
    "cmd.name": "name of the argument set",
    "cmd.start": "Start",
    "cmd.stop": "Stop",
    "cmd.resume": "Resume",
    "cmd.evalStart": "Start evaluation",
    "cmd.exportStart": "Start export",
    "msg.checking": "Checking…",
    "msg.valid": "The arguments are valid.",
    "msg.invalid": "Fix the marked fields before starting.",
    "msg.saved": "Saved to {path}",
    "msg.loaded": "Loaded {name}",
    "msg.notice": "Notice: {text}",
    "msg.started": "Started run {id}",
    "msg.noRun": "No run started from this tab is running.",
    "runs.title": "Runs",
    "runs.empty": "No runs yet: start one from the Train, Evaluate & Predict or Export tab.",
    "runs.pick": "Choose a run on the left.",
    "runs.status.running": "running",
    "runs.status.stopping": "stopping",
    "runs.status.finished": "finished",
    "runs.status.failed": "failed",
    "runs.status.stopped": "stopped",
    "runs.status.unknown": "ended while the board was closed",
    "runs.job.train": "training",
    "runs.job.eval": "evaluation",
    "runs.job.export": "export",
    "runs.job.chat": "chat",
    "runs.progress": "Progress",
    "runs.steps": "Step {current} of {total}",
    "runs.elapsed": "elapsed {time}",
    "runs.eta": "ETA {time}",
    "runs.throughput": "{value} tokens/s",
    "runs.waiting": "Waiting for the first logged step…",
    "runs.loss": "Loss",
    "runs.rewards": "Rewards and other metrics",
    "runs.log": "Log",
    "runs.results": "Results",
    "runs.predictions": "Predictions",
    "runs.output": "Output folder",
    "runs.command": "Command",
    "runs.started": "Started",
    "runs.exit": "exit status {code}",
    "runs.resumes": "resumes {id}",
    "runs.step": "step",
    "chat.model": "Model",
    "chat.load": "Load model",
    "chat.unload": "Unload model",
    "chat.settings": "Generation settings",
    "chat.system": "System prompt",
    "chat.input": "Type a message",
    "chat.send": "Send",
    "chat.stop": "Stop",
    "chat.clear": "Clear history",
    "chat.user": "User",
    "chat.assistant": "Assistant",
    "chat.state.empty": "No model is loaded.",
    "chat.state.loading": "Loading {model}…",
    "chat.state.ready": "Loaded: {model}",
    "chat.state.failed": "The model could not be loaded: {error}",
    "chat.stopped": "(stopped)",
    "field.stage": "Training stage",
    "field.dataset_dir": "Dataset folder",
    "field.dataset": "Training datasets",
    "field.eval_dataset": "Evaluation datasets",
    "field.output_dir": "Output folder",
    "field.learning_rate": "Learning rate",
    "field.num_train_epochs": "Epochs",
    "field.max_steps": "Maximum steps",
    "field.per_device_train_batch_size": "Batch size",
    "field.gradient_accumulation_steps": "Gradient accumulation",
    "field.cutoff_len": "Cutoff length",
    "field.max_samples": "Maximum samples",
    "field.lr_scheduler_type": "Learning-rate scheduler",
    "field.warmup_ratio": "Warm-up ratio",
    "field.logging_steps": "Logging steps",
    "field.save_steps": "Save steps",
    "field.val_size": "Validation size",
    "field.bf16": "bf16 mixed precision",
    "field.lora_rank": "LoRA rank",
    "field.lora_alpha": "LoRA alpha",
    "field.lora_dropout": "LoRA dropout",
    "field.lora_target": "LoRA modules",
    "field.do_eval": "Evaluate",
    "field.do_predict": "Predict",
    "field.predict_with_generate": "Generate predictions",
    "field.per_device_eval_batch_size": "Evaluation batch size",
    "field.max_new_tokens": "Maximum new tokens",
    "field.top_p": "Top-p sampling",
    "field.temperature": "Temperature",
    "field.top_k": "Top-k sampling",
    "field.do_sample": "Sample",
    "field.repetition_penalty": "Repetition penalty",
    "field.skip_special_tokens": "Skip special tokens",
    "field.infer_dtype": "Inference data type",
    "field.export_dir": "Export folder",
    "field.export_size": "Shard size (GB)",
    "field.export_device": "Export device",
    "field.export_legacy_format": "Legacy .bin format",
    "field.export_quantization_bit": "Export quantization bits",
    "field.export_quantization_dataset": "Calibration dataset",
    "field.export_hub_model_id": "Hub repository",
  },
  zh: {
    title: "lmfactory 训练面板",
    lang: "语言",
    "top.model": "模型路径",
    "top.finetuning_type": "微调方法",
    "top.checkpoint": "适配器 / 检查点",
    "top.quantization": "量化位数",
    "top.template": "对话模板",
    "top.none": "无",
    "top.auto": "自动（使用分词器自带的 chat_template）",
    "top.noCheckpoints": "saves/ 下还没有该模型和微调方法的训练结果。",
    "top.modelsFound": "找到的模型目录：{count} 个",
    "tab.train": "训练",
    "tab.eval": "评估与预测",
    "tab.chat": "对话",
    "tab.export": "导出",
    "tab.runs": "运行记录",
    "section.common": "常用参数",
    "section.more": "其他全部参数（按组）",
    "section.changed": "已修改 {count} 项",
    "group.model": "模型参数",
    "group.data": "数据参数",
    "group.training": "训练参数",
    "group.finetuning": "微调参数",
    "group.generating": "生成参数",
    "group.evaluation": "评估参数",
    "badge.later": "尚未支持",
    "badge.out": "不在支持范围内",
    "badge.noop": "不起作用",
    "field.default": "默认值",
    "field.unset": "（未设置）",
    "datasets.reload": "刷新",
    "datasets.from": "来自 {file}",
    "datasets.problem": "{name}：{problem}",
    "preview.open": "预览数据集",
    "preview.close": "关闭预览",
    "preview.dataset": "数据集",
    "preview.raw": "原始数据",
    "preview.tokenized": "分词后的样本",
    "preview.prev": "上一页",
    "preview.next": "下一页",
    "preview.rows": "第 {from} 至 {to} 行",
    "preview.legend": "绿色词元参与训练；灰色词元被屏蔽（标签为 -100）。",
    "preview.loading": "加载中…",
    "preview.trained": "{total} 个词元中有 {count} 个参与训练",
    "preview.pick": "请先选择数据集。",
    "cmd.preview": "命令预览",
    "cmd.save": "保存参数",
    "cmd.load": "载入参数",
    "cmd.name": "参数集名称",
    "cmd.start": "开始",
    "cmd.stop": "中断",
    "cmd.resume": "继续训练",
    "cmd.evalStart": "开始评估",
    "cmd.exportStart": "开始导出",
    "msg.checking": "检查中…",
    "msg.valid": "参数有效。",
    "msg.invalid": "请先修正标出的参数。",
    "msg.saved": "已保存到 {path}",
    "msg.loaded": "已载入 {name}",
    "msg.notice": "提示：{text}",
    "msg.started": "已开始运行 {id}",
    "msg.noRun": "本页开始的运行都已结束。",
    "runs.title": "运行记录",
    "runs.empty": "还没有运行记录：请在训练、评估与预测或导出页开始一次运行。",
    "runs.pick": "请在左侧选择一次运行。",
    "runs.status.running": "运行中",
    "runs.status.stopping": "正在中断",
    "runs.status.finished": "已完成",
    "runs.status.failed": "失败",
    "runs.status.stopped": "已中断",
    "runs.status.unknown": "在面板关闭期间结束",
    "runs.job.train": "训练",
    "runs.job.eval": "评估",
    "runs.job.export": "导出",
    "runs.job.chat": "对话",
    "runs.progress": "进度",
    "runs.steps": "第 {current} 步，共 {total} 步",
    "runs.elapsed": "已用 {time}",
    "runs.eta": "剩余 {time}",
    "runs.throughput": "每秒 {value} 个词元",
    "runs.waiting": "等待第一条训练日志…",
    "runs.loss": "损失",
    "runs.rewards": "奖励与其他指标",
    "runs.log": "日志",
    "runs.results": "结果",
    "runs.predictions": "预测结果",
    "runs.output": "输出目录",
    "runs.command": "命令",
    "runs.started": "开始时间",
    "runs.exit": "退出状态 {code}",
    "runs.resumes": "继续自 {id}",
    "runs.step": "步",
    "chat.model": "模型",
    "chat.load": "加载模型",
    "chat.unload": "卸载模型",
    "chat.settings": "生成参数",
    "chat.system": "系统提示词",
    "chat.input": "输入消息",
    "chat.send": "发送",
    "chat.stop": "停止",
    "chat.clear": "清空历史",
    "chat.user": "用户",
    "chat.assistant": "助手",
    "chat.state.empty": "未加载模型。",
    "chat.state.loading": "正在加载 {model}…",
    "chat.state.ready": "已加载：{model}",
    "chat.state.failed": "模型加载失败：{error}",
    "chat.stopped": "（已停止）",
    "field.stage": "训练阶段",
    "field.dataset_dir": "数据目录",
    "field.dataset": "训练数据集",
    "field.eval_dataset": "评估数据集",
    "field.output_dir": "输出目录",
    "field.learning_rate": "学习率",
    "field.num_train_epochs": "训练轮数",
    "field.max_steps": "最大步数",
    "field.per_device_train_batch_size": "批处理大小",
    "field.gradient_accumulation_steps": "梯度累积",
    "field.cutoff_len": "截断长度",
    "field.max_samples": "最大样本数",
    "field.lr_scheduler_type": "学习率调节器",
    "field.warmup_ratio": "预热比例",
    "field.logging_steps": "日志间隔",
    "field.save_steps": "保存间隔",
    "field.val_size": "验证集大小",
    "field.bf16": "bf16 混合精度",
    "field.lora_rank": "LoRA 秩",
    "field.lora_alpha": "LoRA 缩放系数",
    "field.lora_dropout": "LoRA 随机丢弃",
    "field.lora_target": "LoRA 作用模块",
    "field.do_eval": "评估",
    "field.do_predict": "预测",
    "field.predict_with_generate": "生成式预测",
    "field.per_device_eval_batch_size": "评估批处理大小",
    "field.max_new_tokens": "最大生成长度",
    "field.top_p": "Top-p 采样",
    "field.temperature": "温度系数",
    "field.top_k": "Top-k 采样",
    "field.do_sample": "采样",
    "field.repetition_penalty": "重复惩罚",
    "field.skip_special_tokens": "跳过特殊词元",
    "field.infer_dtype": "推理数据类型",
    "field.export_dir": "导出目录",
    "field.export_size": "分块大小（GB）",
    "field.export_device": "导出设备",
    "field.export_legacy_format": "旧版 .bin 格式",
    "field.export_quantization_bit": "导出量化位数",
    "field.export_quantization_dataset": "量化校准数据集",
    "field.export_hub_model_id": "Hub 仓库名",
  },
};

const STORAGE_KEY = "lmf-webui-language";

/** @type {Language} */
let current = "en";
/** @type {Array<() => void>} */
const listeners = [];

/** @returns {Language} */
export function language() {
  return current;
}

/** @param {string} key */
export function has(key) {
  return key in MESSAGES.en;
}

/**
 * The text of `key` in the current language, with `{name}` replaced from `vars`.
 * @param {string} key
 * @param {Record<string, string | number>} [vars]
 */
export function t(key, vars = {}) {
  const text = MESSAGES[current][key] ?? MESSAGES.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? `{${name}}`));
}

/** Fills every `data-i18n*` element under `root`. @param {ParentNode} root */
export function translate(root = document) {
  for (const element of root.querySelectorAll("[data-i18n]")) element.textContent = t(/** @type {string} */ (element.getAttribute("data-i18n")));
  for (const element of root.querySelectorAll("[data-i18n-title]")) element.setAttribute("title", t(/** @type {string} */ (element.getAttribute("data-i18n-title"))));
  for (const element of root.querySelectorAll("[data-i18n-placeholder]")) element.setAttribute("placeholder", t(/** @type {string} */ (element.getAttribute("data-i18n-placeholder"))));
}

/** Runs `listener` after each change of language (for text made by code). @param {() => void} listener */
export function onLanguageChange(listener) {
  listeners.push(listener);
}

/** @param {string} value */
export function setLanguage(value) {
  current = value === "zh" ? "zh" : "en";
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  try {
    localStorage.setItem(STORAGE_KEY, current);
  } catch {
    // Storage may be off; the choice then lasts for this page only.
  }
  translate();
  for (const listener of listeners) listener();
}

/** The language chosen earlier on this browser, else the browser's own. @returns {Language} */
export function initialLanguage() {
  let saved = null;
  try {
    saved = localStorage.getItem(STORAGE_KEY);
  } catch {
    saved = null;
  }
  if (saved === "zh" || saved === "en") return saved;
  return navigator.language.toLowerCase().startsWith("zh") ? "zh" : "en";
}
