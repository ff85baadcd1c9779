// `lmf export`, LLaMA-Factory's train/tuner.py export_model: check the arguments and export_dir,
// load the model with its adapters merged, pick the export dtype, and write a Hugging Face folder
// (or a GGUF file) through a temporary folder renamed into place, so export_dir is complete or absent.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { UserError } from "../errors.ts";
import type { InferArgs } from "../hparams/index.ts";
import { ollamaModelfile, savedChatTemplate } from "../data/templates/serialize.ts";
import { normalizeConfig } from "../model/config.ts";
import { modelOptionsFromArgs, tokenizerOptionsFromArgs } from "../model/from_args.ts";
import { checkpointTensors } from "../model/loader.ts";
import { type LoadedModel, loadModelFor, loadTokenizerAndTemplate } from "../model/pretrained.ts";
import { type DType, type Tensor, engineInfo, saveSafetensorsSharded } from "../torch/index.ts";
import { StagedFolder, checkExportDir } from "./folder.ts";
import { listDataFiles, readDataFiles } from "../data/loaders.ts";
import { readDatasetInfo } from "../data/registry.ts";
import { exportGguf, ggufRefusal } from "./gguf/export.ts";
import { GPTQ_DEFAULTS } from "./gptq/gptq.ts";
import { gptqConfigs, gptqQuantizeModel, gptqStateDict, sampleCalibration, writeGptqWeights } from "./gptq/quantize_model.ts";
import type { GgufFileType } from "./gguf/mix.ts";
import { ggufTokenizerFromHf } from "./gguf/tokenizer.ts";
import { exportedGenerationConfig, writeHfFolder } from "./hf.ts";

export interface ExportOptions {
  print?: (line: string) => void;
  /** Shard limit in bytes instead of `export_size` GB (tests shard tiny models with it). */
  maxShardBytes?: number;
}

/**
 * export_model's dtype rule: `infer_dtype` when given; `auto` keeps the checkpoint's torch_dtype,
 * and float32 checkpoints are written in bfloat16 (LLaMA-Factory's half-precision-first choice).
 */
export function exportDtype(inferDtype: string, configDtype: unknown): DType {
  if (inferDtype === "float32" || inferDtype === "float16" || inferDtype === "bfloat16") return inferDtype;
  if (configDtype === "float16" || configDtype === "bfloat16") return configDtype;
  return "bfloat16";
}

/** The argument combinations export refuses, before anything is loaded or written. */
function checkArguments(args: InferArgs): void {
  const { model } = args;
  if (!model.export_dir) throw new UserError("`lmf export` needs `export_dir`", "export_dir", "set export_dir to the folder to write the model to");
  // LLaMA-Factory's export_model: "Cannot merge adapters to a quantized model"; an on-the-fly
  // quantized base has no float weights to write either.
  if (model.quantization_bit !== null) {
    throw new UserError(
      `export writes float weights, and quantization_bit: ${model.quantization_bit} would load the base quantized`,
      "quantization_bit",
      "drop quantization_bit: export merges the adapters into the full-precision model (export_quantization_bit makes a GPTQ folder, export_gguf_type a quantized GGUF)",
    );
  }
  const bits = model.export_quantization_bit;
  if (bits !== null && ![2, 3, 4, 8].includes(bits)) {
    throw new UserError(`export_quantization_bit ${bits} is not a GPTQ width`, "export_quantization_bit", "use 2, 3, 4 or 8");
  }
  if (model.export_format === "gguf") {
    if (bits !== null) throw new UserError("export_quantization_bit makes a GPTQ folder, not GGUF", "export_format: gguf", "choose a GGUF type with export_gguf_type (q4_k_m, q8_0, ...) instead");
    if (model.export_legacy_format) throw new UserError("export_legacy_format is for Hugging Face folders", "export_format: gguf", "drop export_legacy_format");
    if (model.export_size !== 5) throw new UserError("export_size shards Hugging Face folders; a GGUF export is one file", "export_format: gguf", "drop export_size");
  }
  if (bits !== null && model.export_legacy_format) {
    throw new UserError("GPTQ folders are written as safetensors", "export_legacy_format", "drop export_legacy_format with export_quantization_bit");
  }
}

function exportDevice(choice: string): string {
  return choice === "auto" && engineInfo().cudaAvailable ? "cuda" : "cpu";
}

/** Runs the export job; returns the folder written. */
export async function runExport(args: InferArgs, options: ExportOptions = {}): Promise<string> {
  const print = options.print ?? ((line: string) => console.error(line));
  const { model: modelArgs } = args;
  checkArguments(args);
  const exportDir = modelArgs.export_dir!;
  checkExportDir(exportDir, modelArgs.export_overwrite);
  if (modelArgs.export_hub_model_id) {
    print(`notice: export_hub_model_id: lmfactory has no network access to the Hugging Face Hub, so it writes ${exportDir} and pushes nothing; upload it with \`huggingface-cli upload ${modelArgs.export_hub_model_id} ${exportDir}\``);
  }

  const loadedTokenizer = loadTokenizerAndTemplate(tokenizerOptionsFromArgs(args));
  const bits = modelArgs.export_quantization_bit;
  // Calibration windows are drawn before the model loads, so bad data fails early.
  const calibration =
    bits !== null
      ? sampleCalibration(await readCalibrationTexts(modelArgs.export_quantization_dataset!, args.data.dataset_dir), loadedTokenizer.tokenizer, modelArgs.export_quantization_nsamples, modelArgs.export_quantization_maxlen)
      : null;
  const sourceConfig = readSourceConfig(loadedTokenizer.modelFolder);
  const configDtype = sourceConfig.torch_dtype;
  if (sourceConfig.quantization_config) {
    // LLaMA-Factory's export_model: "Cannot merge adapters to a quantized model."
    if (modelArgs.adapter_name_or_path?.length) throw new UserError("cannot merge adapters into a quantized (GPTQ) model", "adapter_name_or_path", "merge the adapters into the unquantized model, then quantize that export");
    if (modelArgs.export_format === "gguf") throw new UserError("GGUF export starts from float weights, and this model is GPTQ-quantized", "export_format: gguf", "export the unquantized model to GGUF and choose a GGUF type there");
    if (modelArgs.export_quantization_bit !== null) throw new UserError("the model is already GPTQ-quantized", "export_quantization_bit", "quantize the unquantized model");
    if (modelArgs.export_legacy_format) throw new UserError("GPTQ folders are written as safetensors", "export_legacy_format", "drop export_legacy_format for a GPTQ model");
  }
  if (modelArgs.export_format === "gguf" && typeof sourceConfig.model_type === "string") {
    // Families llama.cpp cannot run as Hugging Face does, and tokenizers GGUF cannot carry here, are
    // refused before the model loads or anything is written (the tokenizer is built again once the
    // model's vocabulary is final).
    const config = normalizeConfig(sourceConfig as Record<string, unknown>);
    const refusal = ggufRefusal(config, modelArgs.export_gguf_type as GgufFileType);
    if (refusal) throw new UserError(refusal, "export_format: gguf", "export a Hugging Face folder (export_format: hf) instead");
    const { tokenizer, template } = loadedTokenizer;
    ggufTokenizerFromHf(tokenizer, Math.max(config.vocab_size, tokenizer.length), savedChatTemplate(template, tokenizer));
  }
  // A GPTQ model is saved in float16, as LLaMA-Factory sets torch_dtype for quantized models.
  const dtype = bits !== null ? "float16" : exportDtype(modelArgs.infer_dtype, configDtype);
  const adapters = modelArgs.adapter_name_or_path ?? [];
  // Adapters merge in float32 (and CPUs have no float16 matmul); the cast to `dtype` happens as the files are written.
  const gguf = modelArgs.export_format === "gguf";
  // GGUF types are made from float32 weights, as llama.cpp's converter and quantizer make them.
  const loadDtype: DType = gguf || bits !== null || adapters.length || dtype === "float16" ? "float32" : dtype;
  const device = exportDevice(modelArgs.export_device);
  if (modelArgs.export_device === "auto") print(`export_device auto: ${device === "cuda" ? "merging on the GPU" : "no GPU in this libtorch build or machine, exporting on the CPU"}`);
  const loaded = loadModelFor(loadedTokenizer, modelOptionsFromArgs(args, { dtype: loadDtype, device, training: false, print }));
  try {
    if (device !== "cpu") loaded.model.to("cpu");
    if (adapters.length) print(`merged ${adapters.length} adapter(s): ${adapters.join(", ")}`);
    print(gguf ? `GGUF type: ${modelArgs.export_gguf_type}` : `export dtype: ${dtype}`);
    const staged = new StagedFolder(exportDir);
    try {
      if (calibration) {
        print(`GPTQ: ${bits}-bit, ${calibration.length} calibration windows of ${modelArgs.export_quantization_maxlen} tokens`);
        staged.add(...writeGptq(loaded, args, calibration, staged.path, options, print));
      } else {
        staged.add(...(gguf ? writeGgufFolder(loaded, args, staged.path, print) : writeHf(loaded, args, dtype, staged.path, options)));
      }
      const files = staged.commit({
        model_name_or_path: modelArgs.model_name_or_path,
        adapter_name_or_path: adapters,
        template: args.data.template,
        ...(gguf ? { gguf_type: modelArgs.export_gguf_type } : { torch_dtype: dtype }),
        ...(bits !== null ? { gptq_bits: bits, export_quantization_dataset: modelArgs.export_quantization_dataset } : {}),
      });
      print(`wrote ${exportDir}: ${files.join(", ")}`);
    } catch (error) {
      staged.abort();
      throw error;
    }
  } finally {
    loaded.model.dispose();
  }
  if (modelArgs.export_hub_model_id) print(`not pushed to ${modelArgs.export_hub_model_id}: pushing to the Hub is not available in lmfactory`);
  return exportDir;
}

/** The source checkpoint's config.json as written (before defaults), for its torch_dtype and quantization_config. */
function readSourceConfig(folder: string): { torch_dtype?: unknown; quantization_config?: unknown; model_type?: unknown } {
  const path = join(folder, "config.json");
  if (!existsSync(path)) return {};
  try {
    return JSON.parse(readFileSync(path, "utf8")) as { torch_dtype?: unknown; quantization_config?: unknown; model_type?: unknown };
  } catch {
    return {};
  }
}

/** export_quantization_dataset's `text` rows: a data file or folder, or a dataset of dataset_dir's dataset_info.json. */
async function readCalibrationTexts(dataset: string, datasetDir: string): Promise<string[]> {
  let path = dataset;
  if (!existsSync(path)) {
    const entry = (readDatasetInfo(datasetDir) as Record<string, { file_name?: string }> | null)?.[dataset];
    if (!entry?.file_name) {
      throw new UserError(`export_quantization_dataset '${dataset}' is neither a file nor a dataset of ${join(datasetDir, "dataset_info.json")}`, "export_quantization_dataset", "give a local json/jsonl/csv/txt/parquet file with a `text` column");
    }
    path = join(datasetDir, entry.file_name);
  }
  const texts: string[] = [];
  for await (const row of readDataFiles(listDataFiles(path))) {
    const text = (row.data as { text?: unknown } | null)?.text;
    if (typeof text === "string") texts.push(text);
  }
  return texts;
}

/** A GPTQ folder: the model quantized layer by layer on the calibration windows, packed as AutoGPTQ packs it. */
function writeGptq(loaded: LoadedModel, args: InferArgs, calibration: number[][], folder: string, options: ExportOptions, print: (line: string) => void): string[] {
  const bits = args.model.export_quantization_bit!;
  const { groupSize, dampPercent } = GPTQ_DEFAULTS;
  const results = gptqQuantizeModel(loaded.model, calibration, { bits }, print);
  const { quantizationConfig, quantizeConfig } = gptqConfigs(bits, groupSize, dampPercent);
  const files = writeHfFolder(loaded.model, loaded.tokenizer, folder, {
    dtype: "float16",
    maxShardSize: options.maxShardBytes ?? `${args.model.export_size}GB`,
    legacyFormat: false,
    generationConfig: exportedGenerationConfig(loaded.model, loaded.tokenizer.generationConfig as Record<string, unknown> | null),
    chatTemplate: savedChatTemplate(loaded.template, loaded.tokenizer),
    modelfile: ollamaModelfile(loaded.template, loaded.tokenizer),
    configExtra: { quantization_config: quantizationConfig },
    writeWeights: (target) => {
      const pairs = gptqStateDict(loaded.model, results, groupSize, bits);
      try {
        return writeGptqWeights(pairs, target, options.maxShardBytes ?? `${args.model.export_size}GB`);
      } finally {
        const own = new Set(Object.values(loaded.model.stateDict()));
        for (const [, t] of pairs) if (!own.has(t)) t.dispose();
      }
    },
  });
  writeFileSync(join(folder, "quantize_config.json"), `${JSON.stringify(quantizeConfig, null, 2)}\n`);
  return [...files, "quantize_config.json"];
}

function writeHf(loaded: LoadedModel, args: InferArgs, dtype: DType, folder: string, options: ExportOptions): string[] {
  const { model: modelArgs, finetuning } = args;
  const adapters = modelArgs.adapter_name_or_path ?? [];
  const valueHeadSource = finetuning.stage === "rm" ? (adapters.at(-1) ?? loaded.modelFolder) : null;
  const valueHead = valueHeadSource
    ? [join(valueHeadSource, "value_head.safetensors"), join(valueHeadSource, "value_head.bin")].find((path) => existsSync(path)) ?? null
    : null;
  if (valueHeadSource && !valueHead) options.print?.(`notice: stage rm, but ${valueHeadSource} has no value_head.safetensors or value_head.bin to copy`);
  return writeHfFolder(loaded.model, loaded.tokenizer, folder, {
    dtype,
    maxShardSize: options.maxShardBytes ?? `${modelArgs.export_size}GB`,
    legacyFormat: modelArgs.export_legacy_format,
    generationConfig: exportedGenerationConfig(loaded.model, loaded.tokenizer.generationConfig as Record<string, unknown> | null),
    chatTemplate: savedChatTemplate(loaded.template, loaded.tokenizer),
    modelfile: ollamaModelfile(loaded.template, loaded.tokenizer),
    valueHead,
    // A GPTQ model exports unchanged (no adapter merges into it): its packed tensors as stored.
    writeWeights: loaded.model.config.quantization_config ? (target) => copyCheckpoint(loaded.modelFolder, target, dtype, options.maxShardBytes ?? `${modelArgs.export_size}GB`) : undefined,
  });
}

/** The source checkpoint's tensors re-sharded into `folder` (floating ones in `dtype`, integer ones as stored). */
function copyCheckpoint(source: string, folder: string, dtype: DType, maxShardSize: number | string): string[] {
  const state: Record<string, Tensor> = {};
  try {
    for (const [name, tensor] of checkpointTensors(source)) state[name] = tensor;
    return saveSafetensorsSharded(folder, state, { maxShardSize, dtype }).map((path) => basename(path));
  } finally {
    for (const tensor of Object.values(state)) tensor.dispose();
  }
}

/** A GGUF export: one `model-<type>.gguf` with the tokenizer and chat template, and a Modelfile that points at it. */
function writeGgufFolder(loaded: LoadedModel, args: InferArgs, folder: string, print: (line: string) => void): string[] {
  const type = args.model.export_gguf_type as GgufFileType;
  const chatTemplate = savedChatTemplate(loaded.template, loaded.tokenizer);
  const tokenizer = ggufTokenizerFromHf(loaded.tokenizer, loaded.model.config.vocab_size, chatTemplate);
  const file = `model-${type}.gguf`;
  const started = Date.now();
  exportGguf(loaded.model, tokenizer, join(folder, file), { type, name: basename(resolve(args.model.model_name_or_path!)) });
  print(`wrote ${file} (${type}, tokenizer.ggml.pre ${tokenizer.pre}) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  writeFileSync(join(folder, "Modelfile"), ollamaModelfile(loaded.template, loaded.tokenizer, `./${file}`));
  return [file, "Modelfile"];
}
