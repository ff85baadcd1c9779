// Op checks on a device (`cuda` on the GPU machine, `cpu` anywhere): every op a LoRA step and a
// decode step use, forward and backward, computed on the device in float32 (and under bf16
// autocast) against the same op in float64 on the CPU; then a tiny Llama end to end on the device
// against the CPU (loss, gradients, KV-cache decoding, continuous batching). Prints one line per
// check and exits non-zero when one fails. (The repository's tests/ run on the CPU; this is their
// device counterpart for the paths training and serving take.)
// Usage: node --import tsx bench/gpu/ops_check.ts [--device cuda]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const device = process.argv.includes("--device") ? process.argv[process.argv.indexOf("--device") + 1]! : "cpu";
const T = await import("../../src/torch/index.ts");
type Tensor = import("../../src/torch/index.ts").Tensor;
const nativeModule = await import("../../src/torch/native.ts");
const tensorModule = await import("../../src/torch/tensor.ts");

let failures = 0;
function check(name: string, run: () => number | boolean, tolerance = 1e-4): void {
  let outcome: string;
  try {
    const result = T.tidy(run);
    const ok = typeof result === "boolean" ? result : result <= tolerance;
    if (!ok) failures++;
    outcome = `${ok ? "ok  " : "FAIL"} ${name}${typeof result === "number" ? `: max rel. error ${result.toExponential(1)} (tolerance ${tolerance.toExponential(0)})` : ""}`;
  } catch (error) {
    failures++;
    outcome = `FAIL ${name}: ${(error as Error).message.split("\n")[0]}`;
  }
  console.log(outcome);
}

/** max |a - b| / max(1, |b|) over elements, b the float64 CPU reference. */
function relError(a: Tensor, b: Tensor): number {
  return T.tidy(() => {
    const got = a.to("cpu").to("float64");
    return got.sub(b).abs().div(b.abs().clamp(1, Infinity)).max().item();
  });
}

/**
 * `f` on the device (float32 inputs) and on the CPU (float64 copies): the output and the gradient
 * of every input, compared.
 */
function forwardBackward(name: string, f: (...xs: Tensor[]) => Tensor, shapes: number[][], tolerance = 1e-4): void {
  check(`${name} (forward + backward)`, () => {
    const base = shapes.map((shape) => T.randn(shape, { dtype: "float64" }));
    const run = (dtype: "float32" | "float64", where: string) => {
      const inputs = base.map((x) => x.to(dtype).to(where).detach().requiresGrad_(true));
      const out = f(...inputs);
      out.mul(out.detach()).sum().backward(); // a probe that weights every element differently
      return { out, grads: inputs.map((x) => x.grad) };
    };
    const ref = run("float64", "cpu");
    const got = run("float32", device);
    // Inputs used as constants (a detached mask) have no gradient on either side.
    const grads = got.grads.map((g, i) => (ref.grads[i] ? relError(g!, ref.grads[i]!) : 0));
    return Math.max(relError(got.out, ref.out), ...grads);
  }, tolerance);
}

console.log(`device ${device}; libtorch ${T.engineInfo().torchVersion}; CUDA ${T.engineInfo().cudaAvailable ? `yes (${T.engineInfo().cudaDevices} device(s))` : "no"}`);
T.manualSeed(0);

forwardBackward("linear + bias", (x, w, b) => T.linear(x!, w!, b!), [[6, 32], [48, 32], [48]]);
forwardBackward("matmul [B, H, T, D]", (a, b) => a!.matmul(b!), [[2, 3, 8, 16], [2, 3, 16, 8]]);
forwardBackward("sdpa causal (fused)", (q, k, v) => T.scaledDotProductAttention(q!, k!, v!, { isCausal: true }), [[2, 4, 8, 16], [2, 4, 8, 16], [2, 4, 8, 16]]);
forwardBackward("sdpa grouped heads", (q, k, v) => T.scaledDotProductAttention(q!, k!, v!, { isCausal: true }), [[2, 4, 8, 16], [2, 2, 8, 16], [2, 2, 8, 16]]);
forwardBackward("attention composed + mask", (q, k, v, m) => T.attentionComposed(q!, k!, v!, { mask: m!.detach() }), [[1, 2, 5, 8], [1, 2, 5, 8], [1, 2, 5, 8], [1, 1, 5, 5]]);
forwardBackward("softmax / log_softmax", (x) => x!.softmax(-1).add(x!.logSoftmax(-1)), [[4, 33]]);
forwardBackward("silu * up (SwiGLU)", (g, u) => g!.silu().mul(u!), [[4, 64], [4, 64]]);
forwardBackward("RMSNorm pieces (pow, mean, rsqrt)", (x, w) => w!.mul(x!.mul(x!.pow(2).mean(-1, true).add(1e-6).rsqrt())), [[3, 7, 32], [32]]);
forwardBackward("cat + narrow", (a, b) => T.cat([a!, b!], 1).narrow(1, 2, 5), [[3, 4], [3, 6]]);

check("cross_entropy (ignore_index, sum) forward + backward", () => {
  const logits64 = T.randn([10, 37], { dtype: "float64" });
  const labels = T.tensor([1, 5, -100, 36, 0, 2, -100, 9, 9, 30]);
  const run = (dtype: "float32" | "float64", where: string) => {
    const x = logits64.to(dtype).to(where).detach().requiresGrad_(true);
    const loss = T.crossEntropy(x, labels.to(where), { reduction: "sum", ignoreIndex: -100 });
    loss.backward();
    return { loss, grad: x.grad! };
  };
  const [ref, got] = [run("float64", "cpu"), run("float32", device)];
  return Math.max(relError(got.loss, ref.loss), relError(got.grad, ref.grad));
});

check("embedding forward + backward (padding row gets no gradient)", () => {
  const w64 = T.randn([20, 8], { dtype: "float64" });
  const ids = T.tensor([[1, 3, 0, 3], [19, 0, 2, 2]]);
  const run = (dtype: "float32" | "float64", where: string) => {
    const w = w64.to(dtype).to(where).detach().requiresGrad_(true);
    const out = T.embedding(w, ids.to(where), 0);
    out.mul(out.detach()).sum().backward();
    return { out, grad: w.grad! };
  };
  const [ref, got] = [run("float64", "cpu"), run("float32", device)];
  return Math.max(relError(got.out, ref.out), relError(got.grad, ref.grad));
});

check("argmax, topk, index_select, in-place narrow copy (KV cache write)", () => {
  const x = T.randn([4, 50]);
  const d = x.to(device);
  const sameArgmax = JSON.stringify(d.argmax(-1).to("cpu").toArray()) === JSON.stringify(x.argmax(-1).toArray());
  const sameTopk = JSON.stringify(d.topk(5, 1).indices.to("cpu").toArray()) === JSON.stringify(x.topk(5, 1).indices.toArray());
  const rows = T.tensor([2, 0, 3]);
  const sameSelect = relError(d.indexSelect(0, rows.to(device)), x.indexSelect(0, rows).to("float64")) === 0;
  const buffer = T.zeros([4, 60], { device });
  buffer.narrow(1, 5, 50).copy_(d);
  const sameCopy = relError(buffer.narrow(1, 5, 50), x.to("float64")) === 0;
  return sameArgmax && sameTopk && sameSelect && sameCopy;
});

check("multinomial draws valid indices on the device", () => {
  const probs = T.tensor([[0, 0.5, 0.5, 0], [1, 0, 0, 0]], { dtype: "float32" }).to(device);
  const drawn = probs.multinomial(1).to("cpu").toFlatArray();
  return (drawn[0] === 1 || drawn[0] === 2) && drawn[1] === 0;
});

check("AdamW step + clip_grad_norm against float64 on the CPU", () => {
  const w64 = T.randn([16, 8], { dtype: "float64" });
  const g64 = T.randn([16, 8], { dtype: "float64" }).mul(5);
  const run = (dtype: "float32" | "float64", where: string) => {
    const w = w64.to(dtype).to(where).detach().requiresGrad_(true);
    const optimizer = new T.AdamW([{ params: [w] }], { lr: 1e-2, weightDecay: 0.1 });
    for (let step = 0; step < 3; step++) {
      w.grad = g64.to(dtype).to(where);
      T.clipGradNorm([w], 1.0);
      optimizer.step();
    }
    const out = w.detach().clone();
    optimizer.dispose?.();
    return out;
  };
  return relError(run("float32", device), run("float64", "cpu"));
}, 1e-5);

check("bf16 autocast on the device: linear runs in bfloat16, equal to bfloat16-rounded inputs multiplied", () => {
  const x = T.randn([8, 64]);
  const w = T.randn([32, 64]);
  const cast = T.autocast(() => T.linear(x.to(device), w.to(device)), { device: T.autocastDeviceOf(device), dtype: "bfloat16" });
  if (cast.dtype !== "bfloat16") return 1;
  // The reference: inputs rounded to bfloat16, products summed in float64, the result rounded to bfloat16.
  const exact = T.linear(x.to("bfloat16").to("float64"), w.to("bfloat16").to("float64"));
  return relError(cast, exact.to("bfloat16").to("float64"));
}, 1e-2);

check("rows_linear on this host's CPU (the decode kernel, AVX-512 or AVX2): each row bitwise the same alone or among others", () => {
  const { native } = nativeModule;
  const { Tensor } = tensorModule;
  const x = T.randn([20, 136]);
  const w = T.randn([72, 136]);
  const rows = (input: Tensor) => new Tensor(native.rows_linear(input.id, w.id, null));
  const alone = Array.from({ length: 20 }, (_, i) => rows(x.narrow(0, i, 1)).toFlatArray());
  for (const count of [2, 5, 13, 20]) {
    const together = rows(x.narrow(0, 0, count));
    for (let i = 0; i < count; i++) if (JSON.stringify(together.narrow(0, i, 1).toFlatArray()) !== JSON.stringify(alone[i])) return false;
  }
  return relError(rows(x), T.linear(x.to("float64"), w.to("float64"))) < 1e-4;
});

// --- a tiny Llama end to end --------------------------------------------------------------------

const { normalizeConfig } = await import("../../src/model/config.ts");
const { architectureFor } = await import("../../src/model/registry.ts");
const { saveModel, loadModel } = await import("../../src/model/loader.ts");
const { generate } = await import("../../src/model/generation.ts");
const { DecodeBatch } = await import("../../src/model/decode_batch.ts");
const { applyFinetuning } = await import("../../src/model/adapters/index.ts");
const { checkpointedBackward } = await import("../../src/model/patches/checkpointing.ts");
const { causalLmLoss } = await import("../../src/train/stages/language_modeling.ts");
const folder = mkdtempSync(join(tmpdir(), "lmf-gpu-check-"));
const config = normalizeConfig({ model_type: "qwen2", vocab_size: 256, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128, use_sliding_window: false, initializer_range: 0.2 });
T.manualSeed(1);
const built = architectureFor(config).build(config, { init: "hf" });
saveModel(built, folder);
built.dispose();
const ids = [[5, 17, 33, 2, 90, 41, 7, 7, 12, 200], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]];

/** LoRA (all linear layers) loss and LoRA gradients, with or without gradient checkpointing. */
function loraStep(where: string, checkpointing: boolean, amp: boolean): { loss: number; grads: Tensor[] } {
  const model = loadModel(folder, { device: where, dtype: amp ? "bfloat16" : "float32" });
  T.manualSeed(2);
  applyFinetuning(model, { finetuningType: "lora", loraRank: 4, loraAlpha: 8, loraTarget: ["all"], loraDtype: amp ? "float32" : undefined, upcastTrainable: amp });
  const spec = amp ? { device: T.autocastDeviceOf(where), dtype: "bfloat16" as const } : null;
  const input = T.tensor(ids, { device: where });
  const lossOf = causalLmLoss(input, 2 * 9);
  let loss: number;
  if (checkpointing) loss = checkpointedBackward(model, input, (hidden) => lossOf(model.logits(hidden)), { autocast: spec });
  else {
    const value = T.tidy(() => T.autocastIf(spec, () => lossOf(model.forward(input))));
    value.backward();
    loss = value.item();
  }
  const grads = model.namedParameters({ trainableOnly: true }).map(([, p]) => T.keep(p.grad!.to("cpu").to("float64")));
  model.dispose();
  return { loss, grads };
}

for (const checkpointing of [false, true]) {
  check(`tiny Qwen2 LoRA step${checkpointing ? " with gradient checkpointing" : ""}: loss and LoRA gradients vs the CPU`, () => {
    const ref = loraStep("cpu", checkpointing, false);
    const got = loraStep(device, checkpointing, false);
    return Math.max(Math.abs(got.loss - ref.loss) / Math.abs(ref.loss), ...got.grads.map((g, i) => relError(g, ref.grads[i]!)));
  }, 1e-3);
}
check("tiny Qwen2 LoRA step under bf16 autocast: loss within bf16 tolerance of float32", () => {
  const ref = loraStep("cpu", true, false);
  const got = loraStep(device, true, true);
  return Math.abs(got.loss - ref.loss) / Math.abs(ref.loss);
}, 1.6e-2);

check("greedy generate on the device equals the CPU's tokens; continuous batching equals generate", () => {
  const cpuModel = loadModel(folder);
  const deviceModel = loadModel(folder, { device });
  const options = { doSample: false, maxNewTokens: 12, eosTokenId: [] as number[] };
  const prompts = [[5, 17, 33], [9, 8, 7, 6, 5, 4], [200, 1]];
  const onCpu = prompts.map((p) => generate(cpuModel, [p], options).sequences[0]);
  const onDevice = prompts.map((p) => generate(deviceModel, [p], options).sequences[0]);
  const batch = new DecodeBatch(deviceModel);
  const sequences = prompts.map((p) => batch.add(p, options));
  while (batch.busy) batch.step();
  const batched = sequences.map((s) => [...s.tokens]);
  for (const s of sequences) s.close();
  cpuModel.dispose();
  deviceModel.dispose();
  const same = JSON.stringify(onDevice) === JSON.stringify(onCpu) && JSON.stringify(batched) === JSON.stringify(onDevice);
  if (!same) console.log(`  cpu ${JSON.stringify(onCpu)}\n  ${device} ${JSON.stringify(onDevice)}\n  batched ${JSON.stringify(batched)}`);
  return same;
});

rmSync(folder, { recursive: true, force: true });
console.log(failures ? `${failures} check(s) failed on ${device}` : `all checks passed on ${device}`);
process.exit(failures ? 1 : 0);
