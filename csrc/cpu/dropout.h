// CPU dropout and Gaussian-noise kernels over n contiguous elements (the flat, row-major
// index of a (batch, features) array is the Philox element index). The draws are those of
// csrc/common/dropout.h, so they do not depend on the thread count and match the GPU.
#pragma once

#include "common/dropout.h"

namespace fm::cpu {

// Inverted dropout, training: y = x / (1 - rate) where kept, 0 where dropped (y may alias x).
// rate in [0, 1); rate = 0 copies x.
template <class T>
void dropout_forward(const T* x, T* y, index_t n, T rate, const PhiloxKey& key);

// dx = dy / (1 - rate) where kept, 0 where dropped: the mask is regenerated from the key,
// nothing is stored (dx may alias dy).
template <class T>
void dropout_backward(const T* dy, T* dx, index_t n, T rate, const PhiloxKey& key);

// Additive Gaussian noise, training: y = x + stddev * N(0, 1) (y may alias x). Its backward
// is the identity.
template <class T>
void gaussian_noise_forward(const T* x, T* y, index_t n, T stddev, const PhiloxKey& key);

}  // namespace fm::cpu
