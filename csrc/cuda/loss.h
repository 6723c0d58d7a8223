// CUDA losses fused with their output activation (csrc/common/loss.h has the formulas): one
// pass per row computes the row loss and d loss / d logits. Same contracts as
// csrc/cpu/loss.h, plus the stream; every pointer is a device pointer and nothing is
// synchronized: the batch loss is written to a device scalar.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/loss.h"

namespace fm::cuda {

// *loss_out (a device double) = L = (1/N) sum_i w_i l_i over the N = rows samples (w_i = 1
// without sample weights) and, when dlogits is not null, dlogits = dL/dlogits (rows, cols),
// already divided by N. loss_out may be null (gradient only).
// Exactly one of `target` (rows, cols) and `labels` (rows, int32 classes, cross_entropy only)
// is given; sample_weight (rows) may be null. Throws fm::ValueError on the same bad
// parameters as the CPU. Labels live on the device and are not range-checked here
// (fusedmlp.ops checks them): a label outside [0, cols) makes its row's loss and gradient NaN
// (never an out-of-bounds access).
// Determinism: the row losses are summed per block in a fixed order, then the block partials
// by one block in a fixed order (no floating-point atomics), all in double.
template <class T>
void loss_forward_backward(Loss loss, const T* logits, const T* target, const std::int32_t* labels,
                           const T* sample_weight, T* dlogits, index_t rows, index_t cols,
                           const LossParams<T>& p, double* loss_out, cudaStream_t stream);

// The loss's output activation, for predictions: identity (mse), sigmoid (binary cross-
// entropy), row softmax (cross-entropy). out may alias logits.
template <class T>
void loss_output(Loss loss, const T* logits, T* out, index_t rows, index_t cols,
                 cudaStream_t stream);

}  // namespace fm::cuda
