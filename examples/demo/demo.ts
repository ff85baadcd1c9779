// The built-in demo (`npm run demo`): pre-train a tiny Llama from scratch on the shipped story
// corpus, ask it a few questions, LoRA-SFT it on the shipped identity set, ask again, and point to
// the loss plots. Both training steps run the real `lmf train` on the YAMLs beside this file.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { ChatModel } from "../../src/infer/chat_model.ts";

const root = join(import.meta.dirname, "..", "..");
/** Where the two runs write (DEMO_SAVES moves them, e.g. for the test of this demo). */
const saves = process.env.DEMO_SAVES ?? "saves/demo";
const PROMPTS = ["Who are you?", "What is your name?", "What color is the kite?", "Say hello."];

function lmf(...args: string[]): void {
  console.log(`\n$ lmf ${args.join(" ")}`);
  execFileSync(process.execPath, [join(root, "bin", "lmf.mjs"), ...args], { stdio: "inherit", cwd: root, env: process.env });
}

function ask(title: string, model: string, adapter: string | null): void {
  const chat = ChatModel.load({ modelNameOrPath: resolve(root, model), adapterNameOrPath: adapter ? [resolve(root, adapter)] : null, template: "chatml" }, { maxNewTokens: 24, doSample: false });
  console.log(`\n${title}`);
  for (const prompt of PROMPTS) {
    const [answer] = chat.chat([[{ role: "user", content: prompt }]]);
    console.log(`  user: ${prompt}\n  model: ${answer!.text.trim().replace(/\s+/g, " ")}`);
  }
  chat.dispose();
}

const started = performance.now();
const pretrained = `${saves}/pretrain`;
const adapter = `${saves}/lora-sft`;
lmf("train", "examples/demo/pretrain.yaml", `output_dir=${pretrained}`);
ask("Before fine-tuning, the pre-trained model can only continue stories:", pretrained, null);
lmf("train", "examples/demo/sft_lora.yaml", `model_name_or_path=${pretrained}`, `output_dir=${adapter}`);
ask("After LoRA fine-tuning on the identity set:", pretrained, adapter);
console.log("\nLoss curves:");
for (const plot of [`${pretrained}/training_loss.png`, `${adapter}/training_loss.png`]) {
  console.log(`  ${plot}${existsSync(resolve(root, plot)) ? "" : " (missing)"}`);
}
console.log(`\ndemo finished in ${((performance.now() - started) / 1000).toFixed(0)} s`);
