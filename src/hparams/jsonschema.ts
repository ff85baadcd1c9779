// JSON Schema (draft 2020-12) of a command's config file, generated from the declarations, for
// editors and the web board's forms. Derived fields are left out: users do not set them.
import { type Command, commandGroups, groupByKey } from "./index.ts";
import type { Field } from "./schema.ts";

type Schema = Record<string, unknown>;

function fieldSchema(spec: Field): Schema {
  const byKind: Record<Field["kind"], Schema> = {
    str: { type: "string" },
    int: { type: "integer" },
    float: { type: "number" },
    bool: { type: "boolean" },
    enum: { type: "string", enum: spec.choices },
    list: { anyOf: [{ type: "array", items: { type: "string" } }, { type: "string" }] },
    floats: { anyOf: [{ type: "array", items: { type: "number" } }, { type: "string" }] },
    json: { anyOf: [{ type: "object" }, { type: "string" }] },
  };
  const schema: Schema = { ...byKind[spec.kind], description: spec.help, default: spec.default };
  if (spec.kind === "int" && spec.choices) schema.enum = spec.choices;
  if (spec.min !== undefined) schema.minimum = spec.min;
  if (spec.max !== undefined) schema.maximum = spec.max;
  if (spec.tier !== "now") schema["x-tier"] = spec.tier;
  if (spec.noEffect) schema["x-no-effect"] = spec.noEffect;
  return spec.nullable ? { anyOf: [schema, { type: "null" }], description: spec.help, default: spec.default } : schema;
}

export function toJsonSchema(command: Command): Schema {
  const properties: Record<string, Schema> = {};
  for (const key of commandGroups[command]) {
    for (const [name, spec] of Object.entries(groupByKey(key).fields)) {
      if (spec.derived) continue;
      properties[name] = fieldSchema(spec);
      for (const alias of spec.aliases ?? []) properties[alias] = { ...fieldSchema(spec), deprecated: true };
    }
  }
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: `lmf ${command} config`,
    type: "object",
    properties,
    additionalProperties: false,
  };
}
