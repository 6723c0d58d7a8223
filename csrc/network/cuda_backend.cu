// The GPU Network (network/cuda_backend.h): the CUDA backend's glue kernels, the generic Network
// instantiated over it, and the CUDA-graph training step.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <type_traits>

#include "cuda/activation.h"
#include "cuda/batchnorm.h"
#include "cuda/common.cuh"
#include "cuda/dense.h"
#include "cuda/dropout.h"
#include "cuda/gemm.h"
#include "cuda/loss.h"
#include "cuda/optimizer.h"
#include "cuda/rbf.h"
#include "network/cuda_backend.h"
#include "network/network_impl.h"

namespace fm::cuda {
namespace {

constexpr int kMaxWeightedHeads = 16;  // heads summed per launch of weighted_sum_kernel

template <class U>
__global__ void fill_kernel(U* x, index_t n, U v) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    x[i] = v;
}

template <class T>
__global__ void scale_kernel(T* x, index_t n, T w) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    x[i] *= w;
}

template <class T>
__global__ void add_kernel(T* acc, const T* src, index_t n) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    acc[i] += src[i];
}

struct HeadWeights {
  double w[kMaxWeightedHeads];
  int first, count;
};

// out = (accumulate ? out : 0) + sum_h w_h v_h, in head order (as the CPU's loop).
__global__ void weighted_sum_kernel(const double* v, HeadWeights hw, bool accumulate, double* out) {
  double s = accumulate ? *out : 0.0;
  for (int h = 0; h < hw.count; ++h) s += hw.w[h] * v[hw.first + h];
  *out = s;
}

// The skip rule of the device step: the update is skipped (scale <- NaN, which the optimizer
// kernels read as "return") when the loss or the gradient is non-finite, and the loss slot then
// reads NaN, so the host sees the skip as the CPU reports it. The gradient matters because the
// fast path does not examine its inputs: a NaN in X is swallowed by ReLU (cuBLASLt's epilogue
// and the CPU's z > 0 ? z : 0 both map NaN to 0), leaving the loss finite while dW = X^T dZ
// carries the NaN into the first layer. Else scale <- clip ? scale : 1.
__global__ void finite_step_kernel(double* loss, const double* grad_sq, bool clip, double* scale) {
  if (!isfinite(*loss) || !isfinite(*grad_sq)) {
    *scale = nan("");
    *loss = nan("");
  } else if (!clip) {
    *scale = 1.0;
  }
}

// The BatchNorm statistics of a skipped step back to their value before it (the skip rule of
// backend.h: the update factor reads NaN).
template <class T>
__global__ void restore_if_skipped_kernel(T* dst, const T* backup, index_t n, const double* scale) {
  if (!isnan(*scale)) return;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = backup[i];
}

// *bad = 1 when a value is NaN or Inf (all_finite: exact whatever the magnitudes, where a
// squared norm would overflow above ~1e154).
template <class T>
__global__ void non_finite_kernel(const T* x, index_t n, std::int32_t* bad) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    if (!isfinite(x[i])) *bad = 1;
}

// Trainer.fit's indexed step (Network::gather_batch / record_step; the CPU loops of
// network/cpu_backend.h, one thread per element or row).
__global__ void index_check_kernel(const std::int64_t* idx, index_t batch, index_t n_rows,
                                   std::int32_t* bad) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < batch;
       i += stride)
    if (idx[i] < 0 || idx[i] >= n_rows) *bad = 1;
}

template <class U>
__global__ void gather_rows_kernel(U* dst, const U* src, const std::int64_t* idx, index_t batch,
                                   index_t width) {
  const index_t n = batch * width, stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    dst[e] = src[idx[e / width] * width + e % width];
}

template <class U>
__global__ void scatter_rows_kernel(U* dst, const U* src, const std::int64_t* idx, index_t batch,
                                    index_t width) {
  const index_t n = batch * width, stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    dst[idx[e / width] * width + e % width] = src[e];
}

// mode 1: the first arg-max of the row (std::max_element's rule, as the CPU) equals the label;
// mode 2 (k = 1): (out >= threshold) equals the 0/1 target.
template <class T>
__global__ void count_correct_kernel(int mode, const T* out, const std::int32_t* labels,
                                     const T* target, T threshold, index_t batch, index_t k,
                                     unsigned long long* counter) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  unsigned long long correct = 0;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < batch;
       i += stride) {
    const T* row = out + i * k;
    if (mode == 1) {
      index_t arg = 0;
      for (index_t j = 1; j < k; ++j)
        if (row[arg] < row[j]) arg = j;
      correct += arg == labels[i];
    } else {
      correct += T(row[0] >= threshold ? 1 : 0) == target[i];
    }
  }
  if (correct) atomicAdd(counter, correct);
}

}  // namespace

// ------------------------------------------------------------------ DeviceVec

template <class U>
DeviceVec<U>& DeviceVec<U>::operator=(DeviceVec&& o) noexcept {
  if (this != &o) {
    if (p_) cudaFree(p_);
    p_ = o.p_;
    n_ = o.n_;
    cap_ = o.cap_;
    o.p_ = nullptr;
    o.n_ = o.cap_ = 0;
  }
  return *this;
}

template <class U>
DeviceVec<U>::~DeviceVec() {
  if (p_) cudaFree(p_);  // no throw from a destructor; a failure here leaks at worst
}

template <class U>
void DeviceVec<U>::resize(size_t n) {
  if (n <= cap_) {
    n_ = n;
    return;
  }
  // Growth is rare (construction, a larger batch): wait for the queued work on every stream
  // that may still use the old buffer, then copy and free it.
  FM_CUDA_CHECK(cudaDeviceSynchronize());
  U* p = nullptr;
  FM_CUDA_CHECK(cudaMalloc(&p, sizeof(U) * n));
  if (p_) {
    const cudaError_t e = cudaMemcpy(p, p_, sizeof(U) * n_, cudaMemcpyDeviceToDevice);
    cudaFree(p_);
    if (e != cudaSuccess) {
      cudaFree(p);
      p_ = nullptr;
      n_ = cap_ = 0;
      FM_CUDA_CHECK(e);
    }
  }
  p_ = p;
  n_ = cap_ = n;
}

template <class U>
void DeviceVec<U>::assign(size_t n, U v) {
  resize(n);
  if (n == 0) return;
  fill_kernel<U><<<grid_for(static_cast<index_t>(n), kElementwiseThreads), kElementwiseThreads>>>(
      p_, static_cast<index_t>(n), v);
  FM_CUDA_CHECK_LAUNCH("fill_kernel");
  // Rare (construction, a new optimizer): wait, so work on any other stream sees the values.
  FM_CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

// ------------------------------------------------------------------ CudaBackend

index_t CudaBackend::rbf_workspace_size(index_t K) {
  return cuda::rbf_workspace_size(K);
}

template <class T>
void CudaBackend::copy(T* dst, const T* src, index_t n) {
  if (n > 0 && dst != src)
    FM_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(T) * n, cudaMemcpyDeviceToDevice, stream));
}

template <class T>
void CudaBackend::fill(T* dst, index_t n, T v) {
  if (n <= 0) return;
  fill_kernel<T><<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(dst, n, v);
  FM_CUDA_CHECK_LAUNCH("fill_kernel");
}

template <class T>
void CudaBackend::scale(T* x, index_t n, T w) {
  if (n <= 0) return;
  scale_kernel<T><<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(x, n, w);
  FM_CUDA_CHECK_LAUNCH("scale_kernel");
}

template <class T>
void CudaBackend::add(T* acc, const T* src, index_t n) {
  if (n <= 0) return;
  add_kernel<T><<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(acc, src, n);
  FM_CUDA_CHECK_LAUNCH("add_kernel");
}

void CudaBackend::weighted_sum(const double* v, const std::vector<double>& w, double* out) {
  const int n = static_cast<int>(w.size());
  for (int first = 0; first < n || first == 0; first += kMaxWeightedHeads) {
    HeadWeights hw{};
    hw.first = first;
    hw.count = std::min(kMaxWeightedHeads, n - first);
    for (int h = 0; h < hw.count; ++h) hw.w[h] = w[first + h];
    weighted_sum_kernel<<<1, 1, 0, stream>>>(v, hw, first > 0, out);
    FM_CUDA_CHECK_LAUNCH("weighted_sum_kernel");
    if (n == 0) break;
  }
}

template <class U>
void CudaBackend::read(const U* src, size_t n, U* dst) {
  FM_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(U) * n, cudaMemcpyDeviceToHost, stream));
  FM_CUDA_CHECK(cudaStreamSynchronize(stream));
}

template <class T>
void CudaBackend::restore_if_skipped(T* dst, const T* backup, index_t n, const GradScale& scale) {
  if (n <= 0) return;
  FM_CHECK(scale.device != nullptr, "restore_if_skipped: the step has no device skip signal");
  restore_if_skipped_kernel<T>
      <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(dst, backup, n,
                                                                             scale.device);
  FM_CUDA_CHECK_LAUNCH("restore_if_skipped_kernel");
}

template <class T>
bool CudaBackend::all_finite(const T* x, index_t n) {
  if (n <= 0) return true;
  flag_buf.resize(1);
  FM_CUDA_CHECK(cudaMemsetAsync(flag_buf.data(), 0, sizeof(std::int32_t), stream));
  non_finite_kernel<T>
      <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(x, n, flag_buf.data());
  FM_CUDA_CHECK_LAUNCH("non_finite_kernel");
  std::int32_t bad = 0;
  read(flag_buf.data(), 1, &bad);
  return bad == 0;
}

bool CudaBackend::indices_valid(const std::int64_t* idx, index_t batch, index_t n_rows) {
  if (batch <= 0) return true;
  flag_buf.resize(1);
  FM_CUDA_CHECK(cudaMemsetAsync(flag_buf.data(), 0, sizeof(std::int32_t), stream));
  index_check_kernel<<<grid_for(batch, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      idx, batch, n_rows, flag_buf.data());
  FM_CUDA_CHECK_LAUNCH("index_check_kernel");
  std::int32_t bad = 0;
  read(flag_buf.data(), 1, &bad);
  return bad == 0;
}

template <class U>
void CudaBackend::gather_rows(U* dst, const U* src, const std::int64_t* idx, index_t batch,
                              index_t width) {
  const index_t n = batch * width;
  if (n <= 0) return;
  gather_rows_kernel<U><<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      dst, src, idx, batch, width);
  FM_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

template <class U>
void CudaBackend::scatter_rows(U* dst, const U* src, const std::int64_t* idx, index_t batch,
                               index_t width) {
  const index_t n = batch * width;
  if (n <= 0) return;
  scatter_rows_kernel<U><<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      dst, src, idx, batch, width);
  FM_CUDA_CHECK_LAUNCH("scatter_rows_kernel");
}

template <class T>
void CudaBackend::count_correct(int mode, const T* out, const std::int32_t* labels, const T* target,
                                T threshold, index_t batch, index_t k, std::int64_t* counter) {
  if (batch <= 0) return;
  count_correct_kernel<T><<<grid_for(batch, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      mode, out, labels, target, threshold, batch, k,
      reinterpret_cast<unsigned long long*>(counter));
  FM_CUDA_CHECK_LAUNCH("count_correct_kernel");
}

template <class T>
void CudaBackend::dense_forward(const T* X, const T* W, const T* b, T* Z, T* A, index_t batch,
                                index_t n_in, index_t n_out, Act act, const ActParams<T>& p) {
  if constexpr (std::is_same_v<T, float>) {
    if (precision != 0)
      return dense_forward_half(X, W, b, Z, A, batch, n_in, n_out, act, replay(p));
  }
  cuda::dense_forward(X, W, b, Z, A, batch, n_in, n_out, act, replay(p), stream);
}

template <class T>
void CudaBackend::dense_backward(const T* X, const T* W, const T* Z, const T* dA, T* dZ, T* dW,
                                 T* db, T* dX, T* dparams, index_t batch, index_t n_in,
                                 index_t n_out, Act act, const ActParams<T>& p) {
  if constexpr (std::is_same_v<T, float>) {
    if (precision != 0)
      return dense_backward_half(X, W, Z, dA, dZ, dW, db, dX, dparams, batch, n_in, n_out, act,
                                 replay(p));
  }
  cuda::dense_backward(X, W, Z, dA, dZ, dW, db, dX, dparams, batch, n_in, n_out, act, replay(p),
                       stream);
}

// Mixed precision: Z = half(X) half(W) in fp32, then the fp32 bias + activation pass.
// Cost over float32: one conversion pass over X and W (6 bytes per element each); the GEMM
// runs on the tensor cores at the half-width rate.
void CudaBackend::dense_forward_half(const float* X, const float* W, const float* b, float* Z,
                                     float* A, index_t batch, index_t n_in, index_t n_out, Act act,
                                     const ActParams<float>& p) {
  const HalfType ht = precision == 1 ? HalfType::bf16 : HalfType::fp16;
  constexpr std::size_t kHalf = 2;  // bytes per operand element
  Scratch xh(kHalf * batch * n_in, stream), wh(kHalf * n_in * n_out, stream);
  convert_to_half(ht, X, xh.as<char>(), batch * n_in, stream);
  convert_to_half(ht, W, wh.as<char>(), n_in * n_out, stream);
  gemm_half(ht, false, false, batch, n_out, n_in, xh.as<char>(), n_in, wh.as<char>(), n_out, Z,
            n_out, stream);
  const bool in_place = A == nullptr || A == Z;
  if (act == Act::identity && in_place && b == nullptr) return;
  cuda::bias_activation_forward<float>(act, b, Z, in_place && act == Act::identity ? nullptr : A,
                                       batch, n_out, p, stream);
}

// Mixed precision backward: dZ, db and the activation-parameter gradients in fp32 (one
// elementwise pass), then dW = half(X)^T half(dZ) and dX = half(dZ) half(W)^T in fp32.
void CudaBackend::dense_backward_half(const float* X, const float* W, const float* Z,
                                      const float* dA, float* dZ, float* dW, float* db, float* dX,
                                      float* dparams, index_t batch, index_t n_in, index_t n_out,
                                      Act act, const ActParams<float>& p) {
  FM_CHECK(dZ != nullptr, "dense_backward: dZ is required in mixed precision");
  const HalfType ht = precision == 1 ? HalfType::bf16 : HalfType::fp16;
  if (act == Act::identity) {
    copy(dZ, dA, batch * n_out);
    if (db) cuda::column_sum<float>(dZ, db, batch, n_out, stream);
  } else {
    cuda::activation_backward<float>(act, Z, dA, dZ, db, dparams, batch, n_out, p, stream);
  }
  constexpr std::size_t kHalf = 2;
  Scratch gh(kHalf * batch * n_out, stream), xh(kHalf * batch * n_in, stream),
      wh(dX ? kHalf * n_in * n_out : 0, stream);
  convert_to_half(ht, dZ, gh.as<char>(), batch * n_out, stream);
  convert_to_half(ht, X, xh.as<char>(), batch * n_in, stream);
  gemm_half(ht, true, false, n_in, n_out, batch, xh.as<char>(), n_in, gh.as<char>(), n_out, dW,
            n_out, stream);
  if (dX) {
    convert_to_half(ht, W, wh.as<char>(), n_in * n_out, stream);
    gemm_half(ht, false, true, batch, n_in, n_out, gh.as<char>(), n_out, wh.as<char>(), n_out, dX,
              n_in, stream);
  }
}

template <class T>
void CudaBackend::batchnorm_forward_train(const T* x, T* y, const T* gamma, const T* beta, T* mean,
                                          T* invstd, T* rmean, T* rvar, index_t rows, index_t cols,
                                          T momentum, T eps, bool init_from_batch) {
  cuda::batchnorm_forward_train(x, y, gamma, beta, mean, invstd, rmean, rvar, rows, cols, momentum,
                                eps, init_from_batch, stream);
}

template <class T>
void CudaBackend::batchnorm_forward_infer(const T* x, T* y, const T* gamma, const T* beta,
                                          const T* rmean, const T* rvar, index_t rows, index_t cols,
                                          T eps) {
  cuda::batchnorm_forward_infer(x, y, gamma, beta, rmean, rvar, rows, cols, eps, stream);
}

template <class T>
void CudaBackend::batchnorm_backward(const T* x, const T* dy, const T* gamma, const T* mean,
                                     const T* invstd, T* dx, T* dgamma, T* dbeta, index_t rows,
                                     index_t cols) {
  cuda::batchnorm_backward(x, dy, gamma, mean, invstd, dx, dgamma, dbeta, rows, cols, stream);
}

template <class T>
void CudaBackend::dropout_forward(const T* x, T* y, index_t n, T rate, const PhiloxKey& key) {
  cuda::dropout_forward(x, y, n, rate, key, stream, dev_step);
}

template <class T>
void CudaBackend::dropout_backward(const T* dy, T* dx, index_t n, T rate, const PhiloxKey& key) {
  cuda::dropout_backward(dy, dx, n, rate, key, stream, dev_step);
}

template <class T>
void CudaBackend::gaussian_noise_forward(const T* x, T* y, index_t n, T stddev,
                                         const PhiloxKey& key) {
  cuda::gaussian_noise_forward(x, y, n, stddev, key, stream, dev_step);
}

template <class T>
void CudaBackend::activation_forward(Act a, const T* z, T* y, index_t rows, index_t cols,
                                     const ActParams<T>& p) {
  cuda::activation_forward(a, z, y, rows, cols, replay(p), stream);
}

template <class T>
void CudaBackend::activation_backward(Act a, const T* z, const T* dy, T* dz, T* dbias, T* dparams,
                                      index_t rows, index_t cols, const ActParams<T>& p) {
  cuda::activation_backward(a, z, dy, dz, dbias, dparams, rows, cols, replay(p), stream);
}

template <class T>
void CudaBackend::softmax_forward(const T* z, T* y, index_t rows, index_t cols) {
  cuda::softmax_forward(z, y, rows, cols, stream);
}

template <class T>
void CudaBackend::softmax_backward(const T* y, const T* dy, T* dz, index_t rows, index_t cols) {
  cuda::softmax_backward(y, dy, dz, rows, cols, stream);
}

template <class T>
void CudaBackend::maxout_forward(const T* z, T* y, index_t rows, index_t units, index_t pieces) {
  cuda::maxout_forward(z, y, rows, units, pieces, stream);
}

template <class T>
void CudaBackend::maxout_backward(const T* z, const T* dy, T* dz, index_t rows, index_t units,
                                  index_t pieces) {
  cuda::maxout_backward(z, dy, dz, rows, units, pieces, stream);
}

template <class T>
void CudaBackend::rbf_widths(const T* log_sigma, T* sigma, index_t K) {
  cuda::rbf_widths(log_sigma, sigma, K, stream);
}

template <class T>
void CudaBackend::rbf_forward(const T* X, const T* C, const T* sigma, T* D, T* Phi, T* work,
                              index_t batch, index_t n_in, index_t K) {
  cuda::rbf_forward(X, C, sigma, D, Phi, work, batch, n_in, K, stream);
}

template <class T>
void CudaBackend::rbf_backward(const T* X, const T* C, const T* sigma, const T* D, const T* Phi,
                               T* G, T* dX, T* dC, T* dsigma, T* work, index_t batch, index_t n_in,
                               index_t K) {
  cuda::rbf_backward(X, C, sigma, D, Phi, G, dX, dC, dsigma, work, batch, n_in, K, stream);
}

template <class T>
void CudaBackend::rbf_log_width_grad(T* dlog_sigma, const T* sigma, index_t K) {
  cuda::rbf_log_width_grad(dlog_sigma, sigma, K, stream);
}

template <class T>
void CudaBackend::loss_forward_backward(Loss loss, const T* logits, const T* target,
                                        const std::int32_t* labels, const T* sw, T* dlogits,
                                        index_t rows, index_t cols, const LossParams<T>& p,
                                        double* out) {
  cuda::loss_forward_backward(loss, logits, target, labels, sw, dlogits, rows, cols, p, out,
                              stream);
}

template <class T>
GradScale CudaBackend::grad_scale(const T* grads, index_t n, double clip_norm, const double* loss) {
  GradScale s;
  if (clip_norm <= 0.0 && !loss) return s;
  if (scale_buf.size() < 2) scale_buf.resize(2);  // [0] the scale, [1] the squared norm
  double* sq = scale_buf.data() + 1;
  cuda::grad_sq_norm(grads, n, loss ? sq : nullptr, clip_norm > 0.0 ? scale_buf.data() : nullptr,
                     clip_norm, stream);
  if (loss) {
    // The loss slot is the Network's own device scalar (its loss_slot()): writable memory.
    finite_step_kernel<<<1, 1, 0, stream>>>(const_cast<double*>(loss), sq, clip_norm > 0.0,
                                            scale_buf.data());
    FM_CUDA_CHECK_LAUNCH("finite_step_kernel");
  }
  s.device = scale_buf.data();
  return s;
}

template <class T>
void CudaBackend::optimizer_step(const OptConfig& c, T* params, const T* grads, T* state,
                                 const Segment* segs, int nseg, index_t n, std::int64_t step,
                                 double lr, const GradScale& scale) {
  cuda::optimizer_step(c, params, grads, state, segs, nseg, n, step, lr, scale.host, scale.device,
                       stream, static_cast<const OptCoef<T>*>(dev_coef));
}

// ------------------------------------------------------------------ CudaNetwork

// One stream per device shared by every CudaNetwork (kept for the process): cuBLASLt keeps a
// workspace per stream, so a stream per network would leak one workspace each.
cudaStream_t network_stream(int device) {
  static std::mutex mu;
  static std::map<int, cudaStream_t> streams;
  std::lock_guard<std::mutex> lock(mu);
  auto it = streams.find(device);
  if (it != streams.end()) return it->second;
  cudaStream_t s = nullptr;
  FM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  streams.emplace(device, s);
  return s;
}

template <class T>
CudaNetwork<T>::~CudaNetwork() {
  drop_graphs();
  for (cudaEvent_t e : {block_done_[0], block_done_[1], enter_, leave_})
    if (e) cudaEventDestroy(e);
  if (host_block_) cudaFreeHost(host_block_);
}

template <class T>
void CudaNetwork<T>::set_layer_trainable(int layer, bool trainable) {
  // Zeroes the layer's gradients: on the legacy stream, after all queued work, and waited for.
  FM_CUDA_CHECK(cudaDeviceSynchronize());
  cudaStream_t s = this->be_.stream;
  this->be_.stream = nullptr;
  try {
    Base::set_layer_trainable(layer, trainable);
  } catch (...) {
    this->be_.stream = s;
    throw;
  }
  this->be_.stream = s;
  FM_CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

template <class T>
void CudaNetwork<T>::set_optimizer(const OptConfig& cfg) {
  FM_CUDA_CHECK(cudaDeviceSynchronize());  // queued steps finish before the state is reset
  Base::set_optimizer(cfg);
}

template <class T>
void CudaNetwork<T>::drop_graphs() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

template <class T>
void CudaNetwork<T>::set_precision(int p) {
  FM_CHECK(p >= 0 && p <= 2, "precision: expected 0 (float32), 1 (bfloat16) or 2 (float16), got ",
           p);
  constexpr bool fp32 = std::is_same_v<T, float>;
  FM_CHECK(p == 0 || fp32,
           "precision: mixed precision needs a float32 network (fp32 master weights)");
  this->be_.precision = p;
  this->touch_plan();
}

template <class T>
void CudaNetwork<T>::set_use_graphs(bool on) {
  use_graphs_ = on;
  if (!on) drop_graphs();
}

template <class T>
bool CudaNetwork<T>::graph_eligible() const {
  if (!use_graphs_ || !this->has_opt_ || this->record_grads_) return false;
  if (static_cast<Opt>(this->opt_.opt) == Opt::adafactor) return false;
  // BatchNorm's first batch may initialize the running statistics: a one-off, run eagerly.
  if (this->bn_updates_ == 0)
    for (const auto& L : this->layers_)
      if (L.spec.kind == static_cast<int>(LayerKind::batchnorm) && L.spec.init_from_batch)
        return false;
  return true;
}

template <class T>
void CudaNetwork<T>::stage(const T* X, index_t batch, const std::vector<const T*>& target,
                           const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                           std::vector<const T*>& st_target,
                           std::vector<const std::int32_t*>& st_labels) {
  const size_t nh = this->heads_.size();
  index_t dense = 0, lab = 0;
  for (size_t h = 0; h < nh; ++h) {
    if (labels[h])
      lab += batch;
    else
      dense += batch * this->heads_[h].n_out;
  }
  const void* before[4] = {x_stage_.data(), t_stage_.data(), l_stage_.data(), w_stage_.data()};
  if (x_stage_.size() < static_cast<size_t>(batch * this->n_in_))
    x_stage_.resize(batch * this->n_in_);
  if (t_stage_.size() < static_cast<size_t>(dense)) t_stage_.resize(dense);
  if (l_stage_.size() < static_cast<size_t>(lab)) l_stage_.resize(lab);
  if (sample_weight && w_stage_.size() < static_cast<size_t>(batch)) w_stage_.resize(batch);
  const void* after[4] = {x_stage_.data(), t_stage_.data(), l_stage_.data(), w_stage_.data()};
  if (std::memcmp(before, after, sizeof(before)) != 0) this->touch_plan();
  cudaStream_t s = this->be_.stream;
  FM_CUDA_CHECK(cudaMemcpyAsync(x_stage_.data(), X, sizeof(T) * batch * this->n_in_,
                                cudaMemcpyDeviceToDevice, s));
  st_target.assign(nh, nullptr);
  st_labels.assign(nh, nullptr);
  index_t to = 0, lo = 0;
  for (size_t h = 0; h < nh; ++h) {
    if (labels[h]) {
      FM_CUDA_CHECK(cudaMemcpyAsync(l_stage_.data() + lo, labels[h], sizeof(std::int32_t) * batch,
                                    cudaMemcpyDeviceToDevice, s));
      st_labels[h] = l_stage_.data() + lo;
      lo += batch;
    } else {
      const index_t n = batch * this->heads_[h].n_out;
      FM_CUDA_CHECK(cudaMemcpyAsync(t_stage_.data() + to, target[h], sizeof(T) * n,
                                    cudaMemcpyDeviceToDevice, s));
      st_target[h] = t_stage_.data() + to;
      to += n;
    }
  }
  if (sample_weight)
    FM_CUDA_CHECK(cudaMemcpyAsync(w_stage_.data(), sample_weight, sizeof(T) * batch,
                                  cudaMemcpyDeviceToDevice, s));
}

// Runs the step on the Network's own stream, ordered after the caller's stream and before
// it again (events): graphs cannot be captured on the legacy default stream, and the
// eager warm-up step allocates the cuBLASLt workspace of the stream the capture then uses.
template <class T>
class OwnStream {
 public:
  OwnStream(CudaBackend& be, cudaStream_t own, cudaEvent_t in, cudaEvent_t out)
      : be_(be), caller_(be.stream), own_(own), out_(out) {
    FM_CUDA_CHECK(cudaEventRecord(in, caller_));
    FM_CUDA_CHECK(cudaStreamWaitEvent(own_, in, 0));
    be_.stream = own_;
  }
  ~OwnStream() {
    be_.stream = caller_;
    if (cudaEventRecord(out_, own_) == cudaSuccess) cudaStreamWaitEvent(caller_, out_, 0);
  }
  OwnStream(const OwnStream&) = delete;
  OwnStream& operator=(const OwnStream&) = delete;

 private:
  CudaBackend& be_;
  cudaStream_t caller_, own_;
  cudaEvent_t out_;
};

template <class T>
double CudaNetwork<T>::train_step(const T* X, index_t batch, const std::vector<const T*>& target,
                                  const std::vector<const std::int32_t*>& labels,
                                  const T* sample_weight, double lr, bool sync) {
  FM_CHECK(this->has_opt_, "optimizer: set an optimizer before training");
  FM_CHECK(target.size() == this->heads_.size() && labels.size() == this->heads_.size(),
           "y: expected targets for ", this->heads_.size(), " head(s)");
  FM_CHECK(std::isfinite(lr) && lr >= 0, "lr: expected >= 0, got ", lr);
  if (!own_stream_) {
    own_stream_ = network_stream(device_);
    FM_CUDA_CHECK(cudaEventCreateWithFlags(&enter_, cudaEventDisableTiming));
    FM_CUDA_CHECK(cudaEventCreateWithFlags(&leave_, cudaEventDisableTiming));
  }
  OwnStream<T> guard(this->be_, own_stream_, enter_, leave_);
  cudaStream_t s = own_stream_;
  const bool adafactor = static_cast<Opt>(this->opt_.opt) == Opt::adafactor;
  std::vector<int> kinds;
  for (size_t h = 0; h < labels.size(); ++h) kinds.push_back(labels[h] ? 1 : 0);
  const Key key{batch, kinds, sample_weight != nullptr, allow_tf32()};
  // Eager: not eligible, or the first step of this shape (the warm-up: cuBLASLt workspace and
  // algorithm caches are filled outside any capture).
  if (!graph_eligible() || warmed_.insert(key).second) {
    // Adafactor reads the loss on the host (its kernels have no skip signal).
    if (adafactor) {
      const double loss = Base::train_step(X, batch, target, labels, sample_weight, lr);
      return sync ? loss : std::numeric_limits<double>::quiet_NaN();
    }
    // The device's skip rule (finite_step_kernel), as in the captured step below.
    Base::train_step_async(X, batch, target, labels, sample_weight, lr);
    if (!sync) return std::numeric_limits<double>::quiet_NaN();
    const double loss = this->read_losses(nullptr);
    if (!std::isfinite(loss)) this->count_skipped();  // the device skipped the update
    return loss;
  }
  this->ensure_workspace(batch);
  std::vector<const T*> st_target;
  std::vector<const std::int32_t*> st_labels;
  stage(X, batch, target, labels, sample_weight, st_target, st_labels);
  if (block_.size() < 1) {
    block_.resize(1);
    this->touch_plan();
  }
  if (this->be_.scale_buf.size() < 2) {
    this->be_.scale_buf.resize(2);
    this->touch_plan();
  }
  if (!host_block_) {
    FM_CUDA_CHECK(cudaMallocHost(&host_block_, 2 * sizeof(StepBlock<T>)));
    for (cudaEvent_t& e : block_done_)
      FM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  if (graph_version_ != this->plan_version_) {
    drop_graphs();
    graph_version_ = this->plan_version_;
  }
  // This step's values, through a pinned slot whose previous copy has completed.
  const int slot = block_slot_;
  block_slot_ ^= 1;
  FM_CUDA_CHECK(cudaEventSynchronize(block_done_[slot]));
  StepBlock<T>& hb = host_block_[slot];
  hb.coef = make_opt_coef<T>(this->opt_, this->opt_step_ + 1, lr, 1.0);
  hb.rng_step = this->rng_step_;
  FM_CUDA_CHECK(
      cudaMemcpyAsync(block_.data(), &hb, sizeof(StepBlock<T>), cudaMemcpyHostToDevice, s));
  FM_CUDA_CHECK(cudaEventRecord(block_done_[slot], s));

  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    const auto saved = std::make_tuple(this->opt_step_, this->rng_step_, this->bn_updates_);
    FM_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    this->be_.dev_step = &block_.data()->rng_step;
    this->be_.dev_coef = &block_.data()->coef;
    cudaGraph_t graph = nullptr;
    try {
      this->device_step(x_stage_.data(), batch, st_target, st_labels,
                        sample_weight ? w_stage_.data() : nullptr, lr);
    } catch (...) {
      this->be_.dev_step = nullptr;
      this->be_.dev_coef = nullptr;
      cudaStreamEndCapture(s, &graph);
      if (graph) cudaGraphDestroy(graph);
      std::tie(this->opt_step_, this->rng_step_, this->bn_updates_) = saved;
      throw;
    }
    this->be_.dev_step = nullptr;
    this->be_.dev_coef = nullptr;
    std::tie(this->opt_step_, this->rng_step_, this->bn_updates_) = saved;
    FM_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    FM_CUDA_CHECK(e);
    it = graphs_.emplace(key, exec).first;
  }
  FM_CUDA_CHECK(cudaGraphLaunch(it->second, s));
  ++this->opt_step_;
  ++this->rng_step_;
  if (this->has_bn_) ++this->bn_updates_;
  this->grad_batch_ = 0;
  if (!sync) return std::numeric_limits<double>::quiet_NaN();
  const double loss = this->read_losses(nullptr);
  if (!std::isfinite(loss)) this->count_skipped();  // the device skipped the update
  return loss;
}

// ------------------------------------------------------------------ instantiations

#define FM_INSTANTIATE_BACKEND(T)                            \
  template void CudaBackend::copy<T>(T*, const T*, index_t); \
  template void CudaBackend::fill<T>(T*, index_t, T);
FM_INSTANTIATE_BACKEND(std::int32_t)
FM_INSTANTIATE_BACKEND(std::int64_t)
#undef FM_INSTANTIATE_BACKEND
template void CudaBackend::read<double>(const double*, size_t, double*);
template void CudaBackend::read<std::int64_t>(const std::int64_t*, size_t, std::int64_t*);
template void CudaBackend::read<std::int32_t>(const std::int32_t*, size_t, std::int32_t*);
template void CudaBackend::gather_rows<std::int32_t>(std::int32_t*, const std::int32_t*,
                                                     const std::int64_t*, index_t, index_t);

// The methods the op bindings (bindings/ops.h) call directly, outside any Network.
#define FM_INSTANTIATE_OPS(T)                                                                      \
  template void CudaBackend::copy<T>(T*, const T*, index_t);                                       \
  template void CudaBackend::dense_forward<T>(const T*, const T*, const T*, T*, T*, index_t,       \
                                              index_t, index_t, Act, const ActParams<T>&);         \
  template void CudaBackend::dense_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, \
                                               T*, T*, index_t, index_t, index_t, Act,             \
                                               const ActParams<T>&);                               \
  template void CudaBackend::batchnorm_forward_train<T>(const T*, T*, const T*, const T*, T*, T*,  \
                                                        T*, T*, index_t, index_t, T, T, bool);     \
  template void CudaBackend::batchnorm_forward_infer<T>(const T*, T*, const T*, const T*,          \
                                                        const T*, const T*, index_t, index_t, T);  \
  template void CudaBackend::batchnorm_backward<T>(const T*, const T*, const T*, const T*,         \
                                                   const T*, T*, T*, T*, index_t, index_t);        \
  template void CudaBackend::dropout_forward<T>(const T*, T*, index_t, T, const PhiloxKey&);       \
  template void CudaBackend::dropout_backward<T>(const T*, T*, index_t, T, const PhiloxKey&);      \
  template void CudaBackend::gaussian_noise_forward<T>(const T*, T*, index_t, T,                   \
                                                       const PhiloxKey&);                          \
  template void CudaBackend::activation_forward<T>(Act, const T*, T*, index_t, index_t,            \
                                                   const ActParams<T>&);                           \
  template void CudaBackend::activation_backward<T>(Act, const T*, const T*, T*, T*, T*, index_t,  \
                                                    index_t, const ActParams<T>&);                 \
  template void CudaBackend::softmax_forward<T>(const T*, T*, index_t, index_t);                   \
  template void CudaBackend::softmax_backward<T>(const T*, const T*, T*, index_t, index_t);        \
  template void CudaBackend::maxout_forward<T>(const T*, T*, index_t, index_t, index_t);           \
  template void CudaBackend::maxout_backward<T>(const T*, const T*, T*, index_t, index_t,          \
                                                index_t);                                          \
  template void CudaBackend::rbf_forward<T>(const T*, const T*, const T*, T*, T*, T*, index_t,     \
                                            index_t, index_t);                                     \
  template void CudaBackend::rbf_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, \
                                             T*, T*, T*, T*, index_t, index_t, index_t);           \
  template void CudaBackend::loss_forward_backward<T>(Loss, const T*, const T*,                    \
                                                      const std::int32_t*, const T*, T*, index_t,  \
                                                      index_t, const LossParams<T>&, double*);     \
  template void CudaBackend::optimizer_step<T>(const OptConfig&, T*, const T*, T*, const Segment*, \
                                               int, index_t, std::int64_t, double,                 \
                                               const GradScale&);                                  \
  /* inline members of Network (train_step_update_only) call it from the bindings */               \
  template bool CudaBackend::all_finite<T>(const T*, index_t);
FM_INSTANTIATE_OPS(float)
FM_INSTANTIATE_OPS(double)
#undef FM_INSTANTIATE_OPS

template class DeviceVec<float>;
template class DeviceVec<double>;
template class DeviceVec<std::int32_t>;
template class DeviceVec<std::int64_t>;
template class DeviceVec<StepBlock<float>>;
template class DeviceVec<StepBlock<double>>;

}  // namespace fm::cuda

namespace fm {
template class Network<float, cuda::CudaBackend>;
template class Network<double, cuda::CudaBackend>;
namespace cuda {
template class CudaNetwork<float>;
template class CudaNetwork<double>;
}  // namespace cuda
}  // namespace fm
