// CUDA dense layer, forward and backward, bias and activation fused.
//   forward : Z = X W + b with the bias in the cuBLASLt epilogue, A = f(Z) as one elementwise
//             pass (gelu_tanh: one GEMM writes both through GELU_AUX_BIAS; ReLU without a
//             kept Z: RELU_AUX_BIAS writes A and the bit-mask).
//   backward: dZ = dA * f'(Z) with db and the parameter gradients reduced in the same pass
//             (identity: db from the dW GEMM's BGRADA epilogue), dW = X^T dZ, dX = dZ W^T;
//             dense_backward_input fuses the previous layer's dReLU/dGELU and its bias
//             gradient into the dX GEMM (DRELU_BGRAD / DGELU_BGRAD).
// Shapes: X (B, n_in), W (n_in, n_out), b (n_out), Z/A/dA/dZ (B, n_out), row-major.
// Cost: forward 2 B n_in n_out flops + B n_out activations; backward 4 B n_in n_out flops
// (2 without dX) + B n_out derivative evaluations.
//
// cuBLASLt's GELU epilogues compute the tanh approximation, so they serve gelu_tanh only; the
// exact gelu (erf) runs as the elementwise pass. Every fused epilogue falls back to the plain
// GEMM plus the elementwise kernels when cuBLASLt has no algorithm for it (leading dimensions
// that are not multiples of 8). float64 never takes the GELU epilogues: cuBLASLt has them, but
// measured on an H200 (cuBLASLt 13.0) they are off by up to 1e-10 relative to the formula,
// 10^6 times double's rounding; the elementwise pass evaluates csrc/common's formula exactly.
#include <type_traits>

#include "cuda/activation.h"
#include "cuda/common.cuh"
#include "cuda/dense.h"
#include "cuda/gemm.h"

namespace fm::cuda {
namespace {

// cuBLASLt needs the GELU aux leading dimension to be a multiple of 8 elements.
constexpr index_t kGeluAuxLdMultiple = 8;

// Whether the cuBLASLt GELU epilogues serve this element type (see the header: not double).
template <class T>
constexpr bool kGeluEpilogue = !std::is_same_v<T, double>;

template <class T>
void* mut(const T* p) {
  return const_cast<T*>(p);
}

// Z = X W (+ b): the bias in the epilogue when cuBLASLt takes it, else in a separate pass.
// Returns whether the bias was applied.
template <class T>
bool forward_gemm(const T* X, const T* W, const T* b, T* Z, index_t batch, index_t n_in,
                  index_t n_out, cudaStream_t stream) {
  if (b && gemm<T>(false, false, batch, n_out, n_in, X, n_in, W, n_out, Z, n_out, Epilogue::none,
                   mut(b), nullptr, 0, stream))
    return true;
  gemm<T>(false, false, batch, n_out, n_in, X, n_in, W, n_out, Z, n_out, Epilogue::none, nullptr,
          nullptr, 0, stream);
  return b == nullptr;
}

}  // namespace

template <class T>
void dense_forward(const T* X, const T* W, const T* b, T* Z, T* A, index_t batch, index_t n_in,
                   index_t n_out, Act act, const ActParams<T>& p, cudaStream_t stream) {
  FM_CHECK(Z != nullptr, "dense_forward: Z (the pre-activation output) is required");
  FM_CHECK(A != nullptr || act == Act::identity,
           "dense_forward: A is required for a non-identity activation");
  if (kGeluEpilogue<T> && act == Act::gelu_tanh && A != Z && n_out % kGeluAuxLdMultiple == 0 &&
      gemm<T>(false, false, batch, n_out, n_in, X, n_in, W, n_out, A, n_out, Epilogue::gelu_aux,
              mut(b), Z, n_out, stream))
    return;
  const bool bias_done = forward_gemm(X, W, b, Z, batch, n_in, n_out, stream);
  const bool in_place = A == nullptr || A == Z;
  if (act == Act::identity && in_place && bias_done) return;
  bias_activation_forward<T>(act, bias_done ? nullptr : b, Z,
                             in_place && act == Act::identity ? nullptr : A, batch, n_out, p,
                             stream);
}

template <class T>
void dense_backward(const T* X, const T* W, const T* Z, const T* dA, T* dZ, T* dW, T* db, T* dX,
                    T* dparams, index_t batch, index_t n_in, index_t n_out, Act act,
                    const ActParams<T>& p, cudaStream_t stream) {
  const T* g = dA;  // the gradient at Z
  if (act == Act::identity) {
    if (dZ && dZ != dA) {
      FM_CUDA_CHECK(
          cudaMemcpyAsync(dZ, dA, sizeof(T) * batch * n_out, cudaMemcpyDeviceToDevice, stream));
      g = dZ;
    }
    // dW = X^T dZ with db = column sums of dZ (our B) from the same GEMM when supported.
    const bool fused = db && gemm<T>(true, false, n_in, n_out, batch, X, n_in, g, n_out, dW, n_out,
                                     Epilogue::bgrad_b, db, nullptr, 0, stream);
    if (!fused) {
      gemm<T>(true, false, n_in, n_out, batch, X, n_in, g, n_out, dW, n_out, Epilogue::none,
              nullptr, nullptr, 0, stream);
      if (db) column_sum<T>(g, db, batch, n_out, stream);
    }
  } else {
    FM_CHECK(dZ != nullptr && Z != nullptr,
             "dense_backward: Z and dZ are required for a non-identity activation");
    activation_backward<T>(act, Z, dA, dZ, db, dparams, batch, n_out, p, stream);
    g = dZ;
    gemm<T>(true, false, n_in, n_out, batch, X, n_in, g, n_out, dW, n_out, Epilogue::none, nullptr,
            nullptr, 0, stream);
  }
  if (dX)
    gemm<T>(false, true, batch, n_in, n_out, g, n_out, W, n_out, dX, n_in, Epilogue::none, nullptr,
            nullptr, 0, stream);
}

template <class T>
void dense_forward_relu_mask(const T* X, const T* W, const T* b, T* A, std::uint32_t* mask,
                             index_t batch, index_t n_in, index_t n_out, cudaStream_t stream) {
  FM_CHECK(A != nullptr && mask != nullptr, "dense_forward_relu_mask: A and mask are required");
  if (gemm<T>(false, false, batch, n_out, n_in, X, n_in, W, n_out, A, n_out, Epilogue::relu_aux,
              mut(b), mask, relu_mask_ld(n_out), stream))
    return;
  const bool bias_done = forward_gemm(X, W, b, A, batch, n_in, n_out, stream);
  if (!bias_done)
    bias_activation_forward<T>(Act::identity, b, A, nullptr, batch, n_out, ActParams<T>{}, stream);
  relu_mask_forward<T>(A, mask, batch, n_out, stream);
}

template <class T>
void dense_backward_input(const T* dZ, const T* W, T* dZ_prev, index_t batch, index_t n_in,
                          index_t n_out, Act prev_act, const T* prev_z,
                          const std::uint32_t* prev_mask, T* db_prev, T* dparams_prev,
                          const ActParams<T>& prev_p, cudaStream_t stream) {
  // dZ_prev = dZ W^T: m = batch, n = n_in, k = n_out, B = W transposed.
  if (prev_act == Act::relu && prev_mask) {
    if (gemm<T>(false, true, batch, n_in, n_out, dZ, n_out, W, n_out, dZ_prev, n_in,
                Epilogue::drelu, db_prev, mut(prev_mask), relu_mask_ld(n_in), stream))
      return;
    gemm<T>(false, true, batch, n_in, n_out, dZ, n_out, W, n_out, dZ_prev, n_in, Epilogue::none,
            nullptr, nullptr, 0, stream);
    relu_mask_backward<T>(prev_mask, dZ_prev, dZ_prev, db_prev, batch, n_in, stream);
    return;
  }
  FM_CHECK(prev_z != nullptr || prev_act == Act::identity,
           "dense_backward_input: the previous layer's pre-activation is required");
  if (kGeluEpilogue<T> && prev_act == Act::gelu_tanh && n_in % kGeluAuxLdMultiple == 0 &&
      gemm<T>(false, true, batch, n_in, n_out, dZ, n_out, W, n_out, dZ_prev, n_in, Epilogue::dgelu,
              db_prev, mut(prev_z), n_in, stream))
    return;
  gemm<T>(false, true, batch, n_in, n_out, dZ, n_out, W, n_out, dZ_prev, n_in, Epilogue::none,
          nullptr, nullptr, 0, stream);
  if (prev_act == Act::identity) {
    if (db_prev) column_sum<T>(dZ_prev, db_prev, batch, n_in, stream);
    return;
  }
  activation_backward<T>(prev_act, prev_z, dZ_prev, dZ_prev, db_prev, dparams_prev, batch, n_in,
                         prev_p, stream);
}

#define FM_INSTANTIATE(T)                                                                         \
  template void dense_forward<T>(const T*, const T*, const T*, T*, T*, index_t, index_t, index_t, \
                                 Act, const ActParams<T>&, cudaStream_t);                         \
  template void dense_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, T*, T*,     \
                                  index_t, index_t, index_t, Act, const ActParams<T>&,            \
                                  cudaStream_t);                                                  \
  template void dense_forward_relu_mask<T>(const T*, const T*, const T*, T*, std::uint32_t*,      \
                                           index_t, index_t, index_t, cudaStream_t);              \
  template void dense_backward_input<T>(const T*, const T*, T*, index_t, index_t, index_t, Act,   \
                                        const T*, const std::uint32_t*, T*, T*,                   \
                                        const ActParams<T>&, cudaStream_t);
FM_INSTANTIATE(float)
FM_INSTANTIATE(double)
#undef FM_INSTANTIATE

}  // namespace fm::cuda
