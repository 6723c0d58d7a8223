// CUDA dropout (inverted, decks 000/001/002) and additive Gaussian noise (deck 002).
// Layout: n contiguous elements; element e draws from Philox block e / 4 (dropout) or e / 2
// (noise) under the key (seed, step, layer), see csrc/common/philox.h. Each dropout thread
// owns whole Philox blocks (4 elements: one 16-byte load and store when the arrays are
// 16-byte aligned, scalar accesses otherwise and in the last partial block), so each block is
// generated once and the mask does not depend on the launch geometry. The keep decision and
// the scale are csrc/common/dropout.h's, evaluated exactly as the CPU does: the outputs are
// bit-identical to csrc/cpu/dropout.cpp's.
// Cost: dropout 1 Philox4x32-10 block (20 32x32->64 multiplies) per 4 elements, 8 / 16 bytes
// read + written per element (float32 / float64); noise 1 block per element (its pair of
// words) plus a log, a sqrt and a cospi in double.
#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/dropout.h"

namespace fm::cuda {
namespace {

// Elements sharing one Philox block in the dropout draw (the 4 words of Philox4x32).
constexpr index_t kDropoutLanes = 4;
// Bytes of one vector access; the 4 elements of a block take 1 (float) or 2 (double) of them.
constexpr std::uintptr_t kVectorBytes = 16;

__device__ __forceinline__ void load4(const float* p, float (&v)[4]) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x;
  v[1] = q.y;
  v[2] = q.z;
  v[3] = q.w;
}
__device__ __forceinline__ void load4(const double* p, double (&v)[4]) {
  const double2 a = *reinterpret_cast<const double2*>(p);
  const double2 b = *reinterpret_cast<const double2*>(p + 2);
  v[0] = a.x;
  v[1] = a.y;
  v[2] = b.x;
  v[3] = b.y;
}
__device__ __forceinline__ void store4(float* p, const float (&v)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void store4(double* p, const double (&v)[4]) {
  *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
  *reinterpret_cast<double2*>(p + 2) = make_double2(v[2], v[3]);
}

// out[e] = in[e] * (keep(e) ? scale : 0), one Philox block per iteration. out may alias in:
// every element is read, then written, by the same thread.
template <class T, bool kVector>
__global__ void dropout_mask_kernel(const T* in, T* out, index_t n, T rate, T scale,
                                    PhiloxKey key, const std::uint64_t* dev_step) {
  if (dev_step) key.step = *dev_step;  // a replayed CUDA graph reads the step from the device
  const index_t nblocks = (n + kDropoutLanes - 1) / kDropoutLanes;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t b = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < nblocks;
       b += stride) {
    const Philox4 w = philox_block(key, static_cast<std::uint64_t>(b));
    T m[kDropoutLanes];
#pragma unroll
    for (int l = 0; l < kDropoutLanes; ++l) m[l] = dropout_keep_word(w.v[l], rate) ? scale : T(0);
    const index_t e0 = b * kDropoutLanes;
    if (kVector && e0 + kDropoutLanes <= n) {
      T v[kDropoutLanes];
      load4(in + e0, v);
#pragma unroll
      for (int l = 0; l < kDropoutLanes; ++l) v[l] *= m[l];
      store4(out + e0, v);
    } else {
#pragma unroll
      for (int l = 0; l < kDropoutLanes; ++l)
        if (e0 + l < n) out[e0 + l] = in[e0 + l] * m[l];
    }
  }
}

// y[e] = x[e] + stddev * N_e(0, 1), the normal of csrc/common/philox.h's philox_normal.
template <class T>
__global__ void gaussian_noise_kernel(const T* x, T* y, index_t n, T stddev, PhiloxKey key,
                                      const std::uint64_t* dev_step) {
  if (dev_step) key.step = *dev_step;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    y[e] = x[e] + gaussian_noise(key, static_cast<std::uint64_t>(e), stddev);
}

bool vector_aligned(const void* a, const void* b) {
  return (reinterpret_cast<std::uintptr_t>(a) % kVectorBytes) == 0 &&
         (reinterpret_cast<std::uintptr_t>(b) % kVectorBytes) == 0;
}

template <class T>
void apply_mask(const T* in, T* out, index_t n, T rate, const PhiloxKey& key, cudaStream_t stream,
                const std::uint64_t* dev_step) {
  FM_CHECK(rate >= T(0) && rate < T(1), "rate: expected a drop rate in [0, 1), got ", rate);
  if (n <= 0) return;
  if (rate == T(0)) {  // every u in (0, 1) is >= 0: all kept, scale 1
    if (out != in)
      FM_CUDA_CHECK(cudaMemcpyAsync(out, in, sizeof(T) * n, cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const T scale = dropout_scale(rate);
  const index_t nblocks = (n + kDropoutLanes - 1) / kDropoutLanes;
  const unsigned grid = grid_for(nblocks, kElementwiseThreads);
  if (vector_aligned(in, out)) {
    dropout_mask_kernel<T, true>
        <<<grid, kElementwiseThreads, 0, stream>>>(in, out, n, rate, scale, key, dev_step);
  } else {
    dropout_mask_kernel<T, false>
        <<<grid, kElementwiseThreads, 0, stream>>>(in, out, n, rate, scale, key, dev_step);
  }
  FM_CUDA_CHECK_LAUNCH("dropout_mask_kernel");
}

}  // namespace

template <class T>
void dropout_forward(const T* x, T* y, index_t n, T rate, const PhiloxKey& key,
                     cudaStream_t stream, const std::uint64_t* dev_step) {
  apply_mask(x, y, n, rate, key, stream, dev_step);
}

template <class T>
void dropout_backward(const T* dy, T* dx, index_t n, T rate, const PhiloxKey& key,
                      cudaStream_t stream, const std::uint64_t* dev_step) {
  apply_mask(dy, dx, n, rate, key, stream, dev_step);
}

template <class T>
void gaussian_noise_forward(const T* x, T* y, index_t n, T stddev, const PhiloxKey& key,
                            cudaStream_t stream, const std::uint64_t* dev_step) {
  FM_CHECK(stddev >= T(0) && std::isfinite(stddev), "stddev: expected a finite value >= 0, got ",
           stddev);
  if (n <= 0) return;
  gaussian_noise_kernel<T>
      <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(x, y, n, stddev, key, dev_step);
  FM_CUDA_CHECK_LAUNCH("gaussian_noise_kernel");
}

#define FM_INSTANTIATE(T)                                                                   \
  template void dropout_forward<T>(const T*, T*, index_t, T, const PhiloxKey&, cudaStream_t, \
                                   const std::uint64_t*);                                    \
  template void dropout_backward<T>(const T*, T*, index_t, T, const PhiloxKey&, cudaStream_t, \
                                    const std::uint64_t*);                                    \
  template void gaussian_noise_forward<T>(const T*, T*, index_t, T, const PhiloxKey&,          \
                                          cudaStream_t, const std::uint64_t*);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cuda
