// Dropout and Gaussian-noise draws, shared by the CPU and CUDA kernels so a mask is the same
// on both backends and for any thread count.
//
// Inverted dropout (decks 000, 001, 002): in training each element is kept with probability
// 1 - rate and a kept element is scaled by 1 / (1 - rate), so E[y] = x and inference is the
// identity. Deck 002 states it with the keep probability p (= 1 - rate here) and scales the
// weights by p at test time instead; the two agree in expectation, and the inverted form
// leaves inference untouched.
//
// Element e of the draw keyed by k = (seed, step, layer) is kept iff its Philox uniform
// u in (0, 1) satisfies u >= rate. The comparison is always made in float32 (24-bit u against
// the rate rounded to float) whatever T is, so float32 and float64 kernels drop exactly the
// same elements; the keep probability is 1 - float(rate), within 6e-8 of 1 - rate.
//
// Gaussian noise (deck 002, "noise injection"): y = x + stddev * n_e with n_e the Philox
// standard normal of element e (philox_normal). Its backward is the identity.
//
// Cost: one Philox4x32-10 block (20 32-bit multiplies) per 4 dropout elements, per 2 noise
// elements (plus a log, a sqrt and a cos per element).
#pragma once

#include "common/philox.h"

namespace fm {

// The keep decision for a 32-bit Philox word `w` (the word of element e, see philox.h).
template <class T>
FM_HD bool dropout_keep_word(std::uint32_t w, T rate) {
  return philox_to_unit<float>(w) >= static_cast<float>(rate);
}

// Whether element `e` survives dropout with drop rate `rate` under key `k`.
template <class T>
FM_HD bool dropout_keep(const PhiloxKey& k, std::uint64_t e, T rate) {
  return dropout_keep_word(philox_block(k, e >> 2).v[e & 3], rate);
}

// Scale applied to kept elements in training: 1 / (1 - rate) (inverted dropout).
template <class T>
FM_HD T dropout_scale(T rate) {
  return T(1) / (T(1) - rate);
}

// Additive Gaussian noise of element `e`: stddev * N(0, 1).
template <class T>
FM_HD T gaussian_noise(const PhiloxKey& k, std::uint64_t e, T stddev) {
  return stddev * philox_normal<T>(k, e);
}

}  // namespace fm
