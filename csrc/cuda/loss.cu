// CUDA fused losses: mse (identity output), binary cross-entropy (sigmoid output) and
// cross-entropy (softmax output), decks 003 and 004; label smoothing, deck 002. The
// per-element formulas are csrc/common/loss.h's, evaluated in the same precision as
// csrc/cpu/loss.cpp (row sums in double, elementwise terms in T).
//
// Layout: logits, target, dlogits (rows, cols) row-major; labels, sample_weight (rows).
// One warp per row up to kWarpRowMaxCols columns (lanes stride the row: coalesced), one block
// per row beyond. A row is one pass of loads (cross-entropy: the max, then the exp-sum which
// keeps e^{z - m} in dlogits as scratch, then the loss and gradient sweeps over the
// cache-resident row), and its weighted loss w_i l_i is added to its warp's (block's)
// running total. Each block writes one partial; a second one-block kernel adds the partials
// in index order and scales by 1/N into the device scalar. No floating-point atomics: the
// loss is bit-identical from run to run on the same device model.
// Cost per element: mse 3 flops; BCE one exp + log1p (softplus) + one exp (sigmoid); CE one
// exp; 8-16 bytes read and 4-8 written (float32 / float64).
#include <cmath>
#include <cstdint>

#include "cuda/activation.h"
#include "cuda/common.cuh"
#include "cuda/loss.h"

namespace fm::cuda {
namespace {

using loss_detail::Smoothing;

constexpr int kRowsPerWarpBlock = 4;  // rows in flight per block of the warp-per-row kernel
constexpr int kWarpBlockThreads = kRowsPerWarpBlock * kWarpSize;
constexpr index_t kWarpRowMaxCols = 1024;  // beyond this a whole block works on one row
constexpr int kRowBlockThreads = 256;      // threads of the block-per-row kernel
constexpr int kSumThreads = 256;           // threads of the final partial-sum kernel

// A warp working on one row: lanes stride the columns, sums and maxima over the warp.
struct WarpGroup {
  __device__ __forceinline__ int rank() const { return threadIdx.x % kWarpSize; }
  __device__ __forceinline__ int size() const { return kWarpSize; }
  __device__ __forceinline__ double sum(double v) const { return warp_sum(v); }
  template <class T>
  __device__ __forceinline__ T max(T v) const {
    return warp_max(v);
  }
};

// A whole block working on one row (all of its threads call every reduction).
template <class T>
struct BlockGroup {
  double* red_d;  // one double per warp
  T* red_t;       // one T per warp
  __device__ __forceinline__ int rank() const { return threadIdx.x; }
  __device__ __forceinline__ int size() const { return blockDim.x; }
  __device__ __forceinline__ double sum(double v) const { return block_reduce<false>(v, red_d); }
  __device__ __forceinline__ T max(T v) const { return block_reduce<true>(v, red_t); }
};

// The row loss l_i of row z (cols outputs), returned to every thread of the group; when d is
// given it receives dl/dz * g (g = w_i / N). t: the row's dense targets, or null with
// `label` the row's class (cross-entropy with integer labels).
template <Loss L, class T, class G>
__device__ double loss_row(const G& grp, const T* z, const T* t, std::int32_t label, T* d,
                           index_t cols, T g, bool half, const Smoothing<T>& sm) {
  const int r = grp.rank(), step = grp.size();
  if constexpr (L == Loss::mse) {
    double l = 0.0;
    for (index_t j = r; j < cols; j += step) {
      l += static_cast<double>(loss_detail::mse_elem(z[j], t[j], half));
      if (d) d[j] = loss_detail::mse_grad(z[j], t[j], half) * g;
    }
    return grp.sum(l);
  } else if constexpr (L == Loss::binary_cross_entropy) {
    double l = 0.0;
    for (index_t j = r; j < cols; j += step) {
      const T tj = sm(t[j]);
      l += static_cast<double>(loss_detail::bce_elem(z[j], tj));
      if (d) d[j] = loss_detail::bce_grad(z[j], tj) * g;
    }
    return grp.sum(l);
  } else {
    if (!t && (label < 0 || label >= cols)) {  // uniform over the group: no reduction skipped
      for (index_t j = r; j < cols && d; j += step) d[j] = T(NAN);
      return NAN;
    }
    // lse(z) = m + log sum_j e^{z_j - m}, m = max_j z_j (deck 003, max-subtracted).
    T m = z[0];
    for (index_t j = r; j < cols; j += step) m = z[j] > m ? z[j] : m;
    m = grp.max(m);
    double s = 0.0;
    for (index_t j = r; j < cols; j += step) {
      const T e = std::exp(z[j] - m);
      if (d) d[j] = e;  // scratch: e^{z_j - m}, read back by this thread below
      s += static_cast<double>(e);
    }
    s = grp.sum(s);
    const double lse = static_cast<double>(m) + log(s);
    const T on = sm.on, off = sm.off;
    auto target_of = [&](index_t j) { return t ? sm(t[j]) : (j == label ? on : off); };
    double tsum;
    if (t) {
      double ts = 0.0;
      for (index_t j = r; j < cols; j += step) ts += static_cast<double>(sm(t[j]));
      tsum = grp.sum(ts);
    } else {
      tsum = static_cast<double>(on) + static_cast<double>(off) * static_cast<double>(cols - 1);
    }
    double l = 0.0;
    for (index_t j = r; j < cols; j += step)
      l += loss_detail::ce_elem(static_cast<double>(z[j]), lse, static_cast<double>(target_of(j)));
    l = grp.sum(l);
    if (d) {
      const T inv_s = static_cast<T>(1.0 / s), ts = static_cast<T>(tsum);
      for (index_t j = r; j < cols; j += step)
        d[j] = loss_detail::ce_grad(d[j], inv_s, ts, target_of(j)) * g;
    }
    return l;
  }
}

// The gradient row of a skipped (weight-0) sample: d = 0, strided over the group.
template <class T, class G>
__device__ void zero_row(const G& grp, T* d, index_t cols) {
  if (!d) return;
  for (index_t j = grp.rank(); j < cols; j += grp.size()) d[j] = T(0);
}

struct LossArgs {
  index_t rows, cols;
  double inv_n;
  bool half;
};

// One warp per row (grid-stride over rows). part[blockIdx.x] = sum of w_i l_i over the block's
// rows: each warp in row order, then the block's warps in warp order.
template <Loss L, class T>
__global__ void __launch_bounds__(kWarpBlockThreads)
    loss_rows_warp_kernel(const T* __restrict__ logits, const T* __restrict__ target,
                          const std::int32_t* __restrict__ labels,
                          const T* __restrict__ sample_weight, T* __restrict__ dlogits, LossArgs a,
                          Smoothing<T> sm, double* __restrict__ part) {
  __shared__ double warp_total[kRowsPerWarpBlock];
  const int warp = threadIdx.x / kWarpSize;
  const index_t warps = static_cast<index_t>(gridDim.x) * kRowsPerWarpBlock;
  const WarpGroup grp;
  double acc = 0.0;
  for (index_t i = static_cast<index_t>(blockIdx.x) * kRowsPerWarpBlock + warp; i < a.rows;
       i += warps) {
    const T w = sample_weight ? sample_weight[i] : T(1);
    T* d = dlogits ? dlogits + i * a.cols : nullptr;
    if (w == T(0)) {  // uniform over the group: skipped, not 0 * l (csrc/common/loss.h)
      zero_row(grp, d, a.cols);
      continue;
    }
    const T g = static_cast<T>(static_cast<double>(w) * a.inv_n);
    const double l = loss_row<L>(grp, logits + i * a.cols, target ? target + i * a.cols : nullptr,
                                 labels ? labels[i] : 0, d, a.cols, g, a.half, sm);
    acc += static_cast<double>(w) * l;
  }
  if (threadIdx.x % kWarpSize == 0) warp_total[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = warp_total[0];
#pragma unroll
    for (int k = 1; k < kRowsPerWarpBlock; ++k) s += warp_total[k];
    part[blockIdx.x] = s;
  }
}

// One block per row (grid-stride over rows), for rows wider than kWarpRowMaxCols.
template <Loss L, class T>
__global__ void __launch_bounds__(kRowBlockThreads)
    loss_rows_block_kernel(const T* __restrict__ logits, const T* __restrict__ target,
                           const std::int32_t* __restrict__ labels,
                           const T* __restrict__ sample_weight, T* __restrict__ dlogits, LossArgs a,
                           Smoothing<T> sm, double* __restrict__ part) {
  __shared__ double red_d[kRowBlockThreads / kWarpSize];
  __shared__ T red_t[kRowBlockThreads / kWarpSize];
  const BlockGroup<T> grp{red_d, red_t};
  double acc = 0.0;
  for (index_t i = blockIdx.x; i < a.rows; i += gridDim.x) {
    const T w = sample_weight ? sample_weight[i] : T(1);
    T* d = dlogits ? dlogits + i * a.cols : nullptr;
    if (w == T(0)) {  // uniform over the group: skipped, not 0 * l (csrc/common/loss.h)
      zero_row(grp, d, a.cols);
      continue;
    }
    const T g = static_cast<T>(static_cast<double>(w) * a.inv_n);
    const double l = loss_row<L>(grp, logits + i * a.cols, target ? target + i * a.cols : nullptr,
                                 labels ? labels[i] : 0, d, a.cols, g, a.half, sm);
    acc += static_cast<double>(w) * l;
  }
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

// *out = inv_n * sum_q part[q]: each thread sums a strided subset in order, then the block
// reduction in its fixed tree order.
__global__ void __launch_bounds__(kSumThreads)
    loss_sum_kernel(const double* __restrict__ part, index_t parts, double inv_n,
                    double* __restrict__ out) {
  __shared__ double red[kSumThreads / kWarpSize];
  double s = 0.0;
  for (index_t q = threadIdx.x; q < parts; q += blockDim.x) s += part[q];
  s = block_reduce<false>(s, red);
  if (threadIdx.x == 0) *out = s * inv_n;
}

template <class T>
__global__ void sigmoid_kernel(const T* z, T* y, index_t n) {
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    y[e] = act_detail::sigmoid(z[e]);
}

template <Loss L, class T>
void launch_rows(const T* logits, const T* target, const std::int32_t* labels,
                 const T* sample_weight, T* dlogits, const LossArgs& a, const Smoothing<T>& sm,
                 double* loss_out, cudaStream_t stream) {
  const bool warp_rows = a.cols <= kWarpRowMaxCols;
  const unsigned grid = warp_rows ? grid_for(a.rows * kWarpSize, kWarpBlockThreads)
                                  : grid_for(a.rows * kRowBlockThreads, kRowBlockThreads);
  Scratch part(sizeof(double) * grid, stream);
  if (warp_rows) {
    loss_rows_warp_kernel<L, T><<<grid, kWarpBlockThreads, 0, stream>>>(
        logits, target, labels, sample_weight, dlogits, a, sm, part.as<double>());
    FM_CUDA_CHECK_LAUNCH("loss_rows_warp_kernel");
  } else {
    loss_rows_block_kernel<L, T><<<grid, kRowBlockThreads, 0, stream>>>(
        logits, target, labels, sample_weight, dlogits, a, sm, part.as<double>());
    FM_CUDA_CHECK_LAUNCH("loss_rows_block_kernel");
  }
  if (loss_out) {
    loss_sum_kernel<<<1, kSumThreads, 0, stream>>>(part.as<double>(), grid, a.inv_n, loss_out);
    FM_CUDA_CHECK_LAUNCH("loss_sum_kernel");
  }
}

}  // namespace

template <class T>
void loss_forward_backward(Loss loss, const T* logits, const T* target, const std::int32_t* labels,
                           const T* sample_weight, T* dlogits, index_t rows, index_t cols,
                           const LossParams<T>& p, double* loss_out, cudaStream_t stream) {
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
  const Smoothing<T> sm = loss_detail::make_smoothing(p, k);
  const LossArgs a{rows, cols, 1.0 / static_cast<double>(rows), p.half};
  switch (loss) {
    case Loss::mse:
      launch_rows<Loss::mse>(logits, target, labels, sample_weight, dlogits, a, sm, loss_out,
                             stream);
      break;
    case Loss::binary_cross_entropy:
      launch_rows<Loss::binary_cross_entropy>(logits, target, labels, sample_weight, dlogits, a, sm,
                                              loss_out, stream);
      break;
    case Loss::cross_entropy:
      launch_rows<Loss::cross_entropy>(logits, target, labels, sample_weight, dlogits, a, sm,
                                       loss_out, stream);
      break;
  }
}

template <class T>
void loss_output(Loss loss, const T* logits, T* out, index_t rows, index_t cols,
                 cudaStream_t stream) {
  const index_t n = rows * cols;
  switch (loss) {
    case Loss::mse:
      if (out != logits && n > 0)
        FM_CUDA_CHECK(
            cudaMemcpyAsync(out, logits, sizeof(T) * n, cudaMemcpyDeviceToDevice, stream));
      return;
    case Loss::binary_cross_entropy:
      if (n == 0) return;
      sigmoid_kernel<T>
          <<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(logits, out, n);
      FM_CUDA_CHECK_LAUNCH("sigmoid_kernel");
      return;
    case Loss::cross_entropy:
      softmax_forward<T>(logits, out, rows, cols, stream);
      return;
  }
  throw ValueError(detail::concat("loss: unknown loss code ", static_cast<int>(loss)));
}

#define FM_INSTANTIATE(T)                                                                         \
  template void loss_forward_backward<T>(Loss, const T*, const T*, const std::int32_t*, const T*, \
                                         T*, index_t, index_t, const LossParams<T>&, double*,     \
                                         cudaStream_t);                                           \
  template void loss_output<T>(Loss, const T*, T*, index_t, index_t, cudaStream_t);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cuda
