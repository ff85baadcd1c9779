// GPTQ checkpoints (AutoGPTQ's layout, written by tests/reference/gptq_pack_reference.py from
// auto_gptq's QuantLinear.pack): the layers dequantize to exactly scales · (q − zero), a GPTQ
// folder loads through the one loader, and LoRA trains on top of it (llama3_lora_sft_gptq.yaml).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../../src/errors.ts";
import { type FinetuningOptions } from "../../src/model/adapters/index.ts";
import { loraLayers, mergeLora } from "../../src/model/adapters/lora.ts";
import type { CausalLM } from "../../src/model/causal_lm.ts";
import { loadModel } from "../../src/model/loader.ts";
import { type ModelOptions, loadModelFor } from "../../src/model/pretrained.ts";
import { gptqQuantLinear, quantizedLayers } from "../../src/model/quantization/index.ts";
import { AdamW, Linear, type Tensor, crossEntropy, noGrad, openSafetensors, saveSafetensors, tensor, tidy } from "../../src/torch/index.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch, numpy"]).status === 0;
const skip = !hasTorch && "python3-torch (with numpy) not installed";

interface Spec {
  out: number;
  in: number;
  bits: number;
  group_size: number;
  act_order: boolean;
  seed: number;
}
interface Packed {
  qweight: number[];
  qzeros: number[];
  scales: number[];
  g_idx: number[];
  dequantized_hex: string;
}

function reference(specs: Spec[]): Packed[] {
  return JSON.parse(execFileSync("/usr/bin/python3", ["tests/reference/gptq_pack_reference.py"], { input: JSON.stringify(specs), maxBuffer: 1 << 28 }).toString()) as Packed[];
}

const hex = (t: Tensor) => tidy(() => Buffer.from(t.contiguous().bytes()).toString("hex"));

test("GPTQ layers of 2, 3, 4 and 8 bits, with and without act-order, dequantize to exactly scales · (q − zero)", { skip }, () => {
  const specs: Spec[] = [];
  for (const bits of [2, 3, 4, 8]) for (const actOrder of [false, true]) specs.push({ out: 64, in: 96, bits, group_size: 32, act_order: actOrder, seed: bits * 10 + Number(actOrder) });
  reference(specs).forEach((packed, i) => {
    const spec = specs[i]!;
    const layer = gptqQuantLinear(
      `layer ${i}`,
      { qweight: Int32Array.from(packed.qweight), qzeros: Int32Array.from(packed.qzeros), scales: Float32Array.from(packed.scales), gIdx: Int32Array.from(packed.g_idx) },
      { inFeatures: spec.in, outFeatures: spec.out },
      { bits: spec.bits as 2 | 3 | 4 | 8, groupSize: spec.group_size, descAct: spec.act_order, zeroMinusOne: true },
      { bias: null, computeDtype: "float32", device: "cpu" },
    );
    assert.equal(hex(layer.dequantizeWeight("float32")), packed.dequantized_hex, `${spec.bits}-bit${spec.act_order ? " act-order" : ""}`);
    assert.equal(layer.format, `gptq ${spec.bits}-bit${spec.act_order ? " act-order" : ""}`);
    // The forward permutes the input for act-order layers: it must equal x · Wᵀ with W in feature order.
    tidy(() => {
      const x = tensor(Float32Array.from({ length: 2 * spec.in }, (_, k) => Math.sin(k)), { shape: [2, spec.in] });
      const diff = layer.forward(x).sub(x.matmul(layer.dequantizeWeight("float32").t())).abs().max().item();
      assert.ok(diff < 1e-5, `forward differs by ${diff}`);
    });
    layer.dispose();
  });
});

const LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

/** A tiny Llama whose decoder Linear layers are stored as GPTQ tensors; returns the folder. */
function gptqFolder(bits: number, actOrder: boolean): string {
  const folder = makeTinyModel({ hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2 });
  const plain = loadModel(folder);
  const names: string[] = [];
  const specs: Spec[] = [];
  for (let layer = 0; layer < plain.decoderLayers.length; layer++) {
    for (const suffix of LINEARS) {
      const name = `model.layers.${layer}.${suffix}`;
      const linear = plain.getSubmodule(name) as Linear;
      names.push(name);
      specs.push({ out: linear.outFeatures, in: linear.inFeatures, bits, group_size: 32, act_order: actOrder, seed: specs.length });
    }
  }
  const packed = reference(specs);
  tidy(() => {
    const state: Record<string, Tensor> = {};
    for (const [key, value] of Object.entries(plain.stateDict())) if (!names.some((name) => key.startsWith(`${name}.`))) state[key] = value;
    names.forEach((name, i) => {
      const { out, in: inFeatures } = specs[i]!;
      const p = packed[i]!;
      state[`${name}.qweight`] = tensor(Int32Array.from(p.qweight), { shape: [(inFeatures * bits) / 32, out] });
      state[`${name}.qzeros`] = tensor(Int32Array.from(p.qzeros), { shape: [inFeatures / 32, (out * bits) / 32] });
      state[`${name}.scales`] = tensor(Float32Array.from(p.scales), { shape: [inFeatures / 32, out] }).to("float16");
      state[`${name}.g_idx`] = tensor(Int32Array.from(p.g_idx));
    });
    saveSafetensors(join(folder, "model.safetensors"), state, { format: "pt" });
  });
  const config = JSON.parse(readFileSync(join(folder, "config.json"), "utf8"));
  config.quantization_config = { quant_method: "gptq", bits, group_size: 32, desc_act: actOrder, sym: false, checkpoint_format: "gptq" };
  writeFileSync(join(folder, "config.json"), JSON.stringify(config));
  plain.dispose();
  return folder;
}

const LORA: FinetuningOptions = { finetuningType: "lora", loraRank: 4, loraTarget: ["all"] };

function load(folder: string, options: Partial<ModelOptions> = {}): CausalLM {
  const tokenizer = { length: 96, convertIdsToTokens: () => [] } as unknown as Parameters<typeof loadModelFor>[0]["tokenizer"];
  return loadModelFor({ modelFolder: folder, tokenizer, template: null as never, addedTokens: 0 }, { dtype: "float32", device: "cpu", training: true, finetuning: LORA, ...options }).model;
}

test("a GPTQ folder loads through the one loader: its layers compute the reference's dequantized weights, and LoRA trains on top", { skip }, () => {
  const folder = gptqFolder(4, true);
  const lines: string[] = [];
  const model = load(folder, { quantization: { method: "bnb", bits: 4, type: "nf4", doubleQuant: true }, print: (line) => lines.push(line) });
  assert.ok(lines.some((line) => /quantization_bit has no effect on a model that is already quantized/.test(line)), lines.join("\n"));
  assert.ok(lines.some((line) => /Loading 4-bit GPTQ-quantized model/.test(line)));
  const layers = quantizedLayers(model).map(([name, layer]) => [name.replace(/\.base_layer$/, ""), layer] as const);
  assert.equal(layers.length, 14);
  assert.ok(layers.every(([, layer]) => layer.quantizationMethod === "gptq" && layer.format === "gptq 4-bit act-order"));
  // The same model with the reference's dequantized weights in plain Linear layers.
  const reader = openSafetensors(folder);
  const reference = loadModel(makeTinyModel({ hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2 }));
  noGrad(() => {
    for (const [key, value] of Object.entries(reference.stateDict())) if (reader.has(key)) tidy(() => value.copy_(reader.get(key, { dtype: "float32" })));
    for (const [name, layer] of layers) tidy(() => (reference.getSubmodule(name) as Linear).weight.copy_(layer.dequantizeWeight("float32")));
  });
  reader.close();
  const ids = tensor([[1, 5, 9, 14, 22, 31, 40, 3]]);
  const diff = tidy(() => noGrad(() => model.forward(ids).sub(reference.forward(ids)).abs().max().item()));
  assert.ok(diff < 1e-5, `logits differ by ${diff}`);
  reference.dispose();

  // A few AdamW steps on the LoRA weights lower the loss of a fixed batch.
  const trainable = model.parameters().filter((p) => p.requiresGrad);
  assert.equal(trainable.length, 2 * 14);
  const optimizer = new AdamW(trainable, { lr: 1e-2 });
  const labels = tensor([[5, 9, 14, 22, 31, 40, 3, 7]]);
  const losses: number[] = [];
  for (let step = 0; step < 8; step++) {
    losses.push(
      tidy(() => {
        const loss = crossEntropy(model.forward(ids).view(-1, 96), labels.view(-1));
        loss.backward();
        return loss.item();
      }),
    );
    optimizer.step();
    optimizer.zeroGrad();
  }
  assert.ok(losses.at(-1)! < losses[0]! - 0.1, `losses ${losses.map((l) => l.toFixed(3)).join(" ")}`);
  assert.throws(() => mergeLora(model), (error: unknown) => error instanceof UserError && /GPTQ/.test(error.message) && error.where === "model_name_or_path");
  ids.dispose();
  labels.dispose();
  model.dispose();
});

test("GPTQ: DoRA is refused as LLaMA-Factory refuses it on PTQ models; other checkpoint formats are refused by name", { skip }, () => {
  const folder = gptqFolder(8, false);
  assert.throws(() => load(folder, { finetuning: { ...LORA, useDora: true } }), (error: unknown) => error instanceof UserError && /DoRA is not compatible with PTQ-quantized/.test(error.message));
  const model = load(folder, { training: false, finetuning: { finetuningType: "lora" } });
  assert.ok(quantizedLayers(model).every(([, layer]) => layer.format === "gptq 8-bit"));
  assert.equal(loraLayers(model).length, 0);
  model.dispose();
  // loadModel (a folder as stored, no tokenizer) reads a GPTQ checkpoint the same way.
  const stored = loadModel(folder);
  assert.equal(quantizedLayers(stored).length, 14);
  stored.dispose();
  const config = JSON.parse(readFileSync(join(folder, "config.json"), "utf8"));
  for (const [method, pattern] of [["awq", /AWQ checkpoints/], ["aqlm", /AQLM checkpoints/]] as const) {
    writeFileSync(join(folder, "config.json"), JSON.stringify({ ...config, quantization_config: { quant_method: method, bits: 4 } }));
    assert.throws(() => load(folder), (error: unknown) => error instanceof UserError && pattern.test(error.message) && /quantization_bit/.test(error.fix ?? ""));
  }
});
