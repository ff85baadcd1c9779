// Peak memory of one training step (forward + backward) with and without gradient checkpointing,
// each in a fresh process so the peak (VmHWM) is that step's alone. Prints a table and writes
// bench/results/checkpointing.json.
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { llamaConfig, runSide, statusMiB } from "./common.ts";

const SHAPE = { hidden: 512, layers: 8, heads: 8, kvHeads: 4, intermediate: 1408, vocab: 8000, batch: 4, seq: 512 };


async function child(mode: "plain" | "checkpointed"): Promise<void> {
  const { normalizeConfig } = await import("../src/model/config.ts");
  const { LlamaForCausalLM } = await import("../src/model/models/llama.ts");
  const { checkpointedBackward } = await import("../src/model/patches/checkpointing.ts");
  const T = await import("../src/torch/index.ts");
  const config = normalizeConfig(llamaConfig(SHAPE));
  T.manualSeed(0);
  const model = new LlamaForCausalLM(config, {}, { init: "hf" });
  const ids = T.randint(0, SHAPE.vocab, [SHAPE.batch, SHAPE.seq]);
  const lossOf = (logits: InstanceType<typeof T.Tensor>) =>
    T.crossEntropy(logits.slice(1, 0, -1).reshape(-1, SHAPE.vocab), ids.slice(1, 1).reshape(-1));
  const baseline = statusMiB("VmHWM");
  const started = performance.now();
  const loss =
    mode === "plain"
      ? T.tidy(() => {
          const l = lossOf(model.forward(ids));
          l.backward();
          return l.item();
        })
      : checkpointedBackward(model, ids, (hidden) => lossOf(model.logits(hidden)));
  const seconds = (performance.now() - started) / 1000;
  console.log(JSON.stringify({ mode, loss, seconds, weightsMiB: baseline, peakMiB: statusMiB("VmHWM") }));
}

async function main(): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const rows = (["plain", "checkpointed"] as const).map((mode) => runSide<{ mode: string; loss: number; seconds: number; weightsMiB: number; peakMiB: number }>(process.execPath, ["--import", "tsx", self, mode]));
  const [plain, checkpointed] = rows;
  console.log(`one step, Llama ${SHAPE.layers}x${SHAPE.hidden}, batch ${SHAPE.batch}x${SHAPE.seq}, fp32, CPU`);
  console.log("mode          peak RSS MiB  (before step)  step s   loss");
  for (const r of rows) {
    console.log(`${r.mode.padEnd(13)} ${r.peakMiB.toFixed(0).padStart(12)}  ${r.weightsMiB.toFixed(0).padStart(13)}  ${r.seconds.toFixed(2).padStart(6)}   ${r.loss.toFixed(6)}`);
  }
  const saved = plain.peakMiB - plain.weightsMiB - (checkpointed.peakMiB - checkpointed.weightsMiB);
  console.log(`activation memory saved: ${saved.toFixed(0)} MiB; time ratio ${(checkpointed.seconds / plain.seconds).toFixed(2)}x`);
  mkdirSync("bench/results", { recursive: true });
  writeFileSync("bench/results/checkpointing.json", JSON.stringify({ shape: SHAPE, rows }, null, 2) + "\n");
}

const mode = process.argv[2];
if (mode === "plain" || mode === "checkpointed") await child(mode);
else await main();
