// Batch-invariant GEMM of the inference path: C = op(B) applied to the rows of A, plus a bias,
//   C[i, j] = s_ij (+ bias[j]),  s_ij = (...((0 + a_i0 b_0j) + a_i1 b_1j) + ...) + a_i,k-1 b_k-1,j
// with one rounding per product and per sum (no FMA: the build has -ffp-contract=off and the
// kernel uses no fused intrinsic), p ascending, one accumulator per element. Why: OpenBLAS
// sums a row in an order that depends on the number of rows in the call (its SkylakeX sgemm)
// and on the row's position modulo 24 in the call (its Haswell/Zen sgemm), so predict(X[rows])
// differed from predict(X)[rows] in the last bits (measured with OpenBLAS 0.3.34, issue 14).
// Here every element's operations are fixed by (row of A, column of B, k) alone: results do
// not depend on m, the row's position, the thread count, the vector width the CPU has (the
// AVX-512, AVX2 and SSE variants hold the same per-element operations in wider or narrower
// registers), nor on the arrays' alignment. The price is the FMA: about half of OpenBLAS's
// peak on large layers (bench/bench_predict.py), so training keeps OpenBLAS (cpu/blas.h).
//
// A is (m, k) row-major with row stride lda. B is (k, n) row-major with row stride ldb, or,
// with b_trans, B^T is given: (n, k) row-major. C is (m, n) with row stride ldc; bias (n) or
// null. Cost: 2 m n k flops; B is copied once per call into column panels (k x 64 floats on
// AVX-512), rows are split over the OpenMP threads in blocks of 64 rows that stay in L2 while
// each panel of B passes over them.
#pragma once

#include "common/macros.h"

namespace fm::cpu {

template <class T>
void gemm_rows(index_t m, index_t n, index_t k, const T* A, index_t lda, const T* B, index_t ldb,
               bool b_trans, const T* bias, T* C, index_t ldc);

}  // namespace fm::cpu
