// Row-major GEMM through OpenBLAS from the scipy-openblas32 wheel (scipy_cblas_* symbols,
// 32-bit integers): C = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n.
// Cost: 2 m n k flops; A, B read once per panel, C read and written once.
#pragma once

#include <cblas.h>

#include <omp.h>

#include <algorithm>
#include <limits>

#include "common/macros.h"

namespace fm::cpu {

inline blasint blas_dim(index_t v, const char* what) {
  FM_CHECK(v >= 0 && v <= std::numeric_limits<blasint>::max(), what, " = ", v,
           " does not fit the 32-bit BLAS interface");
  return static_cast<blasint>(v);
}

inline void blas_call(bool ta, bool tb, index_t m, index_t n, index_t k, float alpha, const float* A,
                      index_t lda, const float* B, index_t ldb, float beta, float* C, index_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    blas_dim(m, "m"), blas_dim(n, "n"), blas_dim(k, "k"), alpha, A,
                    blas_dim(lda, "lda"), B, blas_dim(ldb, "ldb"), beta, C, blas_dim(ldc, "ldc"));
}

inline void blas_call(bool ta, bool tb, index_t m, index_t n, index_t k, double alpha,
                      const double* A, index_t lda, const double* B, index_t ldb, double beta,
                      double* C, index_t ldc) {
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    blas_dim(m, "m"), blas_dim(n, "n"), blas_dim(k, "k"), alpha, A,
                    blas_dim(lda, "lda"), B, blas_dim(ldb, "ldb"), beta, C, blas_dim(ldc, "ldc"));
}

// One thread pool for the whole step. OpenBLAS runs single-threaded (set at import) and a GEMM
// big enough to pay for a fork/join is split here over the OpenMP threads: C by column blocks
// (or row blocks when it is taller than wide), each block one single-threaded BLAS call with
// the full k. Why: OpenBLAS's own pthreads pool and OpenMP's spin-waiting threads otherwise
// compete for the same cores after every GEMM; on 2 cores that made a small network's step
// 10-40x slower at 2 threads than at 1 (bench/NOTES.md).
//
// The blocks are a function of the shape (m, n, k) alone, never of the thread count: one
// thread runs the same BLAS calls in turn that several threads run side by side. Why:
// OpenBLAS sums an element of C in an order that depends on the shape of the call it is in
// (its kernels are picked by m and n, and the Haswell sgemm rounds a row by its position
// modulo 24), so blocks that moved with the thread count made training results depend on it
// (a 64-512-10 model ended 2.6e-3 apart at 1 and 2 threads, issue 14). k is never split.
//
// The block sizes trade the one-thread cost (every block is one more BLAS call re-packing the
// shared operand) against parallelism. Measured on 2 cores, 2 threads, quiet machine (min of
// 150 steps, ms): the thread-count split before this change gave mnist-mlp 0.86-0.90 and
// wide 21-22; 128-wide / 25 MFLOP blocks 1.03-1.12 and 24-26 (mnist-mlp's 256x256 layer ran
// on one thread); 128 / 8 MFLOP 0.90-0.93 and 23-25; 64 / 8 MFLOP 0.94-0.99 and 26-27.
constexpr double kParallelGemmFlops = 1.0e6;  // below: one call on the calling thread
constexpr double kGemmBlockFlops = 8.0e6;     // about this much work per block above it
constexpr index_t kGemmMinBlock = 128;        // no block narrower
constexpr index_t kGemmSplitAlign = 16;       // block edges on 64-byte float boundaries

inline void set_blas_threads(int n) { scipy_openblas_set_num_threads(n); }
inline int blas_threads() { return scipy_openblas_get_num_threads(); }

// OpenBLAS must stay single-threaded (above), but anything in the process may raise its thread
// count after import: threadpoolctl does for every BLAS it finds (scikit-learn uses it, and so
// did our own benchmarks' thread setup), and then every GEMM woke OpenBLAS's pool next to the
// OpenMP threads. A read of its setting per GEMM (a global) puts it back; never inside a
// parallel region, where the blocks' own calls run.
inline void keep_blas_single_threaded() {
  if (!omp_in_parallel() && blas_threads() != 1) set_blas_threads(1);
}

template <class T>
void gemm(bool ta, bool tb, index_t m, index_t n, index_t k, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  if (m == 0 || n == 0) return;
  keep_blas_single_threaded();
  const double flops = 2.0 * double(m) * double(n) * double(k);
  const bool split_cols = n >= m;
  const index_t extent = split_cols ? n : m;
  const index_t parts =
      flops < kParallelGemmFlops
          ? 1
          : std::max<index_t>(1, std::min<index_t>(extent / kGemmMinBlock,
                                                   static_cast<index_t>(flops / kGemmBlockFlops)));
  if (parts < 2) {
    blas_call(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Block b: [e(b), e(b + 1)) of the split dimension, edges on kGemmSplitAlign.
  const index_t units = (extent + kGemmSplitAlign - 1) / kGemmSplitAlign;
  auto block = [&](index_t b) {
    const index_t e0 = std::min(extent, units * b / parts * kGemmSplitAlign);
    const index_t e1 = std::min(extent, units * (b + 1) / parts * kGemmSplitAlign);
    if (e0 >= e1) return;
    if (split_cols) {
      // op(B)[:, e0:e1]: columns of B, or rows of B when it is transposed.
      const T* Bp = tb ? B + e0 * ldb : B + e0;
      blas_call(ta, tb, m, e1 - e0, k, alpha, A, lda, Bp, ldb, beta, C + e0, ldc);
    } else {
      // op(A)[e0:e1, :]: rows of A, or columns of A when it is transposed.
      const T* Ap = ta ? A + e0 : A + e0 * lda;
      blas_call(ta, tb, e1 - e0, n, k, alpha, Ap, lda, B, ldb, beta, C + e0 * ldc, ldc);
    }
  };
  const int nt = omp_get_max_threads();
  if (nt < 2 || omp_in_parallel()) {
    for (index_t b = 0; b < parts; ++b) block(b);
    return;
  }
  // Checked here: an exception must not leave the parallel region.
  blas_dim(m, "m"), blas_dim(n, "n"), blas_dim(k, "k");
  blas_dim(lda, "lda"), blas_dim(ldb, "ldb"), blas_dim(ldc, "ldc");
  const int threads = static_cast<int>(std::min<index_t>(nt, parts));
#pragma omp parallel for schedule(static) num_threads(threads)
  for (index_t b = 0; b < parts; ++b) block(b);
}

}  // namespace fm::cpu
