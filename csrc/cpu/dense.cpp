// CPU dense layer, forward and backward, bias and activation fused.
//   forward : Z = X W + b, A = f(Z) as an epilogue over the cache-resident output. In training
//             (p.training) one OpenBLAS GEMM with the bias pre-filled into Z and beta = 1; in
//             inference the batch-invariant gemm_rows (cpu/gemm_rows.h), so that a row's
//             prediction does not depend on the batch it arrives in.
//   backward: dZ = dA * f'(Z) with db = sum_batch dZ in the same pass, dW = X^T dZ,
//             dX = dZ W^T.
// Shapes: X (B, n_in), W (n_in, n_out), b (n_out), Z/A/dA/dZ (B, n_out), all row-major.
// Cost: forward 2 B n_in n_out flops + B n_out activations; backward 4 B n_in n_out flops
// (2 without dX) + B n_out derivative evaluations. Bytes: each operand read once per GEMM.
#include "cpu/dense.h"

#include <algorithm>
#include <cstring>

#include "cpu/activation.h"
#include "cpu/blas.h"
#include "cpu/gemm_rows.h"
#include "cpu/parallel.h"

namespace fm::cpu {

namespace {

// Z = X W + b through OpenBLAS: the bias pre-fills Z and the GEMM runs with beta = 1.
template <class T>
void dense_forward_train_gemm(const T* X, const T* W, const T* b, T* Z, index_t batch,
                              index_t n_in, index_t n_out) {
  T beta = T(0);
  if (b) {
    parallel_rows(batch, n_out, [&](index_t r0, index_t r1) {
      for (index_t i = r0; i < r1; ++i) std::memcpy(Z + i * n_out, b, sizeof(T) * n_out);
    });
    beta = T(1);
  }
  gemm(false, false, batch, n_out, n_in, T(1), X, n_in, W, n_out, beta, Z, n_out);
}

}  // namespace

template <class T>
void dense_forward(const T* X, const T* W, const T* b, T* Z, T* A, index_t batch, index_t n_in,
                   index_t n_out, Act act, const ActParams<T>& p) {
  if (!p.training) {
    gemm_rows(batch, n_out, n_in, X, n_in, W, n_out, false, b, Z, n_out);
  } else {
    dense_forward_train_gemm(X, W, b, Z, batch, n_in, n_out);
  }
  if (act != Act::identity && A) activation_forward(act, Z, A, batch, n_out, p);
  else if (A && A != Z) std::memcpy(A, Z, sizeof(T) * batch * n_out);
}

template <class T>
void dense_backward(const T* X, const T* W, const T* Z, const T* dA, T* dZ, T* dW, T* db, T* dX,
                    T* dparams, index_t batch, index_t n_in, index_t n_out, Act act,
                    const ActParams<T>& p) {
  if (act == Act::identity) {
    // dZ = dA: only the bias reduction remains.
    if (dZ != dA) std::memcpy(dZ, dA, sizeof(T) * batch * n_out);
    if (db) {
      parallel_column_blocks(batch, n_out, [&](index_t c0, index_t c1) {
        std::fill(db + c0, db + c1, T(0));
        for (index_t i = 0; i < batch; ++i) {
          const T* row = dZ + i * n_out;
#pragma omp simd
          for (index_t j = c0; j < c1; ++j) db[j] += row[j];
        }
      });
    }
  } else {
    activation_backward(act, Z, dA, dZ, db, dparams, batch, n_out, p);
  }
  gemm(true, false, n_in, n_out, batch, T(1), X, n_in, dZ, n_out, T(0), dW,
       n_out);
  if (dX) gemm(false, true, batch, n_in, n_out, T(1), dZ, n_out, W, n_out, T(0), dX, n_in);
}

template void dense_forward<float>(const float*, const float*, const float*, float*, float*,
                                   index_t, index_t, index_t, Act, const ActParams<float>&);
template void dense_forward<double>(const double*, const double*, const double*, double*, double*,
                                    index_t, index_t, index_t, Act, const ActParams<double>&);
template void dense_backward<float>(const float*, const float*, const float*, const float*, float*,
                                    float*, float*, float*, float*, index_t, index_t, index_t, Act,
                                    const ActParams<float>&);
template void dense_backward<double>(const double*, const double*, const double*, const double*,
                                     double*, double*, double*, double*, double*, index_t, index_t,
                                     index_t, Act, const ActParams<double>&);

}  // namespace fm::cpu
