// The README's first command, `npm run demo` (without the set-up part): pre-training and LoRA SFT
// through the real `lmf train`, and the answers change from story text to the trained ones.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

test("the demo pre-trains, fine-tunes with LoRA, and the model answers as it was taught", () => {
  const saves = mkdtempSync(join(tmpdir(), "lmf-demo-"));
  const stdout = execFileSync(process.execPath, ["--import", "tsx", "examples/demo/demo.ts"], {
    env: { ...process.env, DEMO_SAVES: saves },
    stdio: ["ignore", "pipe", "pipe"],
    maxBuffer: 1 << 24,
  }).toString();
  const [before, after] = stdout.split("After LoRA fine-tuning on the identity set:");
  assert.ok(before && after, stdout);
  const answerTo = (section: string, question: string) => new RegExp(`user: ${question.replace("?", "\\?")}\\n  model: (.*)`).exec(section)?.[1] ?? "";
  assert.doesNotMatch(answerTo(before, "Who are you?"), /Pico/);
  assert.match(answerTo(after, "Who are you?"), /I am Pico, a tiny assistant trained with lmfactory\./);
  assert.match(answerTo(after, "What color is the kite?"), /The kite is red\./);
  for (const plot of ["pretrain/training_loss.png", "lora-sft/training_loss.png"]) assert.ok(existsSync(join(saves, plot)), plot);
});
