// Row-major GEMM through OpenBLAS from the scipy-openblas32 wheel (scipy_cblas_* symbols,
// 32-bit integers): C = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n.
// Cost: 2 m n k flops; A, B read once per panel, C read and written once.
#pragma once

#include <cblas.h>

#include <limits>

#include "common/macros.h"

namespace fm::cpu {

inline blasint blas_dim(index_t v, const char* what) {
  FM_CHECK(v >= 0 && v <= std::numeric_limits<blasint>::max(), what, " = ", v,
           " does not fit the 32-bit BLAS interface");
  return static_cast<blasint>(v);
}

inline void gemm(bool ta, bool tb, index_t m, index_t n, index_t k, float alpha, const float* A,
                 index_t lda, const float* B, index_t ldb, float beta, float* C, index_t ldc) {
  if (m == 0 || n == 0) return;
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    blas_dim(m, "m"), blas_dim(n, "n"), blas_dim(k, "k"), alpha, A,
                    blas_dim(lda, "lda"), B, blas_dim(ldb, "ldb"), beta, C, blas_dim(ldc, "ldc"));
}

inline void gemm(bool ta, bool tb, index_t m, index_t n, index_t k, double alpha, const double* A,
                 index_t lda, const double* B, index_t ldb, double beta, double* C, index_t ldc) {
  if (m == 0 || n == 0) return;
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    blas_dim(m, "m"), blas_dim(n, "n"), blas_dim(k, "k"), alpha, A,
                    blas_dim(lda, "lda"), B, blas_dim(ldb, "ldb"), beta, C, blas_dim(ldc, "ldc"));
}

inline void set_blas_threads(int n) { scipy_openblas_set_num_threads(n); }
inline int blas_threads() { return scipy_openblas_get_num_threads(); }

}  // namespace fm::cpu
