// Each argument `lmf train` reads, through parseTrainArgs and the pt/sft workflow on a tiny model:
// a run (or the rows it trains on) with the argument set differs from the same run without it in
// the way the argument says: other rows, other losses or learning rates, other weights, files
// that appear, lines that are printed. A run repeated unchanged is identical, so a difference
// is the argument's doing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isUserError } from "../../src/errors.ts";
import { parseTrainArgs } from "../../src/hparams/index.ts";
import { LlamaDecoderLayer } from "../../src/model/models/llama.ts";
import { autocastState, engineInfo } from "../../src/torch/index.ts";
import { prepareTrainingData, runTrain } from "../../src/train/workflow.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

/** A tiny model whose tokenizer is the demo's byte-level BPE (vocabulary 579). */
function tinyModelWithTokenizer(layers = 2, seed = 0): string {
  const folder = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null, num_hidden_layers: layers }, seed);
  for (const file of ["tokenizer.json", "tokenizer_config.json"]) writeFileSync(join(folder, file), readFileSync(join("examples/demo/tiny-llama", file)));
  return folder;
}

function dataDir(alpacaRows = 12): string {
  const dir = mkdtempSync(join(tmpdir(), "lmf-args-data-"));
  const answers = ["one", "one two", "one two three", "one two three four"];
  const alpaca = Array.from({ length: alpacaRows }, (_, i) => ({ instruction: `Count to ${(i % 4) + 1}.`, input: "", output: answers[i % 4] }));
  const chats = Array.from({ length: 8 }, (_, i) => ({
    conversations: [
      { from: "human", value: `Who is number ${i}?` },
      { from: "gpt", value: `Number ${i} is Mira.` },
      { from: "human", value: "And the fox?" },
      { from: "gpt", value: "The fox is red." },
    ],
  }));
  const long = Array.from({ length: 4 }, (_, i) => ({
    instruction: `Repeat after me, slowly and carefully, every word of this long sentence number ${i} about the forest.`,
    input: "",
    output: "Every word of this long sentence about the forest, repeated slowly and carefully.",
  }));
  const text = Array.from({ length: 40 }, (_, i) => ({ text: `In the morning, Mira went to the forest with a fox number ${i}.` }));
  writeFileSync(join(dir, "alpaca.json"), JSON.stringify(alpaca));
  writeFileSync(join(dir, "chats.json"), JSON.stringify(chats));
  writeFileSync(join(dir, "long.json"), JSON.stringify(long));
  writeFileSync(join(dir, "text.jsonl"), text.map((row) => JSON.stringify(row)).join("\n"));
  writeFileSync(
    join(dir, "dataset_info.json"),
    JSON.stringify({
      alpaca: { file_name: "alpaca.json" },
      chats: { file_name: "chats.json", formatting: "sharegpt" },
      long: { file_name: "long.json" },
      text: { file_name: "text.jsonl", columns: { prompt: "text" } },
    }),
  );
  return dir;
}

const MODEL = tinyModelWithTokenizer();
const DATA = dataDir();
const quiet = { onWarning: () => {} };
const tmp = () => mkdtempSync(join(tmpdir(), "lmf-args-"));

const BASE = {
  model_name_or_path: MODEL,
  do_train: true,
  stage: "sft",
  template: "chatml",
  dataset: "alpaca",
  dataset_dir: DATA,
  cutoff_len: 64,
  finetuning_type: "lora",
  per_device_train_batch_size: 2,
  learning_rate: 1e-2,
  max_steps: 3,
  logging_steps: 1,
  save_strategy: "no",
  lr_scheduler_type: "constant",
};

interface Rows {
  train: { input_ids: number[]; labels: number[]; attention_mask: number[] }[];
  eval: { input_ids: number[]; labels: number[] }[];
}

/** The rows the trainer would receive (tokenizer only, no model). */
async function rowsWith(overrides: Record<string, unknown>): Promise<Rows> {
  const args = parseTrainArgs({ ...BASE, output_dir: join(tmp(), "out"), ...overrides }, quiet);
  return (await prepareTrainingData(args, () => {})) as unknown as Rows;
}

const trainedLabels = (rows: Rows) => rows.train.reduce((sum, row) => sum + row.labels.filter((label) => label !== -100).length, 0);

interface LogRecord {
  current_steps: number;
  total_steps: number;
  loss?: number;
  lr?: number;
  eval_loss?: number;
  total_tokens?: number;
}

interface Run {
  outputDir: string;
  log: LogRecord[];
  lines: string[];
  /** The trained weights' bytes (adapter or model), for comparing runs. */
  weights: Buffer;
}

async function runWith(overrides: Record<string, unknown>, outputDir = join(tmp(), "out")): Promise<Run> {
  const lines: string[] = [];
  await runTrain(parseTrainArgs({ ...BASE, output_dir: outputDir, ...overrides }, quiet), { print: (line) => lines.push(line) });
  const logFile = join(outputDir, "trainer_log.jsonl");
  const log = existsSync(logFile) ? readFileSync(logFile, "utf8").trim().split("\n").map((line) => JSON.parse(line) as LogRecord) : [];
  const weightsFile = ["adapter_model.safetensors", "model.safetensors"].map((name) => join(outputDir, name)).find(existsSync);
  return { outputDir, log, lines, weights: weightsFile ? readFileSync(weightsFile) : Buffer.alloc(0) };
}

/** A safetensors file's header, read by hand: name -> dtype and shape. */
function tensorsIn(path: string): Record<string, { dtype: string; shape: number[] }> {
  const bytes = readFileSync(path);
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString("utf8")) as Record<string, { dtype: string; shape: number[] }>;
  delete header.__metadata__;
  return header;
}

const losses = (run: Run) => run.log.filter((record) => record.loss !== undefined).map((record) => record.loss!);
const rates = (run: Run) => run.log.filter((record) => record.lr !== undefined).map((record) => record.lr!);
const trainable = (run: Run) => run.lines.filter((line) => line.startsWith("name: ") && line.endsWith("trainable: True")).map((line) => line.slice(6, line.indexOf(",")));

test("dataset arguments pick the examples the trainer receives: dataset, eval_dataset, dataset_dir, split, max_samples, val_size, mix_strategy, interleave_probs, streaming, buffer_size", async () => {
  const base = await rowsWith({});
  assert.deepEqual([base.train.length, base.eval.length], [12, 0]);
  assert.equal((await rowsWith({ dataset: "alpaca,chats" })).train.length, 20, "dataset");
  assert.deepEqual((await rowsWith({ eval_dataset: "chats" })).eval.length, 8, "eval_dataset");
  assert.equal((await rowsWith({ dataset_dir: dataDir(5) })).train.length, 5, "dataset_dir");
  await assert.rejects(rowsWith({ split: "test" }), (error: unknown) => isUserError(error) && /split "test"/.test(error.message), "split");
  assert.equal((await rowsWith({ max_samples: 5 })).train.length, 5, "max_samples");
  const split = await rowsWith({ val_size: 4 });
  assert.deepEqual([split.train.length, split.eval.length], [8, 4], "val_size");
  const concat = await rowsWith({ dataset: "alpaca,chats" });
  const interleaved = await rowsWith({ dataset: "alpaca,chats", mix_strategy: "interleave_under" });
  assert.ok(interleaved.train.length < concat.train.length, `mix_strategy: ${interleaved.train.length} rows`);
  const mostlyAlpaca = await rowsWith({ dataset: "alpaca,chats", mix_strategy: "interleave_over", interleave_probs: "0.9,0.1" });
  const mostlyChats = await rowsWith({ dataset: "alpaca,chats", mix_strategy: "interleave_over", interleave_probs: "0.1,0.9" });
  assert.notDeepEqual(mostlyAlpaca.train, mostlyChats.train, "interleave_probs");
  // Streamed, only what max_steps x batch needs is read, in shuffle-buffer order.
  const streamed = await rowsWith({ streaming: true, buffer_size: 12 });
  assert.equal(streamed.train.length, 3 * 2, "streaming");
  assert.notDeepEqual((await rowsWith({ streaming: true, buffer_size: 1 })).train, streamed.train, "buffer_size");
  assert.deepEqual((await rowsWith({ streaming: true, buffer_size: 1 })).train, base.train.slice(0, 6), "a buffer of one keeps the file order");
});

test("tokenization arguments change the rows: template, default_system, stage, cutoff_len, reserved_label_len, train_on_prompt, mask_history, packing, neat_packing", async () => {
  const base = await rowsWith({});
  const { tokenizer } = await prepareTrainingData(parseTrainArgs({ ...BASE, output_dir: join(tmp(), "out") }, quiet), () => {});
  assert.match(tokenizer.decode(base.train[0]!.input_ids), /^<\|im_start\|>user\nCount to 1\.<\|im_end\|>\n<\|im_start\|>assistant\none<\|im_end\|>/);
  assert.equal(tokenizer.decode((await rowsWith({ template: "empty" })).train[0]!.input_ids), "Count to 1.one", "template");
  assert.match(tokenizer.decode((await rowsWith({ default_system: "You are Mira." })).train[0]!.input_ids), /^<\|im_start\|>system\nYou are Mira\.<\|im_end\|>/, "default_system");
  assert.ok(base.train.every((row) => row.labels.some((label) => label !== -100) && row.labels[0] === -100), "sft masks the prompt");
  const pretrain = await rowsWith({ stage: "pt", dataset: "text" });
  assert.ok(pretrain.train.every((row) => row.labels.every((label, i) => label === row.input_ids[i])), "stage: pt trains on every token");
  const longest = Math.max(...base.train.map((row) => row.input_ids.length));
  assert.ok(longest > 12);
  assert.ok((await rowsWith({ cutoff_len: 12 })).train.every((row) => row.input_ids.length <= 12), "cutoff_len");
  const cut = await rowsWith({ dataset: "long", cutoff_len: 24 });
  const reserved = await rowsWith({ dataset: "long", cutoff_len: 24, reserved_label_len: 16 });
  assert.ok(trainedLabels(reserved) > trainedLabels(cut), `reserved_label_len: ${trainedLabels(reserved)} vs ${trainedLabels(cut)}`);
  assert.ok(trainedLabels(await rowsWith({ train_on_prompt: true })) > trainedLabels(base), "train_on_prompt");
  const chats = await rowsWith({ dataset: "chats" });
  assert.ok(trainedLabels(await rowsWith({ dataset: "chats", mask_history: true })) < trainedLabels(chats), "mask_history");
  const packed = await rowsWith({ packing: true });
  assert.ok(packed.train.length < base.train.length, `packing: ${packed.train.length} rows`);
  const neat = await rowsWith({ neat_packing: true });
  // Neat packing numbers each example's tokens 1, 2, ... in the attention mask; plain packing marks all 1.
  assert.ok(neat.train.some((row) => row.attention_mask.includes(2)), "neat_packing");
  assert.ok(packed.train.every((row) => row.attention_mask.every((value) => value <= 1)));
});

test("overwrite_cache rebuilds the tokenized_path cache instead of loading it", async () => {
  const cache = join(tmp(), "tokenized");
  const lines = async (overrides: Record<string, unknown>) => {
    const printed: string[] = [];
    await prepareTrainingData(parseTrainArgs({ ...BASE, output_dir: join(tmp(), "out"), tokenized_path: cache, ...overrides }, quiet), (line) => printed.push(line));
    return printed.join("\n");
  };
  assert.match(await lines({}), /saved 12 tokenized rows/);
  assert.match(await lines({}), /loaded 12 tokenized rows/);
  const rebuilt = await lines({ overwrite_cache: true });
  assert.match(rebuilt, /saved 12 tokenized rows/);
  assert.doesNotMatch(rebuilt, /loaded/);
});

test("a training run repeated unchanged is identical, so the differences below are the arguments' doing", async () => {
  const first = await runWith({});
  const second = await runWith({});
  assert.deepEqual(first.log.map(({ loss, lr }) => [loss, lr]), second.log.map(({ loss, lr }) => [loss, lr]));
  assert.ok(first.weights.equals(second.weights));
});

test("optimisation arguments change the trained run: learning_rate, weight_decay, adam_beta1, adam_beta2, adam_epsilon, max_grad_norm, optim, seed, data_seed, ignore_pad_token_for_loss", async () => {
  const base = await runWith({});
  assert.deepEqual(rates(base), [0.01, 0.01, 0.01]);
  const cases: [string, unknown][] = [
    ["learning_rate", 3e-2],
    ["weight_decay", 0.5],
    ["adam_beta1", 0.5],
    ["adam_beta2", 0.5],
    ["adam_epsilon", 0.1],
    ["max_grad_norm", 1e-3],
    ["optim", "sgd"],
    ["seed", 7],
    ["data_seed", 7],
    ["ignore_pad_token_for_loss", false],
  ];
  for (const [name, value] of cases) {
    const changed = await runWith({ [name]: value });
    assert.ok(!changed.weights.equals(base.weights), `${name}: ${String(value)} trains the same weights`);
  }
  assert.deepEqual(rates(await runWith({ learning_rate: 3e-2 })), [0.03, 0.03, 0.03]);
});

test("schedule and length arguments change the steps: lr_scheduler_type, lr_scheduler_kwargs, warmup_steps, warmup_ratio, max_steps, num_train_epochs, per_device_train_batch_size, gradient_accumulation_steps", async () => {
  const base = await runWith({ max_steps: 4 });
  assert.deepEqual(rates(base), [0.01, 0.01, 0.01, 0.01]);
  const linear = rates(await runWith({ max_steps: 4, lr_scheduler_type: "linear" }));
  assert.deepEqual(linear.map((lr) => +lr.toFixed(6)), [0.0075, 0.005, 0.0025, 0], "lr_scheduler_type");
  const restarts = rates(await runWith({ max_steps: 4, lr_scheduler_type: "cosine_with_restarts" }));
  const twoCycles = rates(await runWith({ max_steps: 4, lr_scheduler_type: "cosine_with_restarts", lr_scheduler_kwargs: { num_cycles: 2 } }));
  assert.notDeepEqual(twoCycles, restarts, "lr_scheduler_kwargs");
  assert.deepEqual(rates(await runWith({ max_steps: 4, lr_scheduler_type: "constant_with_warmup", warmup_steps: 2 })), [0.005, 0.01, 0.01, 0.01], "warmup_steps");
  assert.deepEqual(rates(await runWith({ max_steps: 4, lr_scheduler_type: "constant_with_warmup", warmup_ratio: 0.5 })), [0.005, 0.01, 0.01, 0.01], "warmup_ratio");
  assert.equal((await runWith({ max_steps: 2 })).log.length, 2, "max_steps");
  // 12 examples in batches of 2: 6 steps an epoch.
  assert.equal((await runWith({ max_steps: -1, num_train_epochs: 1 })).log.at(-1)!.total_steps, 6, "num_train_epochs");
  assert.equal((await runWith({ max_steps: -1, num_train_epochs: 2 })).log.at(-1)!.total_steps, 12, "num_train_epochs");
  assert.equal((await runWith({ max_steps: -1, num_train_epochs: 1, per_device_train_batch_size: 4 })).log.at(-1)!.total_steps, 3, "per_device_train_batch_size");
  const tokens = (run: Run) => run.log[0]!.total_tokens!;
  assert.ok(tokens(await runWith({ gradient_accumulation_steps: 2 })) > tokens(base), "gradient_accumulation_steps");
});

test("precision arguments set the dtype weights train and save in: bf16, pure_bf16; fp16 needs CUDA", async () => {
  const dtypes = (run: Run, file: string) => new Set(Object.values(tensorsIn(join(run.outputDir, file))).map((info) => info.dtype));
  // Whether the decoder layers run under autocast, seen from inside them.
  const forward = LlamaDecoderLayer.prototype.forward;
  let autocastSeen = new Set<boolean>();
  LlamaDecoderLayer.prototype.forward = function (this: LlamaDecoderLayer, ...args: Parameters<typeof forward>) {
    autocastSeen.add(autocastState("cpu").enabled);
    return forward.apply(this, args);
  };
  const withAutocast = async (overrides: Record<string, unknown>) => {
    autocastSeen = new Set();
    const run = await runWith(overrides);
    return { run, autocast: [...autocastSeen] };
  };
  try {
    const fp32 = await withAutocast({ finetuning_type: "full" });
    assert.deepEqual(dtypes(fp32.run, "model.safetensors"), new Set(["F32"]));
    assert.deepEqual(fp32.autocast, [false]);
    // bf16 as LLaMA-Factory and HF's Trainer: loaded in bf16, trainable weights upcast to float32
    // master weights, forward passes autocast to bf16.
    const bf16 = await withAutocast({ finetuning_type: "full", bf16: true });
    assert.deepEqual(dtypes(bf16.run, "model.safetensors"), new Set(["F32"]), "bf16: float32 master weights");
    assert.deepEqual(bf16.autocast, [true], "bf16 autocasts");
    assert.ok(!bf16.run.weights.equals(fp32.run.weights), "bf16 trains otherwise than fp32");
    // Freeze: the trainable last layer in float32, the frozen rest as loaded (bf16).
    const freeze = tensorsIn(join((await runWith({ finetuning_type: "freeze", freeze_trainable_layers: 1, bf16: true })).outputDir, "model.safetensors"));
    assert.equal(freeze["model.layers.1.mlp.down_proj.weight"]!.dtype, "F32");
    assert.equal(freeze["model.layers.0.mlp.down_proj.weight"]!.dtype, "BF16");
    assert.equal(freeze["model.embed_tokens.weight"]!.dtype, "BF16");
    // pure_bf16: everything in bf16, no autocast.
    const pure = await withAutocast({ finetuning_type: "full", pure_bf16: true });
    assert.deepEqual(dtypes(pure.run, "model.safetensors"), new Set(["BF16"]), "pure_bf16");
    assert.deepEqual(pure.autocast, [false], "pure_bf16 does not autocast");
    // LoRA on the bf16 base keeps float32 adapter weights, unless pure_bf16.
    const lora = await withAutocast({ bf16: true });
    assert.deepEqual(dtypes(lora.run, "adapter_model.safetensors"), new Set(["F32"]));
    assert.deepEqual(lora.autocast, [true]);
    assert.deepEqual(dtypes(await runWith({ bf16: true, pure_bf16: true }), "adapter_model.safetensors"), new Set(["BF16"]), "pure_bf16");
  } finally {
    LlamaDecoderLayer.prototype.forward = forward;
  }
  if (engineInfo().cudaAvailable) {
    assert.deepEqual(dtypes(await runWith({ finetuning_type: "full", fp16: true }), "model.safetensors"), new Set(["F16"]), "fp16");
  } else {
    await assert.rejects(runWith({ fp16: true }), (error: unknown) => isUserError(error) && /fp16 is not supported on CPU/.test(error.message), "fp16");
  }
});

test("use_cpu trains on the CPU when CUDA is there", { skip: !engineInfo().cudaAvailable && "needs CUDA: without it every run is on the CPU" }, async () => {
  const devices = (run: Run) => new Set(run.lines.filter((line) => line.startsWith("name: ")).map((line) => line.match(/device: (\w+)/)![1]));
  assert.deepEqual(devices(await runWith({ print_param_status: true, max_steps: 1 })), new Set(["cuda"]));
  assert.deepEqual(devices(await runWith({ print_param_status: true, max_steps: 1, use_cpu: true })), new Set(["cpu"]));
});

test("output arguments: output_dir, overwrite_output_dir, do_train, save_strategy, save_steps, save_total_limit, save_only_model, resume_from_checkpoint, plot_loss", async () => {
  const checkpoints = (run: Run) => readdirSync(run.outputDir).filter((name) => name.startsWith("checkpoint-")).sort();
  const base = await runWith({ max_steps: 4 });
  assert.deepEqual(checkpoints(base), []);
  assert.ok(existsSync(join(base.outputDir, "adapter_model.safetensors")), "output_dir holds the trained adapter");
  const steps = await runWith({ max_steps: 4, save_strategy: "steps", save_steps: 2 });
  assert.deepEqual(checkpoints(steps), ["checkpoint-2", "checkpoint-4"], "save_strategy, save_steps");
  assert.deepEqual(checkpoints(await runWith({ max_steps: -1, num_train_epochs: 2, save_strategy: "epoch" })), ["checkpoint-12", "checkpoint-6"], "save_strategy: epoch");
  assert.deepEqual(checkpoints(await runWith({ max_steps: 4, save_strategy: "steps", save_steps: 2, save_total_limit: 1 })), ["checkpoint-4"], "save_total_limit");
  assert.ok(existsSync(join(steps.outputDir, "checkpoint-4", "optimizer.safetensors")));
  const onlyModel = await runWith({ max_steps: 4, save_strategy: "steps", save_steps: 2, save_only_model: true });
  assert.ok(!existsSync(join(onlyModel.outputDir, "checkpoint-4", "optimizer.safetensors")), "save_only_model");
  // Resuming from checkpoint-2 runs steps 3 and 4 only, to the same weights as the run without a stop.
  const resumed = await runWith({ max_steps: 4, resume_from_checkpoint: join(steps.outputDir, "checkpoint-2") });
  assert.deepEqual(resumed.log.map((record) => record.current_steps), [3, 4], "resume_from_checkpoint");
  assert.ok(resumed.weights.equals(base.weights));
  // LLaMA-Factory's rule: a folder with no checkpoint and no finished model is trained into, and
  // another tool's files stay; once it holds our finished model, a second run is refused unless
  // overwrite_output_dir, which writes over lmfactory's own outputs and nothing else.
  const used = join(tmp(), "used");
  mkdirSync(used);
  writeFileSync(join(used, "notes.txt"), "old");
  await runWith({}, used);
  assert.ok(existsSync(join(used, "adapter_model.safetensors")) && readFileSync(join(used, "notes.txt"), "utf8") === "old");
  await assert.rejects(runWith({}, used), /overwrite_output_dir/);
  await runWith({ overwrite_output_dir: true }, used);
  assert.equal(readFileSync(join(used, "notes.txt"), "utf8"), "old", "overwrite_output_dir keeps files lmfactory did not write");
  assert.ok(existsSync(join((await runWith({ plot_loss: true })).outputDir, "training_loss.png")), "plot_loss");
  // (An evaluation-only run writes into an output_dir that exists; see the report on do_eval without do_train.)
  const evalDir = join(tmp(), "eval-only");
  mkdirSync(evalDir);
  const evalOnly = await runWith({ do_train: false, do_eval: true, val_size: 4 }, evalDir);
  assert.deepEqual(evalOnly.log, [], "do_train: false trains nothing");
  assert.ok(!existsSync(join(evalDir, "adapter_model.safetensors")) && existsSync(join(evalDir, "eval_results.json")));
});

test("evaluation and prediction arguments: do_eval, per_device_eval_batch_size, do_predict, predict_with_generate, num_beams in prediction", async () => {
  assert.ok(!existsSync(join((await runWith({ val_size: 4 })).outputDir, "eval_results.json")));
  const evaluated = await runWith({ val_size: 4, do_eval: true });
  assert.ok(JSON.parse(readFileSync(join(evaluated.outputDir, "eval_results.json"), "utf8")).eval_loss > 0, "do_eval");
  const trained = await runWith({ max_steps: 6 });
  const predict = (overrides: Record<string, unknown>) =>
    runWith({ adapter_name_or_path: trained.outputDir, do_train: false, do_predict: true, predict_with_generate: true, eval_dataset: "alpaca", max_samples: 3, max_new_tokens: 6, do_sample: false, ...overrides });
  const greedy = await predict({});
  assert.ok(existsSync(join(greedy.outputDir, "generated_predictions.jsonl")), "do_predict");
  const progress = (run: Run) => run.lines.filter((line) => line.startsWith("predicted "));
  assert.deepEqual(progress(greedy), ["predicted 3/3"]);
  assert.deepEqual(progress(await predict({ per_device_eval_batch_size: 2 })), ["predicted 2/3", "predicted 3/3"], "per_device_eval_batch_size");
  const texts = (run: Run) => readFileSync(join(run.outputDir, "generated_predictions.jsonl"), "utf8");
  assert.notEqual(texts(await predict({ num_beams: 4 })), texts(greedy), "num_beams in prediction");
});

test("model arguments change the run: model_name_or_path, adapter_name_or_path, rope_scaling, flash_attn, shift_attn, upcast_layernorm, train_from_scratch, print_param_status", async () => {
  const base = await runWith({});
  assert.notDeepEqual(losses(await runWith({ model_name_or_path: tinyModelWithTokenizer(2, 1) })), losses(base), "model_name_or_path");
  const earlier = await runWith({ max_steps: 6 });
  assert.ok(losses(await runWith({ adapter_name_or_path: earlier.outputDir }))[0]! < losses(base)[0]!, "adapter_name_or_path starts from the trained adapter");
  const scaled = await runWith({ rope_scaling: "linear", cutoff_len: 256 });
  assert.ok(scaled.lines.some((line) => /rope_scaling: linear with factor 2/.test(line)), scaled.lines.join("\n"));
  assert.notDeepEqual(losses(scaled), losses(await runWith({ cutoff_len: 256 })), "rope_scaling");
  assert.ok((await runWith({ flash_attn: "fa2" })).lines.some((line) => /flash_attn: fa2 kernels are not part of this engine/.test(line)), "flash_attn");
  const shifted = await runWith({ shift_attn: true, dataset: "long" });
  assert.ok(shifted.lines.some((line) => /shift_attn: LongLoRA S²-Attn/.test(line)));
  assert.notDeepEqual(losses(shifted), losses(await runWith({ dataset: "long" })), "shift_attn");
  // (pure_bf16: with bf16 every trainable weight is float32 already.)
  const upcast = await runWith({ finetuning_type: "full", pure_bf16: true, upcast_layernorm: true });
  assert.equal(tensorsIn(join(upcast.outputDir, "model.safetensors"))["model.norm.weight"]!.dtype, "F32", "upcast_layernorm");
  assert.equal(tensorsIn(join(upcast.outputDir, "model.safetensors"))["model.layers.0.mlp.up_proj.weight"]!.dtype, "BF16");
  // upcast_lmhead_output has no effect: the loss is computed on float32 logits in any case.
  const bf16 = await runWith({ bf16: true, finetuning_type: "full", max_steps: 2 });
  assert.ok((await runWith({ bf16: true, finetuning_type: "full", max_steps: 2, upcast_lmhead_output: true })).weights.equals(bf16.weights));
  assert.notDeepEqual(losses(await runWith({ train_from_scratch: true })), losses(base), "train_from_scratch");
  const status = await runWith({ print_param_status: true, max_steps: 1 });
  assert.ok(status.lines.includes("name: model.embed_tokens.weight, dtype: torch.float32, device: cpu, trainable: False"), "print_param_status");
  assert.ok(!base.lines.some((line) => line.startsWith("name: ")));
});

test("disable_gradient_checkpointing: layers are no longer run again in the backward pass", async () => {
  const forward = LlamaDecoderLayer.prototype.forward;
  let calls = 0;
  LlamaDecoderLayer.prototype.forward = function (this: LlamaDecoderLayer, ...args: Parameters<typeof forward>) {
    calls++;
    return forward.apply(this, args);
  };
  try {
    const layerCalls = async (overrides: Record<string, unknown>) => {
      calls = 0;
      await runWith({ max_steps: 2, ...overrides });
      return calls;
    };
    // 2 steps x 2 layers: 4 forwards, and with recomputation 4 more in the backward passes.
    assert.equal(await layerCalls({}), 8);
    assert.equal(await layerCalls({ disable_gradient_checkpointing: true }), 4);
  } finally {
    LlamaDecoderLayer.prototype.forward = forward;
  }
});

test("finetuning arguments change what trains: finetuning_type, freeze_trainable_layers, freeze_trainable_modules, freeze_extra_modules, use_llama_pro, additional_target, lora_rank, lora_target, use_dora, lora_alpha, lora_dropout, use_rslora, create_new_adapter", async () => {
  const names = async (overrides: Record<string, unknown>) => trainable(await runWith({ print_param_status: true, max_steps: 1, ...overrides }));
  const full = await names({ finetuning_type: "full" });
  assert.ok(full.includes("model.embed_tokens.weight") && full.includes("lm_head.weight"), "finetuning_type: full");
  const freeze = await names({ finetuning_type: "freeze" });
  assert.ok(freeze.length > 0 && freeze.every((name) => name.startsWith("model.layers.")), "finetuning_type: freeze");
  const lastLayer = await names({ finetuning_type: "freeze", freeze_trainable_layers: 1 });
  assert.ok(lastLayer.length > 0 && lastLayer.every((name) => name.startsWith("model.layers.1.")), "freeze_trainable_layers");
  const mlp = await names({ finetuning_type: "freeze", freeze_trainable_modules: "mlp" });
  assert.ok(mlp.length > 0 && mlp.every((name) => name.includes(".mlp.")), "freeze_trainable_modules");
  assert.ok((await names({ finetuning_type: "freeze", freeze_extra_modules: "embed_tokens" })).includes("model.embed_tokens.weight"), "freeze_extra_modules");
  // LLaMA Pro on 4 layers with 2 expanded: layers 1 and 3 (every second), not the last two.
  const four = tinyModelWithTokenizer(4);
  const layersOf = (list: string[]) => [...new Set(list.map((name) => Number(name.split(".")[2])))];
  assert.deepEqual(layersOf(await names({ model_name_or_path: four, finetuning_type: "freeze", freeze_trainable_layers: 2 })), [2, 3]);
  assert.deepEqual(layersOf(await names({ model_name_or_path: four, finetuning_type: "freeze", freeze_trainable_layers: 2, use_llama_pro: true })), [1, 3], "use_llama_pro");

  const lora = await names({});
  assert.ok(lora.length > 0 && lora.every((name) => /lora_[AB]/.test(name)), "lora trains only LoRA weights");
  assert.ok((await names({ additional_target: "embed_tokens" })).some((name) => name.startsWith("model.embed_tokens")), "additional_target");
  assert.ok((await names({ lora_target: "q_proj" })).every((name) => name.includes("q_proj")), "lora_target");
  assert.ok((await names({ use_dora: true })).some((name) => name.includes("lora_magnitude_vector")), "use_dora");
  const config = async (overrides: Record<string, unknown>) => {
    const run = await runWith(overrides);
    return { run, config: JSON.parse(readFileSync(join(run.outputDir, "adapter_config.json"), "utf8")) as Record<string, unknown> };
  };
  const base = await config({});
  const rank4 = await config({ lora_rank: 4 });
  assert.equal(rank4.config.r, 4);
  assert.deepEqual(tensorsIn(join(rank4.run.outputDir, "adapter_model.safetensors"))["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]!.shape, [4, 32], "lora_rank");
  for (const [name, value, key] of [["lora_alpha", 64, "lora_alpha"], ["lora_dropout", 0.5, "lora_dropout"], ["use_rslora", true, "use_rslora"]] as const) {
    const changed = await config({ [name]: value });
    assert.equal(changed.config[key], value, name);
    assert.ok(!changed.run.weights.equals(base.run.weights), `${name} trains the same weights`);
  }
  // With learning_rate 0 nothing moves: a loaded adapter stays as it was, a new one stays at B = 0.
  const earlier = await runWith({ max_steps: 6 });
  const kept = await runWith({ adapter_name_or_path: earlier.outputDir, learning_rate: 0, max_steps: 1 });
  assert.ok(kept.weights.equals(earlier.weights), "the loaded adapter is trained further");
  const fresh = await runWith({ adapter_name_or_path: earlier.outputDir, create_new_adapter: true, learning_rate: 0, max_steps: 1 });
  const zeroB = await runWith({ learning_rate: 0, max_steps: 1 });
  assert.ok(!fresh.weights.equals(earlier.weights), "create_new_adapter");
  assert.ok(losses(fresh)[0]! < losses(zeroB)[0]!, "the new adapter sits on the merged earlier one");
});
