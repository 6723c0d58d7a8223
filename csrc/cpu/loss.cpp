// CPU fused losses: mse (identity output), binary cross-entropy (sigmoid output) and
// cross-entropy (softmax output), decks 003 and 004; label smoothing, deck 002.
// Layout: logits, target, dlogits (rows, cols) row-major; labels, sample_weight (rows).
// Each row is one task: its loss is accumulated in double and its gradient written in the
// same sweep (cross-entropy adds the max and the exp-sum sweeps over the cache-resident row).
// Cost per element: mse 3 flops; BCE one exp + log1p (softplus) + one exp (sigmoid);
// CE one exp; 8-16 bytes read and 4-8 written (float32 / float64).
#include "cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/activation.h"
#include "cpu/parallel.h"

namespace fm::cpu {
namespace {

using loss_detail::Smoothing;

template <class T>
FM_FORCE_INLINE double mse_row(const T* z, const T* t, T* d, index_t cols, T g, bool half) {
  double l = 0.0;
  for (index_t j = 0; j < cols; ++j)
    l += static_cast<double>(loss_detail::mse_elem(z[j], t[j], half));
  if (d) {
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) d[j] = loss_detail::mse_grad(z[j], t[j], half) * g;
  }
  return l;
}

template <class T>
FM_FORCE_INLINE double bce_row(const T* z, const T* t, T* d, index_t cols, T g,
                               const Smoothing<T>& sm) {
  double l = 0.0;
  for (index_t j = 0; j < cols; ++j)
    l += static_cast<double>(loss_detail::bce_elem(z[j], sm(t[j])));
  if (d) {
    for (index_t j = 0; j < cols; ++j) d[j] = loss_detail::bce_grad(z[j], sm(t[j])) * g;
  }
  return l;
}

// Cross-entropy of one row; the target of class j is target_of(j) (already smoothed) and
// the targets sum to target_sum.
template <class T, class Target>
FM_FORCE_INLINE double ce_row(const T* z, T* d, index_t cols, T g, Target&& target_of,
                              double target_sum) {
  T m = z[0];
  for (index_t j = 1; j < cols; ++j) m = std::max(m, z[j]);
  double s = 0.0;
  if (d) {
    for (index_t j = 0; j < cols; ++j) {
      d[j] = fexp(z[j] - m);  // scratch: e^{z_j - m}
      s += static_cast<double>(d[j]);
    }
  } else {
    for (index_t j = 0; j < cols; ++j) s += static_cast<double>(fexp(z[j] - m));
  }
  const double lse = static_cast<double>(m) + std::log(s);
  double l = 0.0;
  for (index_t j = 0; j < cols; ++j)
    l += loss_detail::ce_elem(static_cast<double>(z[j]), lse, static_cast<double>(target_of(j)));
  if (d) {
    const T inv_s = static_cast<T>(1.0 / s), tsum = static_cast<T>(target_sum);
    for (index_t j = 0; j < cols; ++j)
      d[j] = loss_detail::ce_grad(d[j], inv_s, tsum, target_of(j)) * g;
  }
  return l;
}

// Rows [r0, r1): rl[i] = w_i * l_i and, when dlogits is given, the gradient rows (a
// dispatched clone holding every loop of the row functions above).
template <class T>
FM_CPU_CLONES void loss_rows(Loss loss, const T* logits, const T* target,
                             const std::int32_t* labels, const T* sample_weight, T* dlogits,
                             index_t cols, index_t r0, index_t r1, double inv_n, bool half,
                             const Smoothing<T>& sm, double* rl) {
  for (index_t i = r0; i < r1; ++i) {
    const T* z = logits + i * cols;
    const T* t = target ? target + i * cols : nullptr;
    T* d = dlogits ? dlogits + i * cols : nullptr;
    const T w = sample_weight ? sample_weight[i] : T(1);
    if (w == T(0)) {  // skipped, not 0 * l: l may overflow to inf (csrc/common/loss.h)
      if (d) std::fill(d, d + cols, T(0));
      rl[i] = 0.0;
      continue;
    }
    const T g = static_cast<T>(static_cast<double>(w) * inv_n);
    double l = 0.0;
    switch (loss) {
      case Loss::mse:
        l = mse_row(z, t, d, cols, g, half);
        break;
      case Loss::binary_cross_entropy:
        l = bce_row(z, t, d, cols, g, sm);
        break;
      case Loss::cross_entropy:
        if (labels) {
          const index_t y = labels[i];
          const T on = sm.on, off = sm.off;
          const double tsum =
              static_cast<double>(on) + static_cast<double>(off) * static_cast<double>(cols - 1);
          l = ce_row(z, d, cols, g, [&](index_t j) { return j == y ? on : off; }, tsum);
        } else {
          double tsum = 0.0;
          for (index_t j = 0; j < cols; ++j) tsum += static_cast<double>(sm(t[j]));
          l = ce_row(z, d, cols, g, [&](index_t j) { return sm(t[j]); }, tsum);
        }
        break;
    }
    rl[i] = static_cast<double>(w) * l;
  }
}

template <class T>
FM_CPU_CLONES void sigmoid_range(const T* z, T* out, index_t e0, index_t e1) {
#pragma omp simd
  for (index_t e = e0; e < e1; ++e) out[e] = act_detail::sigmoid(z[e]);
}

}  // namespace

template <class T>
double loss_forward_backward(Loss loss, const T* logits, const T* target,
                             const std::int32_t* labels, const T* sample_weight, T* dlogits,
                             index_t rows, index_t cols, const LossParams<T>& p) {
  const int code = static_cast<int>(loss);
  FM_CHECK(code >= 0 && code <= static_cast<int>(Loss::cross_entropy), "loss: unknown loss code ",
           code);
  FM_CHECK(rows >= 1 && cols >= 1, "logits: expected a non-empty (batch, outputs) array, got (",
           rows, ", ", cols, ")");
  FM_CHECK((target == nullptr) != (labels == nullptr), "target: pass exactly one of dense targets ",
           "and integer labels");
  FM_CHECK(!labels || loss == Loss::cross_entropy,
           "target: integer class labels are for cross_entropy only; pass dense targets");
  FM_CHECK(p.label_smoothing >= T(0) && p.label_smoothing < T(1),
           "label_smoothing: expected a value in [0, 1), got ", p.label_smoothing);
  FM_CHECK(p.label_smoothing == T(0) || loss != Loss::mse,
           "label_smoothing: only the classification losses take label smoothing, not mse");
  FM_CHECK(!p.half || loss == Loss::mse, "half: the 1/2 convention applies to mse only");
  const index_t k = loss == Loss::cross_entropy ? cols : 2;  // classes per smoothed target
  FM_CHECK(p.label_smoothing == T(0) || p.smoothing_uniform_k || k >= 2,
           "label_smoothing: the deck's eps/(k-1) rule needs at least 2 classes, got ", k);
  if (labels) {
    for (index_t i = 0; i < rows; ++i)
      FM_CHECK(labels[i] >= 0 && labels[i] < cols, "target: label ", labels[i], " of sample ", i,
               " is out of range [0, ", cols, ")");
  }
  const Smoothing<T> sm = loss_detail::make_smoothing(p, k);
  const double inv_n = 1.0 / static_cast<double>(rows);
  std::vector<double> row_loss(static_cast<size_t>(rows));
  double* rl = row_loss.data();

  parallel_rows(rows, cols, [&](index_t r0, index_t r1) {
    loss_rows(loss, logits, target, labels, sample_weight, dlogits, cols, r0, r1, inv_n, p.half, sm,
              rl);
  });
  double total = 0.0;
  for (index_t i = 0; i < rows; ++i) total += rl[i];
  return total * inv_n;
}

template <class T>
void loss_output(Loss loss, const T* logits, T* out, index_t rows, index_t cols) {
  switch (loss) {
    case Loss::mse:
      if (out != logits) std::memcpy(out, logits, sizeof(T) * rows * cols);
      return;
    case Loss::binary_cross_entropy:
      parallel_rows(rows, cols, [&](index_t r0, index_t r1) {
        sigmoid_range(logits, out, r0 * cols, r1 * cols);
      });
      return;
    case Loss::cross_entropy:
      softmax_forward(logits, out, rows, cols);
      return;
  }
  throw ValueError(detail::concat("loss: unknown loss code ", static_cast<int>(loss)));
}

template double loss_forward_backward<float>(Loss, const float*, const float*, const std::int32_t*,
                                             const float*, float*, index_t, index_t,
                                             const LossParams<float>&);
template double loss_forward_backward<double>(Loss, const double*, const double*,
                                              const std::int32_t*, const double*, double*, index_t,
                                              index_t, const LossParams<double>&);
template void loss_output<float>(Loss, const float*, float*, index_t, index_t);
template void loss_output<double>(Loss, const double*, double*, index_t, index_t);

}  // namespace fm::cpu
