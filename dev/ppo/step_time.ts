// Time per PPO step on the demo-sized model (4 layers, 0.8M parameters): pre-train it briefly
// (examples/demo/pretrain.yaml), then LoRA PPO on the identity prompts with an `api` reward served
// here (how many times "I" appears in the answer). Prints the seconds per step. Not a test.
import { createServer } from "node:http";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { runTrain } from "../../src/train/workflow.ts";

const dir = mkdtempSync(join(tmpdir(), "lmf-ppo-time-"));
const quiet = { print: () => {} };
await runTrain(parseTrainArgs(["examples/demo/pretrain.yaml", `output_dir=${dir}/pretrain`, "max_steps=40", "plot_loss=false"], { onWarning: () => {} }), quiet);
const server = createServer((request, response) => {
  let body = "";
  request.on("data", (chunk) => (body += chunk));
  request.on("end", () => {
    const { messages } = JSON.parse(body) as { messages: string[] };
    response.end(JSON.stringify({ scores: messages.map((text) => (text.split("assistant").at(-1)!.match(/I/g) ?? []).length) }));
  });
});
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const port = (server.address() as { port: number }).port;
const steps = Number(process.argv[2] ?? 5);
const args = parseTrainArgs(
  {
    model_name_or_path: `${dir}/pretrain`, stage: "ppo", do_train: true, finetuning_type: "lora", lora_target: "all", lora_rank: 16,
    reward_model: `http://127.0.0.1:${port}/score`, reward_model_type: "api", dataset: "demo_identity", dataset_dir: "examples/demo", template: "chatml",
    cutoff_len: 128, max_new_tokens: 32, per_device_train_batch_size: 4, gradient_accumulation_steps: 1, learning_rate: 1e-4, max_steps: steps,
    logging_steps: 1, save_steps: 1000, output_dir: `${dir}/ppo`, disable_tqdm: true, seed: 42,
  },
  { onWarning: () => {} },
);
const started = performance.now();
await runTrain(args, quiet);
const seconds = (performance.now() - started) / 1000;
server.close();
const log = readFileSync(`${dir}/ppo/trainer_log.jsonl`, "utf8").trim().split("\n").map((line) => JSON.parse(line));
console.log(`PPO on the demo model: ${steps} steps of 4 rollouts (max_new_tokens 32, ppo_epochs 4) in ${seconds.toFixed(2)} s, ${(seconds / steps).toFixed(2)} s per step (model load included)`);
console.log(log.map((r) => `step ${r.current_steps}: loss ${r.loss} reward ${r.reward}`).join("\n"));
