// Every YAML under examples/ parses with the command its folder is for. Examples whose features
// are built parse strictly; any whose feature is not built yet parse once "not yet supported"
// refusals are set aside, and are refused until then.
import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import { parse } from "yaml";
import { type Command, commandGroups, groupByKey } from "../../src/hparams/index.ts";
import { parseWith } from "./helpers.ts";

const root = new URL("../../examples/", import.meta.url).pathname;

function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) return yamlFiles(path);
      return /\.ya?ml$/.test(name) ? [path] : [];
    });
}

function commandFor(path: string): Command {
  const folder = relative(root, path).split("/")[0];
  if (folder === "merge_lora") return "export";
  if (folder === "inference") return "chat";
  if (folder === "eval") return "eval";
  return "train";
}

const needsLaterFeatures = new Set<string>([]);

/** The keys of a config whose fields have no effect in lmfactory and that the command reads, in declaration order. */
function noEffectKeysIn(path: string, command: Command): string[] {
  const given = parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  return commandGroups[command]
    .flatMap((key) => Object.entries(groupByKey(key).fields))
    .filter(([name, spec]) => spec.tier === "noop" && name in given && !isDeepStrictEqual(given[name], spec.default))
    .map(([name]) => name);
}

const files = yamlFiles(root);

test("examples/ holds the expected number of configs", () => {
  assert.equal(files.length, 32);
});

for (const path of files) {
  const name = relative(root, path);
  test(`examples/${name} parses with lmf ${commandFor(path)}`, () => {
    const command = commandFor(path);
    const { notices } = parseWith(command, [path], { allowUnsupported: true });
    // LLaMA-Factory's configs set keys that change nothing here (trust_remote_code, ddp_timeout, ...):
    // each gets its no-effect notice, and nothing else is noticed.
    const noEffect = noEffectKeysIn(path, command);
    assert.deepEqual(notices.map((notice) => notice.match(/^`(\w+): /)?.[1]), noEffect, notices.join("\n"));
    for (const notice of notices) assert.match(notice, /has no effect in lmfactory: \w/);
    if (needsLaterFeatures.has(name)) {
      assert.throws(() => parseWith(command, [path]), /not yet supported/);
    } else {
      assert.doesNotThrow(() => parseWith(command, [path]));
    }
  });
}
