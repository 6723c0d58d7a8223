// CUDA optimizer step: one launch over the flat parameter arena applying the per-element rule
// of csrc/common/optimizer.h with the regularization fused in front of it (deck 002), then the
// per-unit max-norm constraint on the segments that ask for it; Adafactor adds the reductions
// its factored second moment needs, in the structure of csrc/cpu/optimizer.cpp (row means of
// g^2 with the RMS of theta, column means, mean of R, RMS of the update, the update). Also the
// global gradient norm for clip-by-norm, reduced on the device.
//
// Layout: params, grads (n); state: opt_state_arrays(c) arrays of n back to back (slot j of
// element i at state[j * n + i]), or for Adafactor per segment R (rows) + C (cols) when
// factored, V (rows * cols) otherwise: the CPU's layout.
// Elementwise rules: the segments are merged into runs of equal decay flag, passed by value
// (__grid_constant__); a thread takes one group of 16 bytes of elements (4 floats or 2
// doubles) with vector loads of the parameter, the gradient and every state slot when the
// group lies inside one run and the arrays are 16-byte aligned (n a multiple of the group for
// the state slots); otherwise, and at run edges, element by element.
// Reductions (Adafactor, max-norm, gradient norm) are in double, in a fixed order, without
// floating-point atomics: every step is bit-identical from run to run.
// Cost per element: 5-20 flops; bytes (float32): 8 (param r/w) + 4 (grad) + 8 per state array;
// Adafactor reads the gradient and the parameter four times (as the CPU, the effective gradient
// is recomputed in each pass rather than stored); its state is O(rows + cols) per matrix.
// Launch counts per step: elementwise rules 1 (+1 max-norm, +2 device clip-by-norm); Adafactor
// 6 for up to 32 segments.
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "common/norm.h"
#include "cuda/common.cuh"
#include "cuda/optimizer.h"

namespace fm::cuda {
namespace {

constexpr int kOptThreads = 256;             // threads of the elementwise kernels
constexpr int kMaxRuns = 64;                 // decay runs per elementwise launch
constexpr int kMaxNormSegments = 64;         // segments per max-norm launch
constexpr int kMaxAdafactorSegments = 32;    // segments per Adafactor launch sequence
constexpr std::uintptr_t kVectorBytes = 16;  // one vector access: 4 floats or 2 doubles
constexpr int kColTile = 32;                 // columns per column-reduction block (one warp)
constexpr int kRowLanes = 8;                 // row lanes per column-reduction block
constexpr int kWarpsPerBlock = kOptThreads / kWarpSize;
constexpr index_t kAdafactorChunk = 2048;    // vector-segment elements per warp work item
constexpr int kNormThreads = 256;            // threads of the gradient-norm kernels
constexpr index_t kNormItemsPerThread = 16;  // gradient-norm grid sizing
constexpr index_t kNormMaxBlocks = 1024;     // partial sums of the gradient norm, at most

// ------------------------------------------------------------------ rule plumbing

// RMSProp addresses its optional slots through k.slot_buf / k.slot_avg; with the variants
// compile-time their values are known (make_opt_coef: buffer 1, average 2 with momentum else
// 1), and writing them as constants lets the compiler keep a thread's state in registers.
template <Opt O, bool A, bool B, class T>
__device__ __forceinline__ void static_slots(OptCoef<T>& k) {
  if constexpr (O == Opt::rmsprop) {
    k.slot_buf = 1;
    k.slot_avg = B ? 2 : 1;
  }
}

// The gradient multiplier with the device clipping factor folded in (as make_opt_coef folds
// the host one: T(+-scale)).
template <class T>
__device__ __forceinline__ void apply_device_scale(OptCoef<T>& k, const double* dev_scale,
                                                   double host_mult) {
  if (dev_scale) k.grad_mult = static_cast<T>(host_mult * *dev_scale);
}

template <class T>
struct alignas(kVectorBytes) Vec {
  static constexpr int kLanes = static_cast<int>(kVectorBytes / sizeof(T));
  T v[kLanes];
};

// Maximal runs of consecutive segments with the same decay flag.
struct RunTable {
  int count;
  index_t begin[kMaxRuns];
  index_t end[kMaxRuns];
  bool decay[kMaxRuns];
};

// The run whose begin is the last <= e (runs sorted, disjoint; e >= begin[0]).
__device__ __forceinline__ int find_run(const RunTable& t, index_t e) {
  int lo = 0, hi = t.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (t.begin[mid] <= e)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// One element, exactly the CPU's update_range body.
template <Opt O, bool A, bool B, int S, class T>
__device__ __forceinline__ void update_element(const OptCoef<T>& k, T* p, const T* g, T* st,
                                               index_t n, index_t e, bool decay) {
  const T mult = decay ? k.decay_mult : T(1);
  const T wd = decay ? k.weight_decay : T(0), l1 = decay ? k.l1 : T(0);
  T pe = p[e];
  const T ge = opt_effective_grad(g[e], pe, k, wd, l1);
  pe *= mult;
  OptRule<O>::template apply<A, B>(pe, ge, S > 0 ? st + e : static_cast<T*>(nullptr), n, k);
  p[e] = pe;
}

// Grid-stride over groups of L = kVector ? 16 / sizeof(T) : 1 elements covering the runs.
template <class T, Opt O, bool A, bool B, bool kVector>
__global__ void __launch_bounds__(kOptThreads)
    optimizer_elementwise_kernel(const __grid_constant__ OptCoef<T> coef, T* __restrict__ p,
                                 const T* __restrict__ g, T* __restrict__ st, index_t n,
                                 const __grid_constant__ RunTable runs,
                                 const double* __restrict__ dev_scale, double host_mult,
                                 const OptCoef<T>* __restrict__ dev_coef) {
  constexpr int L = kVector ? Vec<T>::kLanes : 1;
  constexpr int S = opt_slots<O, A, B>();
  // NaN device scale: the Network's "non-finite loss, skip this update" (nothing is written).
  if (dev_scale && isnan(*dev_scale)) return;
  OptCoef<T> k = dev_coef ? *dev_coef : coef;
  apply_device_scale(k, dev_scale, host_mult);
  static_slots<O, A, B>(k);
  const index_t lo = runs.begin[0], hi = runs.end[runs.count - 1];
  const index_t q1 = (hi + L - 1) / L;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  for (index_t q = lo / L + static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < q1;
       q += stride) {
    const index_t e0 = q * L;
    const int r = find_run(runs, e0 < lo ? lo : e0);
    if (kVector && e0 >= runs.begin[r] && e0 + L <= runs.end[r]) {
      const bool decay = runs.decay[r];
      const T mult = decay ? k.decay_mult : T(1);
      const T wd = decay ? k.weight_decay : T(0), l1 = decay ? k.l1 : T(0);
      Vec<T> pv = *reinterpret_cast<const Vec<T>*>(p + e0);
      const Vec<T> gv = *reinterpret_cast<const Vec<T>*>(g + e0);
      Vec<T> sv[S > 0 ? S : 1];
#pragma unroll
      for (int j = 0; j < S; ++j) sv[j] = *reinterpret_cast<const Vec<T>*>(st + j * n + e0);
#pragma unroll
      for (int l = 0; l < L; ++l) {
        T pe = pv.v[l];
        const T ge = opt_effective_grad(gv.v[l], pe, k, wd, l1);
        pe *= mult;
        T loc[S > 0 ? S : 1];
#pragma unroll
        for (int j = 0; j < S; ++j) loc[j] = sv[j].v[l];
        OptRule<O>::template apply<A, B>(pe, ge, loc, index_t(1), k);
#pragma unroll
        for (int j = 0; j < S; ++j) sv[j].v[l] = loc[j];
        pv.v[l] = pe;
      }
      *reinterpret_cast<Vec<T>*>(p + e0) = pv;
#pragma unroll
      for (int j = 0; j < S; ++j) *reinterpret_cast<Vec<T>*>(st + j * n + e0) = sv[j];
    } else {
#pragma unroll
      for (int l = 0; l < L; ++l) {
        const index_t e = e0 + l;
        if (e < lo || e >= hi) continue;
        const int re = L == 1 ? r : find_run(runs, e);
        if (e >= runs.end[re]) continue;  // a gap between segments
        update_element<O, A, B, S>(k, p, g, st, n, e, runs.decay[re]);
      }
    }
  }
}

bool vector_aligned(const void* a) {
  return reinterpret_cast<std::uintptr_t>(a) % kVectorBytes == 0;
}

struct Run {
  index_t begin, end;
  bool decay;
};

template <class T, Opt O, bool A, bool B>
void launch_elementwise(const OptCoef<T>& k, T* p, const T* g, T* st, index_t n,
                        const std::vector<Run>& runs, const double* dev_scale, double host_mult,
                        const OptCoef<T>* dev_coef, cudaStream_t stream) {
  constexpr int S = opt_slots<O, A, B>();
  constexpr int L = Vec<T>::kLanes;
  const bool vec =
      vector_aligned(p) && vector_aligned(g) && (S == 0 || (vector_aligned(st) && n % L == 0));
  for (size_t r0 = 0; r0 < runs.size(); r0 += kMaxRuns) {
    RunTable t{};
    t.count = static_cast<int>(std::min<size_t>(kMaxRuns, runs.size() - r0));
    for (int r = 0; r < t.count; ++r) {
      t.begin[r] = runs[r0 + r].begin;
      t.end[r] = runs[r0 + r].end;
      t.decay[r] = runs[r0 + r].decay;
    }
    const index_t lo = t.begin[0], hi = t.end[t.count - 1];
    if (vec) {
      const index_t groups = (hi + L - 1) / L - lo / L;
      optimizer_elementwise_kernel<T, O, A, B, true>
          <<<grid_for(groups, kOptThreads), kOptThreads, 0, stream>>>(k, p, g, st, n, t, dev_scale,
                                                                      host_mult, dev_coef);
    } else {
      optimizer_elementwise_kernel<T, O, A, B, false>
          <<<grid_for(hi - lo, kOptThreads), kOptThreads, 0, stream>>>(k, p, g, st, n, t, dev_scale,
                                                                       host_mult, dev_coef);
    }
    FM_CUDA_CHECK_LAUNCH("optimizer_elementwise_kernel");
  }
}

template <class T, Opt O>
void elementwise_step(const OptConfig& c, const OptCoef<T>& k, T* p, const T* g, T* st, index_t n,
                      const std::vector<Run>& runs, const double* dev_scale, double host_mult,
                      const OptCoef<T>* dev_coef, cudaStream_t stream) {
  using yes = std::true_type;
  using no = std::false_type;
  auto go = [&](auto ta, auto tb) {
    constexpr bool A = decltype(ta)::value, B = decltype(tb)::value;
    constexpr int slots = opt_slots<O, A, B>();
    if (slots != opt_state_arrays(c))  // the compile-time and run-time slot counts must agree
      throw std::logic_error(detail::concat("optimizer_step: ", opt_name(O), " uses ", slots,
                                            " state arrays, opt_state_arrays says ",
                                            opt_state_arrays(c)));
    launch_elementwise<T, O, A, B>(k, p, g, st, n, runs, dev_scale, host_mult, dev_coef, stream);
  };
  // Only the variants a rule has are instantiated (opt_variant_a / _b are false otherwise).
  auto with_b = [&](auto ta) {
    if constexpr (kOptHasVariantB<O>) {
      if (opt_variant_b<O>(k)) return go(ta, yes{});
    }
    go(ta, no{});
  };
  if constexpr (kOptHasVariantA<O>) {
    if (opt_variant_a<O>(k)) return with_b(yes{});
  }
  with_b(no{});
}

// ------------------------------------------------------------------ max-norm

struct NormTable {
  int count;
  index_t offset[kMaxNormSegments];
  index_t rows[kMaxNormSegments];
  index_t cols[kMaxNormSegments];
  index_t tile_begin[kMaxNormSegments + 1];  // first column tile of each segment; [count] = total
};

// Sum of the 8 row lanes of column threadIdx.x, in lane order.
__device__ __forceinline__ double lane_sum(double (*red)[kColTile + 1]) {
  double t = red[0][threadIdx.x];
#pragma unroll
  for (int r = 1; r < kRowLanes; ++r) t += red[r][threadIdx.x];
  return t;
}

// Max-norm constraint (Srivastava et al. 2014; deck 002): block (32, 8) owns 32 columns (units)
// of one segment's (rows, cols) block; each column's norm is summed over the rows in double,
// and the column is scaled onto the ball of radius c when it is outside.
template <class T>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    max_norm_kernel(T* __restrict__ p, const __grid_constant__ NormTable t, double c,
                    const double* __restrict__ dev_scale) {
  if (dev_scale && isnan(*dev_scale)) return;  // the update was skipped: leave p as it is
  __shared__ double red[kRowLanes][kColTile + 1];
  __shared__ double norm[kColTile];
  const index_t tile = blockIdx.x;
  int s = 0, hi = t.count - 1;
  while (s < hi) {
    const int mid = (s + hi + 1) / 2;
    if (t.tile_begin[mid] <= tile)
      s = mid;
    else
      hi = mid - 1;
  }
  const index_t rows = t.rows[s], cols = t.cols[s];
  const index_t j = (tile - t.tile_begin[s]) * kColTile + threadIdx.x;
  T* w = p + t.offset[s];
  double acc = 0.0;
  if (j < cols)
    for (index_t i = threadIdx.y; i < rows; i += kRowLanes) {
      const double v = static_cast<double>(w[i * cols + j]);
      acc += v * v;
    }
  red[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0) norm[threadIdx.x] = sqrt(lane_sum(red));
  __syncthreads();
  const double nm = norm[threadIdx.x];
  if (j < cols && nm > c) {
    const T scale = static_cast<T>(c / nm);
    for (index_t i = threadIdx.y; i < rows; i += kRowLanes) w[i * cols + j] *= scale;
  }
}

template <class T>
void launch_max_norm(T* p, const std::vector<Segment>& segs, double c, const double* dev_scale,
                     cudaStream_t stream) {
  std::vector<const Segment*> todo;
  for (const Segment& s : segs)
    if (s.max_norm) todo.push_back(&s);
  for (size_t s0 = 0; s0 < todo.size(); s0 += kMaxNormSegments) {
    NormTable t{};
    t.count = static_cast<int>(std::min<size_t>(kMaxNormSegments, todo.size() - s0));
    index_t tiles = 0;
    for (int s = 0; s < t.count; ++s) {
      const Segment& g = *todo[s0 + s];
      t.offset[s] = g.offset;
      t.rows[s] = g.rows;
      t.cols[s] = g.cols;
      t.tile_begin[s] = tiles;
      tiles += (g.cols + kColTile - 1) / kColTile;
    }
    t.tile_begin[t.count] = tiles;
    max_norm_kernel<T><<<static_cast<unsigned>(tiles), dim3(kColTile, kRowLanes), 0, stream>>>(
        p, t, c, dev_scale);
    FM_CUDA_CHECK_LAUNCH("max_norm_kernel");
  }
}

// ------------------------------------------------------------------ Adafactor

struct AdafactorSeg {
  index_t offset, rows, cols;  // the parameter block in the arena
  index_t state;               // its state: R (rows) then C (cols), or V (rows * cols)
  index_t items;               // row-pass work items: rows (factored) or chunks of V
  index_t item0;               // first slot of its items in the scratch arrays
  bool decay, factored;
};
struct AdafactorTable {
  int count;
  AdafactorSeg seg[kMaxAdafactorSegments];
};

// The scalars of one step (csrc/cpu/optimizer.cpp adafactor_segment).
template <class T>
struct AdafactorArgs {
  T w;     // 1 - beta2_t = t^beta2_decay
  T eps1;  // eps, or the machine epsilon of T
  double rho_t, eps2, clip_threshold;
  bool scale_parameter;
};

// Per-segment scalars in the scratch, after the items: [p_sq, r_den, step] x count.
constexpr int kSegScalars = 3;

template <class T>
struct SegCoef {
  T mult, wd, l1;
};
template <class T>
__device__ __forceinline__ SegCoef<T> seg_coef(const OptCoef<T>& k, bool decay) {
  return {decay ? k.decay_mult : T(1), decay ? k.weight_decay : T(0), decay ? k.l1 : T(0)};
}

// Pass 1, one warp per item of segment blockIdx.y. Factored: row i's sum of g^2 (R update)
// and of theta^2 (item_a). Vector: V updated over a chunk, with its sums of theta^2 (item_a)
// and of the update's square u^2 (item_b).
template <class T>
__global__ void __launch_bounds__(kOptThreads)
    adafactor_rows_kernel(const __grid_constant__ OptCoef<T> coef, const T* __restrict__ p,
                          const T* __restrict__ g, T* __restrict__ state,
                          const __grid_constant__ AdafactorTable t, AdafactorArgs<T> a,
                          const double* __restrict__ dev_scale, double host_mult,
                          double* __restrict__ item_a, double* __restrict__ item_b) {
  const AdafactorSeg& sg = t.seg[blockIdx.y];
  OptCoef<T> k = coef;
  apply_device_scale(k, dev_scale, host_mult);
  const SegCoef<T> sc = seg_coef(k, sg.decay);
  const int lane = threadIdx.x % kWarpSize;
  const index_t warps = static_cast<index_t>(gridDim.x) * kWarpsPerBlock;
  const T* ps = p + sg.offset;
  const T* gs = g + sg.offset;
  T* st = state + sg.state;
  for (index_t it = static_cast<index_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
       it < sg.items; it += warps) {
    if (sg.factored) {
      const index_t cols = sg.cols;
      double sg2 = 0.0, sp2 = 0.0;
      for (index_t j = lane; j < cols; j += kWarpSize) {
        const T pe = ps[it * cols + j];
        const T ge = opt_effective_grad(gs[it * cols + j], pe, k, sc.wd, sc.l1);
        sg2 += double(ge) * double(ge);
        sp2 += double(pe) * double(pe);
      }
      sg2 = warp_sum(sg2);
      sp2 = warp_sum(sp2);
      if (lane == 0) {
        st[it] = adafactor_lerp(st[it], T(sg2 / double(cols)), a.w);  // R_i
        item_a[sg.item0 + it] = sp2;
      }
    } else {
      const index_t len = sg.rows * sg.cols;
      const index_t e1 = (it + 1) * kAdafactorChunk < len ? (it + 1) * kAdafactorChunk : len;
      double sp2 = 0.0, su = 0.0;
      for (index_t e = it * kAdafactorChunk + lane; e < e1; e += kWarpSize) {
        const T pe = ps[e];
        const T ge = opt_effective_grad(gs[e], pe, k, sc.wd, sc.l1);
        const T v = adafactor_lerp(st[e], ge * ge, a.w);
        st[e] = v;
        const T u = adafactor_u(ge, v, a.eps1);
        sp2 += double(pe) * double(pe);
        su += double(u) * double(u);
      }
      sp2 = warp_sum(sp2);
      su = warp_sum(su);
      if (lane == 0) {
        item_a[sg.item0 + it] = sp2;
        item_b[sg.item0 + it] = su;
      }
    }
  }
}

// Pass 2, factored segments: block (32, 8) per 32 columns of segment blockIdx.y; C_j updated
// with the column mean of g^2 (each column summed over the rows in double, fixed order).
template <class T>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    adafactor_cols_kernel(const __grid_constant__ OptCoef<T> coef, const T* __restrict__ p,
                          const T* __restrict__ g, T* __restrict__ state,
                          const __grid_constant__ AdafactorTable t, AdafactorArgs<T> a,
                          const double* __restrict__ dev_scale, double host_mult) {
  __shared__ double red[kRowLanes][kColTile + 1];
  const AdafactorSeg& sg = t.seg[blockIdx.y];
  if (!sg.factored || static_cast<index_t>(blockIdx.x) * kColTile >= sg.cols) return;  // per block
  OptCoef<T> k = coef;
  apply_device_scale(k, dev_scale, host_mult);
  const SegCoef<T> sc = seg_coef(k, sg.decay);
  const index_t rows = sg.rows, cols = sg.cols;
  const index_t j = static_cast<index_t>(blockIdx.x) * kColTile + threadIdx.x;
  const T* ps = p + sg.offset;
  const T* gs = g + sg.offset;
  double acc = 0.0;
  if (j < cols)
    for (index_t i = threadIdx.y; i < rows; i += kRowLanes) {
      const T ge = opt_effective_grad(gs[i * cols + j], ps[i * cols + j], k, sc.wd, sc.l1);
      acc += double(ge) * double(ge);
    }
  red[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    T* C = state + sg.state + rows;
    C[j] = adafactor_lerp(C[j], T(lane_sum(red) / double(rows)), a.w);
  }
}

// The step size of a segment from its sums of theta^2 and u^2 (CPU: adafactor_segment).
template <class T>
__device__ __forceinline__ double adafactor_step_size(const AdafactorArgs<T>& a, double p_sq,
                                                      double u_sq, index_t len) {
  const double rms_p = sqrt(p_sq / double(len)), rms_u = sqrt(u_sq / double(len));
  const double alpha = (a.scale_parameter ? fmax(a.eps2, rms_p) : 1.0) * a.rho_t;
  return double(T(alpha / fmax(1.0, rms_u / a.clip_threshold)));
}

// Passes 3 and 5, one block per segment. kFinal = false: factored segments get
// r_den = max(mean(R), eps1) and their sum of theta^2; vector segments their step size.
// kFinal = true: factored segments get their step size from the sum of u^2 of pass 4.
template <class T, bool kFinal>
__global__ void __launch_bounds__(kOptThreads)
    adafactor_segment_kernel(const T* __restrict__ state, const __grid_constant__ AdafactorTable t,
                             AdafactorArgs<T> a, const double* __restrict__ item_a,
                             const double* __restrict__ item_b, double* __restrict__ seg) {
  __shared__ double red[kOptThreads / kWarpSize];
  const AdafactorSeg& sg = t.seg[blockIdx.x];
  double* out = seg + kSegScalars * blockIdx.x;
  if (kFinal && !sg.factored) return;  // uniform per block
  double sa = 0.0, sb = 0.0;
  for (index_t q = threadIdx.x; q < sg.items; q += blockDim.x) {
    if (!kFinal) sa += item_a[sg.item0 + q];
    if (kFinal || !sg.factored) sb += item_b[sg.item0 + q];
  }
  const index_t len = sg.rows * sg.cols;
  if (kFinal) {
    sb = block_reduce<false>(sb, red);
    if (threadIdx.x == 0) out[2] = adafactor_step_size(a, out[0], sb, len);
    return;
  }
  sa = block_reduce<false>(sa, red);
  if (sg.factored) {
    double r = 0.0;
    for (index_t i = threadIdx.x; i < sg.rows; i += blockDim.x) r += double(state[sg.state + i]);
    r = block_reduce<false>(r, red);
    if (threadIdx.x == 0) {
      const T r_mean = T(r / double(sg.rows));
      out[0] = sa;
      out[1] = double(r_mean > a.eps1 ? r_mean : a.eps1);
    }
  } else {
    sb = block_reduce<false>(sb, red);
    if (threadIdx.x == 0) {
      out[0] = sa;
      out[2] = adafactor_step_size(a, sa, sb, len);
    }
  }
}

// Pass 4, factored segments, one warp per row: the row's sum of u^2 with
// u = g / sqrt(max(R_i C_j / r_den, eps1^2)) (item_b).
template <class T>
__global__ void __launch_bounds__(kOptThreads)
    adafactor_rows_u_kernel(const __grid_constant__ OptCoef<T> coef, const T* __restrict__ p,
                            const T* __restrict__ g, const T* __restrict__ state,
                            const __grid_constant__ AdafactorTable t, AdafactorArgs<T> a,
                            const double* __restrict__ dev_scale, double host_mult,
                            const double* __restrict__ seg, double* __restrict__ item_b) {
  const AdafactorSeg& sg = t.seg[blockIdx.y];
  if (!sg.factored) return;  // uniform per block
  OptCoef<T> k = coef;
  apply_device_scale(k, dev_scale, host_mult);
  const SegCoef<T> sc = seg_coef(k, sg.decay);
  const int lane = threadIdx.x % kWarpSize;
  const index_t warps = static_cast<index_t>(gridDim.x) * kWarpsPerBlock;
  const index_t cols = sg.cols;
  const T* ps = p + sg.offset;
  const T* gs = g + sg.offset;
  const T* R = state + sg.state;
  const T* C = R + sg.rows;
  const T r_den = T(seg[kSegScalars * blockIdx.y + 1]);
  for (index_t i = static_cast<index_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
       i < sg.rows; i += warps) {
    const T ri = R[i];
    double su = 0.0;
    for (index_t j = lane; j < cols; j += kWarpSize) {
      const T ge = opt_effective_grad(gs[i * cols + j], ps[i * cols + j], k, sc.wd, sc.l1);
      const T u = adafactor_u(ge, ri * C[j] / r_den, a.eps1);
      su += double(u) * double(u);
    }
    su = warp_sum(su);
    if (lane == 0) item_b[sg.item0 + i] = su;
  }
}

// Pass 6, elementwise over segment blockIdx.y: theta <- theta (1 - lr lambda) - step * u.
template <class T>
__global__ void __launch_bounds__(kOptThreads)
    adafactor_update_kernel(const __grid_constant__ OptCoef<T> coef, T* __restrict__ p,
                            const T* __restrict__ g, const T* __restrict__ state,
                            const __grid_constant__ AdafactorTable t, AdafactorArgs<T> a,
                            const double* __restrict__ dev_scale, double host_mult,
                            const double* __restrict__ seg) {
  const AdafactorSeg& sg = t.seg[blockIdx.y];
  OptCoef<T> k = coef;
  apply_device_scale(k, dev_scale, host_mult);
  const SegCoef<T> sc = seg_coef(k, sg.decay);
  const T step = T(seg[kSegScalars * blockIdx.y + 2]);
  const index_t len = sg.rows * sg.cols, cols = sg.cols;
  T* ps = p + sg.offset;
  const T* gs = g + sg.offset;
  const T* st = state + sg.state;
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  if (sg.factored) {
    const T r_den = T(seg[kSegScalars * blockIdx.y + 1]);
    const T* C = st + sg.rows;
    for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < len;
         e += stride) {
      const index_t i = e / cols, j = e - i * cols;
      const T pe = ps[e];
      const T ge = opt_effective_grad(gs[e], pe, k, sc.wd, sc.l1);
      ps[e] = pe * sc.mult - step * adafactor_u(ge, st[i] * C[j] / r_den, a.eps1);
    }
  } else {
    for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < len;
         e += stride) {
      const T pe = ps[e];
      const T ge = opt_effective_grad(gs[e], pe, k, sc.wd, sc.l1);
      ps[e] = pe * sc.mult - step * adafactor_u(ge, st[e], a.eps1);
    }
  }
}

template <class T>
void adafactor_step(const OptConfig& c, const OptCoef<T>& k, T* p, const T* g, T* state,
                    const std::vector<Segment>& segs, std::int64_t step, double lr,
                    const double* dev_scale, double host_mult, cudaStream_t stream) {
  AdafactorArgs<T> a;
  a.w = T(std::pow(double(step), c.beta2_decay));  // 1 - beta2_t (= 1 at t = 1)
  a.eps1 = c.eps > 0 ? T(c.eps) : std::numeric_limits<T>::epsilon();
  a.rho_t = c.relative_step ? std::min(lr, 1.0 / std::sqrt(double(step))) : lr;
  a.eps2 = c.eps2;
  a.clip_threshold = c.clip_threshold;
  a.scale_parameter = c.scale_parameter;
  index_t state_off = 0;
  for (size_t s0 = 0; s0 < segs.size(); s0 += kMaxAdafactorSegments) {
    AdafactorTable t{};
    t.count = static_cast<int>(std::min<size_t>(kMaxAdafactorSegments, segs.size() - s0));
    index_t items = 0, max_items = 0, max_tiles = 0, max_len = 0, max_rows = 0;
    bool any_factored = false;
    for (int s = 0; s < t.count; ++s) {
      const Segment& g0 = segs[s0 + s];
      AdafactorSeg& sg = t.seg[s];
      sg.offset = g0.offset;
      sg.rows = g0.rows;
      sg.cols = g0.cols;
      sg.state = state_off;
      sg.decay = g0.decay;
      sg.factored = adafactor_factored(g0.rows, g0.cols);
      const index_t len = g0.rows * g0.cols;
      sg.items = sg.factored ? g0.rows : (len + kAdafactorChunk - 1) / kAdafactorChunk;
      sg.item0 = items;
      items += sg.items;
      state_off += sg.factored ? g0.rows + g0.cols : len;
      max_items = std::max(max_items, sg.items);
      max_len = std::max(max_len, len);
      if (sg.factored) {
        any_factored = true;
        max_tiles = std::max(max_tiles, (g0.cols + kColTile - 1) / kColTile);
        max_rows = std::max(max_rows, g0.rows);
      }
    }
    Scratch scratch(sizeof(double) * (2 * items + kSegScalars * t.count), stream);
    double* item_a = scratch.as<double>();
    double* item_b = item_a + items;
    double* seg = item_b + items;
    const unsigned nseg = static_cast<unsigned>(t.count);
    const dim3 rows_grid(grid_for(max_items * kWarpSize, kOptThreads), nseg);
    adafactor_rows_kernel<T><<<rows_grid, kOptThreads, 0, stream>>>(k, p, g, state, t, a, dev_scale,
                                                                    host_mult, item_a, item_b);
    FM_CUDA_CHECK_LAUNCH("adafactor_rows_kernel");
    if (any_factored) {
      adafactor_cols_kernel<T>
          <<<dim3(static_cast<unsigned>(max_tiles), nseg), dim3(kColTile, kRowLanes), 0, stream>>>(
              k, p, g, state, t, a, dev_scale, host_mult);
      FM_CUDA_CHECK_LAUNCH("adafactor_cols_kernel");
    }
    adafactor_segment_kernel<T, false>
        <<<nseg, kOptThreads, 0, stream>>>(state, t, a, item_a, item_b, seg);
    FM_CUDA_CHECK_LAUNCH("adafactor_segment_kernel");
    if (any_factored) {
      const dim3 u_grid(grid_for(max_rows * kWarpSize, kOptThreads), nseg);
      adafactor_rows_u_kernel<T><<<u_grid, kOptThreads, 0, stream>>>(
          k, p, g, state, t, a, dev_scale, host_mult, seg, item_b);
      FM_CUDA_CHECK_LAUNCH("adafactor_rows_u_kernel");
      adafactor_segment_kernel<T, true>
          <<<nseg, kOptThreads, 0, stream>>>(state, t, a, item_a, item_b, seg);
      FM_CUDA_CHECK_LAUNCH("adafactor_segment_kernel");
    }
    const dim3 update_grid(grid_for(max_len, kOptThreads), nseg);
    adafactor_update_kernel<T>
        <<<update_grid, kOptThreads, 0, stream>>>(k, p, g, state, t, a, dev_scale, host_mult, seg);
    FM_CUDA_CHECK_LAUNCH("adafactor_update_kernel");
  }
}

// ------------------------------------------------------------------ gradient norm

// part[3 * blockIdx.x + q] = the block's grid-stride share of Blue's three scaled sums of
// squares (common/norm.h), in double.
template <class T>
__global__ void __launch_bounds__(kNormThreads)
    grad_sq_partial_kernel(const T* __restrict__ g, index_t n, double* __restrict__ part) {
  __shared__ double red[kNormThreads / kWarpSize];
  const index_t stride = static_cast<index_t>(gridDim.x) * blockDim.x;
  double s[3] = {0.0, 0.0, 0.0};
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    sum_sq_add(static_cast<double>(g[e]), s);
  for (int q = 0; q < 3; ++q) {
    const double t = block_reduce<false>(s[q], red);
    if (threadIdx.x == 0) part[3 * blockIdx.x + q] = t;  // block_reduce syncs before reuse
  }
}

// The partials added by one block in a fixed order; the norm without overflow
// (sum_sq_norm), its square and the clipping factor.
__global__ void __launch_bounds__(kNormThreads)
    grad_sq_finish_kernel(const double* __restrict__ part, index_t parts, double max_norm,
                          double* __restrict__ sq_norm, double* __restrict__ clip_scale) {
  __shared__ double red[kNormThreads / kWarpSize];
  double total[3];
  for (int q = 0; q < 3; ++q) {
    double s = 0.0;
    for (index_t b = threadIdx.x; b < parts; b += blockDim.x) s += part[3 * b + q];
    total[q] = block_reduce<false>(s, red);
  }
  if (threadIdx.x == 0) {
    const double norm = sum_sq_norm(total);
    if (sq_norm) *sq_norm = norm * norm;
    if (clip_scale) *clip_scale = clip_norm_scale(norm, max_norm);
  }
}

}  // namespace

template <class T>
void optimizer_step(const OptConfig& c, T* params, const T* grads, T* state, const Segment* segs,
                    int nseg, index_t n, std::int64_t step, double lr, double grad_scale,
                    const double* device_grad_scale, cudaStream_t stream,
                    const OptCoef<T>* device_coef) {
  const index_t state_size = opt_state_size(c, segs, nseg, n);  // checks c and the segments
  FM_CHECK(step >= 1, "step: expected the 1-based step number >= 1, got ", step);
  FM_CHECK(std::isfinite(lr) && lr >= 0, "lr: expected >= 0, got ", lr);
  FM_CHECK(std::isfinite(grad_scale) && grad_scale >= 0,
           "grad_scale: expected a finite number >= 0, got ", grad_scale);
  if (n == 0) return;
  FM_CHECK(params && grads, "params, grads: null pointer");
  FM_CHECK(state || state_size == 0, "state: null pointer");
  std::vector<Segment> list(segs, segs + nseg);
  if (nseg == 0) list.push_back(Segment{0, 1, n, true, false});
  const OptCoef<T> k = make_opt_coef<T>(c, step, lr, grad_scale);
  const double host_mult = c.maximize ? -grad_scale : grad_scale;
  const Opt o = static_cast<Opt>(c.opt);
  FM_CHECK(!device_coef || o != Opt::adafactor,
           "optimizer_step: Adafactor's step scalars are computed on the host (no device_coef)");
  if (o == Opt::adafactor) {
    adafactor_step(c, k, params, grads, state, list, step, lr, device_grad_scale, host_mult,
                   stream);
  } else {
    std::vector<Run> runs;
    for (const Segment& s : list) {
      const index_t end = s.offset + s.rows * s.cols;
      if (!runs.empty() && runs.back().end == s.offset && runs.back().decay == s.decay)
        runs.back().end = end;
      else
        runs.push_back(Run{s.offset, end, s.decay});
    }
    opt_dispatch(o, [&](auto r) {
      constexpr Opt O = decltype(r)::value;
      if constexpr (OptRule<O>::kElementwise)
        elementwise_step<T, O>(c, k, params, grads, state, n, runs, device_grad_scale, host_mult,
                               device_coef, stream);
    });
  }
  if (c.max_norm > 0) launch_max_norm(params, list, c.max_norm, device_grad_scale, stream);
}

template <class T>
void grad_sq_norm(const T* grads, index_t n, double* sq_norm, double* clip_scale, double max_norm,
                  cudaStream_t stream) {
  FM_CHECK(n >= 0, "n: expected >= 0, got ", n);
  FM_CHECK(!clip_scale || (std::isfinite(max_norm) && max_norm > 0),
           "max_norm: expected a finite value > 0, got ", max_norm);
  if (!sq_norm && !clip_scale) return;
  // The partition depends on n only, so the sum is the same on every device.
  index_t blocks =
      (n + kNormThreads * kNormItemsPerThread - 1) / (kNormThreads * kNormItemsPerThread);
  if (blocks > kNormMaxBlocks) blocks = kNormMaxBlocks;
  if (blocks < 1) blocks = 1;
  Scratch part(sizeof(double) * 3 * blocks, stream);
  grad_sq_partial_kernel<T>
      <<<static_cast<unsigned>(blocks), kNormThreads, 0, stream>>>(grads, n, part.as<double>());
  FM_CUDA_CHECK_LAUNCH("grad_sq_partial_kernel");
  grad_sq_finish_kernel<<<1, kNormThreads, 0, stream>>>(part.as<double>(), blocks, max_norm,
                                                        sq_norm, clip_scale);
  FM_CUDA_CHECK_LAUNCH("grad_sq_finish_kernel");
}

#define FM_INSTANTIATE(T)                                                                  \
  template void optimizer_step<T>(const OptConfig&, T*, const T*, T*, const Segment*, int, \
                                  index_t, std::int64_t, double, double, const double*,    \
                                  cudaStream_t, const OptCoef<T>*);                        \
  template void grad_sq_norm<T>(const T*, index_t, double*, double*, double, cudaStream_t);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cuda
