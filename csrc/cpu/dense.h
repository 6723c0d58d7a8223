// CPU dense (fully connected) layer: A = f(X W + b), W is (n_in, n_out).
#pragma once

#include "common/activation.h"

namespace fm::cpu {

// Forward. Z (batch, n_out) receives the pre-activation X W + b: the bias pre-fills Z and the
// GEMM runs with beta = 1. A (batch, n_out) receives f(Z); A may equal Z (in place, when Z is
// not kept), and may be null when f is the identity (A is then Z). b may be null (no bias).
template <class T>
void dense_forward(const T* X, const T* W, const T* b, T* Z, T* A, index_t batch, index_t n_in,
                   index_t n_out, Act act, const ActParams<T>& p);

// Backward from dA (batch, n_out):
//   dZ = dA * f'(Z)                 (fused with db = sum_batch dZ and the learnable
//                                    activation parameters' gradient dparams)
//   dW = X^T dZ   (n_in, n_out)
//   dX = dZ W^T   (batch, n_in)     (skipped when dX is null: the first layer)
// dZ may alias dA. db and dparams may be null.
template <class T>
void dense_backward(const T* X, const T* W, const T* Z, const T* dA, T* dZ, T* dW, T* db, T* dX,
                    T* dparams, index_t batch, index_t n_in, index_t n_out, Act act,
                    const ActParams<T>& p);

}  // namespace fm::cpu
