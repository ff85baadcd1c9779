// `lmf train`: any stage in one order of work, as LLaMA-Factory's run_pt / run_sft / ...:
// tokenizer -> template -> dataset -> model (patches, vocabulary, adapters) -> trainer -> save,
// evaluate, predict. What differs between stages is declared by the stage (src/train/stages/).
// Only this file and src/cli.ts see whole argument groups; the layers get flat values. A worker of
// a data-parallel run (src/train/distributed/) takes the same order: rank 0 alone plans and claims
// the output folder, preprocesses the data (the others receive the rows), writes and predicts.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type LoadDatasetsOptions, dataFilesFingerprint, loadDatasets, processDataset } from "../data/dataset.ts";
import { tokenizerFingerprint } from "../data/cache.ts";
import { checkTrainedLabels } from "../data/label_check.ts";
import type { MixStrategy } from "../data/mix.ts";
import type { ProcessorOptions } from "../data/processors/factories.ts";
import type { AlignedExample } from "../data/types.ts";
import { UserError } from "../errors.ts";
import type { TrainArgs } from "../hparams/index.ts";
import { saveJson } from "../hparams/index.ts";
import { appliedLoraConfig, restoreLoraWeights, saveLoraAdapter, savePissaConverted } from "../model/adapters/index.ts";
import { modelOptionsFromArgs, tokenizerOptionsFromArgs } from "../model/from_args.ts";
import { loadWeights, saveModel } from "../model/loader.ts";
import { copyTokenizerFiles } from "../data/tokenizer.ts";
import { type LoadedModel, type LoadedTokenizer, loadModelFor, loadTokenizerAndTemplate } from "../model/pretrained.ts";
import { type ProgressBar, progressBarFor } from "../terminal/progress.ts";
import { type DType, autocastDeviceOf, cpuBf16MatmulFast, engineInfo, manualSeed } from "../torch/index.ts";
import type { DataParallel } from "./distributed/data_parallel.ts";
import { broadcastRows, fromMain } from "./distributed/from_main.ts";
import { startDataParallel } from "./distributed/start.ts";
import { formatDuration, saveMetrics } from "./logging.ts";
import { checkTrainingArgs, logChannels, progressDisabled, trainerOptionsFromArgs, trainingArgsJson } from "./options.ts";
import { claimOutputDir, finishOutputDir, planOutputDir } from "./output_dir.ts";
import { type Stage, type StageRun, type TrainingExample, attachStage, stageFor, unreadSettingsNotice } from "./stages/index.ts";
import { defaultLoggingDir, tensorBoardReporter } from "./tensorboard.ts";
import { evaluate, train } from "./trainer.ts";

export interface RunOptions {
  print?: (line: string) => void;
}

/**
 * The dtype the model is loaded in (LLaMA-Factory's compute_dtype): float32, or bfloat16 with bf16
 * or pure_bf16 (fp16 needs CUDA). With bf16 the trainable weights are then upcast to float32 and
 * the forward passes autocast (mixed precision, as HF's Trainer); pure_bf16 trains in bfloat16.
 */
function computeDtype(args: TrainArgs, device: string): DType {
  if (args.training.fp16 && device === "cpu") {
    throw new UserError("fp16 is not supported on CPU by libtorch", "fp16", "use bf16: true (or neither) on CPU");
  }
  return (args.model.compute_dtype as DType | undefined) ?? "float32";
}

async function loadAligned(args: TrainArgs, print: (line: string) => void, worldSize: number): Promise<{ train: AlignedExample[]; eval: AlignedExample[] }> {
  const { data, training } = args;
  const options = {
    datasetNames: data.dataset ?? [],
    evalDatasetNames: data.eval_dataset ?? [],
    datasetDir: data.dataset_dir,
    split: data.split,
    maxSamples: data.max_samples,
    mixStrategy: data.mix_strategy as MixStrategy,
    interleaveProbs: data.interleave_probs,
    valSize: data.val_size,
    seed: training.seed,
    stage: args.finetuning.stage,
    skipBadRows: data.skip_bad_rows,
    log: print,
  };
  if (data.streaming) return streamAligned(args, options, print, worldSize);
  const loaded = await loadDatasets({ ...options, streaming: false });
  return { train: loaded.train ?? [], eval: loaded.eval ?? [] };
}

/**
 * `streaming: true`: the datasets are read as streams through a shuffle buffer of `buffer_size`,
 * and only the examples training consumes are taken (max_steps x batch x accumulation x processes). A stream
 * that runs out starts again reshuffled with seed + epoch, as an IterableDataset's set_epoch does.
 * Memory grows with the examples trained on, not with the dataset.
 */
async function streamAligned(
  args: TrainArgs,
  options: Omit<LoadDatasetsOptions, "streaming">,
  print: (line: string) => void,
  worldSize: number,
): Promise<{ train: AlignedExample[]; eval: AlignedExample[] }> {
  const { data, training } = args;
  const needed = training.do_train ? Math.max(training.max_steps, 0) * training.per_device_train_batch_size * training.gradient_accumulation_steps * worldSize : 0;
  const train: AlignedExample[] = [];
  const evaluation: AlignedExample[] = [];
  for (let epoch = 0; epoch === 0 || train.length < needed; epoch++) {
    const loaded = await loadDatasets({ ...options, seed: training.seed + epoch, bufferSize: data.buffer_size, streaming: true });
    let taken = 0;
    if (loaded.train && train.length < needed) {
      for await (const example of loaded.train) {
        train.push(example);
        taken++;
        if (train.length >= needed) break;
      }
    }
    if (epoch === 0 && loaded.eval) for await (const example of loaded.eval) evaluation.push(example);
    if (taken === 0) break; // nothing (left) to stream: training reports it
  }
  print(`streaming: ${train.length} training examples taken from the stream (max_steps x batch x accumulation${worldSize > 1 ? " x processes" : ""})${evaluation.length ? `, ${evaluation.length} for evaluation` : ""}`);
  return { train, eval: evaluation };
}

function processorOptions(args: TrainArgs, stage: Stage, modelFolder: string): ProcessorOptions {
  const { model: modelArgs, data } = args;
  return {
    modelFolder,
    tokenizer: { splitSpecialTokens: modelArgs.split_special_tokens, addTokens: modelArgs.add_tokens ?? undefined, addSpecialTokens: modelArgs.add_special_tokens ?? undefined },
    template: data.template,
    templateOptions: { defaultSystem: data.default_system, enableThinking: data.enable_thinking, toolFormat: data.tool_format, trainOnPrompt: data.train_on_prompt },
    cutoffLen: data.cutoff_len,
    packing: data.packing ?? stage.packsByDefault ?? false,
    neatPacking: data.neat_packing,
    trainOnPrompt: data.train_on_prompt,
    maskHistory: data.mask_history,
    reservedLabelLen: data.reserved_label_len ?? undefined,
  };
}

/**
 * Tokenizes one split with the stage processor: on `preprocessing_num_workers` threads (identical
 * rows to one thread), and from/to the `tokenized_path` cache, keyed by everything the rows depend on.
 */
async function processRows(
  split: "train" | "eval",
  examples: AlignedExample[],
  stage: Stage,
  prepared: LoadedTokenizer,
  args: TrainArgs,
  print: (line: string) => void,
  bar: ProgressBar | null,
): Promise<{ rows: TrainingExample[]; dropped: number }> {
  const { data } = args;
  if (examples.length === 0) return { rows: [], dropped: 0 };
  const spec = stage.processor(processorOptions(args, stage, prepared.modelFolder));
  const cacheKey = {
    stage: stage.name,
    processor: spec.args,
    tokenizer: tokenizerFingerprint(prepared.modelFolder),
    datasets: split === "train" ? data.dataset : data.eval_dataset,
    files: dataFilesFingerprint([...(data.dataset ?? []), ...(data.eval_dataset ?? [])], data.dataset_dir),
    maxSamples: data.max_samples,
    valSize: data.val_size,
    mix: [data.mix_strategy, data.interleave_probs],
    seed: args.training.seed,
  };
  const started = performance.now();
  let lastReport = started;
  const result = await processDataset<TrainingExample>(
    examples,
    spec,
    {
      numWorkers: data.preprocessing_num_workers,
      batchSize: data.preprocessing_batch_size,
      cachePath: data.tokenized_path ? join(data.tokenized_path, split) : null,
      cacheKey,
      overwriteCache: data.overwrite_cache,
      log: print,
      onProgress: (done, total) => {
        const now = performance.now();
        const rate = done / Math.max((now - started) / 1000, 1e-9);
        if (bar) return bar.update(`preprocessing ${split}`, done, total, [`${rate.toFixed(0)} examples/s`, `ETA ${formatDuration((total - done) / rate)}`]);
        if (now - lastReport < 2000 || done >= total) return;
        print(`preprocessing ${split}: ${done}/${total} examples, ${rate.toFixed(0)} examples/s, ETA ${formatDuration((total - done) / rate)}`);
        lastReport = now;
      },
    },
  );
  bar?.end();
  if (result.dropped.length) {
    print(`dropped ${result.dropped.length} ${split} example(s): ${result.dropped.slice(0, 3).map((d) => `#${d.index} ${d.reason}`).join("; ")}`);
  }
  return { rows: result.rows, dropped: result.dropped.length };
}

export interface PreparedData extends LoadedTokenizer {
  stage: Stage;
  train: TrainingExample[];
  eval: TrainingExample[];
  aligned: { train: AlignedExample[]; eval: AlignedExample[] };
  dropped: number;
}

/** Tokenizer, template and the processed rows exactly as the trainer receives them (with a terminal's bar while tokenizing). */
export async function prepareTrainingData(args: TrainArgs, print: (line: string) => void, bar: ProgressBar | null = null): Promise<PreparedData> {
  const stage = stageFor(args.finetuning.stage);
  const prepared = loadTokenizerAndTemplate(tokenizerOptionsFromArgs(args, stage.name));
  return { ...prepared, stage, ...(await processTrainingRows(args, stage, prepared, print, 1, bar)) };
}

type ProcessedRows = Pick<PreparedData, "train" | "eval" | "aligned" | "dropped">;

async function processTrainingRows(args: TrainArgs, stage: Stage, prepared: LoadedTokenizer, print: (line: string) => void, worldSize: number, bar: ProgressBar | null): Promise<ProcessedRows> {
  const aligned = await loadAligned(args, print, worldSize);
  const train = await processRows("train", aligned.train, stage, prepared, args, print, bar);
  const evaluation = await processRows("eval", aligned.eval, stage, prepared, args, print, bar);
  return { train: train.rows, eval: evaluation.rows, aligned, dropped: train.dropped + evaluation.dropped };
}

/**
 * The rows on every rank: rank 0 loads and preprocesses them (LLaMA-Factory's main_process_first,
 * once for the run), the others wait and receive them; the aligned examples stay on rank 0.
 */
async function sharedTrainingData(args: TrainArgs, print: (line: string) => void, parallel: DataParallel, bar: ProgressBar | null): Promise<PreparedData> {
  const stage = stageFor(args.finetuning.stage);
  const prepared = loadTokenizerAndTemplate(tokenizerOptionsFromArgs(args, stage.name));
  if (parallel.worldSize === 1) return { ...prepared, stage, ...(await processTrainingRows(args, stage, prepared, print, 1, bar)) };
  let processed: ProcessedRows | null = null;
  const { dropped } = await fromMain(parallel, async () => {
    processed = await processTrainingRows(args, stage, prepared, print, parallel.worldSize, bar);
    return { dropped: processed.dropped };
  });
  const mine = processed as ProcessedRows | null;
  return {
    ...prepared,
    stage,
    train: broadcastRows(parallel, mine?.train ?? null),
    eval: broadcastRows(parallel, mine?.eval ?? null),
    aligned: mine?.aligned ?? { train: [], eval: [] },
    dropped,
  };
}

/**
 * A row holding a token id beyond the model's embedding rows (a template token added without
 * resize_vocab) gets one clear error instead of libtorch's index error.
 */
function checkTokenIds(splits: Record<string, TrainingExample[]>, rows: number, prepared: LoadedTokenizer): void {
  for (const [split, examples] of Object.entries(splits)) {
    examples.forEach((example, index) => {
      // Every token sequence of the row: input_ids, or a pairwise row's chosen and rejected ids, or a KTO row's KL ids.
      const sequences = Object.entries(example).filter(([key, value]) => key.endsWith("input_ids") && Array.isArray(value)).map(([, value]) => value as number[]);
      const id = sequences.flat().find((token) => token >= rows);
      if (id === undefined) return;
      throw new UserError(
        `${split} example #${index} holds the token ${prepared.tokenizer.convertIdsToTokens(id) ?? id} (id ${id}), beyond the model's ${rows} embedding rows`,
        "resize_vocab",
        "set resize_vocab: true to grow the embeddings for the tokens the template added",
      );
    });
  }
}

/**
 * Runs `lmf train` for the stage the arguments name. Without a `print` of the caller's, lines go
 * to stderr, with a progress bar (tokenizing, loading weights, training steps) when it is a terminal.
 */
export async function runTrain(args: TrainArgs, options: RunOptions = {}): Promise<void> {
  const bar = options.print ? null : progressBarFor(process.stderr, { disabled: progressDisabled(args) });
  const print = options.print ?? (bar ? (line: string) => bar.line(line) : (line: string) => process.stderr.write(line + "\n"));
  const { training, finetuning, data } = args;
  stageFor(finetuning.stage);
  const unread = unreadSettingsNotice(finetuning.stage, finetuning);
  if (unread) print(unread);
  checkTrainingArgs(args);
  const device = engineInfo().cudaAvailable && !training.use_cpu ? "cuda" : "cpu";
  const channels = logChannels(args, print);
  const { parallel, finish } = startDataParallel(args, device, channels.warn);
  try {
    await runWorker(args, parallel, device, parallel.isMain ? { ...channels, print, bar } : { info: () => {}, warn: () => {}, print: () => {}, bar: null });
  } finally {
    finish();
  }
}

/** One process's part of `lmf train` (the whole run when it is the only one). */
async function runWorker(
  args: TrainArgs,
  parallel: DataParallel,
  device: string,
  channels: { info: (line: string) => void; warn: (line: string) => void; print: (line: string) => void; bar: ProgressBar | null },
): Promise<void> {
  const { training, finetuning, data } = args;
  const { info, warn, print, bar } = channels;
  // Checked now, written to only once the data and the model are loaded.
  const outputPlan = await fromMain(parallel, () => planOutputDir(args, print));
  const resumeFrom = outputPlan.resumeFrom;
  manualSeed(training.seed);

  // Tokenizer and data first, so that a bad dataset fails before any model is loaded.
  const preparedData = await sharedTrainingData(args, info, parallel, bar);
  const { stage, aligned, train: trainRows, eval: evalRows } = preparedData;
  if (training.do_train && trainRows.length === 0) throw new UserError("no training examples left after processing", "dataset", "check the dataset and cutoff_len");
  if (training.do_train) checkTrainedLabels(trainRows, data.cutoff_len, warn);

  const dtype = computeDtype(args, device);
  if (device === "cpu" && dtype === "bfloat16" && cpuBf16MatmulFast() === false) {
    warn("bf16 / pure_bf16 on this CPU: without AVX-512 (BW, VL, DQ) libtorch runs bfloat16 matmuls on a reference loop, tens of times slower than float32 (a LoRA step measured 40x); leave bf16 off here for speed.");
  }
  const onLoadProgress = bar ? (done: number, total: number) => bar.update("loading weights", done, total) : undefined;
  const prepared: LoadedModel = loadModelFor(preparedData, modelOptionsFromArgs(args, { dtype, device, training: training.do_train, modelMaxLength: data.cutoff_len, print: info, warn, onLoadProgress }));
  bar?.end();
  const { model, tokenizer } = prepared;
  const isLora = prepared.finetuning.loraConfig !== null;
  let stageRun: StageRun | null = null;
  try {
    checkTokenIds({ train: trainRows, eval: evalRows }, model.inputEmbeddings().weight.shape[0]!, prepared);
    await fromMain(parallel, () => claimOutputDir(outputPlan, args, { modelFolder: prepared.modelFolder, isLora }));
    if (finetuning.compute_accuracy && !stage.computesAccuracy) warn(`compute_accuracy: stage ${stage.name} reports no accuracy (LLaMA-Factory computes it in run_sft only).`);
    if (finetuning.include_effective_tokens_per_second && !stage.effectiveTokens) warn(`include_effective_tokens_per_second: stage ${stage.name} does not count effective tokens yet.`);
    const predictionMetrics = finetuning.compute_accuracy && !!stage.computesAccuracy && !training.prediction_loss_only;
    const padTokenId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
    const collateOptions = { padTokenId, padToMultipleOf: training.do_train ? 8 : null, labelPadTokenId: data.ignore_pad_token_for_loss ? -100 : padTokenId };
    const collate = (rows: TrainingExample[]) => stage.collate(rows, collateOptions);
    // What the stage builds around the model (a value head, a reference model) and its loss over them.
    const run = attachStage(stage, { loaded: prepared, args, device, dtype, print: info, collate });
    stageRun = run;
    const trainerStage = { ...stage, loss: run.loss };
    const saveTrained = (folder: string) => {
      if (isLora) saveLoraAdapter(model, folder, null, { baseModelNameOrPath: args.model.model_name_or_path });
      else saveModel(model, folder);
      run.save?.(folder);
      copyTokenizerFiles(prepared.modelFolder, folder);
    };

    // pissa_convert, as LLaMA-Factory's PissaConvertCallback: the initial adapter in pissa_init/
    // at the start; at the end a backup in pissa_backup/ and, in pissa_converted/, an ordinary LoRA
    // adapter over the original base model.
    const pissaConvert = training.do_train && finetuning.pissa_convert && isLora && finetuning.pissa_init;
    if (finetuning.pissa_convert && !pissaConvert && training.do_train) warn("pissa_convert: nothing to convert without pissa_init; ignored.");
    const pissaFolder = (name: string) => join(training.output_dir, name);
    const asPlainLora = () => ({ ...appliedLoraConfig(model)!, init_lora_weights: true, base_model_name_or_path: args.model.model_name_or_path });

    if (training.do_train) {
      if (parallel.isMain) saveJson(join(training.output_dir, "lmf_args.json"), args);
      // A resumed run keeps the initial adapter its first run saved; a run that starts (again) writes its own.
      if (parallel.isMain && pissaConvert && !(resumeFrom && existsSync(join(pissaFolder("pissa_init"), "adapter_model.safetensors")))) {
        saveLoraAdapter(model, pissaFolder("pissa_init"), asPlainLora());
        info(`Initial PiSSA adapter saved at ${pissaFolder("pissa_init")}.`);
      }
      if (run.train) {
        // A stage with its own loop (ppo): one process, no resume, as LLaMA-Factory's PPO trainer.
        if (parallel.worldSize > 1) throw new UserError(`stage ${stage.name} runs in one process`, "stage", "launch it without data parallelism");
        if (resumeFrom) throw new UserError(`stage ${stage.name} cannot resume from a checkpoint (nor can LLaMA-Factory's)`, "resume_from_checkpoint", "start the run afresh");
        await run.train({ rows: trainRows, saveModel: saveTrained, warn, progressBar: bar });
      } else {
        train(
          {
            model,
            train: trainRows,
            eval: training.eval_strategy !== "no" ? evalRows : null,
            collate,
            stage: trainerStage,
            extraParameters: run.parameters,
            saveModel: saveTrained,
            inStreamOrder: data.streaming,
            // Read as stored and copied into each weight's own dtype: exact for float32 master
            // weights beside bfloat16 frozen ones (bf16), and for all-bfloat16 models alike.
            loadModel: (checkpoint) => {
              if (isLora) restoreLoraWeights(model, checkpoint);
              else loadWeights(model, checkpoint, "float32");
              run.restore?.(checkpoint);
            },
          },
          trainerOptionsFromArgs(args, {
            device,
            resumeFrom,
            print: info,
            warn,
            // `all` means every tracker lmfactory has, which is TensorBoard alone.
            reporters: parallel.isMain && training.report_to.some((name) => name === "tensorboard" || name === "all")
              ? [tensorBoardReporter(training.logging_dir ?? defaultLoggingDir(training.output_dir), { args: trainingArgsJson(args) })]
              : [],
            effectiveTokens: finetuning.include_effective_tokens_per_second ? (stage.effectiveTokens?.(trainRows) ?? null) : null,
            computesAccuracy: !!stage.computesAccuracy,
            parallel,
            progressBar: bar,
          }),
        );
      }
      if (pissaConvert && parallel.isMain) {
        saveLoraAdapter(model, pissaFolder("pissa_backup"), asPlainLora());
        savePissaConverted(model, pissaFolder("pissa_converted"), pissaFolder("pissa_init"), { baseModelNameOrPath: args.model.model_name_or_path });
        info(`Converted PiSSA adapter (an ordinary LoRA adapter over the original model) saved at ${pissaFolder("pissa_converted")}.`);
      }
    }
    if (training.do_eval && evalRows.length) {
      const autocast = training.bf16 ? { device: autocastDeviceOf(device), dtype: "bfloat16" as const } : null;
      const options = { dropLast: training.dataloader_drop_last, predictionMetrics, parallel, autocast };
      const { loss: evalLoss, metrics: evalMetrics } = evaluate(model, evalRows, { collate, stage: trainerStage }, training.per_device_eval_batch_size, device, options);
      const metrics: Record<string, number> = { eval_loss: evalLoss, ...evalMetrics, ...stage.evalMetrics?.(evalLoss) };
      if (parallel.isMain) saveMetrics(training.output_dir, "eval", metrics);
      info(Object.entries(metrics).map(([name, value]) => `${name} ${value.toFixed(4)}`).join("  "));
    }
    // Prediction runs on rank 0 alone (its rows are rank 0's); the other ranks are done here.
    if (!parallel.isMain) return;
    if (training.do_predict && run.predict) {
      run.predict(aligned.eval.length ? aligned.eval : aligned.train, evalRows.length ? evalRows : trainRows);
    } else if (training.do_predict) {
      warn(`notice: stage ${stage.name} has no prediction step (as in LLaMA-Factory); do_predict ignored.`);
    }
    finishOutputDir(outputPlan);
  } finally {
    stageRun?.dispose?.();
    model.dispose();
  }
}
