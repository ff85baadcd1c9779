// `lmf train`: the stage workflows pt and sft, as LLaMA-Factory's run_pt / run_sft: tokenizer ->
// template -> dataset -> model (patches, vocabulary, adapters) -> trainer -> save, evaluate,
// predict. Only this file and src/cli.ts see whole argument groups; the layers get flat values.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type LoadDatasetsOptions, dataFilesFingerprint, loadDatasets, processDataset } from "../data/dataset.ts";
import { tokenizerFingerprint } from "../data/cache.ts";
import type { MixStrategy } from "../data/mix.ts";
import { checkTrainedLabels } from "../data/label_check.ts";
import { collateSupervised } from "../data/processors/collator.ts";
import { getTemplateAndFixTokenizer } from "../data/templates/index.ts";
import type { ChatTemplate } from "../data/templates/template.ts";
import type { AlignedExample, SupervisedRow } from "../data/types.ts";
import { UserError } from "../errors.ts";
import type { TrainArgs } from "../hparams/index.ts";
import { saveJson } from "../hparams/index.ts";
import {
  applyFinetuning,
  appliedLoraConfig,
  paramSummary,
  printParamStatus,
  restoreLoraWeights,
  saveLoraAdapter,
  savePissaConverted,
} from "../model/adapters/index.ts";
import { loadConfig } from "../model/config.ts";
import { type GenerateOptions, generate } from "../model/generation.ts";
import { resolveModelPath } from "../model/hub.ts";
import { loadWeights, saveModel } from "../model/loader.ts";
import { resizeTokenEmbeddings } from "../model/patches/embedding.ts";
import { patchConfig } from "../model/patches/config.ts";
import { upcastLayernorm } from "../model/patches/upcast.ts";
import { architectureFor, type CausalLM } from "../model/registry.ts";
import { type Tokenizer, copyTokenizerFiles, loadTokenizer } from "../model/tokenizer.ts";
import { computeSimilarity, writeGeneratedPredictions } from "../eval/metrics.ts";
import { type DType, engineInfo, manualSeed } from "../torch/index.ts";
import type { StageProcessorOptions } from "./preprocess.ts";
import { formatDuration, saveMetrics } from "./logging.ts";
import { claimOutputDir, finishOutputDir, planOutputDir } from "./output_dir.ts";
import { defaultLoggingDir, tensorBoardReporter } from "./tensorboard.ts";
import { type TrainingExample, evaluateLoss, train } from "./trainer.ts";

export interface RunOptions {
  print?: (line: string) => void;
}

/** The dtype weights are kept in: float32, or bfloat16 with bf16 (fp16 needs CUDA). */
function computeDtype(args: TrainArgs, device: string): DType {
  if (args.training.fp16 && device === "cpu") {
    throw new UserError("fp16 is not supported on CPU by libtorch", "fp16", "use bf16: true (or neither) on CPU");
  }
  return (args.model.compute_dtype as DType | undefined) ?? "float32";
}

interface PreparedTokenizer {
  tokenizer: Tokenizer;
  template: ChatTemplate;
  modelFolder: string;
  addedTokens: number;
}

interface PreparedModel extends PreparedTokenizer {
  model: CausalLM;
  isLora: boolean;
}

function prepareTokenizer(args: TrainArgs, stage: "pt" | "sft"): PreparedTokenizer {
  const { model: modelArgs, data } = args;
  const modelFolder = resolveModelPath(modelArgs.model_name_or_path!, { cacheDir: modelArgs.cache_dir, revision: modelArgs.model_revision });
  const tokenizer = loadTokenizer(modelFolder, {
    splitSpecialTokens: modelArgs.split_special_tokens,
    addTokens: modelArgs.add_tokens ?? undefined,
    addSpecialTokens: modelArgs.add_special_tokens ?? undefined,
  });
  const { template, addedTokens } = getTemplateAndFixTokenizer(stage === "pt" && !data.template ? "empty" : data.template, tokenizer, {
    defaultSystem: data.default_system,
    enableThinking: data.enable_thinking,
    toolFormat: data.tool_format,
    trainOnPrompt: data.train_on_prompt,
  });
  return { tokenizer, template, modelFolder, addedTokens };
}

function prepareModel(args: TrainArgs, prepared: PreparedTokenizer, device: string, print: (line: string) => void): PreparedModel {
  const { model: modelArgs, data, finetuning, training } = args;
  const { tokenizer, modelFolder } = prepared;
  const config = loadConfig(modelFolder);
  for (const notice of patchConfig(config, {
    flashAttn: modelArgs.flash_attn,
    ropeScaling: modelArgs.rope_scaling,
    modelMaxLength: data.cutoff_len,
    shiftAttn: modelArgs.shift_attn,
    training: training.do_train,
  })) {
    print(notice);
  }
  const dtype = computeDtype(args, device);
  const architecture = architectureFor(config, join(modelFolder, "config.json"));
  const model = architecture.build(config, { dtype, device, init: modelArgs.train_from_scratch ? "hf" : "empty" });
  if (!modelArgs.train_from_scratch) loadWeights(model, modelFolder, dtype);
  model.upcastLogits = modelArgs.upcast_lmhead_output;
  if (modelArgs.upcast_layernorm) print(`upcast_layernorm: ${upcastLayernorm(model).length} norm weights kept in float32`);
  if (modelArgs.resize_vocab || prepared.addedTokens > 0 || tokenizer.length > config.vocab_size) {
    const size = resizeTokenEmbeddings(model, tokenizer.length);
    print(`resized the vocabulary to ${size} for ${tokenizer.length} tokens`);
  }
  const result = applyFinetuning(model, {
    finetuningType: finetuning.finetuning_type as "lora" | "freeze" | "full",
    isTrainable: training.do_train,
    freezeTrainableLayers: finetuning.freeze_trainable_layers,
    freezeTrainableModules: finetuning.freeze_trainable_modules,
    freezeExtraModules: finetuning.freeze_extra_modules,
    useLlamaPro: finetuning.use_llama_pro,
    loraRank: finetuning.lora_rank,
    loraAlpha: finetuning.lora_alpha,
    loraDropout: finetuning.lora_dropout,
    loraTarget: finetuning.lora_target,
    additionalTarget: finetuning.additional_target,
    useRslora: finetuning.use_rslora,
    useDora: finetuning.use_dora,
    pissaInit: finetuning.pissa_init,
    pissaIter: finetuning.pissa_iter,
    adapterNameOrPath: modelArgs.adapter_name_or_path,
    createNewAdapter: finetuning.create_new_adapter,
    loraDtype: finetuning.finetuning_type === "lora" && dtype !== "float32" && !finetuning.pure_bf16 ? "float32" : undefined,
  });
  print(paramSummary(model));
  if (modelArgs.print_param_status) printParamStatus(model, print);
  return { ...prepared, model, isLora: result.loraConfig !== null };
}

async function loadAligned(args: TrainArgs, print: (line: string) => void): Promise<{ train: AlignedExample[]; eval: AlignedExample[] }> {
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
  if (data.streaming) return streamAligned(args, options, print);
  const loaded = await loadDatasets({ ...options, streaming: false });
  return { train: loaded.train ?? [], eval: loaded.eval ?? [] };
}

/**
 * `streaming: true`: the datasets are read as streams through a shuffle buffer of `buffer_size`,
 * and only the examples training consumes are taken (max_steps x batch x accumulation). A stream
 * that runs out starts again reshuffled with seed + epoch, as an IterableDataset's set_epoch does.
 * Memory grows with the examples trained on, not with the dataset.
 */
async function streamAligned(args: TrainArgs, options: Omit<LoadDatasetsOptions, "streaming">, print: (line: string) => void): Promise<{ train: AlignedExample[]; eval: AlignedExample[] }> {
  const { data, training } = args;
  const needed = training.do_train ? Math.max(training.max_steps, 0) * training.per_device_train_batch_size * training.gradient_accumulation_steps : 0;
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
  print(`streaming: ${train.length} training examples taken from the stream (max_steps x batch x accumulation)${evaluation.length ? `, ${evaluation.length} for evaluation` : ""}`);
  return { train, eval: evaluation };
}

function stageProcessorOptions(args: TrainArgs, stage: "pt" | "sft", modelFolder: string): StageProcessorOptions {
  const { model: modelArgs, data } = args;
  return {
    stage,
    modelFolder,
    tokenizer: { splitSpecialTokens: modelArgs.split_special_tokens, addTokens: modelArgs.add_tokens ?? undefined, addSpecialTokens: modelArgs.add_special_tokens ?? undefined },
    template: data.template,
    templateOptions: { defaultSystem: data.default_system, enableThinking: data.enable_thinking, toolFormat: data.tool_format, trainOnPrompt: data.train_on_prompt },
    cutoffLen: data.cutoff_len,
    packing: data.packing ?? stage === "pt",
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
  stage: "pt" | "sft",
  prepared: PreparedTokenizer,
  args: TrainArgs,
  print: (line: string) => void,
): Promise<{ rows: SupervisedRow[]; dropped: number }> {
  const { data } = args;
  if (examples.length === 0) return { rows: [], dropped: 0 };
  const processorOptions = stageProcessorOptions(args, stage, prepared.modelFolder);
  const cacheKey = {
    processor: processorOptions,
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
  const result = await processDataset<SupervisedRow>(
    examples,
    { module: new URL("./preprocess.ts", import.meta.url).href, exportName: "makeStageProcessor", args: processorOptions },
    {
      numWorkers: data.preprocessing_num_workers,
      batchSize: data.preprocessing_batch_size,
      cachePath: data.tokenized_path ? join(data.tokenized_path, split) : null,
      cacheKey,
      overwriteCache: data.overwrite_cache,
      log: print,
      onProgress: (done, total) => {
        const now = performance.now();
        if (now - lastReport < 2000 || done >= total) return;
        const rate = done / ((now - started) / 1000);
        print(`preprocessing ${split}: ${done}/${total} examples, ${rate.toFixed(0)} examples/s, ETA ${formatDuration((total - done) / rate)}`);
        lastReport = now;
      },
    },
  );
  if (result.dropped.length) {
    print(`dropped ${result.dropped.length} ${split} example(s): ${result.dropped.slice(0, 3).map((d) => `#${d.index} ${d.reason}`).join("; ")}`);
  }
  return { rows: result.rows, dropped: result.dropped.length };
}

export interface PreparedData extends PreparedTokenizer {
  train: TrainingExample[];
  eval: TrainingExample[];
  aligned: { train: AlignedExample[]; eval: AlignedExample[] };
  dropped: number;
}

/** Tokenizer, template and the processed rows exactly as the trainer receives them. */
export async function prepareTrainingData(args: TrainArgs, print: (line: string) => void): Promise<PreparedData> {
  const stage = args.finetuning.stage as "pt" | "sft";
  if (stage !== "pt" && stage !== "sft") throw new UserError(`stage ${stage} is not built yet`, "stage", "use stage: pt or sft");
  const prepared = prepareTokenizer(args, stage);
  const aligned = await loadAligned(args, print);
  const train = await processRows("train", aligned.train, stage, prepared, args, print);
  const evaluation = await processRows("eval", aligned.eval, stage, prepared, args, print);
  return { ...prepared, train: train.rows as TrainingExample[], eval: evaluation.rows as TrainingExample[], aligned, dropped: train.dropped + evaluation.dropped };
}

/** Runs `lmf train` for stage pt or sft. */
export async function runTrain(args: TrainArgs, options: RunOptions = {}): Promise<void> {
  const print = options.print ?? ((line: string) => process.stderr.write(line + "\n"));
  const { training, finetuning, data } = args;
  const stage = finetuning.stage as "pt" | "sft";
  if (stage !== "pt" && stage !== "sft") throw new UserError(`stage ${stage} is not built yet`, "stage", "use stage: pt or sft");
  // Checked now, written to only once the data and the model are loaded.
  const outputPlan = planOutputDir(args, print);
  const resumeFrom = outputPlan.resumeFrom;
  manualSeed(training.seed);
  const device = engineInfo().cudaAvailable && !training.use_cpu ? "cuda" : "cpu";

  // Tokenizer and data first, so that a bad dataset fails before any model is loaded.
  const preparedData = await prepareTrainingData(args, print);
  const { aligned, train: trainRows, eval: evalRows } = preparedData;
  if (training.do_train && trainRows.length === 0) throw new UserError("no training examples left after processing", "dataset", "check the dataset and cutoff_len");
  if (training.do_train) checkTrainedLabels(trainRows, data.cutoff_len, print);

  const prepared = prepareModel(args, preparedData, device, print);
  const { model, tokenizer } = prepared;
  try {
    claimOutputDir(outputPlan, args, prepared);
    const padTokenId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
    const collate = (rows: TrainingExample[]) =>
      collateSupervised(rows, { padTokenId, padToMultipleOf: training.do_train ? 8 : null, labelPadTokenId: data.ignore_pad_token_for_loss ? -100 : padTokenId });
    const saveTrained = (folder: string) => {
      if (prepared.isLora) saveLoraAdapter(model, folder, null, { baseModelNameOrPath: args.model.model_name_or_path });
      else saveModel(model, folder);
      copyTokenizerFiles(prepared.modelFolder, folder);
    };

    // pissa_convert, as LLaMA-Factory's PissaConvertCallback: the initial adapter in pissa_init/
    // at the start; at the end a backup in pissa_backup/ and, in pissa_converted/, an ordinary LoRA
    // adapter over the original base model.
    const pissaConvert = training.do_train && finetuning.pissa_convert && prepared.isLora && finetuning.pissa_init;
    if (finetuning.pissa_convert && !pissaConvert && training.do_train) print("pissa_convert: nothing to convert without pissa_init; ignored.");
    const pissaFolder = (name: string) => join(training.output_dir, name);
    const asPlainLora = () => ({ ...appliedLoraConfig(model)!, init_lora_weights: true, base_model_name_or_path: args.model.model_name_or_path });

    if (training.do_train) {
      saveJson(join(training.output_dir, "lmf_args.json"), args);
      // A resumed run keeps the initial adapter its first run saved; a run that starts (again) writes its own.
      if (pissaConvert && !(resumeFrom && existsSync(join(pissaFolder("pissa_init"), "adapter_model.safetensors")))) {
        saveLoraAdapter(model, pissaFolder("pissa_init"), asPlainLora());
        print(`Initial PiSSA adapter saved at ${pissaFolder("pissa_init")}.`);
      }
      train(
        {
          model,
          train: trainRows,
          eval: training.eval_strategy !== "no" ? evalRows : null,
          collate,
          saveModel: saveTrained,
          inStreamOrder: data.streaming,
          loadModel: (checkpoint) => (prepared.isLora ? restoreLoraWeights(model, checkpoint) : loadWeights(model, checkpoint, model.model.embed_tokens.weight.dtype)),
        },
        {
          outputDir: training.output_dir,
          batchSize: training.per_device_train_batch_size,
          evalBatchSize: training.per_device_eval_batch_size,
          gradientAccumulationSteps: training.gradient_accumulation_steps,
          learningRate: training.learning_rate,
          weightDecay: training.weight_decay,
          optim: training.optim,
          adamBeta1: training.adam_beta1,
          adamBeta2: training.adam_beta2,
          adamEpsilon: training.adam_epsilon,
          maxGradNorm: training.max_grad_norm,
          numTrainEpochs: training.num_train_epochs,
          maxSteps: training.max_steps,
          lrSchedulerType: training.lr_scheduler_type,
          lrSchedulerKwargs: (training.lr_scheduler_kwargs ?? undefined) as Record<string, number> | undefined,
          warmupSteps: training.warmup_steps,
          warmupRatio: training.warmup_ratio,
          loggingSteps: training.logging_steps,
          saveStrategy: training.save_strategy as "no" | "steps" | "epoch",
          saveSteps: training.save_steps,
          saveTotalLimit: training.save_total_limit,
          saveOnlyModel: training.save_only_model,
          evalStrategy: training.eval_strategy as "no" | "steps" | "epoch",
          evalSteps: training.eval_steps ?? training.logging_steps,
          dataSeed: training.data_seed ?? training.seed,
          gradientCheckpointing: !args.model.disable_gradient_checkpointing,
          plotLoss: finetuning.plot_loss,
          device,
          resumeFrom,
          print,
          // `all` means every tracker lmfactory has, which is TensorBoard alone.
          reporters: training.report_to.some((name) => name === "tensorboard" || name === "all")
            ? [tensorBoardReporter(training.logging_dir ?? defaultLoggingDir(training.output_dir))]
            : [],
        },
      );
      if (pissaConvert) {
        saveLoraAdapter(model, pissaFolder("pissa_backup"), asPlainLora());
        savePissaConverted(model, pissaFolder("pissa_converted"), pissaFolder("pissa_init"), { baseModelNameOrPath: args.model.model_name_or_path });
        print(`Converted PiSSA adapter (an ordinary LoRA adapter over the original model) saved at ${pissaFolder("pissa_converted")}.`);
      }
    }
    if (training.do_eval && evalRows.length) {
      const evalLoss = evaluateLoss(model, evalRows, collate, training.per_device_eval_batch_size, device);
      const metrics: Record<string, number> = { eval_loss: evalLoss };
      if (stage === "sft" || stage === "pt") metrics.perplexity = Math.exp(evalLoss);
      saveMetrics(training.output_dir, "eval", metrics);
      print(`eval_loss ${evalLoss.toFixed(4)}  perplexity ${Math.exp(evalLoss).toFixed(4)}`);
    }
    if (training.do_predict && stage === "sft") {
      predict(prepared, aligned.eval.length ? aligned.eval : aligned.train, args, device, print);
    }
    finishOutputDir(outputPlan);
  } finally {
    model.dispose();
  }
}

/** do_predict with predict_with_generate: generated_predictions.jsonl and BLEU/ROUGE. */
function predict(prepared: PreparedModel, examples: AlignedExample[], args: TrainArgs, device: string, print: (line: string) => void): void {
  const { training, generating, data } = args;
  const { model, tokenizer, template } = prepared;
  model.eval();
  const stopIds = template.getStopTokenIds(tokenizer);
  const batchSize = training.per_device_eval_batch_size;
  const rows: { prompt: string; predict: string; label: string }[] = [];
  for (let start = 0; start < examples.length; start += batchSize) {
    const batch = examples.slice(start, start + batchSize);
    const prompts = batch.map((example) => template.encodeOneturn(tokenizer, [...example._prompt, { role: "assistant", content: "" }], example._system, example._tools)[0]);
    const options: GenerateOptions = {
      doSample: generating.do_sample,
      temperature: generating.temperature,
      topP: generating.top_p,
      topK: generating.top_k,
      numBeams: training.generation_num_beams ?? generating.num_beams,
      repetitionPenalty: generating.repetition_penalty,
      lengthPenalty: generating.length_penalty,
      maxNewTokens: generating.max_new_tokens,
      eosTokenId: stopIds,
      padTokenId: tokenizer.padTokenId ?? stopIds[0],
    };
    const { sequences } = generate(model, prompts.map((p) => p.slice(-(data.cutoff_len))), options);
    batch.forEach((example, i) => {
      rows.push({
        prompt: tokenizer.decode(prompts[i]!, { skipSpecialTokens: false }),
        predict: tokenizer.decode(sequences[i]!, { skipSpecialTokens: true }),
        label: example._response[0]?.content ?? "",
      });
    });
    print(`predicted ${rows.length}/${examples.length}`);
  }
  writeGeneratedPredictions(training.output_dir, rows);
  const metrics = computeSimilarity(rows.map((r) => r.predict), rows.map((r) => r.label));
  saveMetrics(training.output_dir, "predict", { ...metrics });
  print(`wrote ${join(training.output_dir, "generated_predictions.jsonl")}: ${JSON.stringify(metrics)}`);
}

