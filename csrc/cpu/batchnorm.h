// CPU batch normalization over the batch axis of (rows, cols) row-major arrays (cols =
// features), decks 000 (Algorithm 1, Ioffe & Szegedy), 001 (moving averages) and 002.
//
// Training:  mu_j = 1/m sum_i x_ij, var_j = 1/m sum_i (x_ij - mu_j)^2 (biased, m = rows),
//            xhat = (x - mu) / sqrt(var + eps), y = gamma xhat + beta.
// Running statistics: r <- (1 - momentum) r + momentum * stat. This is deck 001's
//   MA^(t) = delta * mu_B^(t) + (1 - delta) MA^(t-1) with delta = momentum (PyTorch's
//   convention, default 0.1; Keras' momentum is 1 - delta, 0.99). The running variance
//   records the unbiased batch variance var * m / (m - 1), as PyTorch and Keras do, so at
//   inference it estimates the population variance; the batch itself is normalized with the
//   biased one (Algorithm 1).
// Initialization: the caller fills running_mean = 0, running_var = 1 (the common libraries'
//   start, fusedmlp's default) or passes init_from_batch = true on the first training step,
//   which SETS the running statistics to that batch's (deck 001's MA^(1) = mu_B^(1)).
// Inference: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta.
#pragma once

#include "common/macros.h"

namespace fm::cpu {

// Training forward. batch_mean and batch_invstd (cols) receive mu and 1/sqrt(var + eps) for
// the backward pass. running_mean/running_var (cols) are updated in place (both may be null:
// no running statistics). gamma = beta = null is the non-affine layer (gamma 1, beta 0); beta
// may be null alone (no shift). y may alias x. Throws fm::ValueError if rows < 2 (the batch
// variance of one sample is undefined).
template <class T>
void batchnorm_forward_train(const T* x, T* y, const T* gamma, const T* beta, T* batch_mean,
                             T* batch_invstd, T* running_mean, T* running_var, index_t rows,
                             index_t cols, T momentum, T eps, bool init_from_batch);

// Inference forward with the running statistics (any rows >= 0; y may alias x).
template <class T>
void batchnorm_forward_infer(const T* x, T* y, const T* gamma, const T* beta,
                             const T* running_mean, const T* running_var, index_t rows,
                             index_t cols, T eps);

// Backward of the training forward, in closed form (Ioffe & Szegedy, section 3):
//   dbeta_j  = sum_i dy_ij,   dgamma_j = sum_i dy_ij xhat_ij            (one pass)
//   dx_ij    = gamma_j invstd_j / m * (m dy_ij - dbeta_j - xhat_ij dgamma_j)  (one pass)
// dx may alias dy; dgamma/dbeta (cols) are overwritten and may be null (non-affine layer).
// Every column is reduced by one thread in row order: the result does not depend on the
// thread count.
template <class T>
void batchnorm_backward(const T* x, const T* dy, const T* gamma, const T* batch_mean,
                        const T* batch_invstd, T* dx, T* dgamma, T* dbeta, index_t rows,
                        index_t cols);

}  // namespace fm::cpu
