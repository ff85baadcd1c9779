// The rule "accepted means honoured", enforced: every declared field that does its work links the
// test that shows its effect (tests/hparams/behaviour_links.ts), and every link points at a test
// that exists, by its exact name, read from the test file's text.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { type Field, allGroups } from "../../src/hparams/index.ts";
import { AWAITING_BEHAVIOUR_TEST, BEHAVIOUR_LINKS, type Link } from "./behaviour_links.ts";

const root = new URL("../../", import.meta.url).pathname;

/** A field does work when its tier is now, or when some of its values are (report_to: tensorboard). */
const doesWork = (spec: Field) => !spec.derived && (spec.tier === "now" || Object.values(spec.choiceTiers ?? {}).includes("now"));

/** Field name -> how many groups declare it with work to do (seed: TrainingArguments and EvaluationArguments). */
const working = new Map<string, number>();
const declared = new Set<string>();
for (const group of allGroups) {
  for (const [name, spec] of Object.entries(group.fields)) {
    declared.add(name);
    if (doesWork(spec)) working.set(name, (working.get(name) ?? 0) + 1);
  }
}

const linksOf = (name: string): readonly Link[] => {
  const entry = BEHAVIOUR_LINKS[name];
  if (!entry) return [];
  return typeof entry[0] === "string" ? [entry as Link] : (entry as readonly Link[]);
};

/** The names of `test("...")` / `it("...")` calls written as plain string literals in a test file. */
function testNames(source: string): Set<string> {
  const names = new Set<string>();
  const call = /\b(?:test|it)\(\s*(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|`((?:[^`\\$]|\\.)*)`)/g;
  for (const match of source.matchAll(call)) {
    if (match[1] !== undefined) names.add(JSON.parse(`"${match[1]}"`) as string);
    else names.add((match[2] ?? match[3]!).replace(/\\(.)/g, "$1"));
  }
  return names;
}

test("test names are read from plain string literals, not from template strings with values", () => {
  const source = [
    'test("a \\"quoted\\" name", () => {});',
    "  it('single', async () => {});",
    "test(`backtick`, () => {});",
    "test(`pt with ${name}`, () => {});",
    'describe("a suite", () => {});',
  ].join("\n");
  assert.deepEqual([...testNames(source)], ['a "quoted" name', "single", "backtick"]);
});

test("every parameter that does its work links a test that shows its effect", () => {
  const tolerated = new Set(AWAITING_BEHAVIOUR_TEST);
  const missing = [...working].filter(([name, groups]) => !tolerated.has(name) && linksOf(name).length < groups).map(([name]) => name);
  assert.deepEqual(missing, [], `fields accepted as working with no behaviour test linked in tests/hparams/behaviour_links.ts: ${missing.join(", ")}`);
  assert.deepEqual([...AWAITING_BEHAVIOUR_TEST], [], `fields still awaiting a behaviour test: ${AWAITING_BEHAVIOUR_TEST.join(", ")}`);
});

test("links name declared fields, and only fields that do work", () => {
  for (const name of Object.keys(BEHAVIOUR_LINKS)) {
    assert.ok(working.has(name), `${name} is linked but is ${declared.has(name) ? "noop, later or out" : "not a declared field"}`);
  }
});

test("every link names an existing test file and a test in it by its exact name", () => {
  const names = new Map<string, Set<string>>();
  const broken: string[] = [];
  for (const name of Object.keys(BEHAVIOUR_LINKS)) {
    for (const [file, testName] of linksOf(name)) {
      const path = join(root, file);
      if (!existsSync(path)) {
        broken.push(`${name}: no file ${file}`);
        continue;
      }
      if (!names.has(file)) names.set(file, testNames(readFileSync(path, "utf8")));
      if (!names.get(file)!.has(testName)) broken.push(`${name}: ${file} has no test named "${testName}"`);
    }
  }
  assert.deepEqual(broken, []);
});
