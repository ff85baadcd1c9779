// Picks the chat template for a run, as LLaMA-Factory's `get_template_and_fix_tokenizer`: a
// built-in by name, or (name `auto` or none) the tokenizer's own Jinja chat_template, then the
// DataArguments overrides (default_system, tool_format, enable_thinking) and the EOS/pad fix-up.
import { UserError } from "../../errors.ts";
import { closestName } from "../../names.ts";
import type { Tokenizer } from "../tokenizer.ts";
import { BUILTIN_TEMPLATES } from "./builtin.ts";
import { JinjaTemplate } from "./jinja.ts";
import { type ChatTemplate, Template } from "./template.ts";

export { BUILTIN_TEMPLATES } from "./builtin.ts";
export { JinjaTemplate } from "./jinja.ts";
export { type ChatTemplate, Template } from "./template.ts";

export interface TemplateOptions {
  /** Replaces the template's default system message. */
  defaultSystem?: string | null;
  /** Thinking mode of reasoning templates (true: empty thoughts are trained; false/null: they go in the prompt). */
  enableThinking?: boolean | null;
  /** Keep the thoughts of earlier turns. */
  preserveThinking?: boolean;
  /** Overrides the template's tool format (`default`, `qwen`, `llama3`, `glm4`, `mistral`). */
  toolFormat?: string | null;
  /** Refused with EOS-in-the-next-prompt templates, whose prompt labels carry that EOS. */
  trainOnPrompt?: boolean;
}

export function builtinTemplateNames(): string[] {
  return Object.keys(BUILTIN_TEMPLATES).sort();
}

function unknownTemplate(name: string): UserError {
  const names = builtinTemplateNames();
  const nearest = closestName(name, names);
  return new UserError(
    `unknown template "${name}"${nearest ? ` (did you mean "${nearest}"?)` : ""}`,
    "template",
    `use one of: ${names.join(", ")}; or leave it unset (or "auto") to use the tokenizer's own chat_template`,
  );
}

/** Builds the template and fixes the tokenizer's EOS/pad; `addedTokens` > 0 means the embeddings need resizing. */
export function getTemplateAndFixTokenizer(
  name: string | null | undefined,
  tokenizer: Tokenizer,
  options: TemplateOptions = {},
): { template: ChatTemplate; addedTokens: number } {
  let template: ChatTemplate;
  if (name === null || name === undefined || name === "auto") {
    template = tokenizer.chatTemplate ? new JinjaTemplate(tokenizer.chatTemplate) : new Template("empty", BUILTIN_TEMPLATES.empty!);
  } else {
    const spec = BUILTIN_TEMPLATES[name];
    if (!spec) throw unknownTemplate(name);
    template = new Template(name, spec);
  }
  if (options.trainOnPrompt && template.efficientEos) {
    throw new UserError(`template ${template.name} does not support train_on_prompt`, "train_on_prompt", "set train_on_prompt: false");
  }
  if (options.toolFormat && template instanceof Template) template.setToolFormat(options.toolFormat);
  if (options.defaultSystem !== null && options.defaultSystem !== undefined) template.defaultSystem = options.defaultSystem;
  if (options.enableThinking !== undefined) template.enableThinking = options.enableThinking;
  if (options.preserveThinking !== undefined) template.preserveThinking = options.preserveThinking;
  const addedTokens = template.fixSpecialTokens(tokenizer);
  return { template, addedTokens };
}

export function getTemplate(name: string | null | undefined, tokenizer: Tokenizer, options: TemplateOptions = {}): ChatTemplate {
  return getTemplateAndFixTokenizer(name, tokenizer, options).template;
}
