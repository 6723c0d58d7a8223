// CUDA dense (fully connected) layer: A = f(X W + b), W is (n_in, n_out). Device pointers,
// row-major, queued on `stream`. Same contracts as csrc/cpu/dense.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/activation.h"

namespace fm::cuda {

// Forward. Z (batch, n_out) receives the pre-activation X W + b, A (batch, n_out) receives
// f(Z); A may equal Z (in place, when Z is not kept), and may be null when f is the identity
// (A is then Z). b may be null (no bias). The bias is fused into the GEMM (cuBLASLt BIAS
// epilogue); for gelu_tanh with A != Z one GEMM writes both (GELU_AUX_BIAS: A = D, Z = aux);
// every other activation runs as one fused elementwise pass over Z.
template <class T>
void dense_forward(const T* X, const T* W, const T* b, T* Z, T* A, index_t batch, index_t n_in,
                   index_t n_out, Act act, const ActParams<T>& p, cudaStream_t stream);

// Backward from dA (batch, n_out):
//   dZ = dA * f'(Z)   fused with db = sum_batch dZ and the learnable parameters' gradient
//   dW = X^T dZ       (n_in, n_out); for the identity db comes from the same GEMM (BGRADA)
//   dX = dZ W^T       (batch, n_in), skipped when dX is null (the first layer)
// dZ may alias dA. For the identity dZ may be null: dA is then used as dZ. db and dparams may
// be null.
template <class T>
void dense_backward(const T* X, const T* W, const T* Z, const T* dA, T* dZ, T* dW, T* db, T* dX,
                    T* dparams, index_t batch, index_t n_in, index_t n_out, Act act,
                    const ActParams<T>& p, cudaStream_t stream);

// Forward for a ReLU layer whose pre-activation is not kept (the fused training step): A =
// relu(X W + b) and the bit-mask of A > 0 (relu_mask_bytes(batch, n_out) bytes, layout in
// csrc/cuda/activation.h) from one GEMM (RELU_AUX_BIAS epilogue).
template <class T>
void dense_forward_relu_mask(const T* X, const T* W, const T* b, T* A, std::uint32_t* mask,
                             index_t batch, index_t n_in, index_t n_out, cudaStream_t stream);

// The input gradient of this layer fused with the previous layer's activation backward:
//   dZ_prev = (dZ W^T) * f_prev'(Z_prev)   (batch, n_in), written to dZ_prev
//   db_prev = sum_batch dZ_prev             (when db_prev is given)
//   dparams_prev: learnable parameters' gradient of f_prev (when given)
// ReLU with prev_mask (from dense_forward_relu_mask) runs as one GEMM (DRELU_BGRAD), gelu_tanh
// with prev_z as one GEMM (DGELU_BGRAD); other activations as the GEMM plus one fused pass.
// prev_z is the previous layer's pre-activation (n_in columns); it may be null only for the
// identity and for ReLU with a mask.
template <class T>
void dense_backward_input(const T* dZ, const T* W, T* dZ_prev, index_t batch, index_t n_in,
                          index_t n_out, Act prev_act, const T* prev_z,
                          const std::uint32_t* prev_mask, T* db_prev, T* dparams_prev,
                          const ActParams<T>& prev_p, cudaStream_t stream);

}  // namespace fm::cuda
