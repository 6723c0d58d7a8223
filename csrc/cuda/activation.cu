// CUDA activation kernels: elementwise forward/derivative/backward for every activation of
// csrc/common/activation.h (ActFn<A>, dispatched once per launch by act_dispatch), the dense
// epilogue (bias + activation), deterministic column reductions (bias and learnable-parameter
// gradients), the ReLU bit-mask fallbacks, and the row ops softmax and maxout.
//
// Layout: (rows, cols) row-major, cols = units; element e = i * cols + j.
// Cost per element: one formula evaluation; 8/16 bytes (float32/float64) forward, 12/24
// backward. Column reductions add one write per (row chunk, column) and a second small pass.
//
// Reductions (bias gradient db[j] = sum_i dz[i, j], parameter gradients) are deterministic:
// a block owns 32 columns x one chunk of rows; its 8 row lanes each keep one partial per
// column, added in a fixed order; the per-chunk partials are then added in chunk order. The
// chunking depends only on the shape and the device's multiprocessor count.
#include <cmath>
#include <cstdint>

#include "cuda/activation.h"
#include "cuda/common.cuh"

namespace fm::cuda {
namespace {

constexpr int kColTile = 32;               // columns per reduction block: one warp wide, coalesced
constexpr int kRowLanes = 8;               // row lanes per reduction block (block = 32 x 8 threads)
constexpr index_t kMinRowsPerChunk = 64;   // below this a chunk's partial costs more than it saves
constexpr int kReduceBlocksPerSM = 4;      // target reduction blocks per multiprocessor
constexpr int kRowsPerWarpBlock = 4;       // softmax rows per 128-thread block (one warp each)
constexpr int kSoftmaxWarpMaxCols = 1024;  // beyond this a whole block works on one row
constexpr int kRowBlockThreads = 256;      // threads of the block-per-row softmax

// ------------------------------------------------------------------ elementwise kernels

template <Act A, class T>
__global__ void activation_forward_kernel(const T* z, T* y, index_t n, index_t cols,
                                          ActParams<T> p) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    y[e] = ActFn<A>::f(z[e], p, e % cols, e);
}

template <Act A, class T>
__global__ void activation_derivative_kernel(const T* __restrict__ z, T* __restrict__ g, index_t n,
                                             index_t cols, ActParams<T> p) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    g[e] = ActFn<A>::df(z[e], p, e % cols, e);
}

// dz may alias dy: each element is read, then written, by the same thread.
template <Act A, class T>
__global__ void activation_backward_kernel(const T* __restrict__ z, const T* dy, T* dz, index_t n,
                                           index_t cols, ActParams<T> p) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    dz[e] = dy[e] * ActFn<A>::df(z[e], p, e % cols, e);
}

// z += bias (when given), y = f(z) (when y is given; y may alias z).
template <Act A, class T>
__global__ void bias_activation_kernel(const T* __restrict__ bias, T* z, T* y, index_t n,
                                       index_t cols, ActParams<T> p) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    const index_t j = e % cols;
    T v = z[e];
    if (bias) {
      v += bias[j];
      z[e] = v;
    }
    if (y) y[e] = ActFn<A>::f(v, p, j, e);
  }
}

// ------------------------------------------------------------------ column reductions

// Derivative providers for backward_reduce_kernel: df(i, j, e) is f' at element e, and
// dparam adds the learnable-parameter gradient of element e into a thread-owned slot laid out
// like ActFn::dparam's dP ((n_params, cols) row-major).
template <Act A, class T>
struct ActDeriv {
  static constexpr bool kParams = ActLearnable<A>::value;
  const T* z;
  ActParams<T> p;
  __device__ __forceinline__ T df(index_t, index_t j, index_t e) const {
    return ActFn<A>::df(z[e], p, j, e);
  }
  __device__ __forceinline__ void dparam(index_t j, index_t e, T g, T* slot) const {
    if constexpr (kParams) ActFn<A>::dparam(z[e], g, p, j, slot);
  }
};

template <class T>
struct IdentityDeriv {
  static constexpr bool kParams = false;
  __device__ __forceinline__ T df(index_t, index_t, index_t) const { return T(1); }
  __device__ __forceinline__ void dparam(index_t, index_t, T, T*) const {}
};

template <class T>
struct MaskDeriv {
  static constexpr bool kParams = false;
  const std::uint32_t* mask;
  index_t ld_bits;
  __device__ __forceinline__ T df(index_t i, index_t j, index_t) const {
    const index_t bit = i * ld_bits + j;
    return (mask[bit >> 5] >> (bit & 31)) & 1u ? T(1) : T(0);
  }
  __device__ __forceinline__ void dparam(index_t, index_t, T, T*) const {}
};

// Block (kColTile, kRowLanes) owns columns [blockIdx.x * 32, +32) of rows
// [blockIdx.y * rows_per_chunk, +rows_per_chunk). Writes dz = dy * df (when dz is given),
// the chunk's column sums of dz to bias_part[blockIdx.y, :] (when given), and accumulates the
// parameter gradient into the slot of its (chunk, row lane) (when slots is given).
template <class T, class D>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    backward_reduce_kernel(D d, const T* dy, T* dz, T* bias_part, T* slots, index_t slot_width,
                           index_t rows, index_t cols, index_t rows_per_chunk) {
  __shared__ T partial[kRowLanes][kColTile + 1];
  const index_t j = static_cast<index_t>(blockIdx.x) * kColTile + threadIdx.x;
  const index_t r0 = static_cast<index_t>(blockIdx.y) * rows_per_chunk;
  const index_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  T* slot = nullptr;
  if constexpr (D::kParams) {
    if (slots)
      slot = slots + (static_cast<index_t>(blockIdx.y) * kRowLanes + threadIdx.y) * slot_width;
  }
  T acc = T(0);
  if (j < cols) {
    for (index_t i = r0 + threadIdx.y; i < r1; i += kRowLanes) {
      const index_t e = i * cols + j;
      const T g = dy[e];
      const T v = g * d.df(i, j, e);
      if constexpr (D::kParams) {
        if (slot) d.dparam(j, e, g, slot);
      }
      if (dz) dz[e] = v;
      acc += v;
    }
  }
  if (bias_part) {  // uniform over the block: the barrier is reached by all threads or none
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
      T s = partial[0][threadIdx.x];
#pragma unroll
      for (int r = 1; r < kRowLanes; ++r) s += partial[r][threadIdx.x];
      bias_part[static_cast<index_t>(blockIdx.y) * cols + j] = s;
    }
  }
}

// out[c] = sum_q part[q * width + c], q in order.
template <class T>
__global__ void sum_partials_kernel(const T* __restrict__ part, index_t parts, index_t width,
                                    T* __restrict__ out) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t c = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < width;
       c += stride) {
    T s = T(0);
    for (index_t q = 0; q < parts; ++q) s += part[q * width + c];
    out[c] = s;
  }
}

struct ReducePlan {
  index_t col_blocks, chunks, rows_per_chunk;
};

// Enough blocks to fill the device (kReduceBlocksPerSM per multiprocessor), chunks of at least
// kMinRowsPerChunk rows.
ReducePlan reduce_plan(index_t rows, index_t cols) {
  ReducePlan pl;
  pl.col_blocks = (cols + kColTile - 1) / kColTile;
  const index_t target = static_cast<index_t>(sm_count()) * kReduceBlocksPerSM;
  const index_t max_chunks = (rows + kMinRowsPerChunk - 1) / kMinRowsPerChunk;
  index_t chunks = target / pl.col_blocks;
  if (chunks > max_chunks) chunks = max_chunks;
  if (chunks > 65535) chunks = 65535;  // gridDim.y limit
  if (chunks < 1) chunks = 1;
  pl.rows_per_chunk = (rows + chunks - 1) / chunks;
  if (pl.rows_per_chunk < 1) pl.rows_per_chunk = 1;
  pl.chunks = (rows + pl.rows_per_chunk - 1) / pl.rows_per_chunk;
  if (pl.chunks < 1) pl.chunks = 1;
  return pl;
}

template <class T>
void launch_sum_partials(const T* part, index_t parts, index_t width, T* out, cudaStream_t stream) {
  sum_partials_kernel<T><<<grid_for(width, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      part, parts, width, out);
  FM_CUDA_CHECK_LAUNCH("sum_partials_kernel");
}

// dz = dy * df (dz optional), dbias = column sums of dz (optional), dparams = column sums of the
// parameter gradients (optional; np rows), all in one pass over dy plus the partial sums.
template <class T, class D>
void backward_reduce(const D& d, int np, const T* dy, T* dz, T* dbias, T* dparams, index_t rows,
                     index_t cols, cudaStream_t stream) {
  const bool want_params = D::kParams && dparams != nullptr && np > 0;
  if (rows == 0) {  // empty sums
    if (dbias) FM_CUDA_CHECK(cudaMemsetAsync(dbias, 0, sizeof(T) * cols, stream));
    if (want_params) FM_CUDA_CHECK(cudaMemsetAsync(dparams, 0, sizeof(T) * np * cols, stream));
    return;
  }
  const ReducePlan pl = reduce_plan(rows, cols);
  const index_t slot_width = want_params ? static_cast<index_t>(np) * cols : 0;
  const index_t nslots = pl.chunks * kRowLanes;
  const index_t bias_elems = (dbias && pl.chunks > 1) ? pl.chunks * cols : 0;
  const index_t slot_elems = want_params ? nslots * slot_width : 0;
  Scratch scratch(sizeof(T) * (bias_elems + slot_elems), stream);
  T* bias_part = dbias ? (pl.chunks > 1 ? scratch.as<T>() : dbias) : nullptr;
  T* slots = want_params ? scratch.as<T>() + bias_elems : nullptr;
  if (slots) FM_CUDA_CHECK(cudaMemsetAsync(slots, 0, sizeof(T) * slot_elems, stream));
  const dim3 grid(static_cast<unsigned>(pl.col_blocks), static_cast<unsigned>(pl.chunks));
  const dim3 block(kColTile, kRowLanes);
  backward_reduce_kernel<T, D><<<grid, block, 0, stream>>>(d, dy, dz, bias_part, slots, slot_width,
                                                           rows, cols, pl.rows_per_chunk);
  FM_CUDA_CHECK_LAUNCH("backward_reduce_kernel");
  if (dbias && pl.chunks > 1) launch_sum_partials(bias_part, pl.chunks, cols, dbias, stream);
  if (slots) launch_sum_partials(static_cast<const T*>(slots), nslots, slot_width, dparams, stream);
}

// ------------------------------------------------------------------ ReLU bit-mask

// One warp per 32-bit mask word: lane b handles column 32 w + b of row i (coalesced), and the
// ballot packs the 32 bits (lane b -> bit b, little-endian as in cuBLASLt's bit-mask).
template <class T>
__global__ void relu_mask_forward_kernel(T* y, std::uint32_t* mask, index_t rows, index_t cols,
                                         index_t words_per_row) {
  const int lane = threadIdx.x % kWarpSize;
  const index_t warps = static_cast<index_t>(gridDim.x) * (blockDim.x / kWarpSize);
  const index_t n = rows * words_per_row;
  for (index_t w = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize; w < n;
       w += warps) {
    const index_t i = w / words_per_row;
    const index_t j = (w % words_per_row) * kWarpSize + lane;
    bool on = false;
    if (j < cols) {
      const T v = y[i * cols + j];
      on = v > T(0);
      if (!on) y[i * cols + j] = T(0);
    }
    const std::uint32_t bits = __ballot_sync(0xffffffffu, on);
    if (lane == 0) mask[w] = bits;
  }
}

// ------------------------------------------------------------------ softmax

template <class T>
__global__ void softmax_forward_warp_kernel(const T* __restrict__ z, T* __restrict__ y,
                                            index_t rows, index_t cols) {
  const int lane = threadIdx.x % kWarpSize;
  const index_t warps = static_cast<index_t>(gridDim.x) * (blockDim.x / kWarpSize);
  for (index_t r = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
       r < rows; r += warps) {
    const T* zr = z + r * cols;
    T* yr = y + r * cols;
    T m = T(-INFINITY);
    for (index_t j = lane; j < cols; j += kWarpSize) m = zr[j] > m ? zr[j] : m;
    m = warp_max(m);
    T s = T(0);
    for (index_t j = lane; j < cols; j += kWarpSize) {
      const T e = std::exp(zr[j] - m);
      yr[j] = e;
      s += e;
    }
    const T inv = T(1) / warp_sum(s);
    for (index_t j = lane; j < cols; j += kWarpSize) yr[j] *= inv;
  }
}

template <class T>
__global__ void __launch_bounds__(kRowBlockThreads)
    softmax_forward_block_kernel(const T* __restrict__ z, T* __restrict__ y, index_t rows,
                                 index_t cols) {
  __shared__ T red[kRowBlockThreads / kWarpSize];
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* zr = z + r * cols;
    T* yr = y + r * cols;
    T m = T(-INFINITY);
    for (index_t j = threadIdx.x; j < cols; j += blockDim.x) m = zr[j] > m ? zr[j] : m;
    m = block_reduce<true>(m, red);
    T s = T(0);
    for (index_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const T e = std::exp(zr[j] - m);
      yr[j] = e;
      s += e;
    }
    const T inv = T(1) / block_reduce<false>(s, red);
    for (index_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] *= inv;
  }
}

template <class T>
__global__ void softmax_backward_warp_kernel(const T* __restrict__ y, const T* dy, T* dz,
                                             index_t rows, index_t cols) {
  const int lane = threadIdx.x % kWarpSize;
  const index_t warps = static_cast<index_t>(gridDim.x) * (blockDim.x / kWarpSize);
  for (index_t r = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
       r < rows; r += warps) {
    const T* yr = y + r * cols;
    const T* gr = dy + r * cols;
    T* dr = dz + r * cols;
    T s = T(0);
    for (index_t j = lane; j < cols; j += kWarpSize) s += gr[j] * yr[j];
    s = warp_sum(s);
    for (index_t j = lane; j < cols; j += kWarpSize) dr[j] = yr[j] * (gr[j] - s);
  }
}

template <class T>
__global__ void __launch_bounds__(kRowBlockThreads)
    softmax_backward_block_kernel(const T* __restrict__ y, const T* dy, T* dz, index_t rows,
                                  index_t cols) {
  __shared__ T red[kRowBlockThreads / kWarpSize];
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * cols;
    const T* gr = dy + r * cols;
    T* dr = dz + r * cols;
    T s = T(0);
    for (index_t j = threadIdx.x; j < cols; j += blockDim.x) s += gr[j] * yr[j];
    s = block_reduce<false>(s, red);
    for (index_t j = threadIdx.x; j < cols; j += blockDim.x) dr[j] = yr[j] * (gr[j] - s);
  }
}

// ------------------------------------------------------------------ maxout

template <class T>
__global__ void maxout_forward_kernel(const T* __restrict__ z, T* __restrict__ y, index_t n,
                                      index_t pieces) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t o = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < n;
       o += stride) {
    const T* g = z + o * pieces;
    T m = g[0];
    for (index_t k = 1; k < pieces; ++k) m = g[k] > m ? g[k] : m;
    y[o] = m;
  }
}

template <class T>
__global__ void maxout_backward_kernel(const T* __restrict__ z, const T* __restrict__ dy,
                                       T* __restrict__ dz, index_t n, index_t pieces) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t o = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < n;
       o += stride) {
    const T* g = z + o * pieces;
    T* d = dz + o * pieces;
    index_t best = 0;
    for (index_t k = 1; k < pieces; ++k)
      if (g[k] > g[best]) best = k;
    const T v = dy[o];
    for (index_t k = 0; k < pieces; ++k) d[k] = k == best ? v : T(0);
  }
}

}  // namespace

// ------------------------------------------------------------------ launchers

template <class T>
void activation_forward(Act a, const T* z, T* y, index_t rows, index_t cols, const ActParams<T>& p,
                        cudaStream_t stream) {
  const index_t n = rows * cols;
  if (n == 0) return;
  act_dispatch(a, [&](auto tag) {
    constexpr Act A = decltype(tag)::value;
    activation_forward_kernel<A, T>
        <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(z, y, n, cols, p);
    FM_CUDA_CHECK_LAUNCH("activation_forward_kernel");
  });
}

template <class T>
void activation_derivative(Act a, const T* z, T* g, index_t rows, index_t cols,
                           const ActParams<T>& p, cudaStream_t stream) {
  const index_t n = rows * cols;
  if (n == 0) return;
  act_dispatch(a, [&](auto tag) {
    constexpr Act A = decltype(tag)::value;
    activation_derivative_kernel<A, T>
        <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(z, g, n, cols, p);
    FM_CUDA_CHECK_LAUNCH("activation_derivative_kernel");
  });
}

template <class T>
void activation_backward(Act a, const T* z, const T* dy, T* dz, T* dbias, T* dparams, index_t rows,
                         index_t cols, const ActParams<T>& p, cudaStream_t stream) {
  if (cols == 0) return;
  act_dispatch(a, [&](auto tag) {
    constexpr Act A = decltype(tag)::value;
    const bool params = ActLearnable<A>::value && dparams != nullptr;
    if (!dbias && !params) {
      const index_t n = rows * cols;
      if (n == 0) return;
      activation_backward_kernel<A, T>
          <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(z, dy, dz, n, cols,
                                                                                 p);
      FM_CUDA_CHECK_LAUNCH("activation_backward_kernel");
      return;
    }
    backward_reduce(ActDeriv<A, T>{z, p}, act_num_params(A, p.hinges), dy, dz, dbias, dparams, rows,
                    cols, stream);
  });
}

template <class T>
void bias_activation_forward(Act a, const T* bias, T* z, T* y, index_t rows, index_t cols,
                             const ActParams<T>& p, cudaStream_t stream) {
  const index_t n = rows * cols;
  if (n == 0 || (!bias && (!y || (y == z && a == Act::identity)))) return;
  act_dispatch(a, [&](auto tag) {
    constexpr Act A = decltype(tag)::value;
    bias_activation_kernel<A, T>
        <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(bias, z, y, n, cols,
                                                                               p);
    FM_CUDA_CHECK_LAUNCH("bias_activation_kernel");
  });
}

template <class T>
void column_sum(const T* x, T* out, index_t rows, index_t cols, cudaStream_t stream) {
  if (cols == 0) return;
  backward_reduce(IdentityDeriv<T>{}, 0, x, static_cast<T*>(nullptr), out, static_cast<T*>(nullptr),
                  rows, cols, stream);
}

index_t relu_mask_ld(index_t cols) {
  return (cols + 127) / 128 * 128;
}

std::size_t relu_mask_bytes(index_t rows, index_t cols) {
  return static_cast<std::size_t>(rows) * static_cast<std::size_t>(relu_mask_ld(cols) / 8);
}

template <class T>
void relu_mask_forward(T* y, std::uint32_t* mask, index_t rows, index_t cols, cudaStream_t stream) {
  const index_t words_per_row = relu_mask_ld(cols) / 32;
  const index_t warps = rows * words_per_row;
  if (warps == 0) return;
  relu_mask_forward_kernel<T>
      <<<grid_for(warps * kWarpSize, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
          y, mask, rows, cols, words_per_row);
  FM_CUDA_CHECK_LAUNCH("relu_mask_forward_kernel");
}

template <class T>
void relu_mask_backward(const std::uint32_t* mask, const T* dy, T* dz, T* dbias, index_t rows,
                        index_t cols, cudaStream_t stream) {
  if (cols == 0) return;
  backward_reduce(MaskDeriv<T>{mask, relu_mask_ld(cols)}, 0, dy, dz, dbias,
                  static_cast<T*>(nullptr), rows, cols, stream);
}

template <class T>
void softmax_forward(const T* z, T* y, index_t rows, index_t cols, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  if (cols <= kSoftmaxWarpMaxCols) {
    constexpr int threads = kRowsPerWarpBlock * kWarpSize;
    softmax_forward_warp_kernel<T>
        <<<grid_for(rows * kWarpSize, threads), threads, 0, stream>>>(z, y, rows, cols);
    FM_CUDA_CHECK_LAUNCH("softmax_forward_warp_kernel");
  } else {
    softmax_forward_block_kernel<T>
        <<<grid_for(rows * kRowBlockThreads, kRowBlockThreads), kRowBlockThreads, 0, stream>>>(
            z, y, rows, cols);
    FM_CUDA_CHECK_LAUNCH("softmax_forward_block_kernel");
  }
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dz, index_t rows, index_t cols,
                      cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  if (cols <= kSoftmaxWarpMaxCols) {
    constexpr int threads = kRowsPerWarpBlock * kWarpSize;
    softmax_backward_warp_kernel<T>
        <<<grid_for(rows * kWarpSize, threads), threads, 0, stream>>>(y, dy, dz, rows, cols);
    FM_CUDA_CHECK_LAUNCH("softmax_backward_warp_kernel");
  } else {
    softmax_backward_block_kernel<T>
        <<<grid_for(rows * kRowBlockThreads, kRowBlockThreads), kRowBlockThreads, 0, stream>>>(
            y, dy, dz, rows, cols);
    FM_CUDA_CHECK_LAUNCH("softmax_backward_block_kernel");
  }
}

template <class T>
void maxout_forward(const T* z, T* y, index_t rows, index_t units, index_t pieces,
                    cudaStream_t stream) {
  const index_t n = rows * units;
  if (n == 0) return;
  maxout_forward_kernel<T>
      <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(z, y, n, pieces);
  FM_CUDA_CHECK_LAUNCH("maxout_forward_kernel");
}

template <class T>
void maxout_backward(const T* z, const T* dy, T* dz, index_t rows, index_t units, index_t pieces,
                     cudaStream_t stream) {
  const index_t n = rows * units;
  if (n == 0) return;
  maxout_backward_kernel<T>
      <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(z, dy, dz, n, pieces);
  FM_CUDA_CHECK_LAUNCH("maxout_backward_kernel");
}

#define FM_INSTANTIATE(T)                                                                          \
  template void activation_forward<T>(Act, const T*, T*, index_t, index_t, const ActParams<T>&,    \
                                      cudaStream_t);                                               \
  template void activation_derivative<T>(Act, const T*, T*, index_t, index_t, const ActParams<T>&, \
                                         cudaStream_t);                                            \
  template void activation_backward<T>(Act, const T*, const T*, T*, T*, T*, index_t, index_t,      \
                                       const ActParams<T>&, cudaStream_t);                         \
  template void bias_activation_forward<T>(Act, const T*, T*, T*, index_t, index_t,                \
                                           const ActParams<T>&, cudaStream_t);                     \
  template void column_sum<T>(const T*, T*, index_t, index_t, cudaStream_t);                       \
  template void relu_mask_forward<T>(T*, std::uint32_t*, index_t, index_t, cudaStream_t);          \
  template void relu_mask_backward<T>(const std::uint32_t*, const T*, T*, T*, index_t, index_t,    \
                                      cudaStream_t);                                               \
  template void softmax_forward<T>(const T*, T*, index_t, index_t, cudaStream_t);                  \
  template void softmax_backward<T>(const T*, const T*, T*, index_t, index_t, cudaStream_t);       \
  template void maxout_forward<T>(const T*, T*, index_t, index_t, index_t, cudaStream_t);          \
  template void maxout_backward<T>(const T*, const T*, T*, index_t, index_t, index_t, cudaStream_t);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cuda
