#!/usr/bin/env node
// The `lmf` executable: runs the compiled CLI in dist/ when it was built from the sources beside it
// (an installed package, or a clone after `npm run build`), else the TypeScript sources in src/
// through the tsx loader (development: an edit takes effect without a build).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { sourceFingerprint } from "./fingerprint.mjs";

const root = fileURLToPath(new URL("..", import.meta.url));

function distIsCurrent() {
  try {
    const build = JSON.parse(readFileSync(`${root}dist/BUILD.json`, "utf8"));
    return build.sources === sourceFingerprint(root);
  } catch {
    return false; // no dist/ (a fresh clone) or no src/
  }
}

async function sourceMain() {
  let tsx;
  try {
    tsx = await import("tsx/esm/api");
  } catch {
    console.error("error: dist/ is missing or was built from other sources, and tsx (to run src/) is not installed (run `npm run build` in the lmfactory folder, or reinstall lmfactory)");
    process.exit(1);
  }
  tsx.register();
  return (await import("../src/cli.ts")).main;
}

const main = distIsCurrent() ? (await import("../dist/cli.js")).main : await sourceMain();
process.exitCode = await main(process.argv);
