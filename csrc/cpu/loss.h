// CPU losses fused with their output activation (csrc/common/loss.h has the formulas):
// one pass per row computes the row loss and d loss / d logits.
#pragma once

#include <cstdint>

#include "common/loss.h"

namespace fm::cpu {

// Loss L = (1/N) sum_i w_i l_i over the N = rows samples (Keras' "sum over batch size";
// w_i = 1 without sample weights) and, when dlogits is not null, dlogits = dL/dlogits
// (rows, cols), already divided by N.
// Exactly one of `target` and `labels` is given:
//   target (rows, cols): dense targets; mse any values, binary_cross_entropy 0/1 labels or
//                        probabilities, cross_entropy one-hot or probability rows;
//   labels (rows):       integer classes in [0, cols), cross_entropy only.
// sample_weight (rows) may be null. Throws fm::ValueError on labels out of range and on
// parameters that do not apply to the loss (smoothing for mse, half for the others).
// The row losses are summed in double in row order: deterministic for any thread count.
template <class T>
double loss_forward_backward(Loss loss, const T* logits, const T* target,
                             const std::int32_t* labels, const T* sample_weight, T* dlogits,
                             index_t rows, index_t cols, const LossParams<T>& p);

// The loss's output activation, for predictions: identity (mse), sigmoid (binary cross-
// entropy), row softmax (cross-entropy). out may alias logits.
template <class T>
void loss_output(Loss loss, const T* logits, T* out, index_t rows, index_t cols);

}  // namespace fm::cpu
