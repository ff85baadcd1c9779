// `lmf train` with quantization_bit (LLaMA-Factory's examples/train_qlora): the QLoRA runs track
// the bf16 LoRA run on the same data and their loss falls, each quantization argument changes the
// run, the saved adapter loads on the unquantized base, and predict, chat and eval run on a
// quantized base with the adapter.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runEval } from "../../src/eval/evaluator.ts";
import { parseEvalArgs, parseInferArgs, parseTrainArgs } from "../../src/hparams/index.ts";
import { ChatModel } from "../../src/infer/chat_model.ts";
import { loadChatModelFromArgs } from "../../src/infer/from_args.ts";
import { loraLayers } from "../../src/model/adapters/lora.ts";
import { loadLoraAdapter } from "../../src/model/adapters/peft_format.ts";
import { loadModel } from "../../src/model/loader.ts";
import { quantizedLayers } from "../../src/model/quantization/index.ts";
import { runTrain } from "../../src/train/workflow.ts";
import { alpacaDataDir, tinyModelWithTokenizer } from "../fixtures/tiny_run.ts";

const MODEL = tinyModelWithTokenizer();
const DATA = alpacaDataDir();

async function train(overrides: Record<string, unknown>): Promise<{ outputDir: string; losses: number[]; lines: string[] }> {
  const outputDir = join(mkdtempSync(join(tmpdir(), "lmf-qlora-")), "out");
  const args = parseTrainArgs(
    {
      model_name_or_path: MODEL,
      stage: "sft",
      do_train: true,
      dataset: "alpaca",
      dataset_dir: DATA,
      template: "chatml",
      finetuning_type: "lora",
      lora_rank: 8,
      cutoff_len: 64,
      output_dir: outputDir,
      per_device_train_batch_size: 4,
      learning_rate: 1e-2,
      max_steps: 12,
      logging_steps: 1,
      save_strategy: "no",
      lr_scheduler_type: "constant",
      bf16: true,
      ...overrides,
    },
    { onWarning: () => {} },
  );
  const lines: string[] = [];
  await runTrain(args, { print: (line) => lines.push(line) });
  const log = join(outputDir, "trainer_log.jsonl");
  const losses = existsSync(log)
    ? readFileSync(log, "utf8")
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line).loss as number)
    : [];
  return { outputDir, losses, lines };
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
const show = (losses: number[]) => losses.map((l) => l.toFixed(3)).join(" ");

let nf4Run: Promise<{ outputDir: string; losses: number[]; lines: string[] }> | null = null;
const nf4 = () => (nf4Run ??= train({ quantization_bit: 4 }));

test("QLoRA runs track the bf16 LoRA run on the same data and their loss falls", async (t) => {
  const lora = await train({});
  const runs: [string, number[]][] = [
    ["4-bit nf4, double quantization", (await nf4()).losses],
    ["4-bit fp4", (await train({ quantization_bit: 4, quantization_type: "fp4", double_quantization: false })).losses],
    ["8-bit", (await train({ quantization_bit: 8 })).losses],
  ];
  t.diagnostic(`bf16 LoRA: ${show(lora.losses)}`);
  for (const [label, losses] of runs) {
    const gaps = losses.map((loss, i) => Math.abs(loss - lora.losses[i]!));
    t.diagnostic(`${label}: ${show(losses)} | mean |gap| ${mean(gaps).toFixed(3)}, last-3 gap ${(mean(losses.slice(-3)) - mean(lora.losses.slice(-3))).toFixed(3)}`);
    assert.ok(mean(losses.slice(-3)) < mean(losses.slice(0, 3)) - 0.5, `${label}: the loss falls (${show(losses)})`);
    assert.ok(mean(gaps) < 0.25 * mean(lora.losses), `${label}: tracks the LoRA run (${show(losses)} vs ${show(lora.losses)})`);
  }
});

test("quantization arguments change the run: quantization_bit, quantization_type, double_quantization, quantization_method", async () => {
  const base = await nf4();
  assert.ok(base.lines.some((line) => /Quantizing model to 4 bit with bitsandbytes' format \(nf4, double quantization\), compute dtype bfloat16/.test(line)), base.lines.join("\n"));
  assert.ok(base.lines.some((line) => /all params: [\d,]+/.test(line)));
  const differs = async (overrides: Record<string, unknown>, what: string) => {
    const { losses } = await train({ quantization_bit: 4, ...overrides });
    assert.notDeepEqual(losses, base.losses, what);
  };
  await differs({ quantization_type: "fp4" }, "quantization_type");
  await differs({ double_quantization: false }, "double_quantization");
  await differs({ quantization_bit: 8 }, "quantization_bit");
  // bitsandbytes is bnb's older name; the methods that are checkpoint formats or not built are refused.
  assert.deepEqual((await train({ quantization_bit: 4, quantization_method: "bitsandbytes" })).losses, base.losses);
  await assert.rejects(train({ quantization_bit: 4, quantization_method: "gptq" }), /names a checkpoint format/);
  await assert.rejects(train({ quantization_bit: 4, quantization_method: "hqq" }), /not yet supported by lmfactory: `quantization_method: hqq`/);
  await assert.rejects(train({ quantization_bit: 8, quantization_method: "eetq" }), /not yet supported by lmfactory: `quantization_method: eetq`/);
});

test("a QLoRA adapter is a PEFT LoRA adapter of the unquantized base; predict, chat and eval run on the quantized base with it", async () => {
  const { outputDir } = await nf4();
  const config = JSON.parse(readFileSync(join(outputDir, "adapter_config.json"), "utf8"));
  assert.equal(config.peft_type, "LORA");
  assert.equal(config.base_model_name_or_path, MODEL);
  const full = loadModel(MODEL);
  loadLoraAdapter(full, outputDir);
  assert.equal(loraLayers(full).length, 2 * 7);
  full.dispose();

  // do_predict on the quantized base with the adapter.
  const predicted = await train({ do_train: false, do_predict: true, predict_with_generate: true, eval_dataset: "alpaca", max_new_tokens: 4, adapter_name_or_path: outputDir, quantization_bit: 4, bf16: false });
  const rows = readFileSync(join(predicted.outputDir, "generated_predictions.jsonl"), "utf8").trim().split("\n");
  assert.equal(rows.length, 12);

  // Chat: the quantized base keeps the adapter as LoRA layers (not merged), and answers.
  const chatArgs = (extra: Record<string, unknown>) =>
    parseInferArgs({ model_name_or_path: MODEL, adapter_name_or_path: outputDir, template: "chatml", do_sample: false, max_new_tokens: 6, ...extra }, { command: "chat", onWarning: () => {} });
  const quantized = loadChatModelFromArgs(chatArgs({ quantization_bit: 4 }));
  assert.equal(quantizedLayers(quantized.model).length, 14);
  assert.equal(loraLayers(quantized.model).length, 14);
  const [reply] = quantized.chat([[{ role: "user", content: "Count to 3." }]]);
  assert.equal(reply!.completionTokens, 6);
  quantized.dispose();

  // Eval: the model it scores is the quantized one with the adapter.
  const seen: number[] = [];
  const load = ChatModel.fromLoaded;
  ChatModel.fromLoaded = (loaded, generation, skip) => {
    seen.push(quantizedLayers(loaded.model).length, loraLayers(loaded.model).length);
    return load.call(ChatModel, loaded, generation, skip);
  };
  try {
    const saveDir = join(mkdtempSync(join(tmpdir(), "lmf-qlora-eval-")), "eval");
    const args = parseEvalArgs({ model_name_or_path: MODEL, adapter_name_or_path: outputDir, quantization_bit: 4, template: "chatml", task: "tinyfacts_test", n_shot: 1, save_dir: saveDir }, { onWarning: () => {} });
    await runEval(args, { print: () => {} });
    assert.ok(existsSync(join(saveDir, "results.json")));
  } finally {
    ChatModel.fromLoaded = load;
  }
  assert.deepEqual(seen, [14, 14]);
});
