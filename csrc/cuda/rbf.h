// CUDA radial basis function layer (deck 003; formulas in csrc/common/rbf.h), the twin of
// csrc/cpu/rbf.h with the same contracts plus the stream. All pointers are device memory.
// Shapes: X (batch, n_in), C (K, n_in) centres, sigma (K) widths, D/Phi/G (batch, K),
// dX (batch, n_in), dC (K, n_in), dsigma (K); work holds rbf_workspace_size(K) elements.
#pragma once

#include <cuda_runtime.h>

#include "common/macros.h"

namespace fm::cuda {

inline index_t rbf_workspace_size(index_t K) {
  return 2 * K;
}

// D = clamped squared distances, Phi = exp(-D / (2 sigma^2)).
template <class T>
void rbf_forward(const T* X, const T* C, const T* sigma, T* D, T* Phi, T* work, index_t batch,
                 index_t n_in, index_t K, cudaStream_t stream);

// G = dL/dPhi on entry, dL/dD on return. dX, dC, dsigma may be null (not wanted).
template <class T>
void rbf_backward(const T* X, const T* C, const T* sigma, const T* D, const T* Phi, T* G, T* dX,
                  T* dC, T* dsigma, T* work, index_t batch, index_t n_in, index_t K,
                  cudaStream_t stream);

// sigma = exp(log_sigma) (the Network stores log widths); dlog_sigma = sigma * dL/dsigma in place.
template <class T>
void rbf_widths(const T* log_sigma, T* sigma, index_t K, cudaStream_t stream);
template <class T>
void rbf_log_width_grad(T* dlog_sigma, const T* sigma, index_t K, cudaStream_t stream);

}  // namespace fm::cuda
