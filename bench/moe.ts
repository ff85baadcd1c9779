// A tiny mixture of experts against the dense model of the same active parameters: a Mixtral
// (8 experts of MLP width I, top-2, router loss on) and a Llama whose MLP is 2·I wide, same
// attention, embedding and batches. One process per run, the sides alternating (two runs each);
// full fine-tuning steps (forward, backward, AdamW); median step time and peak RSS. Prints a table
// and writes bench/results/moe.json.
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { llamaConfig, median, runSide, statusMiB } from "./common.ts";

const quick = process.argv.includes("--quick");
const SHAPE = { hidden: 256, layers: 4, heads: 8, kvHeads: 4, vocab: 8000, experts: 8, topK: 2, expertIntermediate: 512, batch: 4, seq: quick ? 128 : 256 };
const STEPS = quick ? 4 : 8;
const WARMUP = 2;
const RUNS = 2;

interface SideResult {
  side: string;
  parameters: number;
  activeParameters: number;
  stepSeconds: number[];
  peakMiB: number;
  beforeMiB: number;
  losses: number[];
}

function config(side: "moe" | "dense"): Record<string, unknown> {
  const shape = { ...SHAPE, intermediate: SHAPE.topK * SHAPE.expertIntermediate };
  if (side === "dense") return llamaConfig(shape);
  return { ...llamaConfig({ ...shape, intermediate: SHAPE.expertIntermediate }), model_type: "mixtral", num_local_experts: SHAPE.experts, num_experts_per_tok: SHAPE.topK, output_router_logits: true, router_aux_loss_coef: 0.001 };
}

async function child(side: "moe" | "dense"): Promise<void> {
  const { normalizeConfig } = await import("../src/model/config.ts");
  const { architectureFor } = await import("../src/model/registry.ts");
  const T = await import("../src/torch/index.ts");
  const normalized = normalizeConfig(config(side));
  T.manualSeed(0);
  const model = architectureFor(normalized).build(normalized, { init: "hf" });
  const parameters = model.parameters().reduce((sum, p) => sum + p.numel, 0);
  // Active per token: everything but the experts a token skips (E - k of E per sparse layer).
  const expertParameters = model.namedParameters().filter(([name]) => name.includes(".experts.")).reduce((sum, [, p]) => sum + p.numel, 0);
  const activeParameters = parameters - (expertParameters * (SHAPE.experts - SHAPE.topK)) / SHAPE.experts;
  const optimizer = new T.AdamW(T.decayParameterGroups(model.namedParameters({ trainableOnly: true }), 0.01), { lr: 1e-4, weightDecay: 0.01 });
  T.manualSeed(1);
  const batches = Array.from({ length: STEPS }, () => T.keep(T.randint(0, SHAPE.vocab, [SHAPE.batch, SHAPE.seq])));
  const beforeMiB = statusMiB("VmHWM");
  const stepSeconds: number[] = [];
  const losses: number[] = [];
  for (const ids of batches) {
    const started = performance.now();
    losses.push(
      T.tidy(() => {
        const logits = model.forward(ids);
        let loss = T.crossEntropy(logits.slice(1, 0, -1).reshape(-1, SHAPE.vocab), ids.slice(1, 1).reshape(-1));
        const auxiliary = model.auxiliaryLoss();
        if (auxiliary) loss = loss.add(auxiliary);
        loss.backward();
        optimizer.step();
        optimizer.zeroGrad();
        return loss.item();
      }),
    );
    stepSeconds.push((performance.now() - started) / 1000);
  }
  const result: SideResult = { side, parameters, activeParameters, stepSeconds, peakMiB: statusMiB("VmHWM"), beforeMiB, losses };
  console.log(JSON.stringify(result));
}

async function main(): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const runs: SideResult[] = [];
  for (let run = 0; run < RUNS; run++) {
    for (const side of ["moe", "dense"] as const) runs.push(runSide<SideResult>(process.execPath, ["--import", "tsx", self, side]));
  }
  const load = loadavg()[0]!;
  const summary = (side: string) => {
    const mine = runs.filter((r) => r.side === side);
    return {
      side,
      parameters: mine[0]!.parameters,
      activeParameters: mine[0]!.activeParameters,
      stepSeconds: median(mine.flatMap((r) => r.stepSeconds.slice(WARMUP))),
      peakMiB: median(mine.map((r) => r.peakMiB)),
      beforeMiB: median(mine.map((r) => r.beforeMiB)),
    };
  };
  const rows = [summary("moe"), summary("dense")];
  const [moe, dense] = rows as [ReturnType<typeof summary>, ReturnType<typeof summary>];
  console.log(`Mixtral ${SHAPE.layers}x${SHAPE.hidden}, ${SHAPE.experts} experts of ${SHAPE.expertIntermediate}, top-${SHAPE.topK} vs Llama MLP ${SHAPE.topK * SHAPE.expertIntermediate}; batch ${SHAPE.batch}x${SHAPE.seq}, fp32, full fine-tuning; load ${load.toFixed(1)}`);
  console.log("side    params M  active M  step s  peak MiB  (before)");
  for (const r of rows) {
    console.log(`${r.side.padEnd(7)} ${(r.parameters / 1e6).toFixed(2).padStart(8)}  ${(r.activeParameters / 1e6).toFixed(2).padStart(8)}  ${r.stepSeconds.toFixed(3).padStart(6)}  ${r.peakMiB.toFixed(0).padStart(8)}  ${r.beforeMiB.toFixed(0).padStart(8)}`);
  }
  console.log(`time ratio moe/dense ${(moe.stepSeconds / dense.stepSeconds).toFixed(2)}x, peak memory ratio ${(moe.peakMiB / dense.peakMiB).toFixed(2)}x`);
  mkdirSync("bench/results", { recursive: true });
  writeFileSync("bench/results/moe.json", JSON.stringify({ shape: SHAPE, steps: STEPS, warmup: WARMUP, runs: RUNS, quick, load, rows }, null, 2) + "\n");
}

const side = process.argv[2];
if (side === "moe" || side === "dense") await child(side);
else await main();
