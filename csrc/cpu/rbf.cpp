// CPU radial basis function layer, forward and backward (deck 003; formulas in
// csrc/common/rbf.h).
//   forward : D = X C^T by one GEMM, then one epilogue pass per row: ||x||^2, the clamped
//             expansion D = ||x||^2 + ||mu||^2 - 2 D and Phi = exp(-c D) (cache-resident row).
//   backward: one pass over (G, Phi, D) turning G = dL/dPhi into dL/dD with the per-centre
//             sums (width gradient, column sums of dL/dD); dX = -2 dL/dD C and
//             dC = -2 dL/dD^T X by GEMM, each followed by its diagonal term as a row epilogue.
// Shapes: X (B, n_in), C (K, n_in), sigma (K), D/Phi/G (B, K), dX (B, n_in), dC (K, n_in).
// Cost: forward 2 B K n_in flops (GEMM) + B (2 n_in + K) flops + B K exp; backward
// 4 B K n_in flops (2 GEMMs; half without dX) + ~6 B K + 2 (B + K) n_in. Bytes: X and C read
// once per GEMM, D and Phi written once forward and read once backward.
// Reductions over the batch are split by column blocks, each summed by one thread in row
// order: the results do not depend on the thread count.
#include "cpu/rbf.h"

#include <algorithm>
#include <cmath>

#include "common/fastmath.h"
#include "cpu/blas.h"
#include "cpu/gemm_rows.h"
#include "cpu/parallel.h"

namespace fm::cpu {

namespace {

template <class T>
FM_FORCE_INLINE T sq_norm(const T* v, index_t n) {
  T s;
  lane_sums<T, 1>(0, n, &s,
                  [&](index_t j, T(*acc)[kSumLanes], int l) { acc[0][l] += v[j] * v[j]; });
  return s;
}

// Rows [r0, r1) of the forward epilogue: D = ||x||^2 + ||mu||^2 - 2 X C^T, Phi = exp(-c D)
// (a dispatched clone).
template <class T>
FM_CPU_CLONES void forward_rows(const T* X, const T* mu_sq, const T* coef, T* D, T* Phi,
                                index_t n_in, index_t K, index_t r0, index_t r1) {
  for (index_t i = r0; i < r1; ++i) {
    const T x_sq = sq_norm(X + i * n_in, n_in);
    T* d = D + i * K;
    T* p = Phi + i * K;
#pragma omp simd
    for (index_t k = 0; k < K; ++k) {
      const T dk = rbf_sq_dist(x_sq, mu_sq[k], d[k]);
      d[k] = dk;
      p[k] = rbf_phi(dk, coef[k]);
    }
  }
}

// Columns [c0, c1) of dL/dD (into G) with the per-centre sums, in row order (a dispatched
// clone).
template <class T>
FM_CPU_CLONES void backward_columns(T* G, const T* Phi, const T* D, const T* coef, T* colsum,
                                    T* dsigma, index_t batch, index_t K, index_t c0, index_t c1) {
  std::fill(colsum + c0, colsum + c1, T(0));
  if (dsigma) std::fill(dsigma + c0, dsigma + c1, T(0));
  for (index_t i = 0; i < batch; ++i) {
    T* g = G + i * K;
    const T* p = Phi + i * K;
    const T* d = D + i * K;
    if (dsigma) {
#pragma omp simd
      for (index_t k = c0; k < c1; ++k) dsigma[k] += rbf_width_term(g[k], p[k], d[k]);
    }
#pragma omp simd
    for (index_t k = c0; k < c1; ++k) {
      const T dd = rbf_grad_sq_dist(g[k], p[k], coef[k]);
      g[k] = dd;
      colsum[k] += dd;
    }
  }
}

// Rows [r0, r1) of dX += 2 (sum_k dL/dD_ik) x_i (a dispatched clone).
template <class T>
FM_CPU_CLONES void dx_rows(const T* G, const T* X, T* dX, index_t n_in, index_t K, index_t r0,
                           index_t r1) {
  for (index_t i = r0; i < r1; ++i) {
    const T* g = G + i * K;
    T r;
    lane_sums<T, 1>(0, K, &r, [&](index_t k, T(*acc)[kSumLanes], int l) { acc[0][l] += g[k]; });
    const T two_r = T(2) * r;
    const T* x = X + i * n_in;
    T* dx = dX + i * n_in;
#pragma omp simd
    for (index_t j = 0; j < n_in; ++j) dx[j] += two_r * x[j];
  }
}

template <class T>
void check_widths(const T* sigma, index_t K) {
  for (index_t k = 0; k < K; ++k)
    FM_CHECK(std::isfinite(sigma[k]) && sigma[k] > T(0), "widths: expected finite values > 0, got ",
             sigma[k], " for centre ", k);
}

}  // namespace

template <class T>
void rbf_forward(const T* X, const T* C, const T* sigma, T* D, T* Phi, T* work, index_t batch,
                 index_t n_in, index_t K) {
  rbf_check_sizes(batch, n_in, K);
  check_widths(sigma, K);
  T* mu_sq = work;     // ||mu_k||^2
  T* coef = work + K;  // 1 / (2 sigma_k^2)
  for (index_t k = 0; k < K; ++k) {
    mu_sq[k] = sq_norm(C + k * n_in, n_in);
    coef[k] = rbf_coef(sigma[k]);
  }
  // X C^T through the batch-invariant GEMM (cpu/gemm_rows.h), in training too (the layer has no
  // mode): a row's features do not depend on the batch it arrives in.
  gemm_rows(batch, K, n_in, X, n_in, C, n_in, true, static_cast<const T*>(nullptr), D, K);
  parallel_rows(batch, K + n_in, [&](index_t r0, index_t r1) {
    forward_rows(X, mu_sq, coef, D, Phi, n_in, K, r0, r1);
  });
}

template <class T>
void rbf_backward(const T* X, const T* C, const T* sigma, const T* D, const T* Phi, T* G, T* dX,
                  T* dC, T* dsigma, T* work, index_t batch, index_t n_in, index_t K) {
  rbf_check_sizes(batch, n_in, K);
  check_widths(sigma, K);
  T* colsum = work;    // sum_n dL/dD_nk
  T* coef = work + K;  // 1 / (2 sigma_k^2)
  for (index_t k = 0; k < K; ++k) coef[k] = rbf_coef(sigma[k]);
  const bool want_width = dsigma != nullptr;
  parallel_column_blocks(batch, K, [&](index_t c0, index_t c1) {
    backward_columns(G, Phi, D, coef, colsum, dsigma, batch, K, c0, c1);
  });
  if (want_width)
    for (index_t k = 0; k < K; ++k) dsigma[k] = rbf_grad_width(dsigma[k], sigma[k]);
  if (dX) {
    gemm(false, false, batch, n_in, K, T(-2), G, K, C, n_in, T(0), dX, n_in);
    parallel_rows(batch, K + n_in,
                  [&](index_t r0, index_t r1) { dx_rows(G, X, dX, n_in, K, r0, r1); });
  }
  if (dC) {
    gemm(true, false, K, n_in, batch, T(-2), G, K, X, n_in, T(0), dC, n_in);
    parallel_rows(K, n_in, [&](index_t r0, index_t r1) {
      for (index_t k = r0; k < r1; ++k) {
        const T two_s = T(2) * colsum[k];
        const T* c = C + k * n_in;
        T* dc = dC + k * n_in;
#pragma omp simd
        for (index_t j = 0; j < n_in; ++j) dc[j] += two_s * c[j];
      }
    });
  }
}

#define FM_INSTANTIATE(T)                                                                         \
  template void rbf_forward<T>(const T*, const T*, const T*, T*, T*, T*, index_t, index_t,        \
                               index_t);                                                          \
  template void rbf_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, T*, \
                                T*, index_t, index_t, index_t);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cpu
