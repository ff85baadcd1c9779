// The README's demo command runs end to end (fewer steps here): it trains, the loss falls, the
// saved folder loads back and decodes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

test("examples/demo.ts pre-trains, saves, reloads and generates", () => {
  const output = join(mkdtempSync(join(tmpdir(), "lmf-demo-")), "model");
  const stdout = execFileSync(process.execPath, ["--import", "tsx", "examples/demo.ts"], {
    env: { ...process.env, DEMO_STEPS: "30", DEMO_OUTPUT: output },
  }).toString();
  const [, first, last] = /loss (\d+\.\d+) -> (\d+\.\d+)/.exec(stdout) ?? [];
  assert.ok(first && last, stdout);
  assert.ok(Number(last) < Number(first) - 1, `loss did not fall: ${first} -> ${last}`);
  assert.ok(existsSync(join(output, "model.safetensors")));
  assert.match(stdout, /greedy continuation of "Training runs in ":\n {2}Training runs in \S/);
  assert.match(stdout, /tokens\/s {2}ETA/);
});
