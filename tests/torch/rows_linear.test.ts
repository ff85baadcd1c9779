// The addon's batch-invariant row kernel (native/src/rows_linear.cc) and `batchInvariant`: correct
// against float64, and each row's result bitwise independent of how many rows are computed with it
// and where it sits among them, for widths with remainders of its 16- and 8-lane loops.
import { test } from "node:test";
import assert from "node:assert/strict";
import { INVARIANT_ROWS, batchInvariant, linear, manualSeed, randn, tidy } from "../../src/torch/index.ts";
import { native } from "../../src/torch/native.ts";
import { Tensor } from "../../src/torch/tensor.ts";

const rowsLinear = (x: Tensor, w: Tensor, b: Tensor | null) => new Tensor(native.rows_linear(x.id, w.id, b ? b.id : null));

test("rows_linear equals x·Wᵀ + b computed in float64, with and without bias, for widths with remainders", () => {
  manualSeed(5);
  for (const [C, O] of [[37, 19], [72, 136], [136, 72], [256, 33]] as const) {
    tidy(() => {
      const x = randn([9, C]);
      const w = randn([O, C]);
      const b = randn([O]);
      for (const bias of [b, null]) {
        const exact = linear(x.to("float64"), w.to("float64"), bias?.to("float64"));
        const got = rowsLinear(x, w, bias);
        assert.deepEqual(got.shape, [9, O]);
        const error = got.to("float64").sub(exact).abs().max().item();
        assert.ok(error < 1e-4, `[${C} -> ${O}]${bias ? " + bias" : ""}: ${error}`);
      }
    });
  }
});

test("rows_linear: a row's result is bitwise the same alone, among 1-20 rows, at any position", () => {
  assert.equal(native.rows_linear_invariant(), true, "this CPU has AVX2 or AVX-512: the invariant kernel runs");
  manualSeed(6);
  for (const [C, O] of [[37, 19], [136, 72], [896, 64]] as const) {
    tidy(() => {
      const x = randn([24, C]);
      const w = randn([O, C]);
      const b = randn([O]);
      const alone = Array.from({ length: 24 }, (_, i) => rowsLinear(x.narrow(0, i, 1), w, b).toFlatArray());
      for (let rows = 1; rows <= 20; rows++) {
        for (const offset of [0, 1, 4]) {
          const together = rowsLinear(x.narrow(0, offset, rows), w, b);
          for (let i = 0; i < rows; i++) assert.deepEqual(together.narrow(0, i, 1).toFlatArray(), alone[offset + i], `[${C} -> ${O}] row ${i} of ${rows} from ${offset}`);
        }
      }
    });
  }
});

test("batchInvariant sends small float32 linear layers to the row kernel, and only inside its scope", () => {
  manualSeed(7);
  tidy(() => {
    const w = randn([40, 32]);
    const x = randn([2, 3, 32]); // 6 rows
    const inside = batchInvariant(() => linear(x, w));
    assert.deepEqual(inside.shape, [2, 3, 40]);
    assert.deepEqual(inside.reshape([6, 40]).toArray(), rowsLinear(x.reshape([6, 32]), w, null).toArray());
    assert.deepEqual(linear(x, w).toArray(), new Tensor(native.linear(x.id, w.id, null)).toArray(), "outside: libtorch's linear");
    // More rows than a decode step has, or bfloat16: libtorch's linear inside too.
    const many = randn([INVARIANT_ROWS + 1, 32]);
    assert.deepEqual(batchInvariant(() => linear(many, w)).toArray(), new Tensor(native.linear(many.id, w.id, null)).toArray());
    assert.equal(batchInvariant(() => linear(x.to("bfloat16"), w.to("bfloat16"))).dtype, "bfloat16");
  });
});
