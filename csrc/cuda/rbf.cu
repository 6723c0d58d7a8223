// CUDA radial basis function layer, forward and backward (deck 003; formulas in
// csrc/common/rbf.h, structure of csrc/cpu/rbf.cpp).
//   forward : ||mu_k||^2 and c_k = 1/(2 sigma_k^2) (one warp per centre); D = X C^T by one
//             cuBLASLt GEMM; one warp per row computes ||x||^2 and rewrites its row of D as the
//             clamped distance, Phi = exp(-c D).
//   backward: one elementwise pass turns G = dL/dPhi into dL/dD (and the width terms into a
//             scratch), column sums give sum_n dL/dD_nk and the width gradients; dX = G C and
//             dC = G^T X by GEMM, each rewritten by a row epilogue as -2 (.) + 2 (row sum) x.
// Cost: forward 2 B K n_in flops + B (2 n_in + 3 K); backward 4 B K n_in flops + ~8 B K.
// Reductions are in a fixed order (warp shuffles, column_sum): results repeat run to run.
#include <cmath>

#include "common/rbf.h"
#include "cuda/activation.h"
#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/rbf.h"

namespace fm::cuda {
namespace {

constexpr int kRowThreads = 128;  // 4 warps per block, one row (or centre) per warp
constexpr int kRowsPerBlock = kRowThreads / kWarpSize;

// Warp-per-row sum of squares of a (rows, cols) row; every lane gets the total.
template <class T>
__device__ __forceinline__ T row_sq_norm(const T* v, index_t cols) {
  T s = T(0);
  for (index_t j = threadIdx.x % kWarpSize; j < cols; j += kWarpSize) s += v[j] * v[j];
  return warp_sum(s);
}

template <class T>
__device__ __forceinline__ T row_sum(const T* v, index_t cols) {
  T s = T(0);
  for (index_t j = threadIdx.x % kWarpSize; j < cols; j += kWarpSize) s += v[j];
  return warp_sum(s);
}

__device__ __forceinline__ index_t warp_row() {
  return static_cast<index_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
}

// work[k] = ||C_k||^2, work[K + k] = 1 / (2 sigma_k^2).
template <class T>
__global__ void rbf_centre_kernel(const T* C, const T* sigma, T* work, index_t K, index_t n_in) {
  const index_t k = warp_row();
  if (k >= K) return;
  const T s = row_sq_norm(C + k * n_in, n_in);
  if (threadIdx.x % kWarpSize == 0) {
    work[k] = s;
    work[K + k] = rbf_coef(sigma[k]);
  }
}

// Row i: D = clamp(||x||^2 + ||mu||^2 - 2 D), Phi = exp(-c D).
template <class T>
__global__ void rbf_forward_rows_kernel(const T* X, const T* work, T* D, T* Phi, index_t batch,
                                        index_t n_in, index_t K) {
  const index_t i = warp_row();
  if (i >= batch) return;
  const T x_sq = row_sq_norm(X + i * n_in, n_in);
  T* d = D + i * K;
  T* p = Phi + i * K;
  for (index_t k = threadIdx.x % kWarpSize; k < K; k += kWarpSize) {
    const T dk = rbf_sq_dist(x_sq, work[k], d[k]);
    d[k] = dk;
    p[k] = rbf_phi(dk, work[K + k]);
  }
}

// G <- dL/dD; Wt (may be null) <- the width terms.
template <class T>
__global__ void rbf_grad_kernel(T* G, const T* Phi, const T* D, const T* coef, T* Wt, index_t batch,
                                index_t K) {
  const index_t n = batch * K;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    const index_t k = e % K;
    const T g = G[e], p = Phi[e];
    if (Wt) Wt[e] = rbf_width_term(g, p, D[e]);
    G[e] = rbf_grad_sq_dist(g, p, coef[k]);
  }
}

template <class T>
__global__ void rbf_width_grad_kernel(T* dsigma, const T* sigma, index_t K) {
  const index_t k = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k < K) dsigma[k] = rbf_grad_width(dsigma[k], sigma[k]);
}

// Row r of out (rows, cols): out = -2 out + 2 s_r v_r, with s_r the row sum of S's row r
// (S (rows, sk), when given) or s[r] (when S is null).
template <class T>
__global__ void rbf_diag_kernel(T* out, const T* v, const T* S, index_t sk, const T* s,
                                index_t rows, index_t cols) {
  const index_t r = warp_row();
  if (r >= rows) return;
  const T sr = S ? row_sum(S + r * sk, sk) : s[r];
  const T two_s = T(2) * sr;
  T* o = out + r * cols;
  const T* x = v + r * cols;
  for (index_t j = threadIdx.x % kWarpSize; j < cols; j += kWarpSize)
    o[j] = T(-2) * o[j] + two_s * x[j];
}

template <class T>
__global__ void exp_kernel(const T* x, T* y, index_t n) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = exp(x[i]);
}

template <class T>
__global__ void log_width_grad_kernel(T* g, const T* sigma, index_t n) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) g[i] = rbf_grad_log_width(g[i], sigma[i]);
}

unsigned warp_rows_grid(index_t rows) {
  return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
}

unsigned small_grid(index_t n) {
  return static_cast<unsigned>((n + kElementwiseThreads - 1) / kElementwiseThreads);
}

}  // namespace

template <class T>
void rbf_forward(const T* X, const T* C, const T* sigma, T* D, T* Phi, T* work, index_t batch,
                 index_t n_in, index_t K, cudaStream_t stream) {
  rbf_check_sizes(batch, n_in, K);
  rbf_centre_kernel<T><<<warp_rows_grid(K), kRowThreads, 0, stream>>>(C, sigma, work, K, n_in);
  FM_CUDA_CHECK_LAUNCH("rbf_centre_kernel");
  gemm<T>(false, true, batch, K, n_in, X, n_in, C, n_in, D, K, Epilogue::none, nullptr, nullptr, 0,
          stream);
  rbf_forward_rows_kernel<T>
      <<<warp_rows_grid(batch), kRowThreads, 0, stream>>>(X, work, D, Phi, batch, n_in, K);
  FM_CUDA_CHECK_LAUNCH("rbf_forward_rows_kernel");
}

template <class T>
void rbf_backward(const T* X, const T* C, const T* sigma, const T* D, const T* Phi, T* G, T* dX,
                  T* dC, T* dsigma, T* work, index_t batch, index_t n_in, index_t K,
                  cudaStream_t stream) {
  rbf_check_sizes(batch, n_in, K);
  T* colsum = work;    // sum_n dL/dD_nk
  T* coef = work + K;  // 1 / (2 sigma_k^2), as the forward left it
  rbf_centre_kernel<T><<<warp_rows_grid(K), kRowThreads, 0, stream>>>(C, sigma, work, K, n_in);
  FM_CUDA_CHECK_LAUNCH("rbf_centre_kernel");
  Scratch terms(dsigma ? sizeof(T) * batch * K : 0, stream);
  rbf_grad_kernel<T><<<grid_for(batch * K, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      G, Phi, D, coef, dsigma ? terms.template as<T>() : nullptr, batch, K);
  FM_CUDA_CHECK_LAUNCH("rbf_grad_kernel");
  if (dsigma) {
    column_sum<T>(terms.template as<T>(), dsigma, batch, K, stream);
    rbf_width_grad_kernel<T><<<small_grid(K), kElementwiseThreads, 0, stream>>>(dsigma, sigma, K);
    FM_CUDA_CHECK_LAUNCH("rbf_width_grad_kernel");
  }
  if (dX) {
    gemm<T>(false, false, batch, n_in, K, G, K, C, n_in, dX, n_in, Epilogue::none, nullptr, nullptr,
            0, stream);
    rbf_diag_kernel<T>
        <<<warp_rows_grid(batch), kRowThreads, 0, stream>>>(dX, X, G, K, nullptr, batch, n_in);
    FM_CUDA_CHECK_LAUNCH("rbf_diag_kernel");
  }
  if (dC) {
    column_sum<T>(G, colsum, batch, K, stream);
    gemm<T>(true, false, K, n_in, batch, G, K, X, n_in, dC, n_in, Epilogue::none, nullptr, nullptr,
            0, stream);
    rbf_diag_kernel<T>
        <<<warp_rows_grid(K), kRowThreads, 0, stream>>>(dC, C, nullptr, 0, colsum, K, n_in);
    FM_CUDA_CHECK_LAUNCH("rbf_diag_kernel");
  }
}

template <class T>
void rbf_widths(const T* log_sigma, T* sigma, index_t K, cudaStream_t stream) {
  if (K <= 0) return;
  exp_kernel<T><<<small_grid(K), kElementwiseThreads, 0, stream>>>(log_sigma, sigma, K);
  FM_CUDA_CHECK_LAUNCH("exp_kernel");
}

template <class T>
void rbf_log_width_grad(T* dlog_sigma, const T* sigma, index_t K, cudaStream_t stream) {
  if (K <= 0) return;
  log_width_grad_kernel<T><<<small_grid(K), kElementwiseThreads, 0, stream>>>(dlog_sigma, sigma, K);
  FM_CUDA_CHECK_LAUNCH("log_width_grad_kernel");
}

#define FM_INSTANTIATE(T)                                                                         \
  template void rbf_forward<T>(const T*, const T*, const T*, T*, T*, T*, index_t, index_t,        \
                               index_t, cudaStream_t);                                            \
  template void rbf_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, T*, \
                                T*, index_t, index_t, index_t, cudaStream_t);                     \
  template void rbf_widths<T>(const T*, T*, index_t, cudaStream_t);                               \
  template void rbf_log_width_grad<T>(T*, const T*, index_t, cudaStream_t);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cuda
