// The demo's data, tokenizer and model config are made by scripts/make-demo-data.ts: regenerating
// them gives exactly the committed files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

test("scripts/make-demo-data.ts reproduces examples/demo byte for byte", () => {
  const out = mkdtempSync(join(tmpdir(), "lmf-demo-data-"));
  execFileSync(process.execPath, ["--import", "tsx", "scripts/make-demo-data.ts"], { env: { ...process.env, DEMO_DATA_OUT: out } });
  for (const file of ["corpus.jsonl", "identity.json", "dataset_info.json", "tiny-llama/tokenizer.json", "tiny-llama/tokenizer_config.json", "tiny-llama/config.json", "tiny-llama/generation_config.json"]) {
    assert.ok(readFileSync(join(out, file)).equals(readFileSync(join("examples/demo", file))), file);
  }
});
