// A chat template written out for other programs, as LLaMA-Factory's data/template.py does at
// export: the Jinja `chat_template` a tokenizer is saved with (`_get_jinja_template`,
// `fix_jinja_template`), the Ollama `Modelfile` (`get_ollama_modelfile`), and, for a tokenizer's own
// Jinja template, the slots LLaMA-Factory's `parse_template` reads off it by rendering probes.
import type { Tokenizer } from "../tokenizer.ts";
import { JinjaTemplate } from "./jinja.ts";
import { type ChatTemplate, type Slot, Template } from "./template.ts";

/** The slots of a template as LLaMA-Factory's Template fields hold them. */
export interface TemplateSlots {
  prefix: Slot[];
  system: Slot[];
  user: Slot[];
  assistant: Slot[];
  defaultSystem: string;
  /** Llama2Template: the system text is folded into the first user message. */
  llama2: boolean;
}

const escapeJinja = (content: string): string => content.replace(/'/g, "\\'");

/**
 * `_convert_slots_to_jinja` / `_convert_slots_to_ollama`: the first `{{content}}` of a text slot
 * becomes `placeholder`; BOS/EOS become their token text (not `{{ eos_token }}`, which a later
 * EOS replacement would change). Returns null for a named-token slot, which LLaMA-Factory cannot
 * convert ("Dict is not supported").
 */
function convertSlots(slots: readonly Slot[], tokenizer: Tokenizer, placeholder: string, quote: (text: string) => string): string[] | null {
  const items: string[] = [];
  for (const slot of slots) {
    if (typeof slot === "string") {
      const pieces = slot.split("{{content}}");
      if (pieces[0]) items.push(quote(pieces[0]));
      if (pieces.length > 1) {
        items.push(placeholder);
        if (pieces[1]) items.push(quote(pieces[1]));
      }
    } else if ("special" in slot) {
      const id = slot.special === "bos_token" ? tokenizer.bosTokenId : tokenizer.eosTokenId;
      const text = slot.special === "bos_token" ? tokenizer.bosToken : tokenizer.eosToken;
      if (id !== null && text !== null) items.push(quote(text));
    } else {
      return null;
    }
  }
  return items;
}

/** The slots of a built-in template, or those parse_template reads off a Jinja one. */
export function templateSlots(template: ChatTemplate, tokenizer: Tokenizer): TemplateSlots {
  if (template instanceof Template) {
    return {
      prefix: template.formatPrefix,
      system: template.formatSystem,
      user: template.formatUser,
      assistant: template.formatAssistant,
      defaultSystem: template.defaultSystem,
      llama2: template.style === "llama2",
    };
  }
  if (template instanceof JinjaTemplate) return parseJinjaSlots(template, tokenizer);
  throw new Error(`cannot read the slots of template ${template.name}`);
}

/** LLaMA-Factory's parse_template: the slots of a Jinja chat template, from renderings of probe messages. */
export function parseJinjaSlots(template: JinjaTemplate, tokenizer: Tokenizer): TemplateSlots {
  const render = (messages: { role: string; content: string }[], addGenerationPrompt: boolean) =>
    template.render(tokenizer, messages, addGenerationPrompt);
  // find_diff: the characters of `long` that a greedy walk does not match against `short`.
  const findDiff = (short: string, long: string): string => {
    let i = 0;
    let diff = "";
    for (let j = 0; i < short.length && j < long.length; j++) {
      if (short[i] === long[j]) i++;
      else diff += long[j];
    }
    return diff;
  };
  const prefix = tokenizer.decode(tokenizer.encode(""));
  const system = render([{ role: "system", content: "{{content}}" }], false).slice(prefix.length);
  const userEmptySystem = render([{ role: "system", content: "" }, { role: "user", content: "{{content}}" }], true).slice(prefix.length);
  let user = render([{ role: "user", content: "{{content}}" }], true).slice(prefix.length);
  let assistant = render([{ role: "user", content: "{{content}}" }, { role: "assistant", content: "{{content}}" }], false).slice(prefix.length + user.length);
  assistant = assistant.replaceAll("<think>", "").replaceAll("</think>", "").replace(/^\n+/, "");
  let defaultSystem = "";
  if (user.length > userEmptySystem.length) {
    defaultSystem = findDiff(userEmptySystem, user);
    user = user.slice(system.replace("{{content}}", defaultSystem).length);
  }
  return { prefix: prefix ? [prefix] : [], system: [system], user: [user], assistant: [assistant], defaultSystem, llama2: false };
}

/**
 * `_get_jinja_template` (and Llama2Template's): a Jinja chat template rendering the template's
 * slots, or null when a slot names a token (LLaMA-Factory then keeps the tokenizer's own).
 */
export function jinjaChatTemplate(slots: TemplateSlots, tokenizer: Tokenizer): string | null {
  const quote = (text: string) => `'${escapeJinja(text)}'`;
  const join = (items: string[] | null) => (items === null ? null : items.join(" + "));
  const prefix = join(convertSlots(slots.prefix, tokenizer, "content", quote));
  const system = join(convertSlots(slots.system, tokenizer, "system_message", quote));
  const user = join(convertSlots(slots.user, tokenizer, "content", quote));
  const assistant = join(convertSlots(slots.assistant, tokenizer, "content", quote));
  if (prefix === null || system === null || user === null || assistant === null) return null;
  let jinja = prefix ? `{{ ${prefix} }}` : "";
  if (slots.defaultSystem) jinja += `{% set system_message = '${escapeJinja(slots.defaultSystem)}' %}`;
  jinja +=
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}" +
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% endif %}";
  if (slots.llama2) {
    jinja +=
      "{% for message in loop_messages %}" +
      "{% if loop.index0 == 0 and system_message is defined %}" +
      `{% set content = ${system} + message['content'] %}` +
      "{% else %}{% set content = message['content'] %}{% endif %}";
  } else {
    jinja += `{% if system_message is defined %}{{ ${system} }}{% endif %}{% for message in loop_messages %}{% set content = message['content'] %}`;
  }
  jinja += `{% if message['role'] == 'user' %}{{ ${user} }}{% elif message['role'] == 'assistant' %}{{ ${assistant} }}{% endif %}{% endfor %}`;
  return jinja;
}

/**
 * fix_jinja_template: the chat template the tokenizer is saved with. A tokenizer without one, or a
 * template that asks to replace it (`replace_jinja_template`), gets the template's own.
 */
export function savedChatTemplate(template: ChatTemplate, tokenizer: Tokenizer): string | null {
  const replace = template instanceof Template && template.replaceJinjaTemplate;
  if (tokenizer.chatTemplate !== null && !replace) return tokenizer.chatTemplate;
  if (!(template instanceof Template)) return tokenizer.chatTemplate;
  return jinjaChatTemplate(templateSlots(template, tokenizer), tokenizer) ?? tokenizer.chatTemplate;
}

/** `_get_ollama_template`: Go template text over `.System` and `.Messages`. A named token is written as its text. */
export function ollamaTemplate(slots: TemplateSlots, tokenizer: Tokenizer): string {
  const convert = (list: Slot[], placeholder: string) =>
    convertSlots(
      list.map((slot) => (typeof slot === "object" && "token" in slot ? slot.token : slot)),
      tokenizer,
      `{{ ${placeholder} }}`,
      (text) => text,
    )!.join("");
  const prefix = convert(slots.prefix, "content");
  const system = convert(slots.system, ".System");
  const user = convert(slots.user, ".Content");
  const assistant = convert(slots.assistant, ".Content");
  return (
    `${prefix}{{ if .System }}${system}{{ end }}` +
    `{{ range .Messages }}{{ if eq .Role "user" }}${user}` +
    `{{ else if eq .Role "assistant" }}${assistant}{{ end }}{{ end }}`
  );
}

/**
 * The order CPython iterates a set of small non-negative ints in (hash = value, open addressing
 * over a power-of-two table), so `list({eos, *stops})` comes out as in LLaMA-Factory.
 */
export function pythonSetOrder(values: readonly number[]): number[] {
  let table: (number | null)[] = new Array(8).fill(null);
  let used = 0;
  const insert = (target: (number | null)[], value: number) => {
    const mask = target.length - 1;
    let i = value & mask;
    let perturb = value;
    for (;;) {
      const probes = i + 9 <= mask ? 9 : 0;
      for (let step = 0; step <= probes; step++) {
        const slot = target[i + step];
        if (slot === null) {
          target[i + step] = value;
          return;
        }
        if (slot === value) return;
      }
      perturb = Math.floor(perturb / 32);
      i = (i * 5 + 1 + perturb) & mask;
    }
  };
  for (const value of values) {
    if (table.includes(value)) continue;
    insert(table, value);
    used++;
    if (used * 5 >= (table.length - 1) * 3) {
      let size = 8;
      while (size <= used * 4) size *= 2;
      const grown: (number | null)[] = new Array(size).fill(null);
      for (const old of table) if (old !== null) insert(grown, old);
      table = grown;
    }
  }
  return table.filter((value): value is number => value !== null);
}

/** get_ollama_modelfile: TEMPLATE, SYSTEM, one `PARAMETER stop` per stop token, `num_ctx 4096`. */
export function ollamaModelfile(template: ChatTemplate, tokenizer: Tokenizer, from = "."): string {
  const slots = templateSlots(template, tokenizer);
  let text = "# ollama modelfile auto-generated by llamafactory\n\n";
  text += `FROM ${from}\n\nTEMPLATE """${ollamaTemplate(slots, tokenizer)}"""\n\n`;
  if (slots.defaultSystem) text += `SYSTEM """${slots.defaultSystem}"""\n\n`;
  const stopIds = template instanceof Template ? template.getStopTokenIds(tokenizer) : [tokenizer.eosTokenId].filter((id): id is number => id !== null);
  for (const id of pythonSetOrder(stopIds)) text += `PARAMETER stop "${tokenizer.convertIdsToTokens(id)}"\n`;
  text += "PARAMETER num_ctx 4096\n";
  return text;
}
