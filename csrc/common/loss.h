// The losses fused with their output activation (deck 003: "the output activation is
// task-dependent"), per-element formulas shared by the CPU (csrc/cpu/loss.cpp) and CUDA.
// z are the logits (pre-activations of the output layer), t the targets.
//
//   mse                  identity output, l = sum_o (z_o - t_o)^2            (deck 004,
//                        multi-output MSE); with `half` l = 1/2 sum_o (z_o - t_o)^2 (deck 004
//                        backprop example). dl/dz = 2 (z - t), or (z - t) with half.
//   binary_cross_entropy sigmoid output, l = sum_o [softplus(z_o) - t_o z_o]  (deck 003,
//                        sigmoid + BCE): the log-sum-exp form of
//                        -t log s(z) - (1 - t) log(1 - s(z)), finite for any z.
//                        dl/dz = s(z) - t. Each output is an independent binary label
//                        (multi-label), summed over the outputs.
//   cross_entropy        softmax output, l = sum_j t_j (lse(z) - z_j) with
//                        lse(z) = m + log sum_j e^{z_j - m}, m = max_j z_j (deck 003,
//                        softmax + CE; max-subtracted so it never overflows).
//                        dl/dz_j = p_j S - t_j with p = softmax(z), S = sum_j t_j (= 1 for
//                        probability targets, giving the familiar p - t).
// Batch reduction (csrc/cpu/loss.cpp): L = (1/N) sum_i w_i l_i, N the batch size (Keras'
// "sum over batch size"; PyTorch's weighted mean divides by sum_i w_i instead). A sample of
// weight w_i = 0 is skipped by every backend: it adds exactly 0 to L and its gradient row is
// 0, even where its l_i overflows to inf (0 * inf would be NaN).
//
// Label smoothing (deck 002, "noise at the output targets"): with k classes the hard 0 and 1
// targets become eps/(k-1) and 1 - eps (deck convention, the default), extended linearly to
// probability targets: t' = (1 - eps) t + eps/(k-1) (1 - t). The common-library convention
// (Szegedy et al.; PyTorch, Keras) mixes with the uniform distribution instead:
// t' = (1 - eps) t + eps/k, i.e. eps/k and 1 - eps + eps/k. Binary cross-entropy treats each
// output as a k = 2 problem (deck: eps and 1 - eps; uniform: eps/2 and 1 - eps/2, as Keras).
#pragma once

#include <cmath>

#include "common/activation.h"
#include "common/macros.h"

namespace fm {

enum class Loss : int { mse, binary_cross_entropy, cross_entropy };

template <class T>
struct LossParams {
  T label_smoothing = 0;             // eps in [0, 1); classification losses only
  // false: deck 002, eps/(k-1) and 1-eps; true: eps/k + (1-eps) one-hot (uniform mix)
  bool smoothing_uniform_k = false;
  bool half = false;                 // mse: the 1/2 (z - t)^2 convention
};

namespace loss_detail {

// Smoothed target t' = on * t + off * (1 - t) for a target t in [0, 1] with k classes:
// deck 002 (on, off) = (1 - eps, eps/(k-1)); uniform (1 - eps + eps/k, eps/k).
template <class T>
struct Smoothing {
  T on = T(1), off = T(0);
  FM_HD T operator()(T t) const { return on * t + off * (T(1) - t); }
};

template <class T>
FM_HD Smoothing<T> make_smoothing(const LossParams<T>& p, index_t k) {
  Smoothing<T> s;
  const T eps = p.label_smoothing;
  if (eps == T(0)) return s;
  if (p.smoothing_uniform_k) {
    s.off = eps / static_cast<T>(k);
    s.on = T(1) - eps + s.off;
  } else {
    s.off = eps / static_cast<T>(k - 1);
    s.on = T(1) - eps;
  }
  return s;
}

// Squared error of one output and its derivative (deck 004).
template <class T>
FM_HD T mse_elem(T z, T t, bool half) {
  const T d = z - t;
  return half ? T(0.5) * d * d : d * d;
}
template <class T>
FM_HD T mse_grad(T z, T t, bool half) {
  return half ? z - t : T(2) * (z - t);
}

// Binary cross-entropy from a logit: softplus(z) - t z = -t log s(z) - (1-t) log(1-s(z)).
template <class T>
FM_HD T bce_elem(T z, T t) {
  return act_detail::softplus(z) - t * z;
}
template <class T>
FM_HD T bce_grad(T z, T t) {
  return act_detail::sigmoid(z) - t;
}

// Cross-entropy term of class j: t_j (lse - z_j), with lse the row's log-sum-exp; written
// as a difference of the two row quantities so large logits do not cancel.
template <class T>
FM_HD T ce_elem(T z, T lse, T t) {
  return t * (lse - z);
}
// d/dz_j of sum_j t_j (lse - z_j) = p_j S - t_j; e = e^{z_j - m}, inv_s = 1 / sum_j e^{z_j - m}.
template <class T>
FM_HD T ce_grad(T e, T inv_s, T target_sum, T t) {
  return e * inv_s * target_sum - t;
}

}  // namespace loss_detail
}  // namespace fm
