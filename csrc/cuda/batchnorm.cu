// CUDA batch normalization, training and inference forward and the fused backward (formulas
// and running-statistics rules: csrc/cuda/batchnorm.h, csrc/cpu/batchnorm.h; decks 000, 001).
//
// Layout: x, y, dy, dx (rows, cols) row-major, cols = features; gamma, beta, statistics (cols).
// Reductions: a block of 32 columns x 8 row lanes owns one chunk of rows (coalesced 128-byte
// row segments); the chunking depends only on the shape and the multiprocessor count.
//   forward : stats kernel  - per chunk, the column means, then the centred sums of squares
//                             around them (the chunk is read twice while it is cache-resident),
//                             in double;
//             finalize      - per column, the chunks merged in chunk order with Chan et al.'s
//                             exact pairwise update (n, mean, M2), then invstd, the running
//                             statistics and the affine coefficients;
//             apply         - y = (x - mu) * (gamma invstd) + beta, elementwise.
//   backward: reduce kernel - per chunk, sum dy and sum dy * xhat in double;
//             finalize      - per column, the chunks summed in order: dbeta, dgamma and the dx
//                             coefficients;
//             dx kernel     - dx = k (dy - a - xhat b), elementwise.
// No floating-point atomics: the result is bit-identical from run to run.
// Cost: forward 3 reads of x (2 of them from cache) + 1 write, ~8 flops per element; backward
// 2 reads of x and dy + 1 write, ~10 flops per element; inference 1 read + 1 write, 2 flops.
#include <cmath>

#include "cuda/batchnorm.h"
#include "cuda/common.cuh"

namespace fm::cuda {
namespace {

constexpr int kColTile = 32;              // columns per reduction block: one warp, coalesced
constexpr int kRowLanes = 8;              // row lanes per reduction block (32 x 8 threads)
constexpr index_t kMinRowsPerChunk = 64;  // below this a chunk's partials cost more than they save
constexpr int kReduceBlocksPerSM = 4;     // target reduction blocks per multiprocessor
constexpr index_t kMaxChunks = 65535;     // gridDim.y limit
constexpr int kColumnThreads = 256;       // threads of the per-column finalize kernels

// Rows [r0, r1) of chunk q.
struct ChunkPlan {
  index_t col_blocks, chunks, rows_per_chunk;
  FM_HD index_t count(index_t q, index_t rows) const {
    const index_t r0 = q * rows_per_chunk;
    return (rows - r0 < rows_per_chunk) ? rows - r0 : rows_per_chunk;
  }
};

ChunkPlan chunk_plan(index_t rows, index_t cols) {
  ChunkPlan pl;
  pl.col_blocks = (cols + kColTile - 1) / kColTile;
  const index_t target = static_cast<index_t>(sm_count()) * kReduceBlocksPerSM;
  const index_t max_chunks = (rows + kMinRowsPerChunk - 1) / kMinRowsPerChunk;
  index_t chunks = target / pl.col_blocks;
  if (chunks > max_chunks) chunks = max_chunks;
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  if (chunks < 1) chunks = 1;
  pl.rows_per_chunk = (rows + chunks - 1) / chunks;
  pl.chunks = (rows + pl.rows_per_chunk - 1) / pl.rows_per_chunk;
  return pl;
}

// Sum of the 8 row lanes' values of column threadIdx.x, in lane order (threadIdx.y == 0 reads).
__device__ __forceinline__ double lane_sum(double (*red)[kColTile + 1]) {
  double t = red[0][threadIdx.x];
#pragma unroll
  for (int r = 1; r < kRowLanes; ++r) t += red[r][threadIdx.x];
  return t;
}

// ------------------------------------------------------------------ forward

// Block (kColTile, kRowLanes) = columns [blockIdx.x * 32, +32) of chunk blockIdx.y. Writes the
// chunk's column means and centred sums of squares M2 = sum (x - mean_chunk)^2, in double.
template <class T>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    batchnorm_stats_kernel(const T* __restrict__ x, index_t rows, index_t cols, ChunkPlan pl,
                           double* __restrict__ part_mean, double* __restrict__ part_m2) {
  __shared__ double red[kRowLanes][kColTile + 1];
  __shared__ double chunk_mean[kColTile];
  const index_t j = static_cast<index_t>(blockIdx.x) * kColTile + threadIdx.x;
  const index_t r0 = static_cast<index_t>(blockIdx.y) * pl.rows_per_chunk;
  const index_t r1 = r0 + pl.count(blockIdx.y, rows);
  const bool active = j < cols;
  // Pass 1 over the chunk: mean (deck 000, Algorithm 1: mu_B = 1/m sum_i x_i).
  double s = 0.0;
  if (active)
    for (index_t i = r0 + threadIdx.y; i < r1; i += kRowLanes)
      s += static_cast<double>(x[i * cols + j]);
  red[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0) chunk_mean[threadIdx.x] = lane_sum(red) / static_cast<double>(r1 - r0);
  __syncthreads();
  // Pass 2 over the (cache-resident) chunk: centred sum of squares, no E[x^2] - E[x]^2
  // cancellation.
  const double mu = chunk_mean[threadIdx.x];
  double q = 0.0;
  if (active)
    for (index_t i = r0 + threadIdx.y; i < r1; i += kRowLanes) {
      const double d = static_cast<double>(x[i * cols + j]) - mu;
      q += d * d;
    }
  red[threadIdx.y][threadIdx.x] = q;
  __syncthreads();
  if (threadIdx.y == 0 && active) {
    part_mean[static_cast<index_t>(blockIdx.y) * cols + j] = mu;
    part_m2[static_cast<index_t>(blockIdx.y) * cols + j] = lane_sum(red);
  }
}

// Per column: merge the chunks' (count, mean, M2) in chunk order (Chan, Golub & LeVeque's
// pairwise update, exact in exact arithmetic), then the statistics, the running averages and
// the affine coefficients coef = [mean (T), gamma invstd, beta] (3 x cols).
template <class T>
__global__ void batchnorm_finalize_kernel(const double* __restrict__ part_mean,
                                          const double* __restrict__ part_m2, ChunkPlan pl,
                                          index_t rows, index_t cols, const T* __restrict__ gamma,
                                          const T* __restrict__ beta, T* __restrict__ batch_mean,
                                          T* __restrict__ batch_invstd, T* running_mean,
                                          T* running_var, double momentum, double eps,
                                          bool init_from_batch, T* __restrict__ coef) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  const double unbias = static_cast<double>(rows) / static_cast<double>(rows - 1);
  for (index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < cols;
       j += stride) {
    double n = static_cast<double>(pl.count(0, rows));
    double mean = part_mean[j], m2 = part_m2[j];
    for (index_t q = 1; q < pl.chunks; ++q) {
      const double nb = static_cast<double>(pl.count(q, rows));
      const double nn = n + nb;
      const double delta = part_mean[q * cols + j] - mean;
      mean += delta * (nb / nn);
      m2 += part_m2[q * cols + j] + delta * delta * (n * nb / nn);
      n = nn;
    }
    const double var = m2 / static_cast<double>(rows);  // biased (Algorithm 1)
    const double invstd = 1.0 / sqrt(var + eps);
    const T mean_t = static_cast<T>(mean);
    batch_mean[j] = mean_t;
    batch_invstd[j] = static_cast<T>(invstd);
    if (running_mean) {
      // Deck 001: MA^(t) = delta stat + (1 - delta) MA^(t-1), MA^(1) = stat of batch 1. The
      // variance recorded is the unbiased one (PyTorch / Keras).
      const double uvar = var * unbias;
      if (init_from_batch) {
        running_mean[j] = mean_t;
        running_var[j] = static_cast<T>(uvar);
      } else {
        const double rm = static_cast<double>(running_mean[j]);
        const double rv = static_cast<double>(running_var[j]);
        running_mean[j] = static_cast<T>((1.0 - momentum) * rm + momentum * mean);
        running_var[j] = static_cast<T>((1.0 - momentum) * rv + momentum * uvar);
      }
    }
    coef[j] = mean_t;
    coef[cols + j] = static_cast<T>((gamma ? static_cast<double>(gamma[j]) : 1.0) * invstd);
    coef[2 * cols + j] = beta ? beta[j] : T(0);
  }
}

// y = (x - mean) * scale + shift per column (training: the batch statistics; inference: the
// running ones). y may alias x: each element is read, then written, by one thread.
template <class T>
__global__ void batchnorm_apply_kernel(const T* x, T* y, index_t n, index_t cols,
                                       const T* __restrict__ mean, const T* __restrict__ scale,
                                       const T* __restrict__ shift) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    const index_t j = e % cols;
    y[e] = (x[e] - mean[j]) * scale[j] + shift[j];
  }
}

// Inference coefficients (deck 001, "Inference"): scale = gamma / sqrt(running_var + eps),
// shift = beta, in double then rounded, as on the CPU.
template <class T>
__global__ void batchnorm_infer_coef_kernel(const T* __restrict__ gamma, const T* __restrict__ beta,
                                            const T* __restrict__ running_var, index_t cols,
                                            double eps, T* __restrict__ scale,
                                            T* __restrict__ shift) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < cols;
       j += stride) {
    const double v = static_cast<double>(running_var[j]) + eps;
    scale[j] = static_cast<T>((gamma ? static_cast<double>(gamma[j]) : 1.0) / sqrt(v));
    shift[j] = beta ? beta[j] : T(0);
  }
}

// ------------------------------------------------------------------ backward

// Block (kColTile, kRowLanes) over chunk blockIdx.y: sum dy and sum dy xhat per column, with
// xhat = (x - mean) invstd rounded to T as in the forward pass, accumulated in double.
template <class T>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    batchnorm_backward_reduce_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                     const T* __restrict__ batch_mean,
                                     const T* __restrict__ batch_invstd, index_t rows, index_t cols,
                                     ChunkPlan pl, double* __restrict__ part_dy,
                                     double* __restrict__ part_dyx) {
  __shared__ double red[kRowLanes][kColTile + 1];
  const index_t j = static_cast<index_t>(blockIdx.x) * kColTile + threadIdx.x;
  const index_t r0 = static_cast<index_t>(blockIdx.y) * pl.rows_per_chunk;
  const index_t r1 = r0 + pl.count(blockIdx.y, rows);
  const bool active = j < cols;
  double sdy = 0.0, sdyx = 0.0;
  if (active) {
    const T mu = batch_mean[j], is = batch_invstd[j];
    for (index_t i = r0 + threadIdx.y; i < r1; i += kRowLanes) {
      const T xhat = (x[i * cols + j] - mu) * is;
      const double g = static_cast<double>(dy[i * cols + j]);
      sdy += g;
      sdyx += g * static_cast<double>(xhat);
    }
  }
  red[threadIdx.y][threadIdx.x] = sdy;
  __syncthreads();
  if (threadIdx.y == 0 && active)
    part_dy[static_cast<index_t>(blockIdx.y) * cols + j] = lane_sum(red);
  __syncthreads();
  red[threadIdx.y][threadIdx.x] = sdyx;
  __syncthreads();
  if (threadIdx.y == 0 && active)
    part_dyx[static_cast<index_t>(blockIdx.y) * cols + j] = lane_sum(red);
}

// Per column: dbeta = sum dy, dgamma = sum dy xhat (chunks in order), and the dx coefficients
// coef = [k = gamma invstd, a = dbeta / m, b = dgamma / m] (3 x cols).
template <class T>
__global__ void batchnorm_backward_finalize_kernel(
    const double* __restrict__ part_dy, const double* __restrict__ part_dyx, index_t chunks,
    index_t rows, index_t cols, const T* __restrict__ gamma, const T* __restrict__ batch_invstd,
    T* __restrict__ dgamma, T* __restrict__ dbeta, T* __restrict__ coef) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  const double inv_m = 1.0 / static_cast<double>(rows);
  for (index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < cols;
       j += stride) {
    double sdy = 0.0, sdyx = 0.0;
    for (index_t q = 0; q < chunks; ++q) {
      sdy += part_dy[q * cols + j];
      sdyx += part_dyx[q * cols + j];
    }
    if (dbeta) dbeta[j] = static_cast<T>(sdy);
    if (dgamma) dgamma[j] = static_cast<T>(sdyx);
    coef[j] = static_cast<T>((gamma ? static_cast<double>(gamma[j]) : 1.0) *
                             static_cast<double>(batch_invstd[j]));
    coef[cols + j] = static_cast<T>(sdy * inv_m);
    coef[2 * cols + j] = static_cast<T>(sdyx * inv_m);
  }
}

// dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)). dx may alias dy.
template <class T>
__global__ void batchnorm_backward_dx_kernel(const T* __restrict__ x, const T* dy, T* dx, index_t n,
                                             index_t cols, const T* __restrict__ batch_mean,
                                             const T* __restrict__ batch_invstd,
                                             const T* __restrict__ coef) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    const index_t j = e % cols;
    const T xhat = (x[e] - batch_mean[j]) * batch_invstd[j];
    dx[e] = coef[j] * (dy[e] - coef[cols + j] - xhat * coef[2 * cols + j]);
  }
}

template <class T>
void check_eps(T eps) {
  FM_CHECK(eps > T(0) && std::isfinite(eps), "eps: expected a finite value > 0, got ", eps);
}

// Scratch layout: `doubles` partial sums, then `ts` values of T (doubles first: aligned).
template <class T>
struct Workspace {
  Scratch mem;
  double* d;
  T* t;
  Workspace(index_t doubles, index_t ts, cudaStream_t stream)
      : mem(sizeof(double) * doubles + sizeof(T) * ts, stream),
        d(mem.as<double>()),
        t(reinterpret_cast<T*>(mem.as<double>() + doubles)) {}
};

}  // namespace

template <class T>
void batchnorm_forward_train(const T* x, T* y, const T* gamma, const T* beta, T* batch_mean,
                             T* batch_invstd, T* running_mean, T* running_var, index_t rows,
                             index_t cols, T momentum, T eps, bool init_from_batch,
                             cudaStream_t stream) {
  FM_CHECK(rows >= 2,
           "x: batch normalization in training needs a batch of at least 2 rows "
           "(the batch variance of a single sample is undefined), got ",
           rows);
  FM_CHECK(momentum >= T(0) && momentum <= T(1), "momentum: expected a value in [0, 1], got ",
           momentum);
  FM_CHECK((running_mean == nullptr) == (running_var == nullptr),
           "running_mean, running_var: pass both or neither");
  check_eps(eps);
  if (cols == 0) return;
  const ChunkPlan pl = chunk_plan(rows, cols);
  Workspace<T> ws(2 * pl.chunks * cols, 3 * cols, stream);
  double* part_mean = ws.d;
  double* part_m2 = ws.d + pl.chunks * cols;
  T* coef = ws.t;
  const dim3 grid(static_cast<unsigned>(pl.col_blocks), static_cast<unsigned>(pl.chunks));
  batchnorm_stats_kernel<T>
      <<<grid, dim3(kColTile, kRowLanes), 0, stream>>>(x, rows, cols, pl, part_mean, part_m2);
  FM_CUDA_CHECK_LAUNCH("batchnorm_stats_kernel");
  batchnorm_finalize_kernel<T><<<grid_for(cols, kColumnThreads), kColumnThreads, 0, stream>>>(
      part_mean, part_m2, pl, rows, cols, gamma, beta, batch_mean, batch_invstd, running_mean,
      running_var, static_cast<double>(momentum), static_cast<double>(eps), init_from_batch, coef);
  FM_CUDA_CHECK_LAUNCH("batchnorm_finalize_kernel");
  const index_t n = rows * cols;
  batchnorm_apply_kernel<T><<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      x, y, n, cols, coef, coef + cols, coef + 2 * cols);
  FM_CUDA_CHECK_LAUNCH("batchnorm_apply_kernel");
}

template <class T>
void batchnorm_forward_infer(const T* x, T* y, const T* gamma, const T* beta, const T* running_mean,
                             const T* running_var, index_t rows, index_t cols, T eps,
                             cudaStream_t stream) {
  check_eps(eps);
  const index_t n = rows * cols;
  if (n == 0) return;
  Workspace<T> ws(0, 2 * cols, stream);
  T* scale = ws.t;
  T* shift = ws.t + cols;
  batchnorm_infer_coef_kernel<T><<<grid_for(cols, kColumnThreads), kColumnThreads, 0, stream>>>(
      gamma, beta, running_var, cols, static_cast<double>(eps), scale, shift);
  FM_CUDA_CHECK_LAUNCH("batchnorm_infer_coef_kernel");
  batchnorm_apply_kernel<T><<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
      x, y, n, cols, running_mean, scale, shift);
  FM_CUDA_CHECK_LAUNCH("batchnorm_apply_kernel");
}

template <class T>
void batchnorm_backward(const T* x, const T* dy, const T* gamma, const T* batch_mean,
                        const T* batch_invstd, T* dx, T* dgamma, T* dbeta, index_t rows,
                        index_t cols, cudaStream_t stream) {
  FM_CHECK(rows >= 2, "x: batch normalization in training needs a batch of at least 2 rows, got ",
           rows);
  if (cols == 0) return;
  const ChunkPlan pl = chunk_plan(rows, cols);
  Workspace<T> ws(2 * pl.chunks * cols, 3 * cols, stream);
  double* part_dy = ws.d;
  double* part_dyx = ws.d + pl.chunks * cols;
  T* coef = ws.t;
  const dim3 grid(static_cast<unsigned>(pl.col_blocks), static_cast<unsigned>(pl.chunks));
  batchnorm_backward_reduce_kernel<T><<<grid, dim3(kColTile, kRowLanes), 0, stream>>>(
      x, dy, batch_mean, batch_invstd, rows, cols, pl, part_dy, part_dyx);
  FM_CUDA_CHECK_LAUNCH("batchnorm_backward_reduce_kernel");
  batchnorm_backward_finalize_kernel<T>
      <<<grid_for(cols, kColumnThreads), kColumnThreads, 0, stream>>>(
          part_dy, part_dyx, pl.chunks, rows, cols, gamma, batch_invstd, dgamma, dbeta, coef);
  FM_CUDA_CHECK_LAUNCH("batchnorm_backward_finalize_kernel");
  const index_t n = rows * cols;
  batchnorm_backward_dx_kernel<T>
      <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
          x, dy, dx, n, cols, batch_mean, batch_invstd, coef);
  FM_CUDA_CHECK_LAUNCH("batchnorm_backward_dx_kernel");
}

#define FM_INSTANTIATE(T)                                                                        \
  template void batchnorm_forward_train<T>(const T*, T*, const T*, const T*, T*, T*, T*, T*,     \
                                           index_t, index_t, T, T, bool, cudaStream_t);          \
  template void batchnorm_forward_infer<T>(const T*, T*, const T*, const T*, const T*, const T*, \
                                           index_t, index_t, T, cudaStream_t);                   \
  template void batchnorm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*,  \
                                      T*, index_t, index_t, cudaStream_t);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cuda
