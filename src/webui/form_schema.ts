// The web board's forms, generated from the parameter declarations (src/hparams): every field of
// a job's command with its kind, default, choices, bounds, help and tier, placed in the top bar,
// in view, or in collapsible groups that follow the declarations' own sections. Declaring a field
// adds it to the form. Layout after LLaMA-Factory's LlamaBoard (top bar; Train, Evaluate & Predict,
// Chat and Export tabs).
import { type Command, commandGroups, groupByKey } from "../hparams/index.ts";
import type { Field, GroupKey } from "../hparams/schema.ts";
import { formatValue } from "../hparams/schema.ts";

export type JobName = "train" | "eval" | "export" | "chat";

export const JOB_NAMES: readonly JobName[] = ["train", "eval", "export", "chat"];

/** The `lmf` command each job runs (Evaluate & Predict is `lmf train` without do_train, as in LlamaBoard). */
export const JOB_COMMAND: Readonly<Record<JobName, Command>> = { train: "train", eval: "train", export: "export", chat: "chat" };

/** Shared by every tab: the model and how it is loaded. */
export const TOP_BAR = ["model_name_or_path", "finetuning_type", "adapter_name_or_path", "quantization_bit", "template"] as const;

/** Settings a job always has; not shown (Train trains, Evaluate & Predict does not). */
export const FIXED: Readonly<Record<JobName, Readonly<Record<string, unknown>>>> = {
  train: { do_train: true },
  eval: { do_train: false },
  export: {},
  chat: {},
};

/** The fields each tab shows in view (LlamaBoard's common settings); every other field is in the groups. */
export const IN_VIEW: Readonly<Record<JobName, readonly string[]>> = {
  train: [
    "stage", "dataset_dir", "dataset", "output_dir",
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "cutoff_len", "max_samples", "lr_scheduler_type", "warmup_ratio", "logging_steps", "save_steps", "val_size", "bf16",
    "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
  ],
  eval: [
    "dataset_dir", "eval_dataset", "output_dir", "do_eval", "do_predict", "predict_with_generate",
    "cutoff_len", "max_samples", "per_device_eval_batch_size", "max_new_tokens", "top_p", "temperature",
  ],
  export: ["export_dir", "export_size", "export_device", "export_legacy_format", "export_quantization_bit", "export_quantization_dataset", "export_hub_model_id"],
  chat: ["infer_dtype", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty"],
};

/** Values a tab starts with where LlamaBoard's differ from the declared defaults. */
export const TAB_DEFAULTS: Readonly<Record<JobName, Readonly<Record<string, string | boolean>>>> = {
  train: { per_device_train_batch_size: "2", gradient_accumulation_steps: "8", logging_steps: "5", save_steps: "100", max_samples: "100000" },
  eval: { do_predict: true, predict_with_generate: true, max_samples: "100" },
  export: {},
  chat: {},
};

/** One field as the page renders and checks it. */
export interface FormField {
  name: string;
  group: GroupKey;
  kind: Field["kind"];
  /** The default as the page writes it in an input ("" for null). */
  defaultText: string;
  default: unknown;
  nullable: boolean;
  help: string;
  tier: Field["tier"];
  noEffect?: string;
  choices?: readonly (string | number)[];
  choiceTiers?: Readonly<Record<string, string>>;
  min?: number;
  max?: number;
}

export interface FormSection {
  group: GroupKey;
  /** The declarations' section title (`LoraArguments`). */
  title: string;
  fields: string[];
}

export interface JobForm {
  command: Command;
  inView: string[];
  sections: FormSection[];
  fixed: Readonly<Record<string, unknown>>;
  tabDefaults: Readonly<Record<string, string | boolean>>;
}

export interface FormSchema {
  /** Every field of every job, by name (a name means the same field in every command that has it). */
  fields: Record<string, FormField>;
  topBar: readonly string[];
  jobs: Record<JobName, JobForm>;
}

function formField(name: string, group: GroupKey, spec: Field): FormField {
  return {
    name,
    group,
    kind: spec.kind,
    default: spec.default,
    defaultText: spec.default === null ? "" : formatValue(spec.default),
    nullable: spec.nullable,
    help: spec.help,
    tier: spec.tier,
    ...(spec.noEffect && { noEffect: spec.noEffect }),
    ...(spec.choices && { choices: spec.choices }),
    ...(spec.choiceTiers && { choiceTiers: spec.choiceTiers }),
    ...(spec.min !== undefined && { min: spec.min }),
    ...(spec.max !== undefined && { max: spec.max }),
  };
}

/** The declared fields a command reads, by name, each with its group (derived fields left out: users do not set them). */
export function commandFields(command: Command): Map<string, { group: GroupKey; spec: Field }> {
  const fields = new Map<string, { group: GroupKey; spec: Field }>();
  for (const key of commandGroups[command]) {
    for (const [name, spec] of Object.entries(groupByKey(key).fields)) if (!spec.derived && !fields.has(name)) fields.set(name, { group: key, spec });
  }
  return fields;
}

export function buildFormSchema(): FormSchema {
  const fields: Record<string, FormField> = {};
  const jobs = {} as Record<JobName, JobForm>;
  for (const job of JOB_NAMES) {
    const command = JOB_COMMAND[job];
    const declared = commandFields(command);
    for (const [name, { group, spec }] of declared) fields[name] ??= formField(name, group, spec);
    const placed = new Set<string>([...TOP_BAR, ...IN_VIEW[job], ...Object.keys(FIXED[job])]);
    const sections: FormSection[] = [];
    for (const key of commandGroups[command]) {
      for (const [title, sectionFields] of groupByKey(key).sections) {
        const names = Object.keys(sectionFields).filter((name) => declared.get(name)?.group === key && !placed.has(name));
        if (names.length) sections.push({ group: key, title, fields: names });
      }
    }
    jobs[job] = { command, inView: [...IN_VIEW[job]], sections, fixed: FIXED[job], tabDefaults: TAB_DEFAULTS[job] };
  }
  return { fields, topBar: TOP_BAR, jobs };
}
