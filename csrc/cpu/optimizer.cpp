// CPU optimizer step: one pass over the flat parameter arena applying the per-element rule of
// csrc/common/optimizer.h with the regularization fused in front of it, then the per-unit
// max-norm constraint on the segments that ask for it. Adafactor adds the reductions its
// factored second moment needs (row and column means of g^2, RMS of theta and of the update).
//
// Layout: params, grads (n); state: opt_state_arrays(c) arrays of n back to back (slot j of
// element i at state[j * n + i]), or for Adafactor per segment R (rows) + C (cols) when
// factored, V (rows * cols) otherwise.
// Cost per element: 5-20 flops; bytes (float32): 8 (param r/w) + 4 (grad) + 8 per state array.
// Adafactor reads the gradient three times and the parameter twice; its state is O(rows+cols).
// Threads split the arena into contiguous chunks (elementwise, so the result does not depend
// on the split); reductions sum fixed blocks in a fixed order.
#include "cpu/optimizer.h"

#include <array>
#include <cmath>
#include <vector>

#include "common/norm.h"
#include "cpu/parallel.h"

namespace fm::cpu {
namespace {

// Reduction block of the deterministic sums (elements).
constexpr index_t kSumBlock = 4096;

// Sums K quantities over [0, len): fn(i0, i1, acc) adds the terms of [i0, i1) into acc[K].
// Blocks of kSumBlock elements are summed independently (in parallel when large) and their
// partial sums added in block order, so the result is the same for every thread count.
template <int K, class F>
std::array<double, K> blocked_sum(index_t len, F&& fn) {
  std::array<double, K> total{};
  const index_t nb = (len + kSumBlock - 1) / kSumBlock;
  if (nb <= 1) {
    fn(index_t(0), len, total.data());
    return total;
  }
  std::vector<std::array<double, K>> part(static_cast<size_t>(nb));
  const bool par = num_threads() > 1 && len >= kParallelMinElements;
#pragma omp parallel for schedule(static) if (par)
  for (index_t b = 0; b < nb; ++b) {
    part[b] = std::array<double, K>{};
    fn(b * kSumBlock, std::min(len, (b + 1) * kSumBlock), part[b].data());
  }
  for (index_t b = 0; b < nb; ++b)
    for (int q = 0; q < K; ++q) total[q] += part[b][q];
  return total;
}

// fn(c0, c1) over column blocks of at most kColumnBlock columns (parallel_column_blocks
// hands a thread several blocks at once, or all columns below its threshold): callers keep
// a fixed kColumnBlock-wide accumulator per block, each column summed in row order.
template <class F>
void column_blocks(index_t rows, index_t cols, F&& fn) {
  parallel_column_blocks(rows, cols, [&](index_t c0, index_t c1) {
    for (index_t b = c0; b < c1; b += kColumnBlock) fn(b, std::min(c1, b + kColumnBlock));
  });
}

// The segments to walk: the given ones, or the whole arena as one decaying vector.
struct SegmentList {
  const Segment* segs;
  int nseg;
  Segment whole;
};
SegmentList segment_list(const Segment* segs, int nseg, index_t n) {
  SegmentList l{segs, nseg, Segment{0, 1, n, true, false}};
  if (nseg == 0) {
    l.segs = &l.whole;
    l.nseg = n > 0 ? 1 : 0;
  }
  return l;
}

// The rule over elements [lo, hi) of one segment. k is taken by value and the arrays are
// restrict-qualified: nothing the loop stores can change a coefficient, so they stay in
// registers; with the variants A, B compile-time the loop has no branches and vectorizes.
template <class T, Opt O, bool A, bool B>
FM_CPU_CLONES void update_range(const OptCoef<T> k, T* __restrict p, const T* __restrict g,
                                T* __restrict st, index_t n, index_t lo, index_t hi, bool decay) {
  const T mult = decay ? k.decay_mult : T(1);
  const T wd = decay ? k.weight_decay : T(0), l1 = decay ? k.l1 : T(0);
  for (index_t e = lo; e < hi; ++e) {
    T pe = p[e];
    const T ge = opt_effective_grad(g[e], pe, k, wd, l1);
    pe *= mult;
    OptRule<O>::template apply<A, B>(pe, ge, st + e, n, k);
    p[e] = pe;
  }
}

// Elementwise rules: contiguous chunks of the arena, each walking the segments it overlaps.
template <class T, Opt O, bool A, bool B>
void elementwise_step(const OptCoef<T>& k, T* p, const T* g, T* st, index_t n, const Segment* segs,
                      int nseg) {
  auto run = [&](index_t i0, index_t i1) {
    for (int s = 0; s < nseg; ++s) {
      const index_t lo = std::max(i0, segs[s].offset);
      const index_t hi = std::min(i1, segs[s].offset + segs[s].rows * segs[s].cols);
      if (lo < hi) update_range<T, O, A, B>(k, p, g, st, n, lo, hi, segs[s].decay);
    }
  };
  const int nt = num_threads();
  if (nt <= 1 || n < kParallelMinElements) {
    run(0, n);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const index_t t = omp_get_thread_num(), m = omp_get_num_threads();
    run(n * t / m, n * (t + 1) / m);
  }
}

template <class T, Opt O>
void elementwise_step(const OptCoef<T>& k, T* p, const T* g, T* st, index_t n, const Segment* segs,
                      int nseg) {
  const bool a = opt_variant_a<O>(k), b = opt_variant_b<O>(k);
  if (a && b)
    elementwise_step<T, O, true, true>(k, p, g, st, n, segs, nseg);
  else if (a)
    elementwise_step<T, O, true, false>(k, p, g, st, n, segs, nseg);
  else if (b)
    elementwise_step<T, O, false, true>(k, p, g, st, n, segs, nseg);
  else
    elementwise_step<T, O, false, false>(k, p, g, st, n, segs, nseg);
}

// Adafactor's loops, each over a range of rows or elements (dispatched clones).
// Rows [r0, r1): R[i] <- lerp(R[i], mean_j g_ij^2) and row_p[i] = sum_j theta_ij^2.
template <class T>
FM_CPU_CLONES void adafactor_row_stats(const OptCoef<T> k, const T* __restrict p,
                                       const T* __restrict g, T* __restrict R,
                                       double* __restrict row_p, index_t cols, index_t r0,
                                       index_t r1, T wd, T l1, T w) {
  for (index_t i = r0; i < r1; ++i) {
    const T* pi = p + i * cols;
    const T* gi = g + i * cols;
    double s[2];
    lane_sums<double, 2>(0, cols, s, [&](index_t j, double (*acc)[kSumLanes], int l) {
      const T ge = opt_effective_grad(gi[j], pi[j], k, wd, l1);
      acc[0][l] += double(ge) * double(ge);
      acc[1][l] += double(pi[j]) * double(pi[j]);
    });
    R[i] = adafactor_lerp(R[i], T(s[0] / double(cols)), w);
    row_p[i] = s[1];
  }
}

// Columns [c0, c1) (at most kColumnBlock): C[j] <- lerp(C[j], mean_i g_ij^2), summed in row order.
template <class T>
FM_CPU_CLONES void adafactor_col_stats(const OptCoef<T> k, const T* __restrict p,
                                       const T* __restrict g, T* __restrict C, index_t rows,
                                       index_t cols, index_t c0, index_t c1, T wd, T l1, T w) {
  double acc[kColumnBlock] = {};
  for (index_t i = 0; i < rows; ++i) {
#pragma omp simd
    for (index_t j = c0; j < c1; ++j) {
      const T ge = opt_effective_grad(g[i * cols + j], p[i * cols + j], k, wd, l1);
      acc[j - c0] += double(ge) * double(ge);
    }
  }
  for (index_t j = c0; j < c1; ++j) C[j] = adafactor_lerp(C[j], T(acc[j - c0] / double(rows)), w);
}

// Rows [r0, r1): row_u[i] = sum_j U_ij^2 of the factored update.
template <class T>
FM_CPU_CLONES void adafactor_row_update_sq(const OptCoef<T> k, const T* __restrict p,
                                           const T* __restrict g, const T* __restrict R,
                                           const T* __restrict C, double* __restrict row_u,
                                           index_t cols, index_t r0, index_t r1, T wd, T l1,
                                           T r_den, T eps1) {
  for (index_t i = r0; i < r1; ++i) {
    const T ri = R[i];
    const T* pi = p + i * cols;
    const T* gi = g + i * cols;
    lane_sums<double, 1>(0, cols, row_u + i, [&](index_t j, double (*acc)[kSumLanes], int l) {
      const T ge = opt_effective_grad(gi[j], pi[j], k, wd, l1);
      const T u = adafactor_u(ge, ri * C[j] / r_den, eps1);
      acc[0][l] += double(u) * double(u);
    });
  }
}

// Rows [r0, r1): theta <- theta * mult - step * U with the factored V = R_i C_j / r_den.
template <class T>
FM_CPU_CLONES void adafactor_apply_factored(const OptCoef<T> k, T* __restrict p,
                                            const T* __restrict g, const T* __restrict R,
                                            const T* __restrict C, index_t cols, index_t r0,
                                            index_t r1, T wd, T l1, T r_den, T eps1, T mult,
                                            T step) {
  for (index_t i = r0; i < r1; ++i) {
    const T ri = R[i];
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) {
      const T pe = p[i * cols + j];
      const T ge = opt_effective_grad(g[i * cols + j], pe, k, wd, l1);
      p[i * cols + j] = pe * mult - step * adafactor_u(ge, ri * C[j] / r_den, eps1);
    }
  }
}

// Elements [i0, i1) of an unfactored segment: V updated; acc[0] += sum theta^2,
// acc[1] += sum U^2.
template <class T>
FM_CPU_CLONES void adafactor_vector_stats(const OptCoef<T> k, const T* __restrict p,
                                          const T* __restrict g, T* __restrict V, index_t i0,
                                          index_t i1, T wd, T l1, T w, T eps1, double* acc) {
  double s[2];
  lane_sums<double, 2>(i0, i1, s, [&](index_t e, double (*a)[kSumLanes], int l) {
    const T pe = p[e];
    const T ge = opt_effective_grad(g[e], pe, k, wd, l1);
    const T v = adafactor_lerp(V[e], ge * ge, w);
    V[e] = v;
    const T u = adafactor_u(ge, v, eps1);
    a[0][l] += double(pe) * double(pe);
    a[1][l] += double(u) * double(u);
  });
  acc[0] += s[0];
  acc[1] += s[1];
}

// Elements [i0, i1) of an unfactored segment: theta <- theta * mult - step * U.
template <class T>
FM_CPU_CLONES void adafactor_apply_vector(const OptCoef<T> k, T* __restrict p,
                                          const T* __restrict g, const T* __restrict V, index_t i0,
                                          index_t i1, T wd, T l1, T eps1, T mult, T step) {
#pragma omp simd
  for (index_t e = i0; e < i1; ++e) {
    const T pe = p[e];
    const T ge = opt_effective_grad(g[e], pe, k, wd, l1);
    p[e] = pe * mult - step * adafactor_u(ge, V[e], eps1);
  }
}

// Adafactor on one segment; st points at the segment's state.
template <class T>
void adafactor_segment(const OptConfig& c, const OptCoef<T>& k, T* p, const T* g, T* st,
                       const Segment& sg, std::int64_t t, double lr) {
  const index_t rows = sg.rows, cols = sg.cols, len = rows * cols;
  const bool decay = sg.decay;
  const T wd = decay ? k.weight_decay : T(0), l1 = decay ? k.l1 : T(0);
  const T w = T(std::pow(double(t), c.beta2_decay));  // 1 - beta2_t (= 1 at t = 1)
  const T eps1 = c.eps > 0 ? T(c.eps) : std::numeric_limits<T>::epsilon();
  const double rho_t = c.relative_step ? std::min(lr, 1.0 / std::sqrt(double(t))) : lr;
  double p_sq = 0.0, u_sq = 0.0;

  if (adafactor_factored(rows, cols)) {
    T* R = st;
    T* C = st + rows;
    std::vector<double> row_p(static_cast<size_t>(rows)), row_u(static_cast<size_t>(rows));
    // Row means of g^2 (one thread per row) and the squared norm of theta by rows.
    parallel_rows(rows, cols, [&](index_t r0, index_t r1) {
      adafactor_row_stats(k, p, g, R, row_p.data(), cols, r0, r1, wd, l1, w);
    });
    // Column means of g^2: each column summed by one thread, in row order.
    column_blocks(rows, cols, [&](index_t c0, index_t c1) {
      adafactor_col_stats(k, p, g, C, rows, cols, c0, c1, wd, l1, w);
    });
    double r_sum = 0.0;
    for (index_t i = 0; i < rows; ++i) {
      p_sq += row_p[i];
      r_sum += double(R[i]);
    }
    const T r_mean = T(r_sum / double(rows));
    const T r_den = r_mean > eps1 ? r_mean : eps1;
    parallel_rows(rows, cols, [&](index_t r0, index_t r1) {
      adafactor_row_update_sq(k, p, g, R, C, row_u.data(), cols, r0, r1, wd, l1, r_den, eps1);
    });
    for (index_t i = 0; i < rows; ++i) u_sq += row_u[i];
    const double rms_p = std::sqrt(p_sq / double(len)), rms_u = std::sqrt(u_sq / double(len));
    const double alpha = (c.scale_parameter ? std::max(c.eps2, rms_p) : 1.0) * rho_t;
    const T step = T(alpha / std::max(1.0, rms_u / c.clip_threshold));
    const T mult = decay ? k.decay_mult : T(1);
    parallel_rows(rows, cols, [&](index_t r0, index_t r1) {
      adafactor_apply_factored(k, p, g, R, C, cols, r0, r1, wd, l1, r_den, eps1, mult, step);
    });
    return;
  }
  // Vector: V updated and RMS(theta), RMS(U) summed in one pass, then the update.
  T* V = st;
  const auto sums = blocked_sum<2>(len, [&](index_t i0, index_t i1, double* acc) {
    adafactor_vector_stats(k, p, g, V, i0, i1, wd, l1, w, eps1, acc);
  });
  const double rms_p = std::sqrt(sums[0] / double(len)), rms_u = std::sqrt(sums[1] / double(len));
  const double alpha = (c.scale_parameter ? std::max(c.eps2, rms_p) : 1.0) * rho_t;
  const T step = T(alpha / std::max(1.0, rms_u / c.clip_threshold));
  const T mult = decay ? k.decay_mult : T(1);
  parallel_rows(len, 1, [&](index_t i0, index_t i1) {
    adafactor_apply_vector(k, p, g, V, i0, i1, wd, l1, eps1, mult, step);
  });
}

// sum of v[i]^2 over [i0, i1) in double.
template <class T>
FM_CPU_CLONES double sq_sum(const T* __restrict v, index_t i0, index_t i1) {
  double s;
  lane_sums<double, 1>(i0, i1, &s, [&](index_t i, double (*acc)[kSumLanes], int l) {
    acc[0][l] += double(v[i]) * double(v[i]);
  });
  return s;
}

// Max-norm constraint (Srivastava et al. 2014; deck 002): each unit's incoming weight vector,
// a column of the (rows, cols) block, is projected onto the ball of radius c.
template <class T>
void max_norm_segment(T* p, const Segment& sg, double c) {
  const index_t rows = sg.rows, cols = sg.cols;
  column_blocks(rows, cols, [&](index_t c0, index_t c1) {
    std::array<double, kColumnBlock> acc{};
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = c0; j < c1; ++j)
        acc[j - c0] += double(p[i * cols + j]) * double(p[i * cols + j]);
    for (index_t j = c0; j < c1; ++j) {
      const double norm = std::sqrt(acc[j - c0]);
      if (norm <= c) continue;
      const T scale = T(c / norm);
      for (index_t i = 0; i < rows; ++i) p[i * cols + j] *= scale;
    }
  });
}

}  // namespace

index_t optimizer_state_size(const OptConfig& c, const Segment* segs, int nseg, index_t n) {
  return opt_state_size(c, segs, nseg, n);
}

template <class T>
void optimizer_step(const OptConfig& c, T* params, const T* grads, T* state, const Segment* segs,
                    int nseg, index_t n, std::int64_t step, double lr, double grad_scale) {
  check_opt_config(c);
  check_opt_segments(segs, nseg, n);
  FM_CHECK(step >= 1, "step: expected the 1-based step number >= 1, got ", step);
  FM_CHECK(std::isfinite(lr) && lr >= 0, "lr: expected >= 0, got ", lr);
  FM_CHECK(std::isfinite(grad_scale) && grad_scale >= 0,
           "grad_scale: expected a finite number >= 0, got ", grad_scale);
  if (n == 0) return;
  FM_CHECK(params && grads, "params, grads: null pointer");
  FM_CHECK(state || optimizer_state_size(c, segs, nseg, n) == 0, "state: null pointer");
  const SegmentList l = segment_list(segs, nseg, n);
  const OptCoef<T> k = make_opt_coef<T>(c, step, lr, grad_scale);
  opt_dispatch(static_cast<Opt>(c.opt), [&](auto o) {
    constexpr Opt O = decltype(o)::value;
    if constexpr (OptRule<O>::kElementwise) {
      elementwise_step<T, O>(k, params, grads, state, n, l.segs, l.nseg);
    } else {
      static_assert(O == Opt::adafactor, "a rule without apply() needs its own loops here");
      index_t off = 0;
      for (int s = 0; s < l.nseg; ++s) {
        const Segment& sg = l.segs[s];
        adafactor_segment(c, k, params + sg.offset, grads + sg.offset, state + off, sg, step, lr);
        off += adafactor_factored(sg.rows, sg.cols) ? sg.rows + sg.cols : sg.rows * sg.cols;
      }
    }
  });
  if (c.max_norm > 0)
    for (int s = 0; s < l.nseg; ++s)
      if (l.segs[s].max_norm) max_norm_segment(params + l.segs[s].offset, l.segs[s], c.max_norm);
}

template <class T>
double grad_sq_norm(const T* grads, index_t n) {
  FM_CHECK(n >= 0, "n: expected >= 0, got ", n);
  return blocked_sum<1>(
      n, [&](index_t i0, index_t i1, double* acc) { acc[0] += sq_sum(grads, i0, i1); })[0];
}

namespace {
template <class T>
FM_CPU_CLONES void sum_sq_range(const T* __restrict v, index_t i0, index_t i1, double* acc) {
  double s[3];
  lane_sums<double, 3>(i0, i1, s, [&](index_t i, double (*a)[kSumLanes], int l) {
    double t[3] = {a[0][l], a[1][l], a[2][l]};
    sum_sq_add(double(v[i]), t);
    a[0][l] = t[0];
    a[1][l] = t[1];
    a[2][l] = t[2];
  });
  for (int q = 0; q < 3; ++q) acc[q] += s[q];
}
}  // namespace

template <class T>
double grad_norm(const T* grads, index_t n) {
  FM_CHECK(n >= 0, "n: expected >= 0, got ", n);
  const auto s = blocked_sum<3>(
      n, [&](index_t i0, index_t i1, double* acc) { sum_sq_range(grads, i0, i1, acc); });
  return sum_sq_norm(s.data());
}

#define FM_INSTANTIATE(T)                                                                  \
  template void optimizer_step<T>(const OptConfig&, T*, const T*, T*, const Segment*, int, \
                                  index_t, std::int64_t, double, double);                  \
  template double grad_sq_norm<T>(const T*, index_t);                                      \
  template double grad_norm<T>(const T*, index_t);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cpu
