// The engine as a user meets it: the addon loads, reports what it runs on, and computes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { engineInfo, tensor, tidy, liveTensors } from "../../src/torch/index.ts";

test("engine reports libtorch, a fast BLAS and its threads", () => {
  const info = engineInfo();
  assert.match(info.torchVersion, /^\d+\.\d+/);
  assert.ok(info.threads >= 1);
  // Debian's libtorch on the reference BLAS is ~15x slower; setup must have made OpenBLAS active.
  assert.doesNotMatch(info.blas, /reference/, `slow BLAS active: ${info.blasLibrary}`);
});

test("a matmul computes the closed form and frees its temporaries", () => {
  const before = liveTensors();
  const product = tidy(() => tensor([[1, 2], [3, 4]], { dtype: "float32" }).matmul(tensor([[5], [6]], { dtype: "float32" })).toArray());
  assert.deepEqual(product, [[17], [39]]);
  assert.equal(liveTensors(), before);
});
