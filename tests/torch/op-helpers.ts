// Shared helpers for the op tests: nested-array comparison within a tolerance, and a
// finite-difference gradient check (central differences in float64) against libtorch autograd.
import assert from "node:assert/strict";
import { type NestedArray, type Tensor, autogradGrad, noGrad, ones, randn, tensor, tidy } from "../../src/torch/index.ts";

/** Asserts `actual` (a tensor or nested numbers) equals `expected` elementwise within `tol`. */
export function near(actual: Tensor | NestedArray, expected: NestedArray, tol = 1e-6, what = "value"): void {
  const got = typeof actual === "object" && !Array.isArray(actual) ? actual.toArray() : actual;
  const walk = (a: NestedArray, e: NestedArray, path: string): void => {
    if (Array.isArray(e)) {
      assert.ok(Array.isArray(a), `${what}${path}: expected an array, got ${JSON.stringify(a)}`);
      assert.equal(a.length, e.length, `${what}${path}: length`);
      e.forEach((item, i) => walk(a[i]!, item, `${path}[${i}]`));
      return;
    }
    const [x, y] = [Number(a), Number(e)];
    if (Number.isNaN(y)) return assert.ok(Number.isNaN(x), `${what}${path}: got ${x}, expected NaN`);
    if (!Number.isFinite(y)) return assert.equal(x, y, `${what}${path}`);
    assert.ok(Math.abs(x - y) <= tol * Math.max(1, Math.abs(y)), `${what}${path}: got ${x}, expected ${y}`);
  };
  walk(got, expected, "");
}

/** Checks d(sum(f(inputs) * probe))/d(input) from autograd against central differences. */
export function gradcheck(name: string, f: (...inputs: Tensor[]) => Tensor, shapes: number[][], eps = 1e-6, tol = 1e-6): void {
  tidy(() => {
    const inputs = shapes.map((shape) => randn(shape, { dtype: "float64" }).requiresGrad_(true));
    const probe = noGrad(() => randn(f(...inputs).shape, { dtype: "float64" }));
    const objective = (...xs: Tensor[]) => f(...xs).mul(probe).sum();
    const analytic = autogradGrad([objective(...inputs)], inputs, [ones([], { dtype: "float64" })]);
    inputs.forEach((input, k) => {
      const base = input.detach().toFlatArray();
      const grad = analytic[k]!.toFlatArray();
      for (let i = 0; i < base.length; i++) {
        const at = (delta: number) =>
          tidy(() =>
            noGrad(() => {
              const shifted = base.slice();
              shifted[i]! += delta;
              const xs = inputs.map((x, j) => (j === k ? tensor(Float64Array.from(shifted), { shape: x.shape }) : x.detach()));
              return objective(...xs).item();
            }),
          );
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        assert.ok(
          Math.abs(numeric - grad[i]!) <= tol * Math.max(1, Math.abs(numeric)),
          `${name}: input ${k}[${i}] autograd ${grad[i]} vs numeric ${numeric}`,
        );
      }
    });
  });
}
