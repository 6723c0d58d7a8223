// CPU activation kernels over (rows, cols) row-major arrays; cols are the units.
#pragma once

#include "common/activation.h"

namespace fm::cpu {

// y = f(z) elementwise (y may alias z).
template <class T>
void activation_forward(Act a, const T* z, T* y, index_t rows, index_t cols, const ActParams<T>& p);

// g = f'(z) elementwise.
template <class T>
void activation_derivative(Act a, const T* z, T* g, index_t rows, index_t cols,
                           const ActParams<T>& p);

// dz = dy * f'(z) (dz may alias dy). When dbias is given, dbias[j] = sum_i dz[i, j]; when
// dparams is given (learnable activations), it receives sum_i dy * df/dtheta as a
// (n_params, cols) block. Both are overwritten, summed by one thread per column.
template <class T>
void activation_backward(Act a, const T* z, const T* dy, T* dz, T* dbias, T* dparams, index_t rows,
                         index_t cols, const ActParams<T>& p);

// Row-wise softmax, max-subtracted: y_i = e^{z_i - m} / sum_j e^{z_j - m} (deck 003).
template <class T>
void softmax_forward(const T* z, T* y, index_t rows, index_t cols);
// dz = y * (dy - sum_j dy_j y_j): the Jacobian y_i (delta_ij - y_j) applied to dy (deck 003).
template <class T>
void softmax_backward(const T* y, const T* dy, T* dz, index_t rows, index_t cols);

// Maxout (deck 003): unit u of row i is max_k z[i, u * pieces + k] (contiguous groups).
template <class T>
void maxout_forward(const T* z, T* y, index_t rows, index_t units, index_t pieces);
// The gradient goes to the first arg-max of each group; the other pieces get 0.
template <class T>
void maxout_backward(const T* z, const T* dy, T* dz, index_t rows, index_t units, index_t pieces);

}  // namespace fm::cpu
