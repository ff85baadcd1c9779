// bitsandbytes' formats against an independent PyTorch implementation (tests/reference/
// bnb_reference.py), their error bounds, the quantized linear layer against linear() on its
// dequantized weight, quantize-on-load of a whole model, and LoRA on top (finite differences,
// PEFT adapters that load on the unquantized base, LLaMA-Factory's restrictions).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../src/errors.ts";
import { type FinetuningOptions, applyFinetuning, paramSummary } from "../../src/model/adapters/index.ts";
import { applyLora, loraLayers, mergeLora } from "../../src/model/adapters/lora.ts";
import { LoraLinear } from "../../src/model/adapters/lora_layer.ts";
import { loadLoraAdapter, saveLoraAdapter } from "../../src/model/adapters/peft_format.ts";
import type { CausalLM } from "../../src/model/causal_lm.ts";
import { loadModel } from "../../src/model/loader.ts";
import { type ModelOptions, loadModelFor } from "../../src/model/pretrained.ts";
import {
  QuantLinear,
  assertMergeable,
  blockAbsmax,
  bnbQuantLinear,
  dequantizeFourBit,
  dynamicCode,
  fourBitCode,
  quantizeFourBit,
  quantizeInt8Rows,
  quantizedLayers,
} from "../../src/model/quantization/index.ts";
import { type DType, Linear, type Tensor, dequantizeLevels, fromBytes, linear, liveTensors, manualSeed, noGrad, openSafetensors, randn, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch"]).status === 0;
const hex = (t: Tensor) => tidy(() => Buffer.from(t.contiguous().bytes()).toString("hex"));
const IDS = [[1, 5, 9, 14, 22, 31, 40, 3]];

interface ReferenceCase {
  shape: number[];
  dtype: "float32" | "bfloat16" | "float16";
  quant_type: "nf4" | "fp4";
  double_quant: boolean;
  blocksize: number;
  zero_rows?: number[];
}

test("NF4 / FP4 packing, absmax, double quantization and LLM.int8's CB / SCB are byte-identical to the PyTorch reference of bitsandbytes' kernels", { skip: !hasTorch && "python3-torch not installed" }, () => {
  const cases: ReferenceCase[] = [
    // A zero row makes all-zero blocks (absmax 0: the kernel's 0 · inf path); 300 x 300 has 1407 blocks, more than five nested blocks of 256.
    { shape: [64, 200], dtype: "float32", quant_type: "nf4", double_quant: true, blocksize: 64, zero_rows: [3] },
    { shape: [48, 96], dtype: "bfloat16", quant_type: "fp4", double_quant: false, blocksize: 64 },
    { shape: [48, 96], dtype: "float32", quant_type: "fp4", double_quant: true, blocksize: 64 },
    { shape: [333], dtype: "float16", quant_type: "nf4", double_quant: true, blocksize: 64 },
    { shape: [300, 300], dtype: "bfloat16", quant_type: "nf4", double_quant: true, blocksize: 64 },
    { shape: [40, 64], dtype: "bfloat16", quant_type: "nf4", double_quant: false, blocksize: 64 },
  ];
  const reference = JSON.parse(
    execFileSync("/usr/bin/python3", ["tests/reference/bnb_reference.py"], { input: JSON.stringify({ seed: 7, cases }), maxBuffer: 1 << 28 }).toString(),
  ) as { dynamic_map: string; nf4: string; fp4: string; cases: Record<string, string>[] };
  assert.equal(hex(dynamicCode()), reference.dynamic_map, "create_dynamic_map");
  assert.equal(hex(fourBitCode("nf4")), reference.nf4, "NF4 code");
  assert.equal(hex(fourBitCode("fp4")), reference.fp4, "FP4 code");
  cases.forEach((c, i) => {
    const theirs = reference.cases[i]!;
    const label = `${c.quant_type} ${c.dtype} [${c.shape}]${c.double_quant ? " double" : ""}`;
    tidy(() => {
      const weight = fromBytes(Buffer.from(theirs.input!, "hex"), c.shape, c.dtype);
      const ours = quantizeFourBit(weight, { type: c.quant_type, doubleQuant: c.double_quant });
      assert.equal(hex(ours.packed), theirs.packed, `${label}: packed levels`);
      const blocks = Math.ceil(weight.numel / 64);
      if (c.double_quant) {
        assert.equal(hex(ours.nested!.offset), theirs.offset, `${label}: offset`);
        assert.equal(hex(ours.nested!.levels), theirs.nested_levels, `${label}: nested levels`);
        assert.equal(hex(ours.nested!.absmax), theirs.nested_absmax, `${label}: nested absmax`);
        assert.equal(hex(blockAbsmax(ours, blocks)), theirs.nested_dequantized, `${label}: dequantized absmax`);
      } else {
        assert.equal(hex(ours.absmax!), theirs.absmax, `${label}: absmax`);
      }
      const flat = dequantizeLevels({ levels: ours.packed, bits: 4, table: ours.code, scale: blockAbsmax(ours, blocks), blocksize: 64 }, weight.numel, c.dtype);
      assert.equal(hex(flat), theirs.dequantized, `${label}: dequantize_4bit`);
      if (c.shape.length === 2) {
        const int8 = quantizeInt8Rows(weight);
        assert.equal(hex(int8.levels.to("float32").sub(128).to("int8")), theirs.cb, `${label}: CB`);
        assert.equal(hex(int8.rowAbsmax), theirs.scb, `${label}: SCB`);
      }
      for (const t of [ours.packed, ours.code, ours.absmax, ours.nested?.levels, ours.nested?.absmax, ours.nested?.code, ours.nested?.offset]) t?.dispose();
    });
  });
});

/** The largest distance from a value in [-1, 1] to its nearest code value. */
function halfGap(code: Float32Array): number {
  const sorted = [...code].sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < sorted.length; i++) gap = Math.max(gap, (sorted[i]! - sorted[i - 1]!) / 2);
  return gap;
}

test("dequantize(quantize(w)) stays within each format's bound, and double quantization within the 8-bit map's", () => {
  manualSeed(3);
  const weight = tidy(() => randn([96, 256]).mul(0.05).add(randn([96, 1]).mul(0.01)));
  const w = weight.data() as Float32Array;
  for (const type of ["nf4", "fp4"] as const) {
    const gap = halfGap(fourBitCode(type).data() as Float32Array);
    for (const doubleQuant of [false, true]) {
      const q = quantizeFourBit(weight, { type, doubleQuant });
      const blocks = w.length / 64;
      const exact = tidy(() => weight.view(blocks, 64).abs().amax(1).data() as Float32Array);
      const used = tidy(() => blockAbsmax(q, blocks).data() as Float32Array);
      const deq = tidy(() => dequantizeFourBit(q, [96, 256], "float32").data() as Float32Array);
      let worst = 0;
      for (let i = 0; i < w.length; i++) {
        const b = Math.floor(i / 64);
        // |w - c·a'| <= |w - c·a| + |c|·|a - a'| <= gap·a + |a - a'|
        const bound = gap * exact[b]! + Math.abs(exact[b]! - used[b]!) + 1e-7;
        worst = Math.max(worst, Math.abs(w[i]! - deq[i]!) / bound);
      }
      assert.ok(worst <= 1, `${type}${doubleQuant ? " double" : ""}: error reaches ${worst.toFixed(3)} of the bound`);
      if (doubleQuant) {
        // The absmax values minus their mean, in blocks of 256, each within half a step of the dynamic map times that block's absmax.
        const nestedGap = halfGap(dynamicCode().data() as Float32Array);
        const offset = q.nested!.offset.item();
        const nestedAbsmax = q.nested!.absmax.data() as Float32Array;
        for (let b = 0; b < blocks; b++) {
          const error = Math.abs(exact[b]! - used[b]!);
          assert.ok(error <= nestedGap * nestedAbsmax[Math.floor(b / 256)]! + 1e-7, `absmax ${b}: ${exact[b]} vs ${used[b]} (offset ${offset})`);
        }
        assert.ok(used.some((value, b) => value !== exact[b]), "the nested absmax is quantized, not stored");
      }
    }
  }
  const int8 = quantizeInt8Rows(weight);
  const deq = tidy(() => dequantizeLevels({ levels: int8.levels, bits: 8, table: int8.table, scale: int8.scale, blocksize: 256 }, w.length, "float32").data() as Float32Array);
  const scb = int8.rowAbsmax.data() as Float32Array;
  for (let i = 0; i < w.length; i++) {
    const row = Math.floor(i / 256);
    assert.ok(Math.abs(w[i]! - deq[i]!) <= scb[row]! / 254 + 1e-7, `int8 element ${i}`);
  }
  weight.dispose();
});

/** QuantLinear layers of every format over one float weight [out, in]. */
function layersOf(weight: Tensor, bias: Tensor): [string, QuantLinear][] {
  // Each layer owns its bias (and frees it with itself).
  return [
    ["nf4 double", bnbQuantLinear(weight, bias.clone(), { bits: 4, type: "nf4", doubleQuant: true, computeDtype: "float32" })],
    ["fp4", bnbQuantLinear(weight, bias.clone(), { bits: 4, type: "fp4", doubleQuant: false, computeDtype: "float32" })],
    ["int8", bnbQuantLinear(weight, bias.clone(), { bits: 8, type: "nf4", doubleQuant: false, computeDtype: "float32" })],
  ];
}

test("a quantized linear layer: forward and input gradient equal linear() on its dequantized weight; no weight gradient; the ATen-op path gives the same", () => {
  manualSeed(5);
  const weight = tidy(() => randn([48, 128]).mul(0.1));
  const bias = tidy(() => randn([48]).mul(0.1));
  // 6 rows take the few-rows path (decoded block by block, never a whole W); 64 rows dequantize W.
  for (const rows of [[2, 3], [4, 16]]) for (const [label, layer] of layersOf(weight, bias)) {
    tidy(() => {
      const x = randn([...rows, 128]).requiresGrad_(true);
      const upstream = randn([...rows, 48]);
      layer.forward(x).mul(upstream).sum().backward();
      const ours = { y: layer.forward(x).detach(), grad: x.grad! };
      const w = layer.dequantizeWeight("float32");
      const x2 = x.detach().requiresGrad_(true);
      linear(x2, w, bias).mul(upstream).sum().backward();
      // Relative to the outputs' size (float32 sums in another order differ in the last bits).
      const diff = (a: Tensor, b: Tensor) => a.sub(b).abs().max().item() / Math.max(1, b.abs().max().item());
      assert.ok(diff(ours.y, linear(x, w, bias).detach()) <= 1e-6, `${label} ${rows}: forward`);
      assert.ok(diff(ours.grad, x2.grad!) <= 1e-6, `${label} ${rows}: input gradient`);
      assert.equal(layer.parameters().filter((p) => p.requiresGrad).length, 0, `${label}: nothing of the layer trains`);
      assert.ok(w.abs().sum().item() > 0);
      // The ATen-op path (what CUDA runs) against the fused CPU loop.
      layer.composedKernel = true;
      assert.equal(hex(layer.dequantizeWeight("float32")), hex(w), `${label}: composed dequantization`);
      assert.ok(diff(layer.forward(x).detach(), ours.y) <= 1e-6, `${label}: composed forward`);
      layer.composedKernel = false;
      // bfloat16 compute: the input is cast, the output returned in the input's dtype.
      assert.equal(layer.forward(x.detach().to("bfloat16")).dtype, "bfloat16");
    });
    layer.dispose();
  }
  weight.dispose();
  bias.dispose();
});

const QLORA: FinetuningOptions = { finetuningType: "lora", loraRank: 4, loraTarget: ["all"] };

function loadQuantized(folder: string, quantization: ModelOptions["quantization"], options: Partial<ModelOptions> = {}): CausalLM {
  const tokenizer = { length: 96, convertIdsToTokens: () => [] } as unknown as Parameters<typeof loadModelFor>[0]["tokenizer"];
  const loaded = { modelFolder: folder, tokenizer, template: null as never, addedTokens: 0 };
  return loadModelFor(loaded, { dtype: "float32", device: "cpu", training: true, quantization, finetuning: QLORA, ...options }).model;
}

const NF4 = { method: "bnb", bits: 4, type: "nf4", doubleQuant: true } as const;

test("quantize-on-load: every Linear but lm_head is quantized as it streams in, and the model computes what the dequantized weights compute", () => {
  const folder = makeTinyModel({ hidden_size: 64, intermediate_size: 128 });
  // What a plain load and forward leave behind (RoPE tables), which a quantized one may leave too.
  const plainLeft = (() => {
    const before = liveTensors();
    const plain = loadQuantized(folder, null, { finetuning: { finetuningType: "lora" }, training: false });
    tidy(() => noGrad(() => plain.forward(tensor(IDS))));
    plain.dispose();
    return liveTensors() - before;
  })();
  for (const quantization of [NF4, { ...NF4, type: "fp4", doubleQuant: false } as const, { ...NF4, bits: 8 } as const]) {
    const before = liveTensors();
    const model = loadQuantized(folder, quantization, { finetuning: { finetuningType: "lora" }, training: false });
    const layers = quantizedLayers(model);
    assert.equal(layers.length, 2 * 7, "q, k, v, o, gate, up, down in each layer");
    assert.ok(!layers.some(([name]) => name === "lm_head"));
    assert.ok(model.namedModules().every(([, module]) => !(module instanceof Linear) || module === model.outputEmbeddings()), "no float Linear left but lm_head");
    // The same architecture with the dequantized weights copied into plain Linear layers.
    const reference = loadModel(folder);
    noGrad(() => {
      for (const [name, layer] of layers) tidy(() => (reference.getSubmodule(name) as Linear).weight.copy_(layer.dequantizeWeight("float32")));
    });
    const diff = tidy(() => noGrad(() => model.forward(tensor(IDS)).sub(reference.forward(tensor(IDS))).abs().max().item()));
    assert.ok(diff <= 1e-5, `${quantization.bits}-bit ${quantization.type}: logits differ by ${diff}`);
    for (const [name, layer] of layers) {
      // Levels (n/2 or n bytes), one scale per block (nested: a byte per block, a float per 256 blocks) and the value tables.
      const n = layer.inFeatures * layer.outFeatures;
      const scales = quantization.bits === 8 ? 8 * layer.outFeatures : quantization.doubleQuant ? n / 64 + 4 * Math.ceil(n / 64 / 256) + 4 : (4 * n) / 64;
      const tables = quantization.bits === 8 ? 4 * 256 : 4 * 16 + (quantization.doubleQuant ? 4 * 256 : 0);
      assert.equal(layer.storedBytes(), (quantization.bits === 8 ? n : n / 2) + scales + tables, name);
    }
    reference.dispose();
    model.dispose();
    assert.equal(liveTensors() - before, plainLeft, "quantized loading leaves nothing behind");
  }
});

test("QLoRA: LoRA gradients on a 4-bit model match finite differences; B starts at zero so the model starts as the quantized base", () => {
  const folder = makeTinyModel({ num_hidden_layers: 1, hidden_size: 64, intermediate_size: 128 });
  // float64 compute (the levels are quantized from the float64 weights read as float32) for clean differences.
  const model = loadQuantized(folder, NF4, { dtype: "float64", finetuning: { ...QLORA, loraTarget: ["v_proj", "down_proj"], loraDtype: "float64" } });
  const ids = tensor(IDS);
  const lossOf = (): Tensor => model.forward(ids).logSoftmax(-1).select(2, 3).sum();
  const base = tidy(() => noGrad(() => lossOf().item()));
  const layers = loraLayers(model);
  assert.equal(layers.length, 2);
  assert.ok(layers.every(([, layer]) => layer.base_layer instanceof QuantLinear));
  noGrad(() => {
    for (const [, layer] of layers) layer.lora_B.weight.normal_(0, 0.3);
  });
  assert.notEqual(tidy(() => noGrad(() => lossOf().item())), base);
  tidy(() => lossOf().backward());
  // RMSNorm normalises in float32 even here (as HF does): a step well above its rounding.
  const step = 1e-2;
  for (const [name, layer] of layers) {
    for (const weight of [layer.lora_A.weight, layer.lora_B.weight]) {
      const grad = weight.grad!.data() as Float64Array;
      for (const index of [0, 7, weight.numel - 1]) {
        const flat = weight.view(-1);
        const original = flat.select(0, index).item();
        noGrad(() => flat.select(0, index).fill_(original + step));
        const plus = tidy(() => noGrad(() => lossOf().item()));
        noGrad(() => flat.select(0, index).fill_(original - step));
        const minus = tidy(() => noGrad(() => lossOf().item()));
        noGrad(() => flat.select(0, index).fill_(original));
        flat.dispose();
        const numeric = (plus - minus) / (2 * step);
        assert.ok(Math.abs(numeric - grad[index]!) <= 1e-3 + 1e-2 * Math.abs(numeric), `${name} index ${index}: ${numeric} vs ${grad[index]}`);
      }
    }
  }
  ids.dispose();
  model.dispose();
});

test("QLoRA adapters save as plain PEFT LoRA and load on the unquantized base; DoRA works on a 4-bit base", () => {
  const folder = makeTinyModel({ hidden_size: 64, intermediate_size: 128 });
  for (const useDora of [false, true]) {
    const model = loadQuantized(folder, NF4, { finetuning: { ...QLORA, useDora } });
    noGrad(() => {
      for (const [, layer] of loraLayers(model)) layer.lora_B.weight.normal_(0, 0.1);
    });
    const adapter = mkdtempSync(join(tmpdir(), "lmf-qlora-adapter-"));
    saveLoraAdapter(model, adapter);
    const reader = openSafetensors(join(adapter, "adapter_model.safetensors"));
    const keys = reader.names();
    reader.close();
    // The same keys a LoRA adapter of the unquantized model has.
    const plain = loadModel(folder);
    applyLora(plain, { targets: ["all"], rank: 4, useDora });
    const plainKeys = loraLayers(plain).flatMap(([name]) => [`base_model.model.${name}.lora_A.weight`, `base_model.model.${name}.lora_B.weight`, ...(useDora ? [`base_model.model.${name}.lora_magnitude_vector`] : [])]);
    assert.deepEqual([...keys].sort(), plainKeys.sort());
    plain.dispose();
    // Loaded onto the full-precision base: the LoRA weights are the trained ones.
    const full = loadModel(folder);
    loadLoraAdapter(full, adapter);
    for (const [name, layer] of loraLayers(full)) {
      const trained = model.getSubmodule(name) as LoraLinear;
      assert.equal(hex(layer.lora_B.weight), hex(trained.lora_B.weight), name);
    }
    full.dispose();
    model.dispose();
  }
});

test("a quantized model: LoRA only, no PiSSA, one adapter left unmerged at inference, merging refused saying how", () => {
  const folder = makeTinyModel({ hidden_size: 64, intermediate_size: 128 });
  const refuses = (options: Partial<ModelOptions>, pattern: RegExp, where: string) =>
    assert.throws(
      () => loadQuantized(folder, NF4, options),
      (error: unknown) => error instanceof UserError && pattern.test(error.message) && (error.where ?? "").includes(where),
    );
  refuses({ finetuning: { finetuningType: "full" } }, /can only be trained with LoRA/, "finetuning_type");
  refuses({ finetuning: { finetuningType: "freeze" } }, /can only be trained with LoRA/, "finetuning_type");
  refuses({ finetuning: { ...QLORA, pissaInit: true } }, /PiSSA/, "pissa_init");

  const trained = loadQuantized(folder, NF4);
  const adapter = mkdtempSync(join(tmpdir(), "lmf-qlora-one-"));
  saveLoraAdapter(trained, adapter);
  assert.match(paramSummary(trained), /trainable params: 8,192 \|\| all params: [\d,]+/);
  const all = Number(/all params: ([\d,]+)/.exec(paramSummary(trained))![1]!.replaceAll(",", ""));
  const plain = loadModel(folder);
  assert.equal(all, plain.numParameters() + loraLayers(trained).reduce((n, [, l]) => n + l.lora_A.weight.numel + l.lora_B.weight.numel, 0), "quantized weights count in full");
  plain.dispose();
  trained.dispose();
  refuses({ finetuning: { ...QLORA, adapterNameOrPath: [adapter, adapter] } }, /single adapter/, "adapter_name_or_path");

  // Inference (chat, api, eval, export): the adapter is loaded, not merged into the quantized weights.
  const inference = loadQuantized(folder, NF4, { training: false, finetuning: { finetuningType: "lora", adapterNameOrPath: [adapter] } });
  assert.equal(loraLayers(inference).length, 14);
  assert.ok(inference.parameters().every((p) => !p.requiresGrad));
  assert.throws(() => mergeLora(inference), (error: unknown) => error instanceof UserError && /cannot be merged into a quantized model/.test(error.message) && /full-precision/.test(error.fix ?? ""));
  assert.throws(() => assertMergeable(inference), (error: unknown) => error instanceof UserError && error.where === "quantization_bit" && /drop quantization_bit/.test(error.fix ?? ""));
  inference.dispose();
  const full = loadModel(folder);
  assert.doesNotThrow(() => assertMergeable(full));
  full.dispose();
});

test("quantization options are checked where the model loads: bits, methods, train_from_scratch", () => {
  const folder = makeTinyModel();
  assert.throws(() => loadQuantized(folder, { ...NF4, bits: 3 }), /4 or 8 bits/);
  assert.throws(() => loadQuantized(folder, { ...NF4, method: "hqq" }), /quantization_method hqq is not supported/);
  assert.throws(() => loadQuantized(folder, NF4, { trainFromScratch: true }), /train_from_scratch cannot start from a quantized model/);
  // The dtype the layers compute in follows the model's (bnb_4bit_compute_dtype = compute_dtype).
  const model = loadQuantized(folder, NF4, { dtype: "bfloat16" as DType });
  assert.ok(quantizedLayers(model).every(([, layer]) => layer.computeDtype === "bfloat16"));
  assert.equal(tidy(() => noGrad(() => model.forward(tensor(IDS)).dtype)), "bfloat16");
  model.dispose();
});
