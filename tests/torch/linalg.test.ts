// Matrix decompositions: the SVD and QR against their defining identities, and against PyTorch
// (torch.linalg.svd, torch.svd_lowrank under the same seed) on the same libtorch.
import { test } from "node:test";
import assert from "node:assert/strict";
import { eye, manualSeed, qrQ, randn, svd, svdLowrank, tensor, tidy } from "../../src/torch/index.ts";
import { near } from "./op-helpers.ts";
import { assertClose, hasTorch, torchReference } from "./torch-reference.ts";

test("svd: U diag(S) Vh rebuilds A, U and Vh are orthonormal, S descends; qrQ is an orthonormal basis of A", () => {
  tidy(() => {
    manualSeed(1);
    for (const shape of [[6, 4], [4, 6], [5, 5]] as const) {
      const A = randn([...shape], { dtype: "float64" });
      const { U, S, Vh } = svd(A);
      const k = Math.min(...shape);
      assert.deepEqual([U.shape, S.shape, Vh.shape], [[shape[0], k], [k], [k, shape[1]]]);
      near(U.mul(S.view(1, k)).matmul(Vh), A.toArray(), 1e-12);
      near(U.t().matmul(U), eye(k, k, { dtype: "float64" }).toArray(), 1e-12);
      near(Vh.matmul(Vh.t()), eye(k, k, { dtype: "float64" }).toArray(), 1e-12);
      const s = S.toFlatArray();
      for (let i = 1; i < s.length; i++) assert.ok(s[i - 1]! >= s[i]!, `S not descending: ${s}`);
      const Q = qrQ(A);
      near(Q.t().matmul(Q), eye(Q.shape[1]!, Q.shape[1]!, { dtype: "float64" }).toArray(), 1e-12);
      if (shape[0] >= shape[1]) near(Q.matmul(Q.t().matmul(A)), A.toArray(), 1e-12); // A lies in Q's span
    }
    // A rank-2 matrix: the low-rank SVD with q = 2 recovers it exactly.
    const low = tensor([[1, 2], [3, 4], [5, 6], [7, 8]], { dtype: "float64" }).matmul(tensor([[1, 0, 2, 1, 0], [0, 1, 1, 0, 3]], { dtype: "float64" }));
    const { U, S, V } = svdLowrank(low, 2, 2);
    near(U.mul(S.view(1, 2)).matmul(V.t()), low.toArray(), 1e-10);
  });
});

test("svd and svd_lowrank match PyTorch on the same libtorch", { skip: !hasTorch && "python3-torch not installed" }, () => {
  for (const [shape, rank] of [[[12, 20], 4], [[20, 8], 3], [[16, 3], 3]] as const) {
    tidy(() => {
      manualSeed(11);
      const A = randn([...shape]);
      const values = A.toFlatArray();
      const reference = torchReference<{ U: number[]; S: number[]; Vh: number[]; lowrank: number[][] }>({
        mode: "svd",
        values,
        shape,
        rank,
        niter: 2,
        seed: 5,
        scaling: 2,
      });
      const { U, S, Vh } = svd(A);
      assertClose(S.toFlatArray(), reference.S, 1e-5, 1e-6, `S ${shape}`);
      assertClose(U.toFlatArray(), reference.U, 1e-4, 1e-5, `U ${shape}`);
      assertClose(Vh.toFlatArray(), reference.Vh, 1e-4, 1e-5, `Vh ${shape}`);
      manualSeed(5);
      const lowrank = svdLowrank(A, rank, 2);
      assertClose(lowrank.U.toFlatArray(), reference.lowrank[0]!, 1e-4, 1e-5, `lowrank U ${shape}`);
      assertClose(lowrank.S.toFlatArray(), reference.lowrank[1]!, 1e-5, 1e-6, `lowrank S ${shape}`);
      assertClose(lowrank.V.toFlatArray(), reference.lowrank[2]!, 1e-4, 1e-5, `lowrank V ${shape}`);
    });
  }
});
