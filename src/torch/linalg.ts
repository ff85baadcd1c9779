// Matrix decompositions: torch.linalg.svd and the Q of torch.linalg.qr (LAPACK through libtorch),
// and torch.svd_lowrank's randomized SVD (Halko et al. 2009, as torch/_lowrank.py computes it,
// drawing from the same generator), which PiSSA's fast initialisation uses.
import { native } from "./native.ts";
import { randn } from "./creation.ts";
import { tidy } from "./scope.ts";
import { Tensor } from "./tensor.ts";

export interface Svd {
  /** [m, k] */
  U: Tensor;
  /** [k], descending */
  S: Tensor;
  /** [k, n] */
  Vh: Tensor;
}

/** A [m, n] = U diag(S) Vh with k = min(m, n) (full_matrices=False). */
export function svd(A: Tensor): Svd {
  const [U, S, Vh] = native.linalg_svd(A.id, false).map((id) => new Tensor(id));
  return { U: U!, S: S!, Vh: Vh! };
}

/** The orthonormal Q [m, min(m, n)] of A = QR (mode "reduced"). */
export function qrQ(A: Tensor): Tensor {
  return new Tensor(native.linalg_qr_q(A.id));
}

/**
 * torch.svd_lowrank(A, q, niter) for a matrix A [m, n]: U [m, q], S [q], V [n, q] with
 * A ≈ U diag(S) Vᵀ. Draws one randn([·, q]) from the global generator, so a seed reproduces
 * PyTorch's result on the same libtorch.
 */
export function svdLowrank(A: Tensor, q: number, niter = 2): { U: Tensor; S: Tensor; V: Tensor } {
  return tidy(() => {
    const [m, n] = A.shape as [number, number];
    if (m < n || n > q) {
      // The transpose's basis keeps the small SVD [m, q] (torch's branch for these shapes).
      const Q = approximateBasis(A.t(), q, niter); // [n, q]
      const { U, S, Vh } = svd(A.matmul(Q)); // A Q [m, q]
      return { U, S, V: Q.matmul(Vh.t()) };
    }
    const Q = approximateBasis(A, q, niter); // [m, q]
    const { U, S, Vh } = svd(A.t().matmul(Q).t()); // (Aᵀ Q)ᵀ [q, n]
    return { U: Q.matmul(U), S, V: Vh.t() };
  });
}

/** Halko et al.'s Algorithm 4.4: Q [m, q] with Q Qᵀ A ≈ A, after `niter` subspace iterations. */
function approximateBasis(A: Tensor, q: number, niter: number): Tensor {
  const R = randn([A.shape[1]!, q], { dtype: A.dtype, device: A.device });
  let Q = qrQ(A.matmul(R));
  for (let i = 0; i < niter; i++) {
    Q = qrQ(A.t().matmul(Q));
    Q = qrQ(A.matmul(Q));
  }
  return Q;
}
