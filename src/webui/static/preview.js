// @ts-check
// The Train tab's dataset preview: pages through a dataset's raw rows, or through its examples as
// the trainer receives them, token by token, trained tokens marked (what `lmf data inspect` shows).
import { ApiFailure, postJson } from "./api.js";
import { el, label } from "./form.js";
import { t } from "./i18n.js";

const PAGE_ROWS = 2;

/** A token's text with its invisible characters shown. @param {string} text */
function visible(text) {
  return text.replace(/\n/g, "⏎").replace(/\t/g, "⇥") || "∅";
}

export class DatasetPreview {
  /**
   * @param {() => string[]} datasetNames the datasets of the listing
   * @param {() => Record<string, unknown>} values the form's values (tokenizer, template, cutoff_len...)
   */
  constructor(datasetNames, values) {
    this.datasetNames = datasetNames;
    this.values = values;
    this.offset = 0;
    /** @type {"raw" | "tokenized"} */
    this.view = "raw";
    this.open = false;
    this.select = /** @type {HTMLSelectElement} */ (el("select", { id: "preview-dataset" }));
    this.content = el("div", { class: "preview-content", id: "preview-content" });
    this.position = el("span", { class: "muted", id: "preview-position" });
    const toggle = label("button", "preview.open", { id: "preview-open", class: "secondary" });
    const raw = label("button", "preview.raw", { id: "preview-raw", class: "secondary" });
    const tokenized = label("button", "preview.tokenized", { id: "preview-tokenized", class: "secondary" });
    const prev = label("button", "preview.prev", { id: "preview-prev", class: "secondary" });
    const next = label("button", "preview.next", { id: "preview-next", class: "secondary" });
    this.next = next;
    this.prev = prev;
    this.panel = el("div", { class: "preview", id: "preview", hidden: "" }, [
      el("div", { class: "buttons" }, [label("label", "preview.dataset", { for: "preview-dataset" }), this.select, raw, tokenized, prev, next, this.position]),
      this.content,
    ]);
    this.element = el("div", {}, [toggle, this.panel]);
    toggle.addEventListener("click", () => {
      this.open = !this.open;
      this.panel.toggleAttribute("hidden", !this.open);
      toggle.setAttribute("data-i18n", this.open ? "preview.close" : "preview.open");
      toggle.textContent = t(this.open ? "preview.close" : "preview.open");
      if (this.open) this.refreshNames();
    });
    raw.addEventListener("click", () => this.show("raw", 0));
    tokenized.addEventListener("click", () => this.show("tokenized", 0));
    prev.addEventListener("click", () => this.show(this.view, Math.max(0, this.offset - PAGE_ROWS)));
    next.addEventListener("click", () => this.show(this.view, this.offset + PAGE_ROWS));
    this.select.addEventListener("change", () => this.show(this.view, 0));
  }

  /** Keeps the dataset choices in step with the listing. */
  refreshNames() {
    const names = this.datasetNames();
    const chosen = this.select.value;
    this.select.replaceChildren(...names.map((name) => el("option", { value: name }, [name])));
    if (names.includes(chosen)) this.select.value = chosen;
    if (this.open) this.show(this.view, 0);
  }

  /** @param {"raw" | "tokenized"} view @param {number} offset */
  async show(view, offset) {
    this.view = view;
    this.offset = offset;
    const dataset = this.select.value;
    if (!dataset) {
      this.content.replaceChildren(label("p", "preview.pick", { class: "muted" }));
      return;
    }
    this.content.replaceChildren(label("p", "preview.loading", { class: "muted" }));
    this.content.dataset.view = view;
    try {
      const page = await postJson("/api/preview", { view, dataset, offset, limit: PAGE_ROWS, values: this.values() });
      const count = view === "raw" ? page.rows.length : page.examples.length;
      this.position.textContent = count ? t("preview.rows", { from: offset + 1, to: offset + count }) : "";
      this.next.toggleAttribute("disabled", !page.more);
      this.prev.toggleAttribute("disabled", offset === 0);
      if (view === "raw") this.content.replaceChildren(...page.rows.map((/** @type {unknown} */ row) => el("pre", { class: "raw-row" }, [JSON.stringify(row, null, 2)])));
      else this.content.replaceChildren(label("p", "preview.legend", { class: "muted" }), ...page.examples.flatMap((/** @type {any[]} */ strips) => strips.map((strip) => this.strip(strip))));
    } catch (error) {
      const message = error instanceof ApiFailure ? Object.values(error.body.errors ?? {}).concat(error.message).join(" ") : String(error);
      this.content.replaceChildren(el("p", { class: "error-box", id: "preview-error" }, [message]));
    }
  }

  /** One processed sequence: its text, then its tokens, trained ones marked. @param {any} strip */
  strip(strip) {
    const tokens = strip.tokens.map((/** @type {{ id: number, text: string, trained: boolean }} */ token) =>
      el("span", { class: `tok ${token.trained ? "trained" : "masked"}`, title: `id ${token.id}` }, [visible(token.text)]),
    );
    const head = el("div", { class: "muted" }, [el("code", {}, [strip.part]), ` · ${t("preview.trained", { count: strip.trainedCount, total: strip.tokens.length })}`]);
    return el("div", { class: "example" }, [head, el("pre", { class: "example-text" }, [strip.text]), el("div", { class: "tokens" }, tokens)]);
  }
}
