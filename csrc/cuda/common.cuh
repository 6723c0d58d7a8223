// Shared by the CUDA kernel files: error checks that throw with the CUDA error string,
// launch geometry (grid-stride loops capped at a multiple of the multiprocessor count),
// warp/block reductions, and stream-ordered scratch memory.
// Everything here is host glue or device helpers; no formula lives here (csrc/common/).
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "common/macros.h"

namespace fm::cuda {

// A CUDA runtime or library failure (not bad user input): Python RuntimeError.
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void check_cuda(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) {
    throw CudaError(detail::concat(what, " failed: ", cudaGetErrorName(e), " (",
                                   cudaGetErrorString(e), ") at ", file, ":", line));
  }
}

}  // namespace fm::cuda

// FM_CUDA_CHECK(cudaMemcpyAsync(...)) throws fm::cuda::CudaError naming the call and the error.
#define FM_CUDA_CHECK(expr) ::fm::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
// After a <<<...>>> launch: configuration errors (bad grid, too many resources) surface here.
#define FM_CUDA_CHECK_LAUNCH(kernel_name) \
  ::fm::cuda::check_cuda(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)

namespace fm::cuda {

// Threads per block of the elementwise kernels: 8 warps, enough to hide latency with the
// blocks a multiprocessor holds at once.
constexpr int kElementwiseThreads = 256;
// Grid-stride kernels are launched with at most this many blocks per multiprocessor.
constexpr int kBlocksPerSM = 16;
constexpr int kWarpSize = 32;

constexpr int kMaxDevices = 64;

// Multiprocessor count of the current device (cached per device).
inline int sm_count() {
  static std::atomic<int> cache[kMaxDevices] = {};
  int dev = 0;
  FM_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < kMaxDevices) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return c;
  }
  int c = 0;
  FM_CUDA_CHECK(cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, dev));
  if (dev < kMaxDevices) cache[dev].store(c, std::memory_order_relaxed);
  return c;
}

// Blocks for n independent items at `threads` per block: enough to cover n, capped at
// kBlocksPerSM per multiprocessor (the kernels loop with a grid stride beyond that).
inline unsigned grid_for(index_t n, int threads) {
  const index_t want = (n + threads - 1) / threads;
  const index_t cap = static_cast<index_t>(sm_count()) * kBlocksPerSM;
  const index_t g = want < cap ? want : cap;
  return static_cast<unsigned>(g < 1 ? 1 : g);
}

// Stream-ordered scratch buffer (cudaMallocAsync / cudaFreeAsync on `stream`): usable inside
// CUDA graph capture, freed when the work queued before the destructor has run.
class Scratch {
 public:
  Scratch(std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes) FM_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
  }
  ~Scratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

#if defined(__CUDACC__)

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// Sum (kMax = false) or max (kMax = true) over the block, returned to every thread. The order
// of the additions is fixed by the block shape, so the result is deterministic. `shared` holds
// one value per warp (at least blockDim.x / 32 entries).
template <bool kMax, class T>
__device__ __forceinline__ T block_reduce(T v, T* shared) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int nwarps = (blockDim.x + kWarpSize - 1) / kWarpSize;
  v = kMax ? warp_max(v) : warp_sum(v);
  __syncthreads();  // `shared` may still be read by a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T r = shared[0];
  for (int w = 1; w < nwarps; ++w) r = kMax ? (shared[w] > r ? shared[w] : r) : r + shared[w];
  return r;
}

#endif  // __CUDACC__

}  // namespace fm::cuda
