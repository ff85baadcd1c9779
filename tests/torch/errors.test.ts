// Bad input never crashes the process: each mistake throws a JS Error naming the op and the
// shapes, and ops keep working afterwards. Then tidy/keep/dispose lifetimes and a flat
// liveTensors() over 200 forward/backward iterations.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  type Tensor,
  cat,
  crossEntropy,
  embedding,
  engineInfo,
  keep,
  linear,
  liveTensors,
  manualSeed,
  ones,
  randn,
  tensor,
  tidy,
  zeros,
} from "../../src/torch/index.ts";

const cudaAvailable = engineInfo().cudaAvailable;

test("bad input throws a clear error and the process keeps running", () => {
  const before = liveTensors();
  tidy(() => {
    const a = zeros([2, 3]);
    const cases: [string, () => unknown, RegExp][] = [
      ["matmul shapes", () => a.matmul(zeros([2, 3])), /^matmul\(self: \[2, 3\] Float cpu, other: \[2, 3\] Float cpu\): mat1 and mat2 shapes cannot be multiplied \(2x3 and 2x3\)$/],
      ["bmm rank", () => a.bmm(a), /^bmm\(self: \[2, 3\] Float cpu, other: \[2, 3\] Float cpu\): batch1 must be a 3D tensor$/],
      ["float index", () => a.indexSelect(0, tensor([0.5])), /^index_select\(self: \[2, 3\] Float cpu, index: \[1\] Float cpu\): .*int32 or int64/],
      ["float embedding ids", () => embedding(a, tensor([0.5])), /^embedding\(weight: \[2, 3\] Float cpu, indices: \[1\] Float cpu\)/],
      ["int32 targets", () => crossEntropy(a, tensor([0, 1], { dtype: "int32" })), /^cross_entropy\(self: \[2, 3\] Float cpu, target: \[2\] Int cpu\): expected scalar type Long but found Int$/],
      ["index out of range", () => a.indexSelect(0, tensor([5])), /^index_select\(self: \[2, 3\] Float cpu, index: \[1\] Long cpu\): .*out of range/i],
      ["impossible reshape", () => a.reshape(4, 2), /^reshape\(self: \[2, 3\] Float cpu\): shape '\[4, 2\]' is invalid for input of size 6$/],
      ["impossible view", () => a.t().view(6), /^view\(self: \[3, 2\] Float cpu\): view size is not compatible/],
      ["cat shapes", () => cat([a, zeros([2, 2])]), /^cat\(\): Sizes of tensors must match except in dimension 0/],
      ["linear shapes", () => linear(a, zeros([4, 2])), /^linear\(input: \[2, 3\] Float cpu, weight: \[4, 2\] Float cpu\)/],
      ["add broadcast", () => a.add(zeros([4])), /^add\(self: \[2, 3\] Float cpu, other: \[4\] Float cpu\): The size of tensor a \(3\) must match/],
      ["unknown device", () => a.to("gpu:0"), /^to_device: unknown device 'gpu:0' \(use cpu, cuda or cuda:N\)$/],
      ["unknown device at creation", () => zeros([1], { device: "tpu" as "cpu" }), /^zeros: unknown device 'tpu'/],
      ["cuda without a GPU", () => a.to("cuda"), /^to_device\(self: \[2, 3\] Float cpu\): device cuda requested, but this libtorch has no CUDA support or no GPU is visible \(use cpu\)$/],
      ["cuda at creation", () => randn([2], { device: "cuda:0" }), /^randn\(\): device cuda requested, but this libtorch has no CUDA/],
      ["item of many", () => a.item(), /^item\(\): tensor of shape \[2,3\] has 6 elements, not 1$/],
      ["dim out of range", () => a.sum(5), /^sum\(self: \[2, 3\] Float cpu\): Dimension out of range/],
      ["wrong argument type", () => a.transpose("0" as unknown as number, 1), /^transpose: argument 'dim0' must be an integer$/],
      ["ragged array", () => tensor([[1, 2], [3]]), /^tensor\(\): ragged nested array/],
      ["backward of non-scalar", () => ones([2]).requiresGrad_(true).mul(2).backward(), /^backward\(output: \[2\] Float cpu\): grad can be implicitly created only for scalar outputs$/],
    ];
    for (const [name, run, expected] of cases) {
      if (name.startsWith("cuda") && cudaAvailable) continue; // on a GPU machine these succeed
      assert.throws(() => tidy(run), (error: unknown) => {
        assert.ok(error instanceof Error, `${name}: not an Error`);
        assert.match(error.message, expected, name);
        assert.ok(error.message.length < 600, `${name}: message carries a backtrace (${error.message.length} chars)`);
        return true;
      });
    }
    // The process and the engine still work, with the same tensor.
    assert.equal(a.add(1).sum().item(), 6);
    assert.deepEqual(tensor([[1, 2]], { dtype: "float32" }).matmul(tensor([[3], [4]], { dtype: "float32" })).toArray(), [[11]]);
  });
  // A failing op inside tidy leaks nothing it made before failing.
  assert.equal(liveTensors(), before);
});

test("a disposed tensor used again throws naming the op; dispose twice is harmless", () => {
  const before = liveTensors();
  const a = zeros([2, 3]);
  assert.deepEqual(a.shape, [2, 3]);
  a.dispose();
  assert.equal(a.isDisposed, true);
  assert.throws(() => a.add(1), /^Error: add: tensor used after dispose\(\) \(it was \[2, 3\]\)$/);
  assert.throws(() => tidy(() => ones([3]).matmul(a)), /^Error: matmul: tensor used after dispose\(\)/);
  assert.throws(() => tidy(() => cat([ones([2, 3]), a])), /^Error: cat: tensor used after dispose\(\)/);
  assert.throws(() => tidy(() => crossEntropy(a, tensor([0, 1]))), /^Error: crossEntropy: tensor used after dispose\(\)/);
  assert.throws(() => a.toArray(), /tensor used after dispose/);
  a.dispose();
  a.dispose();
  assert.equal(tidy(() => ones([2]).sum().item()), 2);
  assert.equal(liveTensors(), before);
});

test("tidy frees intermediates and keeps what it returns, also nested in arrays and objects", () => {
  const before = liveTensors();
  const single = tidy(() => ones([2]).add(1).mul(3));
  assert.equal(liveTensors(), before + 1);
  assert.deepEqual(single.toArray(), [6, 6]);
  const nested = tidy(() => {
    const a = ones([1]);
    a.mul(2);
    return { list: [a.add(1), { deep: a.add(2) }], map: new Map([["m", a.add(3)]]), n: 7 };
  });
  assert.equal(liveTensors(), before + 4);
  assert.equal((nested.list[0] as Tensor).item(), 2);
  assert.equal((nested.list[1] as { deep: Tensor }).deep.item(), 3);
  assert.equal(nested.map.get("m")!.item(), 4);
  for (const t of [single, nested.list[0] as Tensor, (nested.list[1] as { deep: Tensor }).deep, nested.map.get("m")!]) t.dispose();
  assert.equal(liveTensors(), before);
});

test("keep() survives tidy; nested tidy hands results to the parent, which frees them", () => {
  const before = liveTensors();
  let kept: Tensor | undefined;
  let inner: Tensor | undefined;
  tidy(() => {
    kept = keep(ones([3]).mul(2));
    inner = tidy(() => ones([2]).add(ones([2])));
    // inner is alive inside the parent scope, with kept and the ones([3]) it was made from.
    assert.equal(inner.isDisposed, false);
    assert.equal(liveTensors(), before + 3);
  });
  assert.equal(inner!.isDisposed, true, "the parent scope frees the child's result");
  assert.equal(kept!.isDisposed, false);
  assert.deepEqual(kept!.toArray(), [2, 2, 2]);
  assert.equal(liveTensors(), before + 1);
  kept!.dispose();
  // A result of the inner scope returned through the outer one survives both.
  const through = tidy(() => tidy(() => ones([1]).add(4)));
  assert.equal(through.item(), 5);
  through.dispose();
  // Returning an input made outside does not take it into the scope, nor free it.
  const outside = ones([1]);
  assert.equal(tidy(() => outside), outside);
  tidy(() => {
    tidy(() => outside);
  });
  assert.equal(outside.isDisposed, false);
  outside.dispose();
  assert.throws(() => tidy(() => Promise.resolve(1)), /tidy: fn must be synchronous/);
  assert.equal(liveTensors(), before);
});

test("liveTensors() stays flat over 200 forward/backward iterations", () => {
  const before = liveTensors();
  manualSeed(9);
  const w = keep(randn([8, 4]).requiresGrad_(true));
  const x = keep(randn([16, 8]));
  const y = keep(tidy(() => x.sum(1).gt(0).long()));
  const live: number[] = [];
  for (let i = 0; i < 200; i++) {
    tidy(() => {
      const logits = x.matmul(w).gelu().softmax(-1).log();
      const loss = crossEntropy(logits, y).add(logits.pow(2).mean().mul(0.01));
      loss.backward();
      // SGD step without recording, then clear the grad: the grad tensor is freed each step.
      const grad = w.grad!;
      w.detach().sub_(grad, 0.1);
      w.grad = null;
      return loss.item();
    });
    live.push(liveTensors());
  }
  assert.deepEqual(new Set(live), new Set([before + 3]), `live tensors drifted: ${live[0]} -> ${live.at(-1)}`);
  for (const t of [w, x, y]) t.dispose();
  assert.equal(liveTensors(), before);
});
