// GPTQ export (src/export/gptq/, read back by src/model/quantization/gptq_checkpoint.ts) against a PyTorch reference written
// from auto_gptq (tests/reference/gptq_reference.py): the packed qweight/qzeros bit for bit at 2, 3,
// 4 and 8 bits, the Hessian-inverse factor and the chosen levels; unpacking reproduces the quantized
// weights exactly; GPTQ's output error on calibration inputs beats round-to-nearest at every width;
// `lmf export` writes an AutoGPTQ folder that loads back here and generates.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../../src/errors.ts";
import { HessianAccumulator, gptqQuantize, roundToNearest } from "../../src/export/gptq/gptq.ts";
import { inverseUpperCholesky } from "../../src/export/gptq/linalg.ts";
import { gptqQuantizeModel, sampleCalibration } from "../../src/export/gptq/quantize_model.ts";
import { runExport } from "../../src/export/workflow.ts";
import { parseInferArgs } from "../../src/hparams/index.ts";
import { generate } from "../../src/model/generation.ts";
import { loadModel } from "../../src/model/loader.ts";
import { packGptq, unpackGptq } from "../../src/export/gptq/pack.ts";
import { gptqQuantLinear } from "../../src/model/quantization/gptq_checkpoint.ts";
import { isQuantizedLinear } from "../../src/model/quantization/quantized_linear.ts";
import { loadTokenizer } from "../../src/data/tokenizer.ts";
import { type Tensor, manualSeed, noGrad, randn, tensor, tidy } from "../../src/torch/index.ts";
import { seededRandom } from "../../src/torch/seeded.ts";
import { makeTinyModel } from "../fixtures/tiny_model.ts";

const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch, numpy"]).status === 0;
const DEMO_TOKENIZER = new URL("../../examples/demo/tiny-llama/", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "lmf-gptq-"));

function reference<T>(request: object): T {
  return JSON.parse(execFileSync("/usr/bin/python3", ["tests/reference/gptq_reference.py"], { input: JSON.stringify(request), maxBuffer: 1 << 28 }).toString()) as T;
}

const rows = (values: ArrayLike<number>, width: number): number[][] =>
  Array.from({ length: values.length / width }, (_, r) => Array.from({ length: width }, (_, c) => values[r * width + c]!));

/** Correlated inputs (a random mixing plus noise), as real activations are. */
function calibrationInputs(samples: number, tokens: number, width: number, seed: number): Tensor[] {
  manualSeed(seed);
  const mix = randn([width, width]).mul(0.3);
  return Array.from({ length: samples }, () => tidy(() => randn([tokens, width]).matmul(mix).add(randn([tokens, width]).mul(0.2))));
}

test("packing: qweight and qzeros are auto_gptq's QuantLinear.pack bit for bit (2, 3, 4, 8 bits); unpacking inverts it", (t) => {
  const out = 64;
  const inFeatures = 256;
  const groups = 2;
  for (const bits of [2, 3, 4, 8]) {
    const random = seededRandom(bits);
    const levels = Int32Array.from({ length: out * inFeatures }, () => Math.floor(random() * 2 ** bits));
    const zeros = Int32Array.from({ length: out * groups }, () => 1 + Math.floor(random() * (2 ** bits - 1)));
    const packed = packGptq(levels, zeros, { out, in: inFeatures, groups, groupSize: 128, bits });
    assert.equal(packed.qweight.length, (inFeatures / 32) * bits * out);
    assert.deepEqual([...packed.gIdx.slice(126, 130)], [0, 0, 1, 1]);
    const back = unpackGptq(packed.qweight, packed.qzeros, { out, in: inFeatures, groups, bits });
    assert.deepEqual(back.levels, levels);
    assert.deepEqual(back.zeros, zeros);
    if (!hasTorch) {
      t.diagnostic("no PyTorch/numpy: the auto_gptq layout check is skipped");
      continue;
    }
    const theirs = reference<{ qweight: number[][]; qzeros: number[][] }>({ op: "pack", levels: rows(levels, inFeatures), zeros: rows(zeros, groups), bits });
    assert.deepEqual(rows(packed.qweight, out), theirs.qweight, `${bits}-bit qweight`);
    assert.deepEqual(rows(packed.qzeros, (out * bits) / 32), theirs.qzeros, `${bits}-bit qzeros`);
  }
});

test("GPTQ follows auto_gptq's fasterquant: the same Hinv factor and (nearly all) the same levels; dequantizing the packed tensors gives the quantized weights exactly", (t) => {
  const out = 32;
  const inFeatures = 192; // a group of 128 and one of 64, a block of 128 and one of 64
  const inputs = calibrationInputs(4, 24, inFeatures, 3);
  manualSeed(4);
  const weight = randn([out, inFeatures]).mul(0.1);
  const hessian = new HessianAccumulator(inFeatures);
  for (const x of inputs) hessian.add(x);
  for (const bits of [3, 4]) {
    const result = gptqQuantize(weight, hessian.H, { bits, groupSize: 128, blockSize: 128, dampPercent: 0.1 });
    // The written tensors, read back as the loader reads a GPTQ checkpoint, dequantize to the quantized weights.
    const packed = packGptq(result.levels, result.zeros, { out, in: inFeatures, groups: result.groups, groupSize: 128, bits });
    const scales = tidy(() => tensor(result.scales, { shape: [result.groups, out] }).to("float16").to("float32").data() as Float32Array);
    const layer = gptqQuantLinear(
      "layer",
      { qweight: packed.qweight, qzeros: packed.qzeros, scales, gIdx: packed.gIdx },
      { inFeatures, outFeatures: out },
      { bits: bits as 3 | 4, groupSize: 128, descAct: false, zeroMinusOne: true },
      { bias: null, computeDtype: "float32", device: "cpu" },
    );
    const rebuilt = tidy(() => layer.dequantizeWeight("float32").data() as Float32Array);
    assert.deepEqual([...rebuilt], [...(result.dequantized.data() as Float32Array)], `${bits}-bit dequantization`);
    layer.dispose();
    if (hasTorch) {
      const theirs = reference<{ levels: number[][]; hinv: number[][] }>({
        op: "gptq",
        weight: rows(weight.data() as Float32Array, inFeatures),
        inputs: inputs.map((x) => rows(x.data() as Float32Array, inFeatures)),
        bits,
        group_size: 128,
      });
      const ours = tidy(() => {
        const H = hessian.H.clone();
        const diagonal = H.reshape(-1).slice(0, 0, inFeatures * inFeatures, inFeatures + 1);
        diagonal.add_(0.1 * (diagonal.mean().item() as number));
        return inverseUpperCholesky(H).to("float32").data() as Float32Array;
      });
      let hinvDiff = 0;
      theirs.hinv.flat().forEach((v, i) => (hinvDiff = Math.max(hinvDiff, Math.abs(v - ours[i]!) / (Math.abs(v) + 1e-3))));
      const same = theirs.levels.flat().filter((v, i) => v === result.levels[i]).length / result.levels.length;
      t.diagnostic(`${bits}-bit: Hinv relative diff ${hinvDiff.toExponential(2)}, ${(100 * same).toFixed(2)}% of levels identical`);
      assert.ok(hinvDiff < 1e-4, `Hinv differs by ${hinvDiff}`);
      assert.ok(same > 0.99, `only ${(100 * same).toFixed(2)}% of levels agree`);
    }
    result.dequantized.dispose();
  }
  hessian.dispose();
});

test("property: GPTQ's output error on calibration inputs is below round-to-nearest's at 2, 3, 4 and 8 bits", (t) => {
  for (const seed of [1, 2, 3]) {
    const inFeatures = 256;
    const inputs = calibrationInputs(6, 32, inFeatures, 10 + seed);
    manualSeed(20 + seed);
    const weight = randn([48, inFeatures]).mul(0.05);
    const hessian = new HessianAccumulator(inFeatures);
    for (const x of inputs) hessian.add(x);
    for (const bits of [2, 3, 4, 8]) {
      const result = gptqQuantize(weight, hessian.H, { bits, groupSize: 128, blockSize: 128, dampPercent: 0.1 });
      const rtn = roundToNearest(weight, { bits, groupSize: 128 });
      const error = (q: Tensor) => inputs.reduce((sum, x) => sum + (tidy(() => x.matmul(weight.sub(q).t()).pow(2).sum().item()) as number), 0);
      const ours = error(result.dequantized);
      const baseline = error(rtn);
      t.diagnostic(`seed ${seed}, ${bits}-bit: GPTQ ${ours.toExponential(3)} vs RTN ${baseline.toExponential(3)} (${(ours / baseline).toFixed(3)})`);
      assert.ok(ours < baseline, `${bits}-bit GPTQ error ${ours} >= RTN ${baseline}`);
      result.dequantized.dispose();
      rtn.dispose();
    }
    hessian.dispose();
  }
});

test("calibration windows: nsamples windows of maxlen tokens from texts longer than maxlen; none long enough is a clear error", () => {
  const tokenizer = loadTokenizer(DEMO_TOKENIZER);
  const texts = ["short", "a much longer text about kites and the colour of the sky over the sea", "tiny"];
  const samples = sampleCalibration(texts, tokenizer, 5, 6);
  const long = tokenizer.encode(texts[1]!);
  assert.equal(samples.length, 5);
  for (const sample of samples) {
    assert.equal(sample.length, 6);
    const at = long.findIndex((_, i) => sample.every((id, j) => long[i + j] === id));
    assert.ok(at >= 0 && at + 6 <= long.length, "each window is a slice of a long text");
  }
  assert.deepEqual(sampleCalibration(texts, tokenizer, 5, 6), samples, "seeded");
  assert.throws(() => sampleCalibration(["short"], tokenizer, 1, 50), (error: unknown) => error instanceof UserError && /decrease export_quantization_maxlen/.test(error.fix ?? error.message));
});

test("lmf export with export_quantization_bit writes an AutoGPTQ folder that loads back with the quantized model's logits and generates", async (t) => {
  const folder = makeTinyModel({ vocab_size: 579, eos_token_id: 578, pad_token_id: 576, bos_token_id: null, hidden_size: 64, intermediate_size: 128 }, 31);
  for (const name of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(DEMO_TOKENIZER, name), join(folder, name));
  const data = join(work, "calibration.jsonl");
  writeFileSync(data, readFileSync("data/c4_demo.jsonl"));
  const dir = join(work, "gptq");
  const args = parseInferArgs(
    { model_name_or_path: folder, template: "qwen3_nothink", export_dir: dir, export_quantization_bit: 4, export_quantization_dataset: data, export_quantization_nsamples: 8, export_quantization_maxlen: 16 },
    { command: "export", onWarning: () => {} },
  );
  const lines: string[] = [];
  await runExport(args, { print: (line) => lines.push(line) });
  assert.ok(lines.some((line) => /GPTQ: layer 2\/2 quantized/.test(line)));
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  assert.equal(config.torch_dtype, "float16");
  assert.deepEqual({ bits: config.quantization_config.bits, group_size: config.quantization_config.group_size, desc_act: config.quantization_config.desc_act, sym: config.quantization_config.sym, quant_method: config.quantization_config.quant_method, damp_percent: config.quantization_config.damp_percent }, { bits: 4, group_size: 128, desc_act: false, sym: true, quant_method: "gptq", damp_percent: 0.1 });
  assert.equal(JSON.parse(readFileSync(join(dir, "quantize_config.json"), "utf8")).bits, 4);

  // The same quantization in memory: the model the folder must reproduce, with the
  // unquantized tensors rounded to the float16 they are stored in.
  const expected = loadModel(folder);
  const tokenizer = loadTokenizer(folder);
  const texts = readFileSync(data, "utf8").trim().split("\n").map((line) => JSON.parse(line).text as string);
  const results = gptqQuantizeModel(expected, sampleCalibration(texts, tokenizer, 8, 16), { bits: 4 });
  noGrad(() => {
    for (const [name, p] of expected.namedParameters()) {
      if (!results.has(name.replace(/\.weight$/, ""))) p.copy_(p.to("float16").to("float32"));
    }
  });
  const reloaded = loadModel(dir);
  assert.ok(reloaded.decoderLayers[0]!.namedModules().some(([, module]) => isQuantizedLinear(module)), "quantized GPTQ layers");
  const ids = [[5, 17, 42, 8, 91, 3, 60, 22]];
  const a = tidy(() => noGrad(() => reloaded.forward(tensor(ids)).data() as Float32Array));
  const b = tidy(() => noGrad(() => expected.forward(tensor(ids)).data() as Float32Array));
  let diff = 0;
  a.forEach((v, i) => (diff = Math.max(diff, Math.abs(v - b[i]!))));
  t.diagnostic(`reloaded GPTQ folder vs in-memory quantized model: max logit diff ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-4, `logits differ by ${diff}`);
  const generated = generate(reloaded, ids, { maxNewTokens: 6, doSample: false, eosTokenId: [] }).sequences[0]!;
  assert.equal(generated.length, 6);
  assert.deepEqual(generated, generate(expected, ids, { maxNewTokens: 6, doSample: false, eosTokenId: [] }).sequences[0]);
  // A GPTQ folder re-exports as a GPTQ folder; merging adapters into it or GGUF from it is refused, as LLaMA-Factory refuses.
  const again = join(work, "gptq-again");
  await runExport(parseInferArgs({ model_name_or_path: dir, template: "qwen3_nothink", export_dir: again }, { command: "export", onWarning: () => {} }), { print: () => {} });
  const reread = loadModel(again);
  const c = tidy(() => noGrad(() => reread.forward(tensor(ids)).data() as Float32Array));
  assert.deepEqual([...c], [...a]);
  assert.equal(JSON.parse(readFileSync(join(again, "config.json"), "utf8")).torch_dtype, "float16");
  reread.dispose();
  const refuse = (settings: Record<string, unknown>, pattern: RegExp) =>
    assert.rejects(runExport(parseInferArgs({ model_name_or_path: dir, template: "qwen3_nothink", export_dir: join(work, "never"), ...settings }, { command: "export", onWarning: () => {} }), { print: () => {} }), pattern);
  await refuse({ adapter_name_or_path: join(work, "adapter") }, /cannot merge adapters into a quantized/);
  await refuse({ export_format: "gguf" }, /GPTQ-quantized/);
  reloaded.dispose();
  expected.dispose();
});
