// CPU activation kernels: elementwise forward/derivative/backward for every activation of
// csrc/common/activation.h, plus the row ops softmax and maxout.
// Layout: (rows, cols) row-major, cols = units. Cost per element: one formula evaluation,
// 8-16 bytes moved (float32 / float64) forward, 12-24 backward.
#include "cpu/activation.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/parallel.h"

namespace fm::cpu {

namespace {

// The loops of each kernel over a range of rows or a column block, as dispatched clones
// (FM_CPU_CLONES); the public functions below validate, pick the activation and split the work.
// out = f(z) (Derivative = false) or f'(z) (true), row by row.
template <class T, Act A, bool Derivative>
FM_CPU_CLONES void eval_rows(const T* z, T* out, index_t cols, index_t r0, index_t r1,
                             const ActParams<T>& p) {
  for (index_t i = r0; i < r1; ++i) {
    const T* zi = z + i * cols;
    T* oi = out + i * cols;
    const index_t base = i * cols;
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) {
      if constexpr (Derivative)
        oi[j] = ActFn<A>::df(zi[j], p, j, base + j);
      else
        oi[j] = ActFn<A>::f(zi[j], p, j, base + j);
    }
  }
}

template <class T, Act A>
FM_CPU_CLONES void backward_rows(const T* z, const T* dy, T* dz, index_t cols, index_t r0,
                                 index_t r1, const ActParams<T>& p) {
  for (index_t i = r0; i < r1; ++i) {
    const index_t base = i * cols;
#pragma omp simd
    for (index_t j = 0; j < cols; ++j)
      dz[base + j] = dy[base + j] * ActFn<A>::df(z[base + j], p, j, base + j);
  }
}

// Columns [c0, c1) of the backward pass with its sums (bias, learnable parameters), each
// column summed in row order.
template <class T, Act A>
FM_CPU_CLONES void backward_columns(const T* z, const T* dy, T* dz, T* dbias, T* dparams,
                                    index_t rows, index_t cols, index_t c0, index_t c1, int np,
                                    const ActParams<T>& p) {
  constexpr bool kLearnable = ActLearnable<A>::value;
  if (dbias) std::fill(dbias + c0, dbias + c1, T(0));
  if constexpr (kLearnable) {
    if (dparams)
      for (int k = 0; k < np; ++k)
        std::fill(dparams + k * cols + c0, dparams + k * cols + c1, T(0));
  }
  for (index_t i = 0; i < rows; ++i) {
    const index_t base = i * cols;
    if constexpr (kLearnable) {
      if (dparams) {
        for (index_t j = c0; j < c1; ++j) {
          const T zz = z[base + j], g = dy[base + j];
          ActFn<A>::dparam(zz, g, p, j, dparams);
          dz[base + j] = g * ActFn<A>::df(zz, p, j, base + j);
          if (dbias) dbias[j] += dz[base + j];
        }
        continue;
      }
    }
    // Two vectorized passes over the cache-resident row block: dZ, then the bias sums
    // (the same row order as one fused pass, so the sums are unchanged).
#pragma omp simd
    for (index_t j = c0; j < c1; ++j)
      dz[base + j] = dy[base + j] * ActFn<A>::df(z[base + j], p, j, base + j);
    if (dbias) {
#pragma omp simd
      for (index_t j = c0; j < c1; ++j) dbias[j] += dz[base + j];
    }
  }
}

template <class T>
FM_CPU_CLONES void softmax_rows(const T* z, T* y, index_t cols, index_t r0, index_t r1) {
  for (index_t i = r0; i < r1; ++i) {
    const T* zi = z + i * cols;
    T* yi = y + i * cols;
    T m = zi[0];
    for (index_t j = 1; j < cols; ++j) m = std::max(m, zi[j]);
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) yi[j] = fexp(zi[j] - m);
    T s;
    lane_sums<T, 1>(0, cols, &s, [&](index_t j, T(*acc)[kSumLanes], int l) { acc[0][l] += yi[j]; });
    const T inv = T(1) / s;
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) yi[j] *= inv;
  }
}

template <class T>
FM_CPU_CLONES void softmax_backward_rows(const T* y, const T* dy, T* dz, index_t cols, index_t r0,
                                         index_t r1) {
  for (index_t i = r0; i < r1; ++i) {
    const T* yi = y + i * cols;
    const T* gi = dy + i * cols;
    T* di = dz + i * cols;
    T s;
    lane_sums<T, 1>(0, cols, &s,
                    [&](index_t j, T(*acc)[kSumLanes], int l) { acc[0][l] += gi[j] * yi[j]; });
#pragma omp simd
    for (index_t j = 0; j < cols; ++j) di[j] = yi[j] * (gi[j] - s);
  }
}

}  // namespace

template <class T>
void activation_forward(Act a, const T* z, T* y, index_t rows, index_t cols,
                        const ActParams<T>& p) {
  act_dispatch(a, [&](auto tag) {
    constexpr Act A = decltype(tag)::value;
    parallel_rows(rows, cols,
                  [&](index_t r0, index_t r1) { eval_rows<T, A, false>(z, y, cols, r0, r1, p); });
  });
}

template <class T>
void activation_derivative(Act a, const T* z, T* g, index_t rows, index_t cols,
                           const ActParams<T>& p) {
  act_dispatch(a, [&](auto tag) {
    constexpr Act A = decltype(tag)::value;
    parallel_rows(rows, cols,
                  [&](index_t r0, index_t r1) { eval_rows<T, A, true>(z, g, cols, r0, r1, p); });
  });
}

template <class T>
void activation_backward(Act a, const T* z, const T* dy, T* dz, T* dbias, T* dparams, index_t rows,
                         index_t cols, const ActParams<T>& p) {
  act_dispatch(a, [&](auto tag) {
    constexpr Act A = decltype(tag)::value;
    constexpr bool kLearnable = ActLearnable<A>::value;
    const int np = act_num_params(A, p.hinges);
    if (!dbias && !(kLearnable && dparams)) {
      // Pure elementwise: split by rows.
      parallel_rows(rows, cols, [&](index_t r0, index_t r1) {
        backward_rows<T, A>(z, dy, dz, cols, r0, r1, p);
      });
      return;
    }
    // With reductions: split by column blocks so every sum has one owner (deterministic).
    parallel_column_blocks(rows, cols, [&](index_t c0, index_t c1) {
      backward_columns<T, A>(z, dy, dz, dbias, dparams, rows, cols, c0, c1, np, p);
    });
  });
}

template <class T>
void softmax_forward(const T* z, T* y, index_t rows, index_t cols) {
  parallel_rows(rows, cols, [&](index_t r0, index_t r1) { softmax_rows(z, y, cols, r0, r1); });
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dz, index_t rows, index_t cols) {
  parallel_rows(rows, cols,
                [&](index_t r0, index_t r1) { softmax_backward_rows(y, dy, dz, cols, r0, r1); });
}

template <class T>
void maxout_forward(const T* z, T* y, index_t rows, index_t units, index_t pieces) {
  parallel_rows(rows, units * pieces, [&](index_t r0, index_t r1) {
    for (index_t i = r0; i < r1; ++i)
      for (index_t u = 0; u < units; ++u) {
        const T* g = z + (i * units + u) * pieces;
        T m = g[0];
        for (index_t k = 1; k < pieces; ++k) m = g[k] > m ? g[k] : m;
        y[i * units + u] = m;
      }
  });
}

template <class T>
void maxout_backward(const T* z, const T* dy, T* dz, index_t rows, index_t units, index_t pieces) {
  parallel_rows(rows, units * pieces, [&](index_t r0, index_t r1) {
    for (index_t i = r0; i < r1; ++i)
      for (index_t u = 0; u < units; ++u) {
        const T* g = z + (i * units + u) * pieces;
        T* d = dz + (i * units + u) * pieces;
        index_t best = 0;
        for (index_t k = 1; k < pieces; ++k)
          if (g[k] > g[best]) best = k;
        for (index_t k = 0; k < pieces; ++k) d[k] = T(0);
        d[best] = dy[i * units + u];
      }
  });
}

#define FM_INSTANTIATE(T)                                                                        \
  template void activation_forward<T>(Act, const T*, T*, index_t, index_t, const ActParams<T>&); \
  template void activation_derivative<T>(Act, const T*, T*, index_t, index_t,                    \
                                         const ActParams<T>&);                                   \
  template void activation_backward<T>(Act, const T*, const T*, T*, T*, T*, index_t, index_t,    \
                                       const ActParams<T>&);                                     \
  template void softmax_forward<T>(const T*, T*, index_t, index_t);                              \
  template void softmax_backward<T>(const T*, const T*, T*, index_t, index_t);                   \
  template void maxout_forward<T>(const T*, T*, index_t, index_t, index_t);                      \
  template void maxout_backward<T>(const T*, const T*, T*, index_t, index_t, index_t);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cpu
