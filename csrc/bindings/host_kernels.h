// The kernel trait of the host memory policy (bindings/ops.h): the Network's CPU backend plus
// the ops the Network does not call, all synchronous on the calling thread's OpenMP pool.
#pragma once

#include <cmath>
#include <cstdint>

#include "bindings/arrays.h"
#include "cpu/activation.h"
#include "cpu/blas.h"
#include "cpu/loss.h"
#include "cpu/optimizer.h"
#include "network/cpu_backend.h"

namespace fm::bindings {

template <class Mem>
struct OpKernels;

template <>
struct OpKernels<HostMem> : CpuBackend {
  static OpKernels make(HostMem::Stream) { return {}; }

  template <class T>
  void activation_derivative(Act a, const T* z, T* g, index_t rows, index_t cols,
                             const ActParams<T>& p) {
    cpu::activation_derivative(a, z, g, rows, cols, p);
  }
  template <class T>
  void loss_output(Loss loss, const T* logits, T* out, index_t rows, index_t cols) {
    cpu::loss_output(loss, logits, out, rows, cols);
  }
  // The clip factor from Blue's scaled norm, as CpuBackend::grad_scale computes it.
  template <class T>
  void grad_sq_norm(const T* grads, index_t n, double* sq_norm, double* clip_scale,
                    double max_norm) {
    if (sq_norm) *sq_norm = cpu::grad_sq_norm(grads, n);
    if (clip_scale) *clip_scale = clip_norm_scale(cpu::grad_norm(grads, n), max_norm);
  }
  template <class T>
  void gemm(bool ta, bool tb, index_t m, index_t n, index_t k, const T* A, index_t lda, const T* B,
            index_t ldb, T* C) {
    cpu::gemm(ta, tb, m, n, k, T(1), A, lda, B, ldb, T(0), C, n);
  }
  // The loss written to *out (a caller's float64 scalar) when given.
  template <class T>
  void loss_value(Loss loss, const T* logits, const T* target, const std::int32_t* labels,
                  const T* sw, T* dlogits, index_t rows, index_t cols, const LossParams<T>& p,
                  double* out) {
    double value = 0.0;
    loss_forward_backward(loss, logits, target, labels, sw, dlogits, rows, cols, p, &value);
    if (out) *out = value;
  }
  // The gradient factor of a caller's float64 scalar (may be null) folded into scale.host;
  // false (skip the step, as the device does: the Network's non-finite-loss signal) for NaN.
  static bool take_device_scale(const double* device_scale, GradScale& scale) {
    if (!device_scale) return true;
    if (std::isnan(*device_scale)) return false;
    scale.host *= *device_scale;
    return true;
  }
};

}  // namespace fm::bindings
