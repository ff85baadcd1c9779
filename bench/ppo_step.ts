// Time per PPO step on the demo-sized model (4 layers, 0.8M parameters): pre-train it briefly
// (examples/demo/pretrain.yaml), then LoRA PPO on the identity prompts with an `api` reward served
// here (how many times "I" appears in the answer). A step's time is the difference between a run
// of 1 + N steps and a run of 1 step (so loading and the first step's warm-up cancel), repeated;
// the median and range are written to bench/results/ppo_step.json.
// Usage: node --import tsx bench/ppo_step.ts [--quick]
import { createServer } from "node:http";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseTrainArgs } from "../src/hparams/index.ts";
import { runTrain } from "../src/train/workflow.ts";
import { median } from "./common.ts";

const QUICK = process.argv.includes("--quick");
const STEPS = QUICK ? 4 : 10;
const REPEATS = QUICK ? 2 : 3;
const dir = mkdtempSync(join(tmpdir(), "lmf-ppo-bench-"));
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

async function runSeconds(steps: number, run: number): Promise<number> {
  const args = parseTrainArgs(
    {
      model_name_or_path: `${dir}/pretrain`, stage: "ppo", do_train: true, finetuning_type: "lora", lora_target: "all", lora_rank: 16,
      reward_model: `http://127.0.0.1:${port}/score`, reward_model_type: "api", dataset: "demo_identity", dataset_dir: "examples/demo", template: "chatml",
      cutoff_len: 128, max_new_tokens: 32, per_device_train_batch_size: 4, gradient_accumulation_steps: 1, learning_rate: 1e-4, max_steps: steps,
      logging_steps: 1, save_strategy: "no", output_dir: `${dir}/ppo-${steps}-${run}`, disable_tqdm: true, seed: 42, plot_loss: false,
    },
    { onWarning: () => {} },
  );
  const started = performance.now();
  await runTrain(args, quiet);
  return (performance.now() - started) / 1000;
}

const perStep: number[] = [];
for (let run = 0; run < REPEATS; run++) {
  const one = await runSeconds(1, run);
  const many = await runSeconds(1 + STEPS, run);
  perStep.push((many - one) / STEPS);
}
server.close();
const result = {
  model: "demo Llama 4x128 (0.8M params), LoRA r16 on all linear layers",
  rollouts: 4,
  maxNewTokens: 32,
  ppoEpochs: 4,
  steps: STEPS,
  repeats: REPEATS,
  step_s: { median: median(perStep), min: Math.min(...perStep), max: Math.max(...perStep), all: perStep },
  load: loadavg()[0],
  quick: QUICK,
};
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/ppo_step.json", JSON.stringify(result, null, 2) + "\n");
console.log(`PPO step on the demo model: median ${result.step_s.median.toFixed(3)} s (${result.step_s.min.toFixed(3)}-${result.step_s.max.toFixed(3)}) over ${REPEATS} runs of ${STEPS} steps; load ${result.load.toFixed(1)}`);
