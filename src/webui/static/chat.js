// @ts-check
// The Chat tab (and the whole `lmf webchat` page): load the model the top bar names, then talk to
// it with a system prompt and generation settings from the declarations; the reply streams in
// token by token; Stop ends it between two tokens; Clear forgets the history (LlamaBoard's chat
// box: load/unload, system prompt, max new tokens, top-p, temperature, clear).
import { ApiFailure, getJson, postJson, postStream } from "./api.js";
import { el, label } from "./form.js";
import { onLanguageChange, t } from "./i18n.js";

/** @typedef {{ status: string, model: string | null, context: number | null, error: string | null, replying: boolean }} ChatState */

export class ChatTab {
  /**
   * @param {HTMLElement} root
   * @param {import("./form.js").Form} settings the generation settings form
   * @param {{ chatOnly: boolean, loadValues: () => Record<string, unknown>, showErrors: (errors: Record<string, string>) => void }} board
   */
  constructor(root, settings, board) {
    this.settings = settings;
    this.board = board;
    /** @type {{ role: string, content: string }[]} */
    this.history = [];
    /** @type {AbortController | null} */
    this.reply = null;
    /** @type {ChatState} */
    this.state = { status: "empty", model: null, context: null, error: null, replying: false };

    this.stateLine = el("p", { class: "chat-state", id: "chat-state" });
    const load = label("button", "chat.load", { id: "chat-load" });
    const unload = label("button", "chat.unload", { id: "chat-unload", class: "secondary" });
    load.addEventListener("click", () => this.load());
    unload.addEventListener("click", async () => this.setState(await postJson("/api/chat/unload")));
    this.system = /** @type {HTMLTextAreaElement} */ (el("textarea", { id: "chat-system", rows: "3" }));
    this.messages = el("div", { class: "chat-messages", id: "chat-messages" });
    this.input = /** @type {HTMLTextAreaElement} */ (el("textarea", { id: "chat-input", rows: "3", "data-i18n-placeholder": "chat.input" }));
    this.send = label("button", "chat.send", { id: "chat-send" });
    this.stop = label("button", "chat.stop", { id: "chat-stop", class: "stop" });
    const clear = label("button", "chat.clear", { id: "chat-clear", class: "secondary" });
    this.send.addEventListener("click", () => this.ask());
    this.stop.addEventListener("click", () => this.reply?.abort());
    clear.addEventListener("click", () => {
      this.reply?.abort();
      this.history = [];
      this.messages.replaceChildren();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        this.ask();
      }
    });
    const modelBox = el("div", { class: "chat-model" }, [label("h3", "chat.model"), this.stateLine]);
    if (!board.chatOnly) modelBox.append(el("div", { class: "buttons" }, [load, unload]));
    const side = el("div", { class: "chat-side" }, [modelBox, label("h3", "chat.settings"), ...[...settings.wrappers.values()], el("div", { class: "field" }, [label("label", "chat.system", { for: "chat-system", class: "name" }), this.system])]);
    const main = el("div", { class: "chat-main" }, [this.messages, this.input, el("div", { class: "buttons" }, [this.send, this.stop, clear])]);
    root.append(el("div", { class: "chat" }, [side, main]));
    onLanguageChange(() => this.renderState());
    getJson("/api/chat").then((state) => this.setState(state), () => undefined);
  }

  /** @param {ChatState} state */
  setState(state) {
    this.state = state;
    this.renderState();
  }

  renderState() {
    const { status, model, error } = this.state;
    this.stateLine.textContent = t(`chat.state.${status}`, { model: model ?? "", error: error ?? "" });
    this.stateLine.dataset.status = status;
    const busy = this.reply !== null;
    this.send.toggleAttribute("disabled", status !== "ready" || busy);
    this.stop.toggleAttribute("disabled", !busy);
  }

  async load() {
    this.board.showErrors({});
    this.setState({ ...this.state, status: "loading", model: String(this.board.loadValues().model_name_or_path ?? ""), error: null });
    try {
      this.setState(await postJson("/api/chat/load", { values: this.board.loadValues() }));
    } catch (error) {
      if (error instanceof ApiFailure && error.body.errors) this.board.showErrors(error.body.errors);
      const message = error instanceof ApiFailure ? (error.body.message ?? error.message) : String(error);
      this.setState({ ...this.state, status: "failed", error: message });
    }
  }

  /** The changed generation settings (load-time fields such as infer_dtype apply with Load). */
  generation() {
    return Object.fromEntries(Object.entries(this.settings.values()).filter(([name]) => this.settings.fields[name]?.group === "generating"));
  }

  /** @param {string} role @param {string} text */
  bubble(role, text) {
    const body = el("div", { class: "text" }, [text]);
    const item = el("div", { class: `message ${role}` }, [label("div", role === "user" ? "chat.user" : "chat.assistant", { class: "who" }), body]);
    this.messages.append(item);
    this.messages.scrollTop = this.messages.scrollHeight;
    return body;
  }

  async ask() {
    const text = this.input.value.trim();
    if (!text || this.reply || this.state.status !== "ready") return;
    this.input.value = "";
    this.history.push({ role: "user", content: text });
    this.bubble("user", text);
    const answer = this.bubble("assistant", "");
    answer.parentElement?.classList.add("streaming");
    this.reply = new AbortController();
    this.renderState();
    let content = "";
    let pieces = 0;
    let failed = false;
    try {
      await postStream(
        "/api/chat/message",
        { messages: this.history, system: this.system.value, generation: this.generation() },
        (line) => {
          if (typeof line.piece === "string") {
            content += line.piece;
            answer.textContent = content;
            pieces += 1;
            answer.parentElement?.setAttribute("data-pieces", String(pieces));
            this.messages.scrollTop = this.messages.scrollHeight;
          } else if (line.error) {
            failed = true;
            answer.textContent = line.error;
            answer.parentElement?.classList.add("error");
          }
        },
        this.reply.signal,
      );
    } catch (error) {
      if (error instanceof DOMException && error.name === "AbortError") answer.textContent = `${content} ${t("chat.stopped")}`;
      else {
        failed = true;
        if (error instanceof ApiFailure && error.body.errors) this.settings.showErrors(error.body.errors);
        answer.textContent = error instanceof Error ? error.message : String(error);
        answer.parentElement?.classList.add("error");
      }
    } finally {
      answer.parentElement?.classList.remove("streaming");
      answer.parentElement?.setAttribute("data-done", "true");
      // A failed turn leaves the history as it was, so user and assistant keep alternating.
      if (failed) this.history.pop();
      else this.history.push({ role: "assistant", content });
      this.reply = null;
      this.renderState();
    }
  }
}
