// The Network's CPU backend: host memory (std::vector) and the kernels of csrc/cpu, called
// with the signatures the generic Network code (network/network_impl.h) uses.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/activation.h"
#include "cpu/batchnorm.h"
#include "cpu/dense.h"
#include "cpu/dropout.h"
#include "cpu/loss.h"
#include "cpu/optimizer.h"
#include "cpu/rbf.h"
#include "network/backend.h"
#include "network/network.h"

namespace fm {

struct CpuBackend {
  template <class U>
  using Vec = std::vector<U>;
  static constexpr bool kHostMemory = true;
  static index_t rbf_workspace_size(index_t K) { return cpu::rbf_workspace_size(K); }

  // glue
  template <class T>
  void copy(T* dst, const T* src, index_t n) {
    std::memcpy(dst, src, sizeof(T) * n);
  }
  template <class T>
  void fill(T* dst, index_t n, T v) {
    std::fill_n(dst, n, v);
  }
  template <class T>
  void scale(T* x, index_t n, T w) {
    for (index_t i = 0; i < n; ++i) x[i] *= w;
  }
  template <class T>
  void add(T* acc, const T* src, index_t n) {
    for (index_t i = 0; i < n; ++i) acc[i] += src[i];
  }
  void weighted_sum(const double* v, const std::vector<double>& w, double* out) {
    double total = 0.0;
    for (size_t i = 0; i < w.size(); ++i) total += w[i] * v[i];
    *out = total;
  }
  template <class U>
  void read(const U* src, size_t n, U* dst) {
    std::copy_n(src, n, dst);
  }
  // Trainer.fit's indexed step: row gather / scatter by int64 row indices, the index check,
  // and the running accuracy count (Network::record_step).
  bool indices_valid(const std::int64_t* idx, index_t batch, index_t n_rows) {
    bool ok = true;
    for (index_t i = 0; i < batch; ++i) ok &= idx[i] >= 0 && idx[i] < n_rows;
    return ok;
  }
  template <class U>
  void gather_rows(U* dst, const U* src, const std::int64_t* idx, index_t batch, index_t width) {
    for (index_t i = 0; i < batch; ++i) std::copy_n(src + idx[i] * width, width, dst + i * width);
  }
  template <class U>
  void scatter_rows(U* dst, const U* src, const std::int64_t* idx, index_t batch, index_t width) {
    for (index_t i = 0; i < batch; ++i) std::copy_n(src + i * width, width, dst + idx[i] * width);
  }
  // *counter += the rows of `out` (batch, k) counted correct: mode 1, the first arg-max equals
  // the label (numpy's argmax); mode 2 (k = 1), (out >= threshold) equals the 0/1 target.
  template <class T>
  void count_correct(int mode, const T* out, const std::int32_t* labels, const T* target,
                     T threshold, index_t batch, index_t k, std::int64_t* counter) {
    std::int64_t correct = 0;
    for (index_t i = 0; i < batch; ++i) {
      const T* row = out + i * k;
      if (mode == 1)
        correct += std::max_element(row, row + k) - row == labels[i];
      else
        correct += T(row[0] >= threshold ? 1 : 0) == target[i];
    }
    *counter += correct;
  }
  // Whether all n values are finite: x * 0 is 0 for a finite x and NaN for an Inf or a NaN, so
  // one vectorizable sum answers (no early exit, no overflow whatever the magnitudes).
  template <class T>
  bool all_finite(const T* x, index_t n) {
    T acc = T(0);
#pragma omp simd reduction(+ : acc)
    for (index_t i = 0; i < n; ++i) acc += x[i] * T(0);
    return acc == T(0);
  }

  // kernels
  template <class T>
  void dense_forward(const T* X, const T* W, const T* b, T* Z, T* A, index_t batch, index_t n_in,
                     index_t n_out, Act act, const ActParams<T>& p) {
    cpu::dense_forward(X, W, b, Z, A, batch, n_in, n_out, act, p);
  }
  template <class T>
  void dense_backward(const T* X, const T* W, const T* Z, const T* dA, T* dZ, T* dW, T* db, T* dX,
                      T* dparams, index_t batch, index_t n_in, index_t n_out, Act act,
                      const ActParams<T>& p) {
    cpu::dense_backward(X, W, Z, dA, dZ, dW, db, dX, dparams, batch, n_in, n_out, act, p);
  }
  template <class T>
  void batchnorm_forward_train(const T* x, T* y, const T* gamma, const T* beta, T* mean, T* invstd,
                               T* rmean, T* rvar, index_t rows, index_t cols, T momentum, T eps,
                               bool init_from_batch) {
    cpu::batchnorm_forward_train(x, y, gamma, beta, mean, invstd, rmean, rvar, rows, cols, momentum,
                                 eps, init_from_batch);
  }
  template <class T>
  void batchnorm_forward_infer(const T* x, T* y, const T* gamma, const T* beta, const T* rmean,
                               const T* rvar, index_t rows, index_t cols, T eps) {
    cpu::batchnorm_forward_infer(x, y, gamma, beta, rmean, rvar, rows, cols, eps);
  }
  template <class T>
  void batchnorm_backward(const T* x, const T* dy, const T* gamma, const T* mean, const T* invstd,
                          T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols) {
    cpu::batchnorm_backward(x, dy, gamma, mean, invstd, dx, dgamma, dbeta, rows, cols);
  }
  template <class T>
  void dropout_forward(const T* x, T* y, index_t n, T rate, const PhiloxKey& key) {
    cpu::dropout_forward(x, y, n, rate, key);
  }
  template <class T>
  void dropout_backward(const T* dy, T* dx, index_t n, T rate, const PhiloxKey& key) {
    cpu::dropout_backward(dy, dx, n, rate, key);
  }
  template <class T>
  void gaussian_noise_forward(const T* x, T* y, index_t n, T stddev, const PhiloxKey& key) {
    cpu::gaussian_noise_forward(x, y, n, stddev, key);
  }
  template <class T>
  void activation_forward(Act a, const T* z, T* y, index_t rows, index_t cols,
                          const ActParams<T>& p) {
    cpu::activation_forward(a, z, y, rows, cols, p);
  }
  template <class T>
  void activation_backward(Act a, const T* z, const T* dy, T* dz, T* dbias, T* dparams,
                           index_t rows, index_t cols, const ActParams<T>& p) {
    cpu::activation_backward(a, z, dy, dz, dbias, dparams, rows, cols, p);
  }
  template <class T>
  void softmax_forward(const T* z, T* y, index_t rows, index_t cols) {
    cpu::softmax_forward(z, y, rows, cols);
  }
  template <class T>
  void softmax_backward(const T* y, const T* dy, T* dz, index_t rows, index_t cols) {
    cpu::softmax_backward(y, dy, dz, rows, cols);
  }
  template <class T>
  void maxout_forward(const T* z, T* y, index_t rows, index_t units, index_t pieces) {
    cpu::maxout_forward(z, y, rows, units, pieces);
  }
  template <class T>
  void maxout_backward(const T* z, const T* dy, T* dz, index_t rows, index_t units,
                       index_t pieces) {
    cpu::maxout_backward(z, dy, dz, rows, units, pieces);
  }
  template <class T>
  void rbf_widths(const T* log_sigma, T* sigma, index_t K) {
    for (index_t k = 0; k < K; ++k) sigma[k] = std::exp(log_sigma[k]);
  }
  template <class T>
  void rbf_forward(const T* X, const T* C, const T* sigma, T* D, T* Phi, T* work, index_t batch,
                   index_t n_in, index_t K) {
    cpu::rbf_forward(X, C, sigma, D, Phi, work, batch, n_in, K);
  }
  template <class T>
  void rbf_backward(const T* X, const T* C, const T* sigma, const T* D, const T* Phi, T* G, T* dX,
                    T* dC, T* dsigma, T* work, index_t batch, index_t n_in, index_t K) {
    cpu::rbf_backward(X, C, sigma, D, Phi, G, dX, dC, dsigma, work, batch, n_in, K);
  }
  template <class T>
  void rbf_log_width_grad(T* dlog_sigma, const T* sigma, index_t K) {
    for (index_t k = 0; k < K; ++k) dlog_sigma[k] = rbf_grad_log_width(dlog_sigma[k], sigma[k]);
  }
  template <class T>
  void loss_forward_backward(Loss loss, const T* logits, const T* target,
                             const std::int32_t* labels, const T* sw, T* dlogits, index_t rows,
                             index_t cols, const LossParams<T>& p, double* out) {
    *out = cpu::loss_forward_backward(loss, logits, target, labels, sw, dlogits, rows, cols, p);
  }

  // optimizer: the clip factor is computed on the host (the loss was checked by the caller)
  template <class T>
  GradScale grad_scale(const T* grads, index_t n, double clip_norm, const double* /*loss*/) {
    GradScale s;
    if (clip_norm > 0.0) s.host = clip_norm_scale(cpu::grad_norm(grads, n), clip_norm);
    return s;
  }
  template <class T>
  void optimizer_step(const OptConfig& c, T* params, const T* grads, T* state, const Segment* segs,
                      int nseg, index_t n, std::int64_t step, double lr, const GradScale& scale) {
    cpu::optimizer_step(c, params, grads, state, segs, nseg, n, step, lr, scale.host);
  }
};

}  // namespace fm
