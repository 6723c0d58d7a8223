// CUDA activation kernels over (rows, cols) row-major device arrays; cols are the units.
// Same contracts as csrc/cpu/activation.h, plus the stream every launch is queued on.
// All pointers are device pointers, including ActParams::unit (the learnable parameters).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/activation.h"

namespace fm::cuda {

// y = f(z) elementwise (y may alias z).
template <class T>
void activation_forward(Act a, const T* z, T* y, index_t rows, index_t cols, const ActParams<T>& p,
                        cudaStream_t stream);

// g = f'(z) elementwise.
template <class T>
void activation_derivative(Act a, const T* z, T* g, index_t rows, index_t cols,
                           const ActParams<T>& p, cudaStream_t stream);

// dz = dy * f'(z) (dz may alias dy). When dbias is given, dbias[j] = sum_i dz[i, j]; when
// dparams is given (learnable activations), it receives sum_i dy * df/dtheta as a
// (n_params, cols) block. Both are overwritten. The sums are deterministic: every partial sum
// has one owner and the partials are added in a fixed order.
template <class T>
void activation_backward(Act a, const T* z, const T* dy, T* dz, T* dbias, T* dparams, index_t rows,
                         index_t cols, const ActParams<T>& p, cudaStream_t stream);

// Dense epilogue: z += bias (row-broadcast; skipped when bias is null), then y = f(z) (skipped
// when y is null; y may alias z). One pass over the GEMM output.
template <class T>
void bias_activation_forward(Act a, const T* bias, T* z, T* y, index_t rows, index_t cols,
                             const ActParams<T>& p, cudaStream_t stream);

// Column sums: out[j] = sum_i x[i, j] (deterministic, as in activation_backward).
template <class T>
void column_sum(const T* x, T* out, index_t rows, index_t cols, cudaStream_t stream);

// ReLU bit-mask in cuBLASLt's layout (CUBLASLT_EPILOGUE_RELU_AUX): row i of a (rows, cols)
// row-major output is a column of cuBLASLt's column-major view, so the bit of element (i, j) is
// bit (i * ld_bits + j), packed little-endian into 32-bit words. ld_bits is cols rounded up to
// a multiple of 128 (cuBLASLt's requirement).
index_t relu_mask_ld(index_t cols);
// Bytes of a mask for a (rows, cols) output.
std::size_t relu_mask_bytes(index_t rows, index_t cols);

// y = max(y, 0) in place and mask bits (y > 0). The fallback of the RELU_AUX_BIAS epilogue.
template <class T>
void relu_mask_forward(T* y, std::uint32_t* mask, index_t rows, index_t cols, cudaStream_t stream);

// dz = dy * mask (mask from relu_mask_forward or the RELU_AUX_BIAS epilogue), and
// dbias = column sums of dz when given. The fallback of the DRELU_BGRAD epilogue.
template <class T>
void relu_mask_backward(const std::uint32_t* mask, const T* dy, T* dz, T* dbias, index_t rows,
                        index_t cols, cudaStream_t stream);

// Row-wise softmax, max-subtracted: y_i = e^{z_i - m} / sum_j e^{z_j - m} (deck 003).
// One warp per row up to 1024 columns, one block per row beyond.
template <class T>
void softmax_forward(const T* z, T* y, index_t rows, index_t cols, cudaStream_t stream);
// dz = y * (dy - sum_j dy_j y_j) (deck 003).
template <class T>
void softmax_backward(const T* y, const T* dy, T* dz, index_t rows, index_t cols,
                      cudaStream_t stream);

// Maxout (deck 003): unit u of row i is max_k z[i, u * pieces + k] (contiguous groups).
template <class T>
void maxout_forward(const T* z, T* y, index_t rows, index_t units, index_t pieces,
                    cudaStream_t stream);
// The gradient goes to the first arg-max of each group; the other pieces get 0.
template <class T>
void maxout_backward(const T* z, const T* dy, T* dz, index_t rows, index_t units, index_t pieces,
                     cudaStream_t stream);

}  // namespace fm::cuda
