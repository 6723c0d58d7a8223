// CPU batch normalization over the batch axis, training and inference forward and the fused
// backward (see csrc/cpu/batchnorm.h for the formulas and the running-statistics rules).
// Layout: x, y, dy, dx (rows, cols) row-major; gamma, beta, statistics (cols).
// Parallelization: training forward and backward run per column block (parallel_column_blocks),
// each block owned by one thread which makes all of its passes over the block while it is
// cache-resident: forward = mean pass, centred-variance pass, output pass; backward = one pass
// for the two reductions, one for dx. Sums are accumulated in double in row order, so the
// result does not depend on the thread count. Inference is a row-parallel affine map.
// Cost: forward ~6 flops and 3 reads + 1 write per element; backward ~8 flops, 4 reads +
// 1 write per element; inference 2 flops, 1 read + 1 write.
#include "cpu/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/parallel.h"

namespace fm::cpu {
namespace {

template <class T>
void check_hyper(T eps) {
  FM_CHECK(eps > T(0) && std::isfinite(eps), "eps: expected a finite value > 0, got ", eps);
}

// Columns [c0, c1) of the training forward pass (a dispatched clone).
template <class T>
FM_CPU_CLONES void forward_train_columns(const T* x, T* y, const T* gamma, const T* beta,
                                         T* batch_mean, T* batch_invstd, T* running_mean,
                                         T* running_var, index_t rows, index_t cols, index_t c0,
                                         index_t c1, double inv_m, double unbias, double mom, T eps,
                                         bool init_from_batch) {
  double acc[kColumnBlock], mean_d[kColumnBlock];
  T mean[kColumnBlock], scale[kColumnBlock], shift[kColumnBlock];
  for (index_t b0 = c0; b0 < c1; b0 += kColumnBlock) {
    const index_t w = std::min(c1 - b0, kColumnBlock);
    // Pass 1: mu_B = 1/m sum_i x_i (deck 000, Algorithm 1).
    std::fill(acc, acc + w, 0.0);
    for (index_t i = 0; i < rows; ++i) {
      const T* xi = x + i * cols + b0;
#pragma omp simd
      for (index_t j = 0; j < w; ++j) acc[j] += static_cast<double>(xi[j]);
    }
    for (index_t j = 0; j < w; ++j) mean_d[j] = acc[j] * inv_m;
    // Pass 2: sigma_B^2 = 1/m sum_i (x_i - mu_B)^2, centred (no E[x^2] - E[x]^2 cancellation).
    std::fill(acc, acc + w, 0.0);
    for (index_t i = 0; i < rows; ++i) {
      const T* xi = x + i * cols + b0;
#pragma omp simd
      for (index_t j = 0; j < w; ++j) {
        const double d = static_cast<double>(xi[j]) - mean_d[j];
        acc[j] += d * d;
      }
    }
    for (index_t j = 0; j < w; ++j) {
      const index_t c = b0 + j;
      const double var = acc[j] * inv_m;
      const double invstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
      mean[j] = static_cast<T>(mean_d[j]);
      batch_mean[c] = mean[j];
      batch_invstd[c] = static_cast<T>(invstd);
      if (running_mean) {
        // Deck 001: MA^(t) = delta stat + (1 - delta) MA^(t-1), MA^(1) = stat of batch 1.
        // The variance recorded is the unbiased one (PyTorch / Keras).
        const double uvar = var * unbias;
        if (init_from_batch) {
          running_mean[c] = mean[j];
          running_var[c] = static_cast<T>(uvar);
        } else {
          const double rm = static_cast<double>(running_mean[c]);
          const double rv = static_cast<double>(running_var[c]);
          running_mean[c] = static_cast<T>((1.0 - mom) * rm + mom * mean_d[j]);
          running_var[c] = static_cast<T>((1.0 - mom) * rv + mom * uvar);
        }
      }
      scale[j] = static_cast<T>((gamma ? static_cast<double>(gamma[c]) : 1.0) * invstd);
      shift[j] = beta ? beta[c] : T(0);
    }
    // Pass 3: y = gamma xhat + beta = (x - mu) (gamma / sqrt(var + eps)) + beta.
    for (index_t i = 0; i < rows; ++i) {
      const T* xi = x + i * cols + b0;
      T* yi = y + i * cols + b0;
#pragma omp simd
      for (index_t j = 0; j < w; ++j) yi[j] = (xi[j] - mean[j]) * scale[j] + shift[j];
    }
  }
}

// Rows [r0, r1) of y = (x - mean) scale + shift (a dispatched clone).
template <class T>
FM_CPU_CLONES void affine_rows(const T* x, T* y, const T* mean, const T* sc, const T* sh,
                               index_t cols, index_t r0, index_t r1) {
  for (index_t i = r0; i < r1; ++i) {
    const T* xi = x + i * cols;
    T* yi = y + i * cols;
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) yi[j] = (xi[j] - mean[j]) * sc[j] + sh[j];
  }
}

// Columns [c0, c1) of the backward pass (a dispatched clone).
template <class T>
FM_CPU_CLONES void backward_columns(const T* x, const T* dy, const T* gamma, const T* batch_mean,
                                    const T* batch_invstd, T* dx, T* dgamma, T* dbeta, index_t rows,
                                    index_t cols, index_t c0, index_t c1, double inv_m) {
  double sdy[kColumnBlock], sdyx[kColumnBlock];
  T mean[kColumnBlock], invstd[kColumnBlock], k[kColumnBlock], a[kColumnBlock], b[kColumnBlock];
  for (index_t b0 = c0; b0 < c1; b0 += kColumnBlock) {
    const index_t w = std::min(c1 - b0, kColumnBlock);
    for (index_t j = 0; j < w; ++j) {
      mean[j] = batch_mean[b0 + j];
      invstd[j] = batch_invstd[b0 + j];
      sdy[j] = 0.0;
      sdyx[j] = 0.0;
    }
    // Pass 1: dbeta = sum dy, dgamma = sum dy xhat.
    for (index_t i = 0; i < rows; ++i) {
      const T* xi = x + i * cols + b0;
      const T* gi = dy + i * cols + b0;
#pragma omp simd
      for (index_t j = 0; j < w; ++j) {
        const T xhat = (xi[j] - mean[j]) * invstd[j];
        sdy[j] += static_cast<double>(gi[j]);
        sdyx[j] += static_cast<double>(gi[j]) * static_cast<double>(xhat);
      }
    }
    for (index_t j = 0; j < w; ++j) {
      const index_t c = b0 + j;
      if (dbeta) dbeta[c] = static_cast<T>(sdy[j]);
      if (dgamma) dgamma[c] = static_cast<T>(sdyx[j]);
      k[j] = static_cast<T>((gamma ? static_cast<double>(gamma[c]) : 1.0) *
                            static_cast<double>(invstd[j]));
      a[j] = static_cast<T>(sdy[j] * inv_m);
      b[j] = static_cast<T>(sdyx[j] * inv_m);
    }
    // Pass 2: dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)).
    for (index_t i = 0; i < rows; ++i) {
      const T* xi = x + i * cols + b0;
      const T* gi = dy + i * cols + b0;
      T* di = dx + i * cols + b0;
#pragma omp simd
      for (index_t j = 0; j < w; ++j) {
        const T xhat = (xi[j] - mean[j]) * invstd[j];
        di[j] = k[j] * (gi[j] - a[j] - xhat * b[j]);
      }
    }
  }
}

}  // namespace

template <class T>
void batchnorm_forward_train(const T* x, T* y, const T* gamma, const T* beta, T* batch_mean,
                             T* batch_invstd, T* running_mean, T* running_var, index_t rows,
                             index_t cols, T momentum, T eps, bool init_from_batch) {
  FM_CHECK(rows >= 2,
           "x: batch normalization in training needs a batch of at least 2 rows "
           "(the batch variance of a single sample is undefined), got ",
           rows);
  FM_CHECK(momentum >= T(0) && momentum <= T(1), "momentum: expected a value in [0, 1], got ",
           momentum);
  FM_CHECK((running_mean == nullptr) == (running_var == nullptr),
           "running_mean, running_var: pass both or neither");
  check_hyper(eps);
  const double inv_m = 1.0 / static_cast<double>(rows);
  const double unbias = static_cast<double>(rows) / static_cast<double>(rows - 1);
  const double mom = static_cast<double>(momentum);
  parallel_column_blocks(rows, cols, [&](index_t c0, index_t c1) {
    forward_train_columns(x, y, gamma, beta, batch_mean, batch_invstd, running_mean, running_var,
                          rows, cols, c0, c1, inv_m, unbias, mom, eps, init_from_batch);
  });
}

template <class T>
void batchnorm_forward_infer(const T* x, T* y, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, index_t rows, index_t cols, T eps) {
  check_hyper(eps);
  // Per-feature affine map from the running statistics (deck 001, "Inference").
  std::vector<T> scale(static_cast<size_t>(cols)), shift(static_cast<size_t>(cols));
  for (index_t j = 0; j < cols; ++j) {
    const double v = static_cast<double>(running_var[j]) + static_cast<double>(eps);
    FM_CHECK(v > 0.0, "running_var: expected values >= 0, got ", running_var[j], " at feature ", j);
    scale[j] = static_cast<T>((gamma ? static_cast<double>(gamma[j]) : 1.0) / std::sqrt(v));
    shift[j] = beta ? beta[j] : T(0);
  }
  const T* sc = scale.data();
  const T* sh = shift.data();
  parallel_rows(rows, cols, [&](index_t r0, index_t r1) {
    affine_rows(x, y, running_mean, sc, sh, cols, r0, r1);
  });
}

template <class T>
void batchnorm_backward(const T* x, const T* dy, const T* gamma, const T* batch_mean,
                        const T* batch_invstd, T* dx, T* dgamma, T* dbeta, index_t rows,
                        index_t cols) {
  FM_CHECK(rows >= 2, "x: batch normalization in training needs a batch of at least 2 rows, got ",
           rows);
  const double inv_m = 1.0 / static_cast<double>(rows);
  parallel_column_blocks(rows, cols, [&](index_t c0, index_t c1) {
    backward_columns(x, dy, gamma, batch_mean, batch_invstd, dx, dgamma, dbeta, rows, cols, c0, c1,
                     inv_m);
  });
}

#define FM_BN_INSTANTIATE(T)                                                                     \
  template void batchnorm_forward_train<T>(const T*, T*, const T*, const T*, T*, T*, T*, T*,     \
                                           index_t, index_t, T, T, bool);                        \
  template void batchnorm_forward_infer<T>(const T*, T*, const T*, const T*, const T*, const T*, \
                                           index_t, index_t, T);                                 \
  template void batchnorm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*,  \
                                      T*, index_t, index_t);
FM_BN_INSTANTIATE(float)
FM_BN_INSTANTIATE(double)
#undef FM_BN_INSTANTIATE

}  // namespace fm::cpu
