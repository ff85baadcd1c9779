// The factorizations GPTQ needs (torch.linalg.cholesky, torch.cholesky_inverse and the upper
// Cholesky factor of H⁻¹), as recursive block algorithms: small diagonal blocks in float64 in
// JavaScript, every large product through libtorch's matmul, so a 10k x 10k Hessian costs BLAS time.
import { type Tensor, cat, tensor, tidy, zeros } from "../../torch/index.ts";

const LEAF = 64;

/** Lower-triangular L with A = L Lᵀ for a small symmetric positive definite matrix, in float64. */
function choleskyLeaf(A: Tensor): Tensor {
  const n = A.shape[0]!;
  const a = Float64Array.from(A.to("float64").data() as Float64Array);
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let diagonal = a[j * n + j]!;
    for (let k = 0; k < j; k++) diagonal -= l[j * n + k]! * l[j * n + k]!;
    if (!(diagonal > 0)) throw new Error(`cholesky: the matrix is not positive definite (pivot ${j})`);
    const root = Math.sqrt(diagonal);
    l[j * n + j] = root;
    for (let i = j + 1; i < n; i++) {
      let sum = a[i * n + j]!;
      for (let k = 0; k < j; k++) sum -= l[i * n + k]! * l[j * n + k]!;
      l[i * n + j] = sum / root;
    }
  }
  return tensor(l, { shape: [n, n], dtype: "float64" });
}

/** The inverse of a small lower-triangular matrix (forward substitution), in float64. */
function lowerInverseLeaf(L: Tensor): Tensor {
  const n = L.shape[0]!;
  const l = L.to("float64").data() as Float64Array;
  const x = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    for (let i = c; i < n; i++) {
      let sum = i === c ? 1 : 0;
      for (let k = c; k < i; k++) sum -= l[i * n + k]! * x[k * n + c]!;
      x[i * n + c] = sum / l[i * n + i]!;
    }
  }
  return tensor(x, { shape: [n, n], dtype: "float64" });
}

/** Lower-triangular inverse by blocks: [[A, 0], [B, C]]⁻¹ = [[A⁻¹, 0], [−C⁻¹ B A⁻¹, C⁻¹]]. */
export function lowerInverse(L: Tensor): Tensor {
  const n = L.shape[0]!;
  if (n <= LEAF) return lowerInverseLeaf(L);
  return tidy(() => {
    const h = Math.floor(n / 2);
    const Ai = lowerInverse(L.narrow(0, 0, h).narrow(1, 0, h));
    const Ci = lowerInverse(L.narrow(0, h, n - h).narrow(1, h, n - h));
    const Bi = Ci.matmul(L.narrow(0, h, n - h).narrow(1, 0, h)).matmul(Ai).neg();
    const top = cat([Ai, zeros([h, n - h], { dtype: "float64" })], 1);
    return cat([top, cat([Bi, Ci], 1)], 0);
  });
}

/** Cholesky by blocks: L11 = chol(A11), L21 = A21 L11⁻ᵀ, L22 = chol(A22 − L21 L21ᵀ). A is float64 [n, n]. */
export function choleskyLower(A: Tensor): Tensor {
  const n = A.shape[0]!;
  if (n <= LEAF) return choleskyLeaf(A);
  return tidy(() => {
    const h = Math.floor(n / 2);
    const L11 = choleskyLower(A.narrow(0, 0, h).narrow(1, 0, h));
    const L21 = A.narrow(0, h, n - h).narrow(1, 0, h).matmul(lowerInverse(L11).t());
    const L22 = choleskyLower(A.narrow(0, h, n - h).narrow(1, h, n - h).sub(L21.matmul(L21.t())));
    const top = cat([L11, zeros([h, n - h], { dtype: "float64" })], 1);
    return cat([top, cat([L21, L22], 1)], 0);
  });
}

/**
 * GPTQ's `Hinv = cholesky(cholesky_inverse(cholesky(H)), upper=True)`: the upper-triangular U with
 * H⁻¹ = Uᵀ U. With P the order-reversing permutation and P H P = L Lᵀ, U = P L⁻¹ P.
 */
export function inverseUpperCholesky(H: Tensor): Tensor {
  return tidy(() => {
    const reversed = H.to("float64").flip(0, 1).contiguous();
    return lowerInverse(choleskyLower(reversed)).flip(0, 1).contiguous();
  });
}
