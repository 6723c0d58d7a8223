// Row-major GEMM with fused epilogues on cuBLASLt (csrc/cuda/gemm.cu).
#pragma once

#include <cuda_runtime.h>

#include "common/macros.h"

namespace fm::cuda {

// What runs on the GEMM result R = op(A) op(B) (m x n, row-major) before it is stored in C.
// "bias" is the vector passed as `bias`; "aux" the matrix passed as `aux` (row i of R is
// row i of aux, leading dimension aux_ld). The forward epilogues add the bias first when one
// is given (bias may be null).
enum class Epilogue {
  none,      // C = R (+ bias)
  relu_aux,  // C = max(R + bias, 0); aux = bit-mask (R + bias > 0), aux_ld in bits (% 128 == 0)
  gelu_aux,  // C = gelu_tanh(R + bias); aux = R + bias (the GELU input), aux_ld % 8 == 0
  drelu,     // C = R * mask(aux); bias (output, may be null) = column sums of C
  dgelu,     // C = R * gelu_tanh'(aux); bias (output, may be null) = column sums of C
  bgrad_b,   // C = R; bias (output) = column sums of op(B) over k (n entries)
};

// TF32 tensor-core math for float32 GEMMs (CUBLAS_COMPUTE_32F_FAST_TF32). Off by default:
// float32 results then match the CPU to float32 rounding.
void set_allow_tf32(bool on);
bool allow_tf32();

// C (m x n) = epilogue(op(A) op(B)), all row-major with leading dimensions lda, ldb, ldc;
// op(A) is m x k, op(B) is k x n. Runs on `stream`. Returns false when cuBLASLt has no
// algorithm for this epilogue, type and alignment (the caller then runs the unfused path);
// throws CudaError on any other failure. The plain epilogue (none, no bias) always succeeds
// or throws. Heuristic results are cached per (device, shape, epilogue, alignment).
template <class T>
bool gemm(bool trans_a, bool trans_b, index_t m, index_t n, index_t k, const T* A, index_t lda,
          const T* B, index_t ldb, T* C, index_t ldc, Epilogue ep, void* bias, void* aux,
          index_t aux_ld, cudaStream_t stream);

// Mixed precision (the Network's precision option): bfloat16 or float16 operands, float32
// output and accumulation (CUBLAS_COMPUTE_32F), plain epilogue. A and B point at half-width
// copies (convert_to_half). Throws CudaError when cuBLASLt has no algorithm.
enum class HalfType { bf16, fp16 };
void gemm_half(HalfType type, bool trans_a, bool trans_b, index_t m, index_t n, index_t k,
               const void* A, index_t lda, const void* B, index_t ldb, float* C, index_t ldc,
               cudaStream_t stream);
// y = x rounded to the half-width type (round to nearest even), n elements.
void convert_to_half(HalfType type, const float* x, void* y, index_t n, cudaStream_t stream);

}  // namespace fm::cuda
