// @ts-check
// The board's page: the top bar (language, model, fine-tuning type, adapters/checkpoints,
// quantization, template), the Train, Evaluate & Predict, Chat, Export and Runs tabs, all built from
// the declarations the board sends. Every change is checked by the board (the parameter system's
// messages beside the fields, the YAML that will run); Start starts a run and shows it.
import { ApiFailure, getJson, postJson } from "./api.js";
import { ChatTab } from "./chat.js";
import { Form, checklistControl, el, label, selectControl } from "./form.js";
import { initialLanguage, onLanguageChange, setLanguage, t, translate } from "./i18n.js";
import { DatasetPreview } from "./preview.js";
import { RunsTab } from "./runs.js";

/** @typedef {"train" | "eval" | "export" | "chat"} Job */

const CHECK_DELAY_MS = 350;
/** Which dataset field each tab picks from dataset_info.json. */
const DATASET_FIELD = { train: "dataset", eval: "eval_dataset" };
const START_LABEL = { train: "cmd.start", eval: "cmd.evalStart", export: "cmd.exportStart" };

const info = await getJson("/api/info");
const schema = await getJson("/api/schema");
const chatOnly = info.mode === "chat";

/** @type {Record<string, Form>} */
const forms = {};
/** @type {Record<string, { listing: any, reload: () => Promise<void> }>} */
const datasetPickers = {};
/** Output folders the user has not typed themselves follow the model and fine-tuning type. */
const autoOutput = { train: true, eval: true };
let activeTab = "train";
/** @type {ReturnType<typeof setTimeout> | undefined} */
let checkTimer;

/** Where the forms' values are kept, so a refreshed or reopened page starts where it was left. */
const STORE_KEY = `lmf-webui-forms-${info.mode}`;

/** The values a form shows that are worth keeping: in view, or changed. @param {Form} form */
function snapshot(form) {
  return Object.fromEntries([...form.controls].map(([name, control]) => [name, control.get()]).filter(([name]) => form.inView.has(name) || form.isChanged(String(name))));
}

function saveForms() {
  const state = { autoOutput, forms: Object.fromEntries(Object.entries({ top, ...forms }).map(([scope, form]) => [scope, snapshot(form)])) };
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(state));
  } catch {
    // Storage may be off or full: the page then forgets on refresh.
  }
}

function restoreForms() {
  let state;
  try {
    state = JSON.parse(localStorage.getItem(STORE_KEY) ?? "null");
  } catch {
    state = null;
  }
  if (!state?.forms) return;
  Object.assign(autoOutput, state.autoOutput ?? {});
  for (const [scope, values] of Object.entries(state.forms)) {
    const form = scope === "top" ? top : forms[scope];
    if (!form) continue;
    for (const [name, value] of Object.entries(/** @type {Record<string, unknown>} */ (values))) {
      // A folder the page chose itself is chosen again (a new one per run).
      if (name === "output_dir" && autoOutput[/** @type {"train" | "eval"} */ (scope)]) continue;
      if (form.controls.has(name)) form.set(name, value);
    }
  }
}

/** @param {string} name */
const basename = (name) => name.replace(/\/+$/, "").split("/").pop() || "model";

function stamp() {
  const now = new Date();
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}-${pad(now.getHours())}-${pad(now.getMinutes())}-${pad(now.getSeconds())}`;
}

// ---- top bar ----

const top = new Form("top", schema.fields, () => topChanged());
const modelInput = /** @type {HTMLInputElement} */ (el("input", { id: "top-model_name_or_path", type: "text", list: "model-folders", spellcheck: "false", autocomplete: "off" }));
const modelControl = { element: modelInput, focusable: modelInput, get: () => modelInput.value, set: (/** @type {unknown} */ v) => (modelInput.value = String(v ?? "")) };
const checkpoints = checklistControl("top-checkpoints");
const templateSelect = selectControl("top-template", ["auto", ...schema.templates], false);
const templateControl = {
  element: templateSelect,
  focusable: templateSelect,
  get: () => (templateSelect.value === "auto" ? "" : templateSelect.value),
  set: (/** @type {unknown} */ v) => (templateSelect.value = v ? String(v) : "auto"),
};
const modelsList = el("datalist", { id: "model-folders" });
const noCheckpoints = label("div", "top.noCheckpoints", { class: "help", id: "no-checkpoints" });

function buildTopBar() {
  const bar = /** @type {HTMLElement} */ (document.getElementById("topbar"));
  bar.append(
    top.field("model_name_or_path", { inView: true, control: modelControl, labelKey: "top.model" }),
    top.field("finetuning_type", { inView: true, labelKey: "top.finetuning_type" }),
    el("div", { class: "checkpoint-box" }, [top.field("adapter_name_or_path", { inView: true, control: checkpoints, labelKey: "top.checkpoint" }), noCheckpoints]),
    top.field("quantization_bit", { inView: true, labelKey: "top.quantization" }),
    top.field("template", { inView: true, control: templateControl, labelKey: "top.template" }),
    modelsList,
  );
  // The first option reads "auto" in the page's language.
  const autoOption = /** @type {HTMLOptionElement} */ (templateSelect.querySelector("option[value=auto]"));
  autoOption.setAttribute("data-i18n", "top.auto");
  const quantNone = templateSelect.ownerDocument.querySelector("#top-quantization_bit option[value='']");
  quantNone?.setAttribute("data-i18n", "top.none");
  getJson("/api/models").then(({ models }) => {
    modelsList.replaceChildren(...models.map((/** @type {string} */ path) => el("option", { value: path })));
    if (!modelInput.value && models.length) modelInput.placeholder = models[0];
  });
}

async function refreshCheckpoints() {
  const model = modelInput.value.trim();
  const type = String(top.get("finetuning_type"));
  const { checkpoints: found } = await getJson(`/api/checkpoints?model=${encodeURIComponent(model)}&finetuning_type=${encodeURIComponent(type)}`);
  checkpoints.setOptions(found.map((/** @type {string} */ path) => ({ value: path, text: path })));
  checkpoints.set(checkpoints.get());
  noCheckpoints.toggleAttribute("hidden", found.length > 0);
  checkpoints.element.toggleAttribute("hidden", found.length === 0);
}

function updateOutputDirs() {
  const base = `saves/${basename(modelInput.value.trim() || "model")}/${top.get("finetuning_type")}`;
  for (const job of /** @type {("train" | "eval")[]} */ (["train", "eval"])) {
    if (autoOutput[job] && forms[job]) forms[job].set("output_dir", `${base}/${job}_${stamp()}`);
  }
}

let topTimer = /** @type {ReturnType<typeof setTimeout> | undefined} */ (undefined);
function topChanged() {
  clearTimeout(topTimer);
  topTimer = setTimeout(() => {
    refreshCheckpoints();
    updateOutputDirs();
  }, 200);
  scheduleCheck();
}

/**
 * The values a job runs with: the top bar's and its tab's. A picked checkpoint is an adapter for
 * LoRA and the model itself for full and freeze tuning, as in LlamaBoard.
 * @param {Job} job
 */
function collect(job) {
  const values = { ...top.values(), ...forms[job].values() };
  const picked = String(values.adapter_name_or_path ?? "").split(",").filter(Boolean);
  if (top.get("finetuning_type") !== "lora" && picked.length) {
    values.model_name_or_path = picked[picked.length - 1];
    delete values.adapter_name_or_path;
  }
  return values;
}

/** @param {Job} job @param {Record<string, string>} errors */
function showErrors(job, errors) {
  const mapped = { ...errors };
  if (mapped.model_name_or_path && top.get("finetuning_type") !== "lora" && checkpoints.get()) mapped.adapter_name_or_path = mapped.model_name_or_path;
  top.showErrors(mapped);
  forms[job].showErrors(mapped);
}

// ---- checks and runs ----

function scheduleCheck() {
  saveForms();
  if (chatOnly) return;
  clearTimeout(checkTimer);
  checkTimer = setTimeout(() => {
    if (activeTab !== "runs") check(/** @type {Job} */ (activeTab));
  }, CHECK_DELAY_MS);
}

/** @param {Job} job */
function statusLine(job) {
  return /** @type {HTMLElement} */ (document.getElementById(`status-${job}`));
}

/** @param {Job} job @param {string} key @param {Record<string, string>} [vars] @param {string} [kind] */
function say(job, key, vars = {}, kind = "") {
  const line = statusLine(job);
  if (!line) return;
  line.textContent = t(key, vars);
  line.className = `status-line ${kind}`;
}

/** @param {Job} job */
async function check(job) {
  const result = await postJson("/api/check", { job, values: collect(job) });
  showErrors(job, result.errors);
  const yaml = document.getElementById(`yaml-${job}`);
  if (yaml) yaml.textContent = `${result.command}\n\n${result.yaml}`;
  const notices = document.getElementById(`notices-${job}`);
  notices?.replaceChildren(...result.notices.map((/** @type {string} */ text) => el("li", {}, [t("msg.notice", { text })])));
  if (result.message) {
    const line = statusLine(job);
    if (line) {
      line.textContent = result.message;
      line.className = "status-line bad";
    }
  } else if (job !== "chat") say(job, result.ok ? "msg.valid" : "msg.invalid", {}, result.ok ? "good" : "bad");
  return result;
}

/** @param {Job} job */
async function start(job) {
  try {
    const { run } = await postJson("/api/runs", { job, values: collect(job) });
    say(job, "msg.started", { id: run.id }, "good");
    if (job === "train" || job === "eval") {
      autoOutput[job] = true;
      updateOutputDirs();
    }
    runs.add(run);
    showTab("runs");
  } catch (error) {
    if (!(error instanceof ApiFailure)) throw error;
    showErrors(job, error.body.errors ?? {});
    const line = statusLine(job);
    line.textContent = error.body.message ?? (error.body.errors ? t("msg.invalid") : error.message);
    line.className = "status-line bad";
  }
}

// ---- tabs ----

/** @param {Job} job @param {Form} form */
function datasetPicker(job, form) {
  const name = DATASET_FIELD[/** @type {"train" | "eval"} */ (job)];
  const control = checklistControl(`${job}-${name}`);
  const box = el("div", { class: "error-box", id: `datasets-error-${job}`, hidden: "" });
  const problems = el("ul", { class: "problems", id: `datasets-problems-${job}` });
  const from = el("div", { class: "help" });
  const reloadButton = label("button", "datasets.reload", { class: "secondary small" });
  const picker = {
    listing: /** @type {any} */ (null),
    async reload() {
      const dir = String(form.get("dataset_dir") ?? "");
      const listing = await getJson(`/api/datasets?dataset_dir=${encodeURIComponent(dir)}`);
      picker.listing = listing;
      control.setOptions(listing.datasets.map((/** @type {any} */ d) => ({ value: d.name, text: `${d.name} (${d.formatting}${d.ranking ? ", ranking" : ""})`, problem: d.problem })));
      control.set(control.get());
      box.textContent = listing.error ?? "";
      box.toggleAttribute("hidden", !listing.error);
      from.textContent = listing.error ? "" : t("datasets.from", { file: listing.file });
      problems.replaceChildren(...listing.datasets.filter((/** @type {any} */ d) => d.problem).map((/** @type {any} */ d) => el("li", {}, [t("datasets.problem", { name: d.name, problem: d.problem })])));
      if (job === "train") preview?.refreshNames();
    },
  };
  reloadButton.addEventListener("click", () => picker.reload());
  datasetPickers[job] = picker;
  onLanguageChange(() => picker.listing && picker.reload());
  const field = form.field(name, { inView: true, control });
  field.append(box, from, problems, reloadButton);
  return field;
}

/** @type {DatasetPreview | null} */
let preview = null;

/** @param {Job} job @param {HTMLElement} root */
function buildJobTab(job, root) {
  const form = new Form(job, schema.fields, () => scheduleCheck());
  forms[job] = form;
  const spec = schema.jobs[job];
  const common = el("div", { class: "grid", id: `common-${job}` });
  for (const name of spec.inView) {
    if (name === DATASET_FIELD[/** @type {"train" | "eval"} */ (job)]) common.append(datasetPicker(job, form));
    else common.append(form.field(name, { inView: true }));
  }
  for (const [name, value] of Object.entries(spec.tabDefaults)) form.set(name, value);
  const sections = spec.sections.map((/** @type {{ group: string, title: string, fields: string[] }} */ section) => {
    const count = el("span", { class: "muted changed" });
    const details = el("details", { class: "section", "data-section": section.title }, [
      el("summary", {}, [label("span", `group.${section.group}`), " ", el("code", {}, [section.title]), " ", count]),
      el("div", { class: "grid" }, section.fields.map((name) => form.field(name))),
    ]);
    const recount = () => {
      const changed = section.fields.filter((name) => form.isChanged(name)).length;
      count.textContent = changed ? `· ${t("section.changed", { count: changed })}` : "";
    };
    details.addEventListener("change", recount);
    onLanguageChange(recount);
    return details;
  });
  const parts = [label("h3", "section.common"), common];
  if (job === "train") {
    preview = new DatasetPreview(() => datasetPickers.train?.listing?.datasets.map((/** @type {any} */ d) => d.name) ?? [], () => collect("train"));
    parts.push(preview.element);
  }
  parts.push(label("h3", "section.more"), ...sections);
  const startButton = label("button", START_LABEL[/** @type {"train" | "eval" | "export"} */ (job)], { id: `start-${job}`, class: "primary" });
  startButton.addEventListener("click", () => start(job));
  // Stop here ends the newest running run this tab started (each run also has its own Stop in Runs).
  const stopButton = label("button", "cmd.stop", { id: `stop-${job}`, class: "stop" });
  stopButton.addEventListener("click", async () => {
    await runs.pollList();
    const running = runs.runs.find((run) => run.job === job && run.status === "running");
    if (!running) return say(job, "msg.noRun", {}, "bad");
    await postJson(`/api/runs/${running.id}/stop`);
    runs.select(running.id);
    showTab("runs");
  });
  const saveName = /** @type {HTMLInputElement} */ (el("input", { id: `save-name-${job}`, type: "text", "data-i18n-placeholder": "cmd.name" }));
  const saveButton = label("button", "cmd.save", { id: `save-${job}`, class: "secondary" });
  const loadSelect = /** @type {HTMLSelectElement} */ (el("select", { id: `load-name-${job}` }));
  const loadButton = label("button", "cmd.load", { id: `load-${job}`, class: "secondary" });
  const refreshSaved = async () => {
    const { names } = await getJson("/api/configs");
    loadSelect.replaceChildren(...names.map((/** @type {string} */ name) => el("option", { value: name }, [name])));
  };
  saveButton.addEventListener("click", async () => {
    try {
      const { path } = await postJson("/api/configs", { job, name: saveName.value.trim(), values: collect(job) });
      say(job, "msg.saved", { path }, "good");
      refreshSaved();
    } catch (error) {
      if (!(error instanceof ApiFailure)) throw error;
      showErrors(job, error.body.errors ?? {});
      statusLine(job).textContent = error.message;
      statusLine(job).className = "status-line bad";
    }
  });
  loadButton.addEventListener("click", async () => {
    if (!loadSelect.value) return;
    const { values } = await getJson(`/api/configs/${encodeURIComponent(loadSelect.value)}`);
    for (const [name, value] of Object.entries(values)) {
      if (top.controls.has(name)) top.set(name, value);
      else form.set(name, value);
    }
    if (job === "train" || job === "eval") autoOutput[job] = !("output_dir" in values);
    await datasetPickers[job]?.reload();
    for (const [name, value] of Object.entries(values)) if (name === DATASET_FIELD[/** @type {"train" | "eval"} */ (job)]) form.set(name, value);
    say(job, "msg.loaded", { name: loadSelect.value }, "good");
    topChanged();
  });
  refreshSaved();
  const actions = el("div", { class: "actions" }, [
    el("div", { class: "buttons" }, [startButton, stopButton, saveName, saveButton, loadSelect, loadButton]),
    el("p", { class: "status-line", id: `status-${job}`, role: "status" }),
    el("ul", { class: "notices", id: `notices-${job}` }),
    label("h3", "cmd.preview"),
    el("pre", { class: "yaml", id: `yaml-${job}` }),
  ]);
  root.append(...parts, actions);
  const outputInput = form.controls.get("output_dir")?.element;
  outputInput?.addEventListener("input", () => (autoOutput[/** @type {"train" | "eval"} */ (job)] = false));
  form.controls.get("dataset_dir")?.element.addEventListener("change", () => datasetPickers[job]?.reload());
}

/** @param {string} tab */
function showTab(tab) {
  activeTab = tab;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.getAttribute("data-tab") === tab);
  for (const section of document.querySelectorAll("main > section.tab")) section.toggleAttribute("hidden", section.id !== `tab-${tab}`);
  const hash = tab === "runs" && runs?.selected ? `#runs/${runs.selected}` : `#${tab}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  if (tab !== "runs") scheduleCheck();
  // Outputs of runs that finished since are offered in the picker.
  if (!chatOnly && tab !== "runs") refreshCheckpoints();
}

// ---- start ----

/** @type {RunsTab} */
let runs = /** @type {any} */ (null);
const chatForm = new Form("chat", schema.fields, () => scheduleCheck());
// Chat settings go out only where they differ from the defaults: the rest keep the loaded model's.
for (const name of schema.jobs.chat.inView) chatForm.field(name);
const chatBoard = {
  chatOnly,
  loadValues: () => ({ ...collect("chat") }),
  showErrors: (/** @type {Record<string, string>} */ errors) => showErrors("chat", errors),
};
forms.chat = chatForm;

const languageSelect = /** @type {HTMLSelectElement} */ (document.getElementById("lang"));
languageSelect.addEventListener("change", () => setLanguage(languageSelect.value));

if (chatOnly) {
  document.body.classList.add("chat-only");
  restoreForms();
  new ChatTab(/** @type {HTMLElement} */ (document.getElementById("tab-chat")), chatForm, chatBoard);
  showTab("chat");
} else {
  buildTopBar();
  for (const job of /** @type {("train" | "eval" | "export")[]} */ (["train", "eval", "export"])) buildJobTab(job, /** @type {HTMLElement} */ (document.getElementById(`tab-${job}`)));
  new ChatTab(/** @type {HTMLElement} */ (document.getElementById("tab-chat")), chatForm, chatBoard);
  runs = new RunsTab(/** @type {HTMLElement} */ (document.getElementById("tab-runs")));
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => showTab(String(button.getAttribute("data-tab"))));
  const wanted = location.hash.slice(1);
  if (wanted.startsWith("runs/")) {
    runs.select(wanted.slice(5));
    showTab("runs");
  } else showTab(["train", "eval", "chat", "export", "runs"].includes(wanted) ? wanted : "train");
  const origSelect = runs.select.bind(runs);
  runs.select = (id) => {
    origSelect(id);
    if (activeTab === "runs") history.replaceState(null, "", `#runs/${id}`);
  };
  restoreForms();
  updateOutputDirs();
  refreshCheckpoints();
  datasetPickers.train.reload();
  datasetPickers.eval.reload();
}
setLanguage(initialLanguage());
languageSelect.value = document.documentElement.lang.startsWith("zh") ? "zh" : "en";
translate();
document.body.dataset.ready = "true";
