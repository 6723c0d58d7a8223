// CUDA dropout and Gaussian-noise kernels over n contiguous device elements (the flat,
// row-major index of a (batch, features) array is the Philox element index). The draws are
// those of csrc/common/dropout.h, exactly as csrc/cpu/dropout.cpp makes them, so a mask is the
// same bit for bit on the CPU and on the GPU, for any launch geometry. Same contracts as
// csrc/cpu/dropout.h, plus the stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/dropout.h"

namespace fm::cuda {

// dev_step (optional): a device pointer the kernels read the key's step from (a replayed CUDA
// graph: the Network writes the step there before each launch); null: key.step.
// Inverted dropout, training: y = x / (1 - rate) where kept, 0 where dropped (y may alias x).
// rate in [0, 1) (fm::ValueError otherwise); rate = 0 copies x.
template <class T>
void dropout_forward(const T* x, T* y, index_t n, T rate, const PhiloxKey& key,
                     cudaStream_t stream, const std::uint64_t* dev_step = nullptr);

// dx = dy / (1 - rate) where kept, 0 where dropped: the mask is regenerated from the key,
// nothing is stored (dx may alias dy).
template <class T>
void dropout_backward(const T* dy, T* dx, index_t n, T rate, const PhiloxKey& key,
                      cudaStream_t stream, const std::uint64_t* dev_step = nullptr);

// Additive Gaussian noise, training: y = x + stddev * N(0, 1) (y may alias x); stddev finite
// and >= 0. Its backward is the identity.
template <class T>
void gaussian_noise_forward(const T* x, T* y, index_t n, T stddev, const PhiloxKey& key,
                            cudaStream_t stream, const std::uint64_t* dev_step = nullptr);

}  // namespace fm::cuda
