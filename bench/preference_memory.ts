// Peak memory of LoRA DPO against LoRA SFT on the same model and the same tokens: DPO's reference
// is the policy with its adapters disabled, so it should cost no second copy of the base model
// (a third side loads the reference as `ref_model`, a frozen copy, to show what one costs). Each
// side runs the real workflow pieces (loader, LoRA, stage attach, the trainer) in its own process;
// peak RSS is VmHWM. Prints a table and writes bench/results/preference_memory.json.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { llamaConfig, runSide, statusMiB } from "./common.ts";

const quick = process.argv.includes("--quick");
const SHAPE = { hidden: 512, layers: 8, heads: 8, kvHeads: 4, intermediate: 1408, vocab: 32000 };
/** Pairs per step; SFT trains the same 2 x PAIRS rows (each prompt with its chosen and its rejected answer). */
const PAIRS = 2;
const PROMPT = quick ? 32 : 64;
const ANSWER = quick ? 32 : 128;
const STEPS = quick ? 2 : 3;

type Mode = "sft" | "dpo" | "dpo_ref_copy";

interface SideResult {
  mode: Mode;
  loadedMiB: number;
  peakMiB: number;
  stepSeconds: number;
  reference: string;
}

/** The model folder: HF-initialised weights and the demo tokenizer (the rows are token ids already). */
async function writeModel(folder: string): Promise<void> {
  const { normalizeConfig } = await import("../src/model/config.ts");
  const { architectureFor } = await import("../src/model/registry.ts");
  const { saveModel } = await import("../src/model/loader.ts");
  const { manualSeed } = await import("../src/torch/index.ts");
  manualSeed(0);
  const model = architectureFor(normalizeConfig(llamaConfig(SHAPE))).build(normalizeConfig(llamaConfig(SHAPE)), { init: "hf" });
  saveModel(model, folder);
  model.dispose();
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join("examples/demo/tiny-llama", file), join(folder, file));
}

async function child(mode: Mode, folder: string): Promise<void> {
  const { parseTrainArgs } = await import("../src/hparams/index.ts");
  const { modelOptionsFromArgs, tokenizerOptionsFromArgs } = await import("../src/model/from_args.ts");
  const { loadModelFor, loadTokenizerAndTemplate } = await import("../src/model/pretrained.ts");
  const { attachStage, stageFor } = await import("../src/train/stages/index.ts");
  const { train } = await import("../src/train/trainer.ts");
  const T = await import("../src/torch/index.ts");
  const outputDir = mkdtempSync(join(tmpdir(), "lmf-bench-pref-"));
  const args = parseTrainArgs(
    {
      model_name_or_path: folder,
      stage: mode === "sft" ? "sft" : "dpo",
      ...(mode === "dpo_ref_copy" && { ref_model: folder }),
      do_train: true,
      finetuning_type: "lora",
      lora_target: "all",
      dataset: "unused",
      template: "chatml",
      output_dir: outputDir,
    },
    { onWarning: () => {} },
  );
  const loaded = loadModelFor(loadTokenizerAndTemplate(tokenizerOptionsFromArgs(args)), modelOptionsFromArgs(args, { dtype: "float32", device: "cpu", training: true }));
  // The same tokens on both sides: a prompt with a chosen and a rejected answer per pair.
  T.manualSeed(1);
  const ids = (n: number) => T.randint(3, SHAPE.vocab, [n]).toFlatArray();
  const pairs = Array.from({ length: PAIRS }, () => ({ prompt: ids(PROMPT), chosen: ids(ANSWER), rejected: ids(ANSWER) }));
  const row = (prompt: number[], answer: number[]) => ({ input_ids: [...prompt, ...answer], attention_mask: new Array(PROMPT + ANSWER).fill(1), labels: [...new Array(PROMPT).fill(-100), ...answer] });
  const rows =
    mode === "sft"
      ? pairs.flatMap((p) => [row(p.prompt, p.chosen), row(p.prompt, p.rejected)])
      : pairs.map((p) => {
          const [c, r] = [row(p.prompt, p.chosen), row(p.prompt, p.rejected)];
          return { chosen_input_ids: c.input_ids, chosen_attention_mask: c.attention_mask, chosen_labels: c.labels, rejected_input_ids: r.input_ids, rejected_attention_mask: r.attention_mask, rejected_labels: r.labels };
        });
  const stage = stageFor(args.finetuning.stage);
  const collate = (batch: typeof rows) => stage.collate(batch as never, { padTokenId: 0, labelPadTokenId: -100, padToMultipleOf: 8 });
  let reference = "none";
  const run = attachStage(stage, { loaded, args, device: "cpu", dtype: "float32", print: (line) => (reference = line.startsWith("reference model") ? line : reference), collate });
  const loadedMiB = statusMiB("VmRSS");
  const started = performance.now();
  train(
    { model: loaded.model, train: rows as never, collate, stage: { ...stage, loss: run.loss }, saveModel: () => {}, loadModel: () => {} },
    {
      outputDir,
      batchSize: mode === "sft" ? 2 * PAIRS : PAIRS,
      gradientAccumulationSteps: 1,
      learningRate: 1e-4,
      weightDecay: 0,
      adamBeta1: 0.9,
      adamBeta2: 0.999,
      adamEpsilon: 1e-8,
      maxGradNorm: 1,
      numTrainEpochs: 1,
      maxSteps: STEPS,
      lrSchedulerType: "constant",
      warmupSteps: 0,
      warmupRatio: 0,
      loggingSteps: 1,
      saveStrategy: "no",
      saveSteps: 500,
      saveTotalLimit: null,
      saveOnlyModel: false,
      evalStrategy: "no",
      evalSteps: null,
      dataSeed: 0,
      gradientCheckpointing: true,
      resumeFrom: null,
      print: () => {},
    },
  );
  const stepSeconds = (performance.now() - started) / 1000 / STEPS;
  run.dispose?.();
  rmSync(outputDir, { recursive: true, force: true });
  const result: SideResult = { mode, loadedMiB, peakMiB: statusMiB("VmHWM"), stepSeconds, reference };
  console.log(JSON.stringify(result));
}

async function main(): Promise<void> {
  const folder = mkdtempSync(join(tmpdir(), "lmf-bench-pref-model-"));
  try {
    await writeModel(folder);
    const self = fileURLToPath(import.meta.url);
    const rows = (["sft", "dpo", "dpo_ref_copy"] as const).map((mode) => runSide<SideResult>(process.execPath, ["--import", "tsx", self, "--child", mode, folder]));
    const [sft, dpo, copy] = rows;
    const weightsMiB = (SHAPE.vocab * SHAPE.hidden * 2 + SHAPE.layers * (4 * SHAPE.hidden * SHAPE.hidden + 3 * SHAPE.hidden * SHAPE.intermediate)) * 4 / 2 ** 20;
    console.log(`LoRA (r 8, all linear), Llama ${SHAPE.layers}x${SHAPE.hidden} vocab ${SHAPE.vocab} (~${weightsMiB.toFixed(0)} MiB of fp32 weights), ${PAIRS} pairs of ${PROMPT}+${ANSWER} tokens per step, gradient checkpointing, ${STEPS} steps`);
    console.log("side           RSS loaded MiB  peak RSS MiB  step s  reference");
    for (const r of rows) console.log(`${r.mode.padEnd(14)} ${r.loadedMiB.toFixed(0).padStart(14)}  ${r.peakMiB.toFixed(0).padStart(12)}  ${r.stepSeconds.toFixed(2).padStart(6)}  ${r.reference}`);
    console.log(`peak RSS ratio dpo / sft: ${(dpo!.peakMiB / sft!.peakMiB).toFixed(2)}; dpo with a ref_model copy / sft: ${(copy!.peakMiB / sft!.peakMiB).toFixed(2)}`);
    mkdirSync("bench/results", { recursive: true });
    writeFileSync("bench/results/preference_memory.json", JSON.stringify({ shape: SHAPE, pairs: PAIRS, prompt: PROMPT, answer: ANSWER, steps: STEPS, weightsMiB, rows }, null, 2) + "\n");
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}

const at = process.argv.indexOf("--child");
if (at >= 0) await child(process.argv[at + 1] as Mode, process.argv[at + 2]!);
else await main();
