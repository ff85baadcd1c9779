// Tensor creation and read-back in every dtype, the creation functions, and the seeded random
// generators (reproducible after manualSeed, replayable from getRngState, moments roughly right).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  type DType,
  arange,
  empty,
  eye,
  full,
  getRngState,
  linspace,
  liveTensors,
  manualSeed,
  ones,
  rand,
  randint,
  randn,
  setRngState,
  tensor,
  tidy,
  zeros,
} from "../../src/torch/index.ts";
import { near } from "./op-helpers.ts";

const ALL: DType[] = ["float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"];

test("every dtype round-trips from nested arrays through toArray, data and item", () => {
  tidy(() => {
    for (const dtype of ALL) {
      const values = dtype === "bool" ? [[1, 0], [0, 1]] : [[1, 2], [-3, 100]].map((r) => r.map((v) => (dtype === "uint8" ? Math.abs(v) : v)));
      const t = tensor(values, { dtype });
      assert.equal(t.dtype, dtype);
      assert.deepEqual(t.shape, [2, 2]);
      const expected = dtype === "bool" ? values.map((r) => r.map((v) => v !== 0)) : values;
      assert.deepEqual(t.toArray(), expected, dtype);
      assert.deepEqual(Array.from(t.data() as ArrayLike<number | bigint>, Number), values.flat(), `${dtype} data()`);
      assert.equal(t.select(0, 1).select(0, 1).item(), dtype === "bool" ? 1 : values[1]![1], `${dtype} item()`);
    }
  });
});

test("data() returns the typed array that holds each dtype", () => {
  tidy(() => {
    const kinds: [DType, Function][] = [
      ["float32", Float32Array],
      ["float16", Float32Array],
      ["bfloat16", Float32Array],
      ["float64", Float64Array],
      ["int64", BigInt64Array],
      ["int32", Int32Array],
      ["int16", Int16Array],
      ["int8", Int8Array],
      ["uint8", Uint8Array],
      ["bool", Uint8Array],
    ];
    for (const [dtype, kind] of kinds) assert.ok(zeros([3], { dtype }).data() instanceof kind, dtype);
    // Reduced precision is rounded on the way in: 1/3 in bf16 keeps 8 significant bits.
    assert.equal(tensor([1 / 3], { dtype: "bfloat16" }).item(), 0.333984375);
    assert.equal(tensor([1 / 3], { dtype: "float16" }).item(), 0.333251953125);
    assert.equal(tensor([300], { dtype: "int8" }).item(), 44); // wraps modulo 256, as torch does
  });
});

test("typed arrays give their own dtype, take a shape, and cast on request", () => {
  tidy(() => {
    const cases: [ArrayBufferView, DType, number[]][] = [
      [new Float32Array([1.5, -2]), "float32", [1.5, -2]],
      [new Float64Array([0.1, 2]), "float64", [0.1, 2]],
      [new BigInt64Array([5n, -(2n ** 40n)]), "int64", [5, -(2 ** 40)]],
      [new Int32Array([7, -8]), "int32", [7, -8]],
      [new Int16Array([300, -300]), "int16", [300, -300]],
      [new Int8Array([127, -128]), "int8", [127, -128]],
      [new Uint8Array([0, 255]), "uint8", [0, 255]],
    ];
    for (const [data, dtype, expected] of cases) {
      const t = tensor(data);
      assert.equal(t.dtype, dtype);
      assert.deepEqual(t.toArray(), expected);
    }
    assert.deepEqual(tensor(new Float64Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] }).toArray(), [[1, 2, 3], [4, 5, 6]]);
    const cast = tensor(new Float32Array([1.75, -1.25]), { dtype: "bfloat16" });
    assert.equal(cast.dtype, "bfloat16");
    assert.deepEqual(cast.toArray(), [1.75, -1.25]);
    // A view into a larger buffer reads only its own bytes.
    const backing = new Float32Array([9, 1, 2, 9]);
    assert.deepEqual(tensor(backing.subarray(1, 3)).toArray(), [1, 2]);
  });
});

test("dtype inference follows torch.tensor: integers int64, fractions float32, booleans bool", () => {
  tidy(() => {
    assert.equal(tensor([1, 2]).dtype, "int64");
    assert.equal(tensor([1, 2.5]).dtype, "float32");
    assert.equal(tensor([true, false]).dtype, "bool");
    assert.equal(tensor([]).dtype, "float32");
    const scalar = tensor(3.5);
    assert.deepEqual(scalar.shape, []);
    assert.equal(scalar.toArray(), 3.5);
    assert.equal(tensor(2 ** 40).item(), 2 ** 40);
    assert.throws(() => tensor([[1, 2], [3]]), /ragged/);
  });
});

test("zeros, ones, full, empty, arange, linspace, eye", () => {
  tidy(() => {
    assert.deepEqual(zeros([2, 2]).toArray(), [[0, 0], [0, 0]]);
    assert.equal(zeros([2]).dtype, "float32");
    assert.deepEqual(ones([3], { dtype: "int32" }).toArray(), [1, 1, 1]);
    assert.equal(ones([3], { dtype: "int32" }).dtype, "int32");
    assert.deepEqual(full([2], 2.5).toArray(), [2.5, 2.5]);
    assert.deepEqual(full([2], 7, { dtype: "int64" }).toArray(), [7, 7]);
    assert.deepEqual(full([1], 1, { dtype: "bool" }).toArray(), [true]);
    const e = empty([2, 3], { dtype: "float64" });
    assert.deepEqual([e.shape, e.dtype], [[2, 3], "float64"]);
    assert.deepEqual(arange(5).toArray(), [0, 1, 2, 3, 4]);
    assert.equal(arange(5).dtype, "int64");
    assert.deepEqual(arange(2, 8, 3).toArray(), [2, 5]);
    assert.deepEqual(arange(1, 2, 0.25).toArray(), [1, 1.25, 1.5, 1.75]);
    assert.equal(arange(1, 2, 0.25).dtype, "float32");
    assert.deepEqual(arange(0, 3, 1, { dtype: "float64" }).toArray(), [0, 1, 2]);
    assert.deepEqual(arange(3, 0, -1).toArray(), [3, 2, 1]);
    near(linspace(0, 1, 5), [0, 0.25, 0.5, 0.75, 1]);
    near(linspace(-1, 1, 3, { dtype: "float64" }), [-1, 0, 1]);
    assert.deepEqual(eye(3).toArray(), [[1, 0, 0], [0, 1, 0], [0, 0, 1]]);
    assert.deepEqual(eye(2, 3, { dtype: "int64" }).toArray(), [[1, 0, 0], [0, 1, 0]]);
    const grad = zeros([2], { requiresGrad: true });
    assert.equal(grad.requiresGrad, true);
  });
});

test("seeded randn, rand, randint, normal_ and uniform_ repeat after manualSeed", () => {
  tidy(() => {
    const draw = () => [
      randn([5]).toFlatArray(),
      rand([5], { dtype: "float64" }).toFlatArray(),
      randint(-3, 4, [6]).toFlatArray(),
      empty([4]).normal_(1, 2).toFlatArray(),
      empty([4]).uniform_(-1, 1).toFlatArray(),
    ];
    manualSeed(1234);
    const first = draw();
    manualSeed(1234);
    assert.deepEqual(draw(), first);
    manualSeed(1235);
    assert.notDeepEqual(draw()[0], first[0]);
    for (const v of first[2]!) assert.ok(Number.isInteger(v) && v >= -3 && v < 4, `randint value ${v}`);
    for (const v of first[4]!) assert.ok(v >= -1 && v < 1, `uniform_ value ${v}`);
  });
});

test("random moments are roughly right", () => {
  tidy(() => {
    manualSeed(7);
    const n = 40000;
    // Tolerances are ~5 standard errors: sd(mean) = s/sqrt(n), sd(var) ≈ s²·sqrt(2/n).
    const normal = randn([n], { dtype: "float64" });
    near(normal.mean(), 0, 5 / Math.sqrt(n));
    near(normal.var(0), 1, 5 * Math.sqrt(2 / n));
    const shifted = empty([n], { dtype: "float64" }).normal_(3, 2);
    near(shifted.mean(), 3, (5 * 2) / Math.sqrt(n));
    assert.ok(Math.abs(shifted.var(0).item() - 4) < 5 * 4 * Math.sqrt(2 / n));
    const uniform = rand([n], { dtype: "float64" });
    near(uniform.mean(), 0.5, 5 * Math.sqrt(1 / 12 / n));
    near(uniform.var(0), 1 / 12, 0.003);
    const wide = empty([n], { dtype: "float64" }).uniform_(2, 6);
    near(wide.mean(), 4, 5 * Math.sqrt(16 / 12 / n));
    assert.ok(wide.min().item() >= 2 && wide.max().item() < 6);
    const ints = randint(0, 4, [n]);
    for (let k = 0; k < 4; k++) {
      const share = ints.eq(k).sum().item() / n;
      assert.ok(Math.abs(share - 0.25) < 5 * Math.sqrt(0.25 * 0.75 / n), `randint share of ${k}: ${share}`);
    }
  });
});

test("getRngState/setRngState replays the same draws", () => {
  const before = liveTensors();
  tidy(() => {
    manualSeed(11);
    randn([3]);
    const state = getRngState();
    assert.equal(state.dtype, "uint8");
    const a = randn([4]).toFlatArray();
    const b = rand([2]).toFlatArray();
    setRngState(state);
    assert.deepEqual(randn([4]).toFlatArray(), a);
    assert.deepEqual(rand([2]).toFlatArray(), b);
    assert.throws(() => setRngState(zeros([3])), /set_rng_state\(state: \[3\] Float cpu\)/);
  });
  assert.equal(liveTensors(), before);
});
