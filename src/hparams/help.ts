// Help text generated from the declarations: every field of a command's groups with its type,
// default, choices, tier and help (`lmf train --help`), one field in detail (`lmf help lora_rank`).
import { UserError } from "../errors.ts";
import { type Command, allGroups, commandGroups, groupByKey } from "./index.ts";
import { foreignKeys } from "./foreign_keys.ts";
import { closestName } from "../names.ts";
import { foreignKeyError } from "./parser.ts";
import { type Field, type Group, formatValue, typeLabel } from "./schema.ts";

const TIER_NOTES = { now: "", later: " [not yet supported]", out: " [out of scope]" } as const;

function tierNote(spec: Field): string {
  const valueTiers = Object.entries(spec.choiceTiers ?? {});
  if (valueTiers.length && (spec.tier === "later" || spec.tier === "out")) {
    // Values listed with their own tier (report_to: none/tensorboard/all) work; the rest do not yet.
    const supported = valueTiers.filter(([, tier]) => tier === "now").map(([value]) => value);
    return ` [supported: ${supported.join(", ")}; other values ${spec.tier === "out" ? "out of scope" : "not yet"}]`;
  }
  const laterValues = valueTiers.filter(([, tier]) => tier !== "now");
  const valuesNote = laterValues.length
    ? ` [not yet supported: ${laterValues.map(([value, tier]) => (tier === "out" ? `${value} (out of scope)` : value)).join(", ")}]`
    : "";
  const fieldNote = spec.tier === "noop" ? ` [no effect in lmfactory: ${spec.noEffect}]` : TIER_NOTES[spec.tier];
  return fieldNote + valuesNote;
}

/** The tier line of `lmf help <key>`: per value when values differ from the field. */
function tierLine(spec: Field): string {
  const valueTiers = Object.entries(spec.choiceTiers ?? {});
  const fieldTier = spec.tier === "noop" ? "noop (accepted, no effect in lmfactory)" : spec.tier;
  if (!valueTiers.length) return fieldTier;
  const byTier = new Map<string, string[]>();
  for (const [value, tier] of valueTiers) byTier.set(tier, [...(byTier.get(tier) ?? []), value]);
  const listed = [...byTier].map(([tier, values]) => `${tier} for ${values.join(", ")}`);
  return `${listed.join("; ")}; ${fieldTier} for any other value`;
}

function fieldLine(name: string, spec: Field): string {
  const aliases = spec.aliases?.length ? `; old name ${spec.aliases.join(", ")}` : "";
  const head = `    ${name}  ${typeLabel(spec)}  (default: ${formatValue(spec.default)}${aliases})`;
  return `${head}\n        ${spec.help}${tierNote(spec)}${spec.derived ? " [derived]" : ""}`;
}

function groupHelp(group: Group): string {
  const lines = [`${group.name}`];
  for (const [title, fields] of group.sections) {
    if (group.sections.length > 1) lines.push(`  ${title}`);
    for (const [name, spec] of Object.entries(fields)) lines.push(fieldLine(name, spec));
  }
  return lines.join("\n");
}

export function commandHelp(command: Command): string {
  const header = [
    `usage: lmf ${command} [config.yaml|config.json] [key=value ...] [--key value ...]`,
    "",
    "Keys are LLaMA-Factory's. A config file comes first; key=value or --key value after it override it.",
    "Lists take YAML lists or comma-separated strings; optional values take null (or None).",
    ...(command === "train" ? [] : ["Keys of groups this command does not use (e.g. training keys) are ignored with a notice."]),
  ].join("\n");
  return [header, ...commandGroups[command].map((key) => groupHelp(groupByKey(key)))].join("\n\n");
}

/** Every field of every group, as `lmf help` prints it after the command list. */
export function allFieldsHelp(): string {
  return allGroups.map(groupHelp).join("\n\n");
}

export function fieldHelp(name: string): string {
  const hits = allGroups.flatMap((group) => {
    const direct = group.fields[name] ? [[name, group.fields[name]!] as const] : [];
    const byAlias = Object.entries(group.fields).filter(([, spec]) => spec.aliases?.includes(name));
    return [...direct, ...byAlias].map(([fieldName, spec]) => ({ group, fieldName, spec }));
  });
  if (hits.length === 0) {
    const foreign = foreignKeys[name];
    if (foreign) throw foreignKeyError(name, foreign, "lmf help");
    const names = allGroups.flatMap((group) => Object.keys(group.fields));
    const guess = closestName(name, names);
    throw new UserError(`unknown key \`${name}\``, "lmf help", guess ? `did you mean \`${guess}\`?` : "run `lmf help` for every key");
  }
  return hits
    .map(({ group, fieldName, spec }) => {
      const commands = (Object.keys(commandGroups) as Command[]).filter((command) => commandGroups[command].includes(group.key));
      const lines = [
        `${fieldName}  (${group.name})`,
        `  ${spec.help}${tierNote(spec)}`,
        `  type:     ${typeLabel(spec)}`,
        `  default:  ${formatValue(spec.default)}`,
      ];
      if (spec.choices) lines.push(`  choices:  ${spec.choices.join(", ")}`);
      if (spec.min !== undefined || spec.max !== undefined) lines.push(`  range:    [${spec.min ?? "-inf"}, ${spec.max ?? "inf"}]`);
      if (spec.aliases?.length) lines.push(`  old names: ${spec.aliases.join(", ")}`);
      lines.push(`  tier:     ${tierLine(spec)}${spec.derived ? " (derived; set by lmfactory)" : ""}`);
      lines.push(`  commands: ${commands.map((command) => `lmf ${command}`).join(", ")}`);
      return lines.join("\n");
    })
    .join("\n\n");
}
