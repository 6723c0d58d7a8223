// CUDA batch normalization over the batch axis of (rows, cols) row-major device arrays
// (cols = features). Same formulas, arguments and checks as csrc/cpu/batchnorm.h (decks 000
// Algorithm 1, 001 moving averages, 002), plus the stream every launch is queued on. All
// pointers are device pointers; nothing is synchronized.
//
// Determinism: every per-feature sum is reduced in a fixed order (row lanes, then row chunks in
// chunk order), never with floating-point atomics, so equal inputs give bit-identical outputs
// on the same device model. Sums are accumulated in double, as on the CPU.
#pragma once

#include <cuda_runtime.h>

#include "common/macros.h"

namespace fm::cuda {

// Training forward: y = gamma (x - mu) / sqrt(var + eps) + beta with the batch mean mu and the
// biased batch variance var (centred, per row chunk, merged exactly). batch_mean and
// batch_invstd (cols) receive mu and 1/sqrt(var + eps) for the backward pass. running_mean and
// running_var (cols) are updated in place in the same launch that finishes the statistics:
// r <- (1 - momentum) r + momentum stat, the variance recorded unbiased (var m / (m - 1)), or
// set to the batch's statistics when init_from_batch (deck 001's MA^(1)). Both may be null.
// gamma = beta = null is the non-affine layer; beta may be null alone. y may alias x.
// Throws fm::ValueError if rows < 2, momentum is outside [0, 1], eps is not finite and > 0,
// or only one running statistic is given.
template <class T>
void batchnorm_forward_train(const T* x, T* y, const T* gamma, const T* beta, T* batch_mean,
                             T* batch_invstd, T* running_mean, T* running_var, index_t rows,
                             index_t cols, T momentum, T eps, bool init_from_batch,
                             cudaStream_t stream);

// Inference forward with the running statistics: y = gamma (x - r_mean) / sqrt(r_var + eps)
// + beta (any rows >= 0; y may alias x). running_var must be >= 0 (the values live on the
// device and are not checked here; fusedmlp.ops checks them).
template <class T>
void batchnorm_forward_infer(const T* x, T* y, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, index_t rows, index_t cols, T eps,
                             cudaStream_t stream);

// Backward of the training forward in closed form (Ioffe & Szegedy, section 3):
//   dbeta_j = sum_i dy_ij, dgamma_j = sum_i dy_ij xhat_ij                 (pass 1)
//   dx_ij   = gamma_j invstd_j (dy_ij - dbeta_j / m - xhat_ij dgamma_j / m)  (pass 2)
// dx may alias dy; dgamma and dbeta (cols) are overwritten and may be null (non-affine).
template <class T>
void batchnorm_backward(const T* x, const T* dy, const T* gamma, const T* batch_mean,
                        const T* batch_invstd, T* dx, T* dgamma, T* dbeta, index_t rows,
                        index_t cols, cudaStream_t stream);

}  // namespace fm::cuda
