// Philox4x32-10 counter-based generator (Salmon et al., SC'11), shared by the CPU and
// CUDA kernels so a mask is the same on both and for any thread count.
//
// Keying used throughout fusedmlp (DESIGN.md "Random numbers"):
//   key     = (seed low 32 bits, seed high 32 bits)
//   counter = (element / 4 low, element / 4 high, layer, step)
// One Philox call yields 4 words: element e takes word e % 4 of block e / 4. The
// (seed, step) pair identifies the draw, (layer, element) the position inside it, and
// all 128 counter bits are distinct for distinct (step, layer, element), so no two
// positions of a run share a random word.
// Cost: 10 rounds of 2 32x32->64 multiplies per 4 words.
#pragma once

#include <cmath>

#include "common/macros.h"

namespace fm {

struct PhiloxKey {
  std::uint64_t seed;
  std::uint64_t step;
  std::uint32_t layer;
};

struct Philox4 {
  std::uint32_t v[4];
};

FM_HD void philox_mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}

// The 10-round Philox4x32 bijection of `ctr` under `key`.
FM_HD Philox4 philox4x32_10(std::uint32_t c0, std::uint32_t c1, std::uint32_t c2, std::uint32_t c3,
                           std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    std::uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, c0, hi0, lo0);
    philox_mulhilo(kM1, c2, hi1, lo1);
    const std::uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The 4 random words of block `block` (elements 4*block .. 4*block+3) for a key.
FM_HD Philox4 philox_block(const PhiloxKey& k, std::uint64_t block) {
  // The high half of the step (runs past 2^32 steps) is folded into the key.
  return philox4x32_10(static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                       k.layer, static_cast<std::uint32_t>(k.step), static_cast<std::uint32_t>(k.seed),
                       static_cast<std::uint32_t>(k.seed >> 32) ^ static_cast<std::uint32_t>(k.step >> 32));
}

// A 32-bit word mapped exactly into the open interval (0, 1): float keeps the top 24 bits,
// (w>>8 + 1/2) / 2^24; double uses all 32, (w + 1/2) / 2^32. No value rounds to 0 or 1.
template <class T>
FM_HD T philox_to_unit(std::uint32_t w) {
  if (sizeof(T) == 4) return (static_cast<T>(w >> 8) + T(0.5)) * T(5.9604644775390625e-08);
  return (static_cast<T>(w) + T(0.5)) * T(2.3283064365386963e-10);
}

// Uniform (0, 1) number of element `e` under key `k`.
template <class T>
FM_HD T philox_uniform(const PhiloxKey& k, std::uint64_t e) {
  return philox_to_unit<T>(philox_block(k, e >> 2).v[e & 3]);
}

// Standard normal number of element `e`: Box-Muller on the word pair (2*(e%2), 2*(e%2)+1)
// of block e / 2, keeping the cosine branch. Computed in double then rounded, so
// float32 and float64 kernels see the same draw up to rounding.
template <class T>
FM_HD T philox_normal(const PhiloxKey& k, std::uint64_t e) {
  const Philox4 r = philox_block(k, e >> 1);
  const int lane = static_cast<int>(e & 1) * 2;
  const double u1 = philox_to_unit<double>(r.v[lane]);
  const double u2 = philox_to_unit<double>(r.v[lane + 1]);
#if defined(__CUDA_ARCH__)
  return static_cast<T>(sqrt(-2.0 * log(u1)) * cospi(2.0 * u2));
#else
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  return static_cast<T>(std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2));
#endif
}

}  // namespace fm
