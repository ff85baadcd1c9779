// Runs every tests/**/*.test.ts with Node's test runner through the tsx loader.
// (Node 20's --test does not expand globs or pick up .ts files by itself.)
// Extra arguments narrow the run: `node scripts/run-tests.mjs tests/torch`.
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

function collect(path, out) {
  if (statSync(path).isDirectory()) {
    for (const name of readdirSync(path).sort()) collect(join(path, name), out);
  } else if (path.endsWith(".test.ts")) {
    out.push(path);
  }
  return out;
}

const roots = process.argv.slice(2).length ? process.argv.slice(2) : ["tests"];
const files = roots.flatMap((root) => collect(root, []));
if (files.length === 0) {
  console.error(`no test files under ${roots.join(", ")}`);
  process.exit(1);
}
const result = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-concurrency=2", ...files], {
  stdio: "inherit",
});
process.exit(result.status ?? 1);
