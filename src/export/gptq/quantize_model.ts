// GPTQ export of a whole model, as LLaMA-Factory's configure_quantization + transformers/optimum
// quantize it: calibration windows drawn from the dataset's `text`, then decoder layer after decoder
// layer, the Linear groups in order (q/k/v, o, gate/up, down: true_sequential), each group's inputs
// collected with the earlier groups already quantized, and the quantized layer's outputs feeding the
// next layer. The result is written in the AutoGPTQ layout (pack.ts).
import { UserError } from "../../errors.ts";
import type { CausalLM } from "../../model/registry.ts";
import { checkGptqShape, packGptq } from "./pack.ts";
import type { Tokenizer } from "../../data/tokenizer.ts";
import { type Tensor, Linear, Module, keep, noGrad, saveSafetensorsSharded, tensor, tidy } from "../../torch/index.ts";
import { seededRandom } from "../../torch/seeded.ts";
import { GPTQ_DEFAULTS, type GptqResult, HessianAccumulator, gptqQuantize } from "./gptq.ts";

/**
 * LLaMA-Factory's calibration sampling: `nsamples` times, draw documents until one is longer than
 * `maxlen` tokens (at most 100 tries), then a random window of `maxlen` tokens from it.
 */
export function sampleCalibration(texts: readonly string[], tokenizer: Tokenizer, nsamples: number, maxlen: number, seed = 42): number[][] {
  if (texts.length === 0) throw new UserError("the calibration dataset has no `text` rows", "export_quantization_dataset", "give rows with a `text` column");
  const random = seededRandom(seed);
  const encoded = new Map<number, number[]>();
  const samples: number[][] = [];
  for (let s = 0; s < nsamples; s++) {
    let ids: number[] | null = null;
    for (let tries = 0; tries <= 100 && !ids; tries++) {
      const index = Math.floor(random() * texts.length);
      if (!encoded.has(index)) encoded.set(index, tokenizer.encode(texts[index]!));
      if (encoded.get(index)!.length > maxlen) ids = encoded.get(index)!;
    }
    if (!ids) {
      throw new UserError(
        `cannot find a calibration text longer than export_quantization_maxlen (${maxlen} tokens) in 100 tries`,
        "export_quantization_maxlen",
        "decrease export_quantization_maxlen, or give longer texts",
      );
    }
    const start = Math.floor(random() * (ids.length - maxlen));
    samples.push(ids.slice(start, start + maxlen));
  }
  return samples;
}

/** Records a Linear's inputs into a Hessian while passing them through. */
class Capturing extends Module {
  constructor(
    readonly inner: Linear,
    readonly hessian: HessianAccumulator,
  ) {
    super();
  }
  forward(x: Tensor): Tensor {
    this.hessian.add(x);
    return this.inner.forward(x);
  }
}

/** Linear groups of a Llama-family decoder layer, in the order true_sequential quantizes them. */
const SEQUENTIAL_GROUPS = [
  ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
  ["self_attn.o_proj"],
  ["mlp.gate_proj", "mlp.up_proj"],
  ["mlp.down_proj"],
];

export interface QuantizedLinear extends GptqResult {
  bias: Tensor | null;
  shape: { out: number; in: number };
}

/** Quantizes every decoder-layer Linear of `model` in place (weights become the dequantized ones); returns the packed data by HF name. */
export function gptqQuantizeModel(
  model: CausalLM,
  samples: number[][],
  options: { bits: number; groupSize?: number; dampPercent?: number; blockSize?: number },
  print: (line: string) => void = () => {},
): Map<string, QuantizedLinear> {
  const settings = { ...GPTQ_DEFAULTS, ...options };
  const results = new Map<string, QuantizedLinear>();
  for (const [name, module] of model.namedModules()) {
    if (module instanceof Linear && /\.layers\.\d+\./.test(name)) checkGptqShape(name, module.inFeatures, module.outFeatures, settings.bits);
  }
  noGrad(() => {
    const ids = samples.map((sample) => keep(tensor([sample])));
    // Every window has the same length, so one RoPE/mask context serves all of them.
    const context = model.layerContext(ids[0]!);
    for (const t of context.tensors) keep(t);
    let hidden = ids.map((sample) => keep(model.embed(sample)));
    const layerPrefix = (index: number) => `model.layers.${index}.`;
    model.decoderLayers.forEach((layer, index) => {
      const started = Date.now();
      for (const group of SEQUENTIAL_GROUPS) {
        const captures = group.map((path) => {
          const linear = layer.getSubmodule(path) as Linear;
          const capture = new Capturing(linear, new HessianAccumulator(linear.inFeatures));
          layer.setSubmodule(path, capture);
          return { path, linear, capture };
        });
        for (const h of hidden) tidy(() => void layer.forward(h, context, null, index));
        for (const { path, linear, capture } of captures) {
          layer.setSubmodule(path, linear);
          const result = gptqQuantize(linear.weight, capture.hessian.H, { bits: settings.bits, groupSize: settings.groupSize, blockSize: settings.blockSize, dampPercent: settings.dampPercent });
          capture.hessian.dispose();
          linear.weight.copy_(result.dequantized.to(linear.weight.dtype));
          result.dequantized.dispose();
          results.set(`${layerPrefix(index)}${path}`, { ...result, dequantized: result.dequantized, bias: linear.bias, shape: { out: linear.outFeatures, in: linear.inFeatures } });
        }
      }
      // The quantized layer's outputs are the next layer's calibration inputs.
      const next = hidden.map((h) => keep(tidy(() => layer.forward(h, context, null, index))));
      for (const h of hidden) h.dispose();
      hidden = next;
      print(`GPTQ: layer ${index + 1}/${model.decoderLayers.length} quantized in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    });
    for (const h of hidden) h.dispose();
    for (const t of context.tensors) t.dispose();
    for (const t of ids) t.dispose();
  });
  return results;
}

/** The checkpoint's tensors: packed GPTQ tensors for the quantized Linears, every other tensor as it is. */
export function gptqStateDict(model: CausalLM, results: Map<string, QuantizedLinear>, groupSize: number, bits: number): [string, Tensor][] {
  const state = model.stateDict();
  const pairs: [string, Tensor][] = [];
  const done = new Set<string>();
  for (const [name, t] of Object.entries(state)) {
    if (name === "lm_head.weight" && model.config.tie_word_embeddings) continue;
    const owner = name.replace(/\.(weight|bias)$/, "");
    const result = results.get(owner);
    if (!result) {
      pairs.push([name, t]);
      continue;
    }
    if (done.has(owner)) continue;
    done.add(owner);
    const { out, in: inFeatures } = result.shape;
    const packed = packGptq(result.levels, result.zeros, { out, in: inFeatures, groups: result.groups, groupSize: groupSize > 0 ? groupSize : inFeatures, bits });
    pairs.push([`${owner}.qweight`, keep(tensor(packed.qweight, { shape: [(inFeatures / 32) * bits, out], dtype: "int32" }))]);
    pairs.push([`${owner}.qzeros`, keep(tensor(packed.qzeros, { shape: [result.groups, (out * bits) / 32], dtype: "int32" }))]);
    pairs.push([`${owner}.scales`, keep(tensor(result.scales, { shape: [result.groups, out] }).to("float16"))]);
    pairs.push([`${owner}.g_idx`, keep(tensor(packed.gIdx, { shape: [inFeatures], dtype: "int32" }))]);
    if (result.bias) pairs.push([`${owner}.bias`, result.bias]);
  }
  return pairs;
}

/** transformers' GPTQConfig as config.json's quantization_config, and AutoGPTQ's quantize_config.json. */
export function gptqConfigs(bits: number, groupSize: number, dampPercent: number) {
  const quantizeConfig = {
    bits,
    group_size: groupSize,
    damp_percent: dampPercent,
    desc_act: false,
    static_groups: false,
    sym: true,
    true_sequential: true,
    model_name_or_path: null,
    model_file_base_name: null,
    quant_method: "gptq",
    checkpoint_format: "gptq",
  };
  const quantizationConfig = { ...quantizeConfig, use_exllama: false, block_name_to_quantize: null, modules_in_block_to_quantize: null, batch_size: 1 };
  return { quantizationConfig, quantizeConfig };
}

/** Writes the packed checkpoint (fp16 floats, int32 GPTQ tensors) sharded like any export; returns the file names. */
export function writeGptqWeights(pairs: [string, Tensor][], folder: string, maxShardSize: number | string): string[] {
  return saveSafetensorsSharded(folder, pairs, { maxShardSize, dtype: "float16" }).map((path) => path.slice(folder.length + 1));
}
