// CPU radial basis function layer (deck 003): Phi = exp(-||x - mu_k||^2 / (2 sigma_k^2)).
// Formulas in csrc/common/rbf.h. Shapes (row-major): X (batch, n_in), centres C (K, n_in),
// widths sigma (K), squared distances D and features Phi (batch, K).
#pragma once

#include "common/rbf.h"

namespace fm::cpu {

// Elements of scratch memory rbf_forward / rbf_backward need (`work`): 2 K.
inline index_t rbf_workspace_size(index_t K) { return 2 * K; }

// Forward: D = max(0, ||x||^2 + ||mu||^2 - 2 X C^T) (one GEMM, norms and clamp in the
// epilogue) and Phi = exp(-D / (2 sigma^2)) in the same epilogue pass. Both are kept for the
// backward. Throws ValueError when a width is not finite and > 0.
template <class T>
void rbf_forward(const T* X, const T* C, const T* sigma, T* D, T* Phi, T* work, index_t batch,
                 index_t n_in, index_t K);

// Backward from G = dL/dPhi (batch, K), overwritten with dL/dD:
//   dX = 2 diag(rowsum dL/dD) X - 2 dL/dD C          (batch, n_in); skipped when null
//   dC = 2 diag(colsum dL/dD) C - 2 dL/dD^T X        (K, n_in);     skipped when null
//   dsigma_k = sum_n G phi D / sigma_k^3             (K);           skipped when null
// One pass over (G, Phi, D) for dL/dD and the column sums, then one GEMM each for dX and dC
// with the diagonal term as a row epilogue.
template <class T>
void rbf_backward(const T* X, const T* C, const T* sigma, const T* D, const T* Phi, T* G, T* dX,
                  T* dC, T* dsigma, T* work, index_t batch, index_t n_in, index_t K);

}  // namespace fm::cpu
