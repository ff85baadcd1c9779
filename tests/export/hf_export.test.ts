// `lmf export` to a Hugging Face folder (src/export/workflow.ts, hf.ts, folder.ts) on tiny random
// checkpoints with a real BPE tokenizer (the demo's): adapters merged in order (LoRA, rsLoRA, DoRA,
// PiSSA-converted, on a LLaMA Pro expansion) give the logits of the unmerged model; the folder loads
// back here and in the PyTorch reference (tests/reference/llama_reference.py); shards and index
// follow huggingface_hub's greedy split; dtype, tokenizer, Modelfile, value head; the folder is
// complete or absent and never replaces files lmfactory did not write.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../src/errors.ts";
import { MANIFEST_NAME, StagedFolder } from "../../src/export/folder.ts";
import { exportDtype, runExport } from "../../src/export/workflow.ts";
import { parseInferArgs } from "../../src/hparams/index.ts";
import { applyLora, loadLoraAdapter, loraLayers, mergeLora, saveLoraAdapter, savePissaConverted, appliedLoraConfig } from "../../src/model/adapters/index.ts";
import { applyFinetuning } from "../../src/model/adapters/index.ts";
import { expandCheckpoint } from "../../src/model/adapters/llama_pro.ts";
import { loadModel } from "../../src/model/loader.ts";
import type { CausalLM } from "../../src/model/registry.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { manualSeed, noGrad, openSafetensors, randn, saveSafetensors, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;
const DEMO_TOKENIZER = new URL("../../examples/demo/tiny-llama/", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "lmf-export-"));
let counter = 0;
const fresh = (name: string) => join(work, `${name}-${counter++}`);

const IDS = [
  [5, 17, 42, 8, 91, 3, 60, 22, 411, 570],
  [9, 9, 33, 70, 2, 45, 18, 81, 300, 577],
];

/** A tiny checkpoint with the demo's byte-level BPE tokenizer (579 tokens, ChatML specials). */
function tinyModel(overrides: Record<string, unknown> = {}, seed = 0): string {
  const folder = makeTinyModel({ vocab_size: 579, bos_token_id: null, eos_token_id: 578, pad_token_id: 576, ...overrides }, seed);
  for (const name of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(DEMO_TOKENIZER, name), join(folder, name));
  return folder;
}

function logits(model: CausalLM): Float32Array {
  return tidy(() => noGrad(() => model.eval().forward(tensor(IDS)).to("float32").data() as Float32Array));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

function randomizeLora(model: CausalLM, seed: number): void {
  manualSeed(seed);
  noGrad(() => {
    for (const [, layer] of loraLayers(model)) {
      layer.lora_B.weight.normal_(0, 0.3);
      layer.lora_magnitude_vector?.mul_(1.2);
    }
  });
}

/** Makes and saves a random adapter for `base`; returns its folder. */
function makeAdapter(base: string, options: Parameters<typeof applyLora>[1], seed: number): string {
  const model = loadModel(base);
  const config = applyLora(model, options);
  randomizeLora(model, seed);
  const folder = fresh("adapter");
  saveLoraAdapter(model, folder, config);
  model.dispose();
  return folder;
}

async function exportWith(settings: Record<string, unknown>, options: { maxShardBytes?: number } = {}): Promise<{ dir: string; lines: string[] }> {
  const dir = (settings.export_dir as string | undefined) ?? fresh("out");
  const lines: string[] = [];
  const args = parseInferArgs({ template: "qwen3_nothink", ...settings, export_dir: dir }, { command: "export", onWarning: (line) => lines.push(line) });
  await runExport(args, { ...options, print: (line) => lines.push(line) });
  return { dir, lines };
}

function reference(folder: string): number[] {
  const out = execFileSync("/usr/bin/python3", ["tests/reference/llama_reference.py"], {
    input: JSON.stringify({ folder, input_ids: IDS, attention_mask: null }),
    maxBuffer: 1 << 28,
  });
  return JSON.parse(out.toString()).logits;
}

const readJson = (path: string) => JSON.parse(readFileSync(path, "utf8"));

// --- merging -------------------------------------------------------------------------------------

test("export merges LoRA, rsLoRA and DoRA adapters in order: the float32 folder's logits equal the unmerged model's", async (t) => {
  const base = tinyModel({}, 1);
  const first = makeAdapter(base, { targets: ["q_proj", "v_proj", "down_proj"], rank: 4, alpha: 8, dropout: 0 }, 11);
  // The second adapter trains on top of the first one merged, as LLaMA-Factory stacks them.
  const stacked = loadModel(base);
  loadLoraAdapter(stacked, first);
  mergeLora(stacked);
  const secondConfig = applyLora(stacked, { targets: ["k_proj", "o_proj", "gate_proj"], rank: 4, alpha: 16, dropout: 0, useRslora: true, useDora: true });
  randomizeLora(stacked, 12);
  const second = fresh("adapter");
  saveLoraAdapter(stacked, second, secondConfig);
  const unmerged = logits(stacked);
  stacked.dispose();

  const { dir, lines } = await exportWith({ model_name_or_path: base, adapter_name_or_path: `${first},${second}`, infer_dtype: "float32" });
  assert.ok(lines.some((line) => /merged 2 adapter/.test(line)));
  const exported = loadModel(dir);
  const diff = maxAbsDiff(logits(exported), unmerged);
  t.diagnostic(`max |exported - unmerged| = ${diff.toExponential(2)}`);
  assert.ok(diff <= 1e-5, `exported logits differ by ${diff}`);
  assert.equal(readJson(join(dir, "config.json")).torch_dtype, "float32");
  if (hasTorch) {
    const theirs = reference(dir);
    const refDiff = maxAbsDiff(logits(exported), theirs);
    t.diagnostic(`PyTorch reference on the exported folder: max diff ${refDiff.toExponential(2)}`);
    assert.ok(refDiff <= 1e-4, `PyTorch reference differs by ${refDiff}`);
  }
  exported.dispose();
});

test("a PiSSA-converted adapter and a LoRA adapter on a LLaMA Pro expansion export to the logits of the model with the adapter", async () => {
  // PiSSA: train from the principal components, save the converted rank-2r adapter over the original weights.
  const base = tinyModel({}, 2);
  const model = loadModel(base);
  manualSeed(5);
  applyFinetuning(model, { finetuningType: "lora", loraRank: 2, loraAlpha: 8, loraTarget: ["q_proj", "up_proj"], pissaInit: true, pissaIter: -1 });
  const initial = fresh("pissa-init");
  saveLoraAdapter(model, initial, { ...appliedLoraConfig(model)!, init_lora_weights: true });
  randomizeLora(model, 6);
  const trained = logits(model);
  const converted = fresh("pissa-converted");
  savePissaConverted(model, converted, initial);
  model.dispose();
  const pissa = await exportWith({ model_name_or_path: base, adapter_name_or_path: converted, infer_dtype: "float32" });
  const reloaded = loadModel(pissa.dir);
  assert.ok(maxAbsDiff(logits(reloaded), trained) <= 1e-5);
  reloaded.dispose();

  // LLaMA Pro: an expanded checkpoint, trained with LoRA on its new blocks.
  const expanded = fresh("expanded");
  expandCheckpoint(base, expanded, { numExpandedLayers: 2 });
  for (const name of ["tokenizer.json", "tokenizer_config.json"]) if (!existsSync(join(expanded, name))) copyFileSync(join(base, name), join(expanded, name));
  const adapter = makeAdapter(expanded, { targets: ["model.layers.1.mlp.down_proj", "model.layers.3.self_attn.o_proj"], rank: 2, alpha: 4, dropout: 0 }, 7);
  const withAdapter = loadModel(expanded);
  loadLoraAdapter(withAdapter, adapter);
  const expected = logits(withAdapter);
  withAdapter.dispose();
  const pro = await exportWith({ model_name_or_path: expanded, adapter_name_or_path: adapter, infer_dtype: "float32" });
  const proModel = loadModel(pro.dir);
  assert.equal(proModel.config.num_hidden_layers, 4);
  assert.ok(maxAbsDiff(logits(proModel), expected) <= 1e-5);
  proModel.dispose();
});

// --- the folder's files --------------------------------------------------------------------------

test("dtype: infer_dtype auto writes float32 checkpoints as bfloat16 (config and tensors), keeps bf16/fp16; explicit infer_dtype wins", async () => {
  assert.equal(exportDtype("auto", "float32"), "bfloat16");
  assert.equal(exportDtype("auto", undefined), "bfloat16");
  assert.equal(exportDtype("auto", "float16"), "float16");
  assert.equal(exportDtype("float16", "bfloat16"), "float16");
  const base = tinyModel({}, 3);
  const { dir } = await exportWith({ model_name_or_path: base });
  assert.equal(readJson(join(dir, "config.json")).torch_dtype, "bfloat16");
  const reader = openSafetensors(dir);
  try {
    assert.ok(reader.names().every((name) => reader.info(name).dtype === "bfloat16"));
  } finally {
    reader.close();
  }
  // The bf16 folder is the float32 model rounded: its logits stay close.
  const original = loadModel(base);
  const half = loadModel(dir);
  const diff = maxAbsDiff(logits(half), logits(original));
  assert.ok(diff > 0 && diff < 0.1, `bf16 export differs by ${diff}`);
  original.dispose();
  half.dispose();
  const f16 = await exportWith({ model_name_or_path: base, infer_dtype: "float16" });
  assert.equal(readJson(join(f16.dir, "config.json")).torch_dtype, "float16");
});

test("config.json, generation_config.json, tokenizer files (left padding, template stop words, chat template) and the Modelfile", async () => {
  const base = tinyModel({}, 4);
  const { dir } = await exportWith({ model_name_or_path: base, template: "llama3", resize_vocab: true, infer_dtype: "float32" });
  const config = readJson(join(dir, "config.json"));
  assert.deepEqual(config.architectures, ["LlamaForCausalLM"]);
  assert.deepEqual(Object.keys(config), [...Object.keys(config)].sort(), "sorted keys, as transformers writes");
  assert.ok(!Object.keys(config).some((key) => key.startsWith("_")));
  // llama3's stop words (<|eot_id|> replaces the EOS, <|eom_id|> is added): 581 tokens, and
  // resize_vocab pads the embeddings to a multiple of 64 as LLaMA-Factory does.
  assert.equal(config.vocab_size, 640);
  assert.deepEqual(readJson(join(dir, "generation_config.json")), { _from_model_config: true, eos_token_id: 578, pad_token_id: 576 });
  const tokenizerConfig = readJson(join(dir, "tokenizer_config.json"));
  assert.equal(tokenizerConfig.padding_side, "left");
  assert.equal(tokenizerConfig.eos_token, "<|eot_id|>");
  assert.deepEqual(tokenizerConfig.added_tokens_decoder["579"], { content: "<|eot_id|>", lstrip: false, normalized: false, rstrip: false, single_word: false, special: true });
  const saved = loadTokenizer(dir);
  assert.equal(saved.eosTokenId, 579);
  assert.equal(saved.convertTokensToIds("<|eom_id|>"), 580);
  assert.equal(saved.paddingSide, "left");
  assert.deepEqual(saved.encode("hello <|eot_id|> world"), loadTokenizer(DEMO_TOKENIZER).encode("hello ").concat([579], loadTokenizer(DEMO_TOKENIZER).encode(" world")));
  // The demo tokenizer has its own ChatML chat_template; llama3 does not replace it.
  assert.equal(saved.chatTemplate, loadTokenizer(DEMO_TOKENIZER).chatTemplate);
  const modelfile = readFileSync(join(dir, "Modelfile"), "utf8");
  assert.match(modelfile, /^# ollama modelfile auto-generated by llamafactory\n\nFROM \.\n\nTEMPLATE """/);
  assert.match(modelfile, /PARAMETER stop "<\|eot_id\|>"\nPARAMETER stop "<\|eom_id\|>"\nPARAMETER num_ctx 4096\n$/);
  // The exported model loads back with its grown vocabulary.
  const reloaded = loadModel(dir);
  assert.equal(reloaded.config.vocab_size, 640);
  reloaded.dispose();
  // A template that replaces the tokenizer's chat template (`default`) is saved with its own.
  const replaced = await exportWith({ model_name_or_path: base, template: "default" });
  const text = loadTokenizer(replaced.dir).chatTemplate!;
  assert.ok(text.includes("{{ 'Human: ' + content + '<|im_end|>' + '\nAssistant:' }}"), text);
});

test("export_size shards: greedy in key order as huggingface_hub splits, named model-0000i-of-0000N, with an index; loads here and in PyTorch", async () => {
  const base = tinyModel({}, 5);
  const limit = 20_000; // bytes: a few tensors per shard at float32 (the embeddings get shards of their own)
  const { dir } = await exportWith({ model_name_or_path: base, infer_dtype: "float32" }, { maxShardBytes: limit });
  const index = readJson(join(dir, "model.safetensors.index.json"));
  const model = loadModel(base);
  // huggingface_hub's split_state_dict_into_shards_factory, written here from its source: a tensor
  // over the limit is appended as a shard of its own at once; the current shard carries on.
  const shards: string[][] = [];
  let current: string[] = [];
  let size = 0;
  for (const [name, t] of Object.entries(model.stateDict())) {
    const bytes = t.numel * 4;
    if (bytes > limit) {
      shards.push([name]);
      continue;
    }
    if (size + bytes > limit) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(name);
    size += bytes;
  }
  if (current.length) shards.push(current);
  assert.ok(shards.length > 3, `${shards.length} shards`);
  const names = shards.map((_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${String(shards.length).padStart(5, "0")}.safetensors`);
  const weightMap = Object.fromEntries(shards.flatMap((shard, i) => shard.map((name) => [name, names[i]!])));
  assert.deepEqual(index.weight_map, Object.fromEntries(Object.keys(weightMap).sort().map((key) => [key, weightMap[key]])));
  const total = Object.values(model.stateDict()).reduce((sum, t) => sum + t.numel * 4, 0);
  assert.deepEqual(index.metadata, { total_size: total });
  for (const [i, file] of names.entries()) {
    const reader = openSafetensors(join(dir, file));
    assert.deepEqual(reader.names().sort(), [...shards[i]!].sort());
    assert.deepEqual(reader.metadata, { format: "pt" });
    reader.close();
  }
  assert.ok(!existsSync(join(dir, "model.safetensors")));
  const reloaded = loadModel(dir);
  const ours = logits(reloaded);
  assert.ok(maxAbsDiff(ours, logits(model)) === 0);
  if (hasTorch) assert.ok(maxAbsDiff(ours, reference(dir)) <= 1e-4);
  model.dispose();
  reloaded.dispose();
});

test("export_legacy_format writes pytorch_model .bin shards with their index; they load here and with torch.load", async () => {
  const base = tinyModel({}, 6);
  const { dir } = await exportWith({ model_name_or_path: base, infer_dtype: "float32", export_legacy_format: true }, { maxShardBytes: 60_000 });
  const files = readdirSync(dir);
  assert.ok(files.includes("pytorch_model.bin.index.json"));
  assert.ok(files.some((file) => /^pytorch_model-00001-of-0000\d\.bin$/.test(file)));
  assert.ok(!files.some((file) => file.endsWith(".safetensors")));
  const original = loadModel(base);
  const reloaded = loadModel(dir);
  assert.equal(maxAbsDiff(logits(reloaded), logits(original)), 0);
  if (hasTorch) assert.ok(maxAbsDiff(logits(reloaded), reference(dir)) <= 1e-4);
  original.dispose();
  reloaded.dispose();
});

test("stage rm copies the last adapter's value_head.safetensors; export_hub_model_id is declared as not pushed; export_device auto says where it merges", async () => {
  const base = tinyModel({}, 7);
  const adapter = makeAdapter(base, { targets: ["q_proj"], rank: 2, alpha: 4, dropout: 0 }, 8);
  const head = { "v_head.summary.weight": tidy(() => randn([1, 32])), "v_head.summary.bias": tidy(() => randn([1])) };
  saveSafetensors(join(adapter, "value_head.safetensors"), head);
  const { dir, lines } = await exportWith({ model_name_or_path: base, adapter_name_or_path: adapter, stage: "rm", export_hub_model_id: "me/tiny-rm", export_device: "auto" });
  assert.ok(lines.some((line) => /^export_device auto: (merging on the GPU|no GPU .* exporting on the CPU)$/.test(line)));
  assert.deepEqual(readFileSync(join(dir, "value_head.safetensors")), readFileSync(join(adapter, "value_head.safetensors")));
  assert.ok(lines.some((line) => /export_hub_model_id.*pushes nothing/.test(line)));
  assert.ok(lines.some((line) => /not pushed to me\/tiny-rm/.test(line)));
  assert.ok(readJson(join(dir, MANIFEST_NAME)).files.includes("value_head.safetensors"));
});

// --- complete or absent, never over files lmfactory did not write ---------------------------------

test("a non-empty export_dir is refused untouched; export_overwrite replaces only an earlier lmfactory export", async () => {
  const base = tinyModel({}, 9);
  const foreign = fresh("foreign");
  mkdirSync(foreign);
  writeFileSync(join(foreign, "config.json"), "mine");
  await assert.rejects(exportWith({ model_name_or_path: base, export_dir: foreign }), (error: unknown) => error instanceof UserError && /not empty/.test(error.message));
  await assert.rejects(
    exportWith({ model_name_or_path: base, export_dir: foreign, export_overwrite: true }),
    (error: unknown) => error instanceof UserError && /did not write/.test(error.message),
  );
  assert.deepEqual(readdirSync(foreign), ["config.json"]);
  assert.equal(readFileSync(join(foreign, "config.json"), "utf8"), "mine");

  const { dir } = await exportWith({ model_name_or_path: base, export_legacy_format: true });
  await assert.rejects(exportWith({ model_name_or_path: base, export_dir: dir }), /not empty/);
  await exportWith({ model_name_or_path: base, export_dir: dir, export_overwrite: true });
  const after = readdirSync(dir);
  assert.ok(after.includes("model.safetensors") && !after.includes("pytorch_model.bin"), "the earlier export's files are gone");
  assert.ok(!readdirSync(work).some((name) => name.includes("lmf-partial") || name.includes("lmf-replaced")));
  // A file the user added to an earlier export makes it foreign.
  writeFileSync(join(dir, "notes.txt"), "keep me");
  await assert.rejects(exportWith({ model_name_or_path: base, export_dir: dir, export_overwrite: true }), /notes\.txt/);
  assert.equal(readFileSync(join(dir, "notes.txt"), "utf8"), "keep me");
});

test("a failing export leaves no folder: bad arguments fail before anything is written; a staged folder that aborts is removed", async () => {
  const base = tinyModel({}, 10);
  const dir = fresh("never");
  await assert.rejects(exportWith({ model_name_or_path: base, export_dir: dir, adapter_name_or_path: join(work, "no-such-adapter") }));
  assert.ok(!existsSync(dir));
  await assert.rejects(exportWith({ model_name_or_path: base, export_dir: dir, export_format: "gguf", export_legacy_format: true }), /export_legacy_format/);
  await assert.rejects(exportWith({ model_name_or_path: base, export_dir: dir, export_quantization_bit: 5, export_quantization_dataset: "x" }), /not a GPTQ width/);
  await assert.rejects(exportWith({ model_name_or_path: base, export_dir: dir, quantization_bit: 4 }), /export writes float weights, and quantization_bit: 4/);
  assert.ok(!existsSync(dir));
  const staged = new StagedFolder(dir);
  writeFileSync(join(staged.path, "model.safetensors"), "partial");
  staged.abort();
  assert.ok(!existsSync(staged.path) && !existsSync(dir));
  assert.ok(!readdirSync(work).some((name) => name.includes("lmf-partial")));
});

test("lmf export runs a LLaMA-Factory merge_lora YAML (examples/merge_lora/qwen3_lora_sft.yaml with local paths)", async () => {
  const base = tinyModel({}, 12);
  const adapter = makeAdapter(base, { targets: ["q_proj", "v_proj"], rank: 2, alpha: 4, dropout: 0 }, 13);
  const dir = fresh("cli");
  const { main } = await import("../../src/cli.ts");
  const yaml = new URL("../../examples/merge_lora/qwen3_lora_sft.yaml", import.meta.url).pathname;
  const status = await main(["node", "lmf", "export", yaml, `model_name_or_path=${base}`, `adapter_name_or_path=${adapter}`, `export_dir=${dir}`]);
  assert.equal(status, 0);
  assert.ok(existsSync(join(dir, "model.safetensors")) && existsSync(join(dir, "Modelfile")));
});
