// Runs every benchmark in bench/ (each bench/*.ts except this file) in turn, each in its own
// process so one's memory and threads do not colour the next. Used by `npm run bench`.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const self = fileURLToPath(import.meta.url);
const here = dirname(self);
const benches = readdirSync(here)
  .filter((name) => name.endsWith(".ts") && name !== basename(self))
  .sort();
let failed = 0;
for (const name of benches) {
  console.log(`\n=== bench/${name}`);
  const result = spawnSync(process.execPath, ["--import", "tsx", join(here, name)], { stdio: "inherit" });
  if (result.status !== 0) {
    failed += 1;
    console.error(`bench/${name} failed (exit ${result.status ?? result.signal})`);
  }
}
process.exit(failed ? 1 : 0);
