// @ts-check
// Form fields made from the parameter declarations the board sends (/api/schema): an input per
// kind (checkbox, select of choices, text for numbers, lists and paths, which the parameter system
// coerces and checks on the board), the field's help, default and tier badge, and a slot for the
// parameter system's message. A Form collects what a run needs: the fields in view, and the others
// only where they differ from their defaults.
import { has, t } from "./i18n.js";

/**
 * @typedef {{ name: string, group: string, kind: string, defaultText: string, default: unknown, nullable: boolean,
 *   help: string, tier: string, noEffect?: string, choices?: (string | number)[], choiceTiers?: Record<string, string>,
 *   min?: number, max?: number }} FormField
 * @typedef {{ get(): string | boolean, set(value: unknown): void, element: HTMLElement, focusable: HTMLElement }} Control
 */

/**
 * @param {string} tag
 * @param {Record<string, string>} [attributes]
 * @param {(Node | string)[]} [children]
 * @returns {HTMLElement}
 */
export function el(tag, attributes = {}, children = []) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  for (const child of children) element.append(child);
  return element;
}

/** A text element translated by i18n.js. @param {string} tag @param {string} key @param {Record<string, string>} [attributes] */
export function label(tag, key, attributes = {}) {
  return el(tag, { ...attributes, "data-i18n": key }, [t(key)]);
}

/** A field's values: settable only where it is built (tier now or noop), or some of its values are. @param {FormField} field */
function settable(field) {
  if (field.tier === "now" || field.tier === "noop") return true;
  return Object.values(field.choiceTiers ?? {}).includes("now");
}

/** @param {FormField} field @param {string} value */
function optionText(field, value) {
  const tier = field.choiceTiers?.[value];
  return tier === "later" ? `${value} (not yet supported)` : tier === "out" ? `${value} (out of scope)` : value;
}

/**
 * A select of `choices`, with an empty first option when the field may be unset.
 * @param {string} id
 * @param {(string | number)[]} choices
 * @param {boolean} empty
 * @param {(value: string) => string} text
 */
export function selectControl(id, choices, empty, text = (value) => value) {
  const select = /** @type {HTMLSelectElement} */ (el("select", { id }));
  if (empty) select.append(el("option", { value: "" }, [""]));
  for (const choice of choices) select.append(el("option", { value: String(choice) }, [text(String(choice))]));
  return select;
}

/** @param {FormField} field @param {string} id @returns {Control} */
function controlFor(field, id) {
  if (field.kind === "bool" && !field.nullable) {
    const input = /** @type {HTMLInputElement} */ (el("input", { id, type: "checkbox" }));
    return { element: input, focusable: input, get: () => input.checked, set: (value) => (input.checked = value === true || value === "true") };
  }
  /** @type {HTMLInputElement | HTMLSelectElement} */
  let input;
  if (field.kind === "bool") input = selectControl(id, ["true", "false"], true);
  else if (field.choices) input = selectControl(id, field.choices, field.nullable, (value) => optionText(field, value));
  else {
    input = /** @type {HTMLInputElement} */ (el("input", { id, type: "text", spellcheck: "false", autocomplete: "off" }));
    if (field.kind === "int" || field.kind === "float") input.setAttribute("inputmode", "decimal");
  }
  const target = input;
  return {
    element: target,
    focusable: target,
    get: () => target.value,
    set: (value) => (target.value = value === null || value === undefined ? "" : Array.isArray(value) ? value.join(",") : typeof value === "object" ? JSON.stringify(value) : String(value)),
  };
}

/**
 * Checkboxes for picking several names (datasets, checkpoints); the value is a comma-separated list.
 * @param {string} id
 * @returns {Control & { setOptions(options: { value: string, text: string, problem?: string | null }[]): void }}
 */
export function checklistControl(id) {
  const box = el("div", { id, class: "checklist", role: "group" });
  /** @type {Set<string>} */
  let wanted = new Set();
  const boxes = () => /** @type {HTMLInputElement[]} */ ([...box.querySelectorAll("input[type=checkbox]")]);
  const get = () => boxes().filter((input) => input.checked).map((input) => input.value).join(",");
  box.addEventListener("change", () => (wanted = new Set(get().split(",").filter(Boolean))));
  return {
    element: box,
    focusable: box,
    get,
    set(value) {
      wanted = new Set((Array.isArray(value) ? value.map(String) : String(value ?? "").split(",")).map((item) => item.trim()).filter(Boolean));
      for (const input of boxes()) input.checked = wanted.has(input.value);
    },
    setOptions(options) {
      box.replaceChildren(
        ...options.map((option) => {
          const input = /** @type {HTMLInputElement} */ (el("input", { type: "checkbox", value: option.value }));
          input.checked = wanted.has(option.value);
          if (option.problem) input.disabled = true;
          return el("label", { class: option.problem ? "check problem" : "check", title: option.problem ?? "" }, [input, ` ${option.text}`]);
        }),
      );
    },
  };
}

export class Form {
  /**
   * @param {string} scope a prefix for element ids (train, eval, top...)
   * @param {Record<string, FormField>} fields every declared field, by name
   * @param {() => void} onChange
   */
  constructor(scope, fields, onChange) {
    this.scope = scope;
    this.fields = fields;
    this.onChange = onChange;
    /** @type {Map<string, Control>} */
    this.controls = new Map();
    /** Names always sent when set (in view); the others only when changed from their defaults. */
    this.inView = new Set();
    /** @type {Map<string, HTMLElement>} */
    this.wrappers = new Map();
  }

  /**
   * Builds the field `name` (its label, control, help, badge and message slot).
   * @param {string} name
   * @param {{ inView?: boolean, control?: Control, labelKey?: string }} [options]
   */
  field(name, options = {}) {
    const field = this.fields[name];
    if (!field) throw new Error(`undeclared field ${name}`);
    const id = `${this.scope}-${name}`;
    const control = options.control ?? controlFor(field, id);
    if (!settable(field)) control.focusable.setAttribute("disabled", "");
    const labelKey = options.labelKey ?? (has(`field.${name}`) ? `field.${name}` : null);
    const title = el("label", { for: id, class: "name" }, labelKey ? [label("span", labelKey), " ", el("code", {}, [name])] : [el("code", {}, [name])]);
    if (field.tier !== "now") {
      const badge = label("span", `badge.${field.tier}`, { class: `badge ${field.tier}` });
      if (field.noEffect) badge.setAttribute("title", field.noEffect);
      title.append(" ", badge);
    }
    const help = el("div", { class: "help" }, [field.help]);
    if (field.defaultText !== "") help.append(" ", el("span", { class: "default" }, [label("span", "field.default"), ": ", el("code", {}, [field.defaultText])]));
    const wrapper = el("div", { class: `field kind-${field.kind}`, "data-field": name }, [title, control.element, help, el("div", { class: "error", "data-error-for": name, role: "alert" })]);
    control.set(field.kind === "bool" && !field.nullable ? field.default : field.defaultText);
    control.element.addEventListener("change", () => this.changed());
    control.element.addEventListener("input", () => this.changed());
    this.controls.set(name, control);
    this.wrappers.set(name, wrapper);
    if (options.inView) this.inView.add(name);
    return wrapper;
  }

  changed() {
    this.onChange();
  }

  /** @param {string} name */
  isChanged(name) {
    const field = this.fields[name];
    const value = this.controls.get(name)?.get();
    if (!field || value === undefined) return false;
    if (typeof value === "boolean") return value !== (field.default === true);
    return value.trim() !== field.defaultText;
  }

  /** @param {string} name */
  get(name) {
    return this.controls.get(name)?.get();
  }

  /** @param {string} name @param {unknown} value */
  set(name, value) {
    this.controls.get(name)?.set(value);
  }

  /** What a run needs: fields in view when set, other fields when changed. @returns {Record<string, string | boolean>} */
  values() {
    /** @type {Record<string, string | boolean>} */
    const out = {};
    for (const [name, control] of this.controls) {
      const value = control.get();
      if (this.inView.has(name) ? value !== "" : this.isChanged(name)) out[name] = value;
    }
    return out;
  }

  /** Shows each message beside its field; clears the others. @param {Record<string, string>} errors */
  showErrors(errors) {
    for (const [name, wrapper] of this.wrappers) {
      const slot = /** @type {HTMLElement} */ (wrapper.querySelector(".error"));
      slot.textContent = errors[name] ?? "";
      wrapper.classList.toggle("invalid", Boolean(errors[name]));
      if (errors[name]) wrapper.closest("details")?.setAttribute("open", "");
    }
  }
}
