// How a parameter is declared: one entry per field (type, default, choices, bounds, help, tier,
// old names), written once in the group files; the TS types, parsing, help text, JSON Schema and
// web forms all derive from these entries. Mirrors LLaMA-Factory's dataclass `field(...)`.

/**
 * now: does its work (a test shows it: tests/hparams/behaviour_links.ts); noop: accepted, but
 * changes nothing in lmfactory (its `noEffect` says why; a non-default value gets one notice);
 * later: refused until built; out: never planned.
 */
export type Tier = "now" | "noop" | "later" | "out";

/** What one value of a field can be: `infer_backend: vllm` is out while the field is noop. */
export type ValueTier = Exclude<Tier, "noop">;

export type Kind = "str" | "int" | "float" | "bool" | "list" | "floats" | "enum" | "json";

/** A dict-or-JSON-string value (`lr_scheduler_kwargs`, `deepspeed`, `vllm_config`). */
export type JsonValue = Record<string, unknown> | string;

export interface Field<T = unknown> {
  readonly kind: Kind;
  readonly default: T;
  readonly nullable: boolean;
  readonly help: string;
  readonly tier: Tier;
  /** Why the field changes nothing in lmfactory: present exactly when `tier` is "noop". */
  readonly noEffect?: string;
  /** Allowed values: strings for `enum`, numbers for `int` fields such as `quantization_bit`. */
  readonly choices?: readonly (string | number)[];
  /** Per-value tiers, e.g. `stage: dpo` is "later" while `stage: sft` works now. */
  readonly choiceTiers?: Readonly<Record<string, ValueTier>>;
  readonly min?: number;
  readonly max?: number;
  /** Old names still found in configs; accepted with a warning naming the new one. */
  readonly aliases?: readonly string[];
  /** Set by lmfactory from other fields (`compute_dtype`); users may not set it. */
  readonly derived?: boolean;
  /** Only matters to `lmf train`; other commands do not refuse its unsupported values. */
  readonly trainOnly?: boolean;
  /** Phantom member carrying the value type; never set at runtime. */
  readonly __type?: T;
}

export type Fields = Readonly<Record<string, Field<any>>>;

/** The plain object type a group of declarations parses into. */
export type ArgsOf<F extends Fields> = { -readonly [K in keyof F]: F[K] extends Field<infer T> ? T : never };

interface CommonOptions {
  aliases?: readonly string[];
  min?: number;
  max?: number;
  choiceTiers?: Readonly<Record<string, ValueTier>>;
  trainOnly?: boolean;
}

/** A field either has a tier, or says why it has no effect (which makes its tier "noop"). */
type Options = CommonOptions & ({ tier?: ValueTier; noEffect?: never } | { noEffect: string; tier?: never });

function field<T>(kind: Kind, defaultValue: T, nullable: boolean, help: string, options: Options = {}): Field<T> {
  const { tier, noEffect, ...rest } = options;
  return { kind, default: defaultValue, nullable, help, tier: noEffect ? "noop" : (tier ?? "now"), ...(noEffect ? { noEffect } : {}), ...rest };
}

export const str = (defaultValue: string, help: string, options?: Options): Field<string> =>
  field("str", defaultValue, false, help, options);
export const optStr = (help: string, options?: Options): Field<string | null> =>
  field<string | null>("str", null, true, help, options);
export const int = (defaultValue: number, help: string, options?: Options): Field<number> =>
  field("int", defaultValue, false, help, options);
export const optInt = (help: string, options?: Options & { choices?: readonly number[] }): Field<number | null> =>
  field<number | null>("int", null, true, help, options);
export const float = (defaultValue: number, help: string, options?: Options): Field<number> =>
  field("float", defaultValue, false, help, options);
export const optFloat = (help: string, options?: Options): Field<number | null> =>
  field<number | null>("float", null, true, help, options);
export const bool = (defaultValue: boolean, help: string, options?: Options): Field<boolean> =>
  field("bool", defaultValue, false, help, options);
export const optBool = (defaultValue: boolean | null, help: string, options?: Options): Field<boolean | null> =>
  field<boolean | null>("bool", defaultValue, true, help, options);
/** A list of strings: a YAML list or a comma-separated string (`lora_target: q_proj,v_proj`). */
export const list = (defaultValue: string[], help: string, options?: Options): Field<string[]> =>
  field("list", defaultValue, false, help, options);
export const optList = (help: string, options?: Options): Field<string[] | null> =>
  field<string[] | null>("list", null, true, help, options);
export const optFloats = (help: string, options?: Options): Field<number[] | null> =>
  field<number[] | null>("floats", null, true, help, options);
export const optJson = (help: string, options?: Options): Field<JsonValue | null> =>
  field<JsonValue | null>("json", null, true, help, options);

export function choice<const C extends readonly string[]>(
  choices: C,
  defaultValue: C[number],
  help: string,
  options?: Options,
): Field<C[number]> {
  return { ...field<C[number]>("enum", defaultValue, false, help, options), choices };
}

export function optChoice<const C extends readonly string[]>(
  choices: C,
  help: string,
  options?: Options,
): Field<C[number] | null> {
  return { ...field<C[number] | null>("enum", null, true, help, options), choices };
}

/** Same declaration as `optInt` but restricted to `choices` (e.g. quantization bits {4, 8}). */
export function intChoice(choices: readonly number[], help: string, options?: Options): Field<number | null> {
  return { ...field<number | null>("int", null, true, help, options), choices };
}

export const derived = <T>(kind: Kind, defaultValue: T, help: string): Field<T> => ({
  ...field(kind, defaultValue, true, help),
  derived: true,
});

/** An optional field whose upstream default is not null (`badam_switch_interval: 50`). */
export const withDefault = <T>(spec: Field<T>, defaultValue: T): Field<T> => ({ ...spec, default: defaultValue });

/** Marks every field of a section as meaningful to training only. */
export function trainOnly<F extends Fields>(fields: F): F {
  return Object.fromEntries(Object.entries(fields).map(([name, spec]) => [name, { ...spec, trainOnly: true }])) as F;
}

/** An argument group (`ModelArguments`), its key in the parsed result and its help sections. */
export interface Group<F extends Fields = Fields> {
  readonly name: string;
  readonly key: GroupKey;
  readonly fields: F;
  readonly sections: readonly (readonly [title: string, fields: Fields])[];
  /** LLaMA-Factory's `to_dict()` for this group, when it differs from a plain copy. */
  readonly toDict?: (values: Record<string, unknown>) => Record<string, unknown>;
}

export type GroupKey = "model" | "data" | "training" | "finetuning" | "generating" | "evaluation";

export function defineGroup<F extends Fields>(
  name: string,
  key: GroupKey,
  sections: readonly (readonly [string, Fields])[],
  toDict?: Group["toDict"],
): Group<F> {
  const fields = Object.assign({}, ...sections.map(([, sectionFields]) => sectionFields)) as F;
  return { name, key, fields, sections, toDict };
}

export function defaultsOf<F extends Fields>(fields: F): ArgsOf<F> {
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(fields)) values[name] = structuredClone(spec.default);
  return values as ArgsOf<F>;
}

/** `int?`, `enum{lora, freeze}`, `list` — the type as PARAMETERS.md and the help text write it. */
export function typeLabel(spec: Field): string {
  const base =
    spec.kind === "enum"
      ? `enum{${spec.choices!.join(", ")}}`
      : spec.kind === "int" && spec.choices
        ? `int{${spec.choices.join(", ")}}`
        : spec.kind === "floats"
          ? "list[float]"
          : spec.kind === "json"
            ? "dict|json"
            : spec.kind;
  return spec.nullable ? `${base}?` : base;
}

export function formatValue(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (Array.isArray(value)) return value.join(",");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
