// Batch-invariant inference GEMM (see gemm_rows.h for the summation order it guarantees).
//
// Layout: B is first copied into column panels of NB = W * NV columns, panel q holding
// B[:, q NB : q NB + NB] as k rows of NB contiguous values (the last panel is narrower,
// rounded up to a multiple of W and zero-padded). The micro-kernel keeps an R x NB block of C
// (R <= 4 rows) in NV vector registers per row and, for p = 0 .. k-1 in order, adds
// a_ip * b_p,panel to every row: one multiply and one add per element, the same for each of
// the R rows, for a 1-row remainder block, and for a zero-padded column. Widths (W floats per
// register) and NV differ per instruction set; the per-element operations do not.
#include "cpu/gemm_rows.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "cpu/parallel.h"

#if defined(FM_CPU_DISPATCH) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FM_GEMM_DISPATCH 1
#endif

#define FM_GEMM_INLINE inline __attribute__((always_inline))

namespace fm::cpu {
namespace {

// Rows per cache block: 64 rows of A (256 KB at k = 1024 floats) stay in L2 while every panel
// of B passes over them.
constexpr index_t kRowBlock = 64;
// Below this many flops the call stays on the calling thread (a fork/join costs ~1-3 us).
constexpr double kParallelFlops = 1.0e6;

template <class T, int W>
struct Vec {
  typedef T type __attribute__((vector_size(W * sizeof(T))));
};

// C[0:R, 0:cols] (+)= A[0:R, :] P, P a packed panel of width ps = NV W >= cols.
template <class T, int W, int NV, int R>
FM_GEMM_INLINE void micro(const T* A, index_t lda, const T* P, index_t k, const T* bias, T* C,
                          index_t ldc, index_t cols) {
  using V = typename Vec<T, W>::type;
  constexpr index_t ps = index_t(NV) * W;
  V s[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) s[r][v] = V{};
  for (index_t p = 0; p < k; ++p) {
    V b[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&b[v], P + p * ps + v * W, sizeof(V));
    for (int r = 0; r < R; ++r) {
      const T a = A[r * lda + p];
      for (int v = 0; v < NV; ++v) s[r][v] = s[r][v] + a * b[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    T* c = C + r * ldc;
    for (int v = 0; v < NV; ++v) {
      const index_t j0 = index_t(v) * W;
      V out = s[r][v];
      if (j0 + W <= cols) {
        if (bias) {
          V bv;
          std::memcpy(&bv, bias + j0, sizeof(V));
          out = out + bv;
        }
        std::memcpy(c + j0, &out, sizeof(V));
      } else {
        T lanes[W];
        std::memcpy(lanes, &out, sizeof(V));
        for (index_t j = j0; j < cols; ++j) c[j] = bias ? lanes[j - j0] + bias[j] : lanes[j - j0];
      }
    }
  }
}

// The last panel holds nv < NV vectors: the instantiation with exactly nv.
template <class T, int W, int NV, int R>
FM_GEMM_INLINE void micro_nv(int nv, const T* A, index_t lda, const T* P, index_t k, const T* bias,
                             T* C, index_t ldc, index_t cols) {
  if constexpr (NV > 1) {
    if (nv < NV) {
      micro_nv<T, W, NV - 1, R>(nv, A, lda, P, k, bias, C, ldc, cols);
      return;
    }
  }
  micro<T, W, NV, R>(A, lda, P, k, bias, C, ldc, cols);
}

// Rows [r0, r1) of C from the packed panels Pk.
template <class T, int W, int NV>
FM_GEMM_INLINE void rows_kernel(const T* A, index_t lda, const T* Pk, index_t k, index_t n,
                                const T* bias, T* C, index_t ldc, index_t r0, index_t r1) {
  constexpr index_t NB = index_t(W) * NV;
  for (index_t c0 = r0; c0 < r1; c0 += kRowBlock) {
    const index_t c1 = std::min(r1, c0 + kRowBlock);
    for (index_t j0 = 0; j0 < n; j0 += NB) {
      const index_t cols = std::min(NB, n - j0);
      const int nv = static_cast<int>((cols + W - 1) / W);
      const T* P = Pk + j0 * k;  // every earlier panel is NB wide
      const T* bj = bias ? bias + j0 : nullptr;
      for (index_t i = c0; i < c1; i += 4) {
        const T* Ai = A + i * lda;
        T* Ci = C + i * ldc + j0;
        switch (std::min<index_t>(4, c1 - i)) {
          case 4:
            micro_nv<T, W, NV, 4>(nv, Ai, lda, P, k, bj, Ci, ldc, cols);
            break;
          case 3:
            micro_nv<T, W, NV, 3>(nv, Ai, lda, P, k, bj, Ci, ldc, cols);
            break;
          case 2:
            micro_nv<T, W, NV, 2>(nv, Ai, lda, P, k, bj, Ci, ldc, cols);
            break;
          default:
            micro_nv<T, W, NV, 1>(nv, Ai, lda, P, k, bj, Ci, ldc, cols);
            break;
        }
      }
    }
  }
}

template <class T>
using RowsFn = void (*)(const T*, index_t, const T*, index_t, index_t, const T*, T*, index_t,
                        index_t, index_t);

// One instruction set's kernel: its register width W (elements), panel width NB = W NV.
template <class T>
struct Variant {
  RowsFn<T> rows;
  index_t W, NB;
};

// Widths of the variant compiled for the build's own target (all of them in a
// FUSEDMLP_NATIVE build; the SSE baseline in a portable one).
#if defined(__AVX512F__)
constexpr int kBaseBytes = 64, kBaseNV = 4;
#elif defined(__AVX2__)
constexpr int kBaseBytes = 32, kBaseNV = 2;
#else
constexpr int kBaseBytes = 16, kBaseNV = 2;
#endif

template <class T>
void rows_base(const T* A, index_t lda, const T* Pk, index_t k, index_t n, const T* bias, T* C,
               index_t ldc, index_t r0, index_t r1) {
  rows_kernel<T, kBaseBytes / sizeof(T), kBaseNV>(A, lda, Pk, k, n, bias, C, ldc, r0, r1);
}

#ifdef FM_GEMM_DISPATCH
// 16 (AVX-512) or 8 (AVX2) accumulator registers of 4 rows x NV vectors, plus the NV loaded
// values of B and the broadcast element of A: within the 32 / 16 registers each set has.
template <class T>
__attribute__((target("avx512f"))) void rows_avx512(const T* A, index_t lda, const T* Pk, index_t k,
                                                    index_t n, const T* bias, T* C, index_t ldc,
                                                    index_t r0, index_t r1) {
  rows_kernel<T, 64 / sizeof(T), 4>(A, lda, Pk, k, n, bias, C, ldc, r0, r1);
}

template <class T>
__attribute__((target("avx2"))) void rows_avx2(const T* A, index_t lda, const T* Pk, index_t k,
                                               index_t n, const T* bias, T* C, index_t ldc,
                                               index_t r0, index_t r1) {
  rows_kernel<T, 32 / sizeof(T), 2>(A, lda, Pk, k, n, bias, C, ldc, r0, r1);
}
#endif

template <class T>
Variant<T> pick_variant() {
#ifdef FM_GEMM_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    return {&rows_avx512<T>, 64 / sizeof(T), 4 * 64 / sizeof(T)};
  if (__builtin_cpu_supports("avx2")) return {&rows_avx2<T>, 32 / sizeof(T), 2 * 32 / sizeof(T)};
#endif
  return {&rows_base<T>, kBaseBytes / sizeof(T), kBaseNV * (kBaseBytes / sizeof(T))};
}

template <class T>
const Variant<T>& variant() {
  static const Variant<T> v = pick_variant<T>();
  return v;
}

// Panels [q0, q1) of B into Pk (layout above), zero-padding the last one to a multiple of W.
template <class T>
void pack_panels(const T* B, index_t ldb, bool b_trans, index_t k, index_t n, index_t W, index_t NB,
                 T* Pk, index_t q0, index_t q1) {
  for (index_t q = q0; q < q1; ++q) {
    const index_t j0 = q * NB, cols = std::min(NB, n - j0);
    const index_t ps = (cols + W - 1) / W * W;
    T* dst = Pk + j0 * k;
    for (index_t p = 0; p < k; ++p) {
      T* d = dst + p * ps;
      if (b_trans) {
        for (index_t j = 0; j < cols; ++j) d[j] = B[(j0 + j) * ldb + p];
      } else {
        std::memcpy(d, B + p * ldb + j0, sizeof(T) * cols);
      }
      std::fill(d + cols, d + ps, T(0));
    }
  }
}

}  // namespace

template <class T>
void gemm_rows(index_t m, index_t n, index_t k, const T* A, index_t lda, const T* B, index_t ldb,
               bool b_trans, const T* bias, T* C, index_t ldc) {
  if (m <= 0 || n <= 0) return;
  const Variant<T>& v = variant<T>();
  const index_t panels = (n + v.NB - 1) / v.NB;
  const index_t width = (n + v.W - 1) / v.W * v.W;
  std::unique_ptr<T[]> Pk(new T[static_cast<size_t>(width * k)]);
  const int nt = num_threads();
  if (nt <= 1 || omp_in_parallel() || m < 8 ||
      2.0 * double(m) * double(n) * double(k) < kParallelFlops) {
    pack_panels(B, ldb, b_trans, k, n, v.W, v.NB, Pk.get(), 0, panels);
    v.rows(A, lda, Pk.get(), k, n, bias, C, ldc, 0, m);
    return;
  }
  // Rows split evenly over the threads (on 4-row edges): the split changes which thread
  // computes a row, never how.
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static)
    for (index_t q = 0; q < panels; ++q)
      pack_panels(B, ldb, b_trans, k, n, v.W, v.NB, Pk.get(), q, q + 1);
    // (implicit barrier: every panel is packed before any row uses it)
    const index_t t = omp_get_thread_num(), np = omp_get_num_threads();
    const index_t quads = (m + 3) / 4;
    const index_t r0 = std::min(m, quads * t / np * 4), r1 = std::min(m, quads * (t + 1) / np * 4);
    if (r0 < r1) v.rows(A, lda, Pk.get(), k, n, bias, C, ldc, r0, r1);
  }
}

template void gemm_rows<float>(index_t, index_t, index_t, const float*, index_t, const float*,
                               index_t, bool, const float*, float*, index_t);
template void gemm_rows<double>(index_t, index_t, index_t, const double*, index_t, const double*,
                                index_t, bool, const double*, double*, index_t);

}  // namespace fm::cpu
