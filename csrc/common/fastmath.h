// Transcendental functions for the elementwise loops: exp, expm1, tanh, log1p and the
// logistic sigmoid.
//
// Why: glibc's expf/tanhf are scalar calls the compiler cannot vectorize; in a small
// network's step they cost more than the GEMMs (tiny-sin, 1-128-128-128-1 tanh: 42% of the
// step was __tanhf + __expm1f before this file). The float versions here are branch-free
// (selects only), inline and use only +, * and integer bit moves, so a `#pragma omp simd`
// loop over them compiles to SSE/AVX2/AVX-512 code (the dispatched clones of csrc/cpu): ~1 ns
// per element. The CPU build never contracts a * b + c into an FMA (-ffp-contract=off,
// CMakeLists.txt), so every clone and the scalar remainder iterations round alike.
//
// Accuracy (float, measured against double over [-100, 100] by tests/test_activation.py):
// exp and expm1 within 2 ulp, tanh and sigmoid within 3e-7 absolute, log1p within 2 ulp on
// [0, 1]. Denormal results are computed (with fewer digits); NaN propagates; +-inf give the
// limits. double and device code use the C library (CUDA's expf/tanhf are already
// vectorized per thread), so float64 references and GPU kernels are unchanged.
//
// Method: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then a degree-6 polynomial
// for e^r (the minimax coefficients of Cephes' expf, Moshier 1984), scaled by 2^n built in the
// exponent bits. tanh = 1 - 2/(e^{2|x|} + 1) with the sign restored, and for |x| < 0.625 the
// odd minimax polynomial of Cephes' tanhf (no cancellation near 0). log1p reduces 1 + u to
// m 2^k with m in [sqrt(1/2), sqrt(2)) and evaluates Cephes' logf polynomial; the rounding
// error of 1 + u is corrected by (u - ((1 + u) - 1)) / (1 + u).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/macros.h"

// Forced inline: in a large translation unit GCC's inliner budget otherwise leaves exp_f as a
// call, and a loop with a call does not vectorize.
#if defined(__GNUC__) || defined(__clang__)
#define FM_FORCE_INLINE inline __attribute__((always_inline))
#else
#define FM_FORCE_INLINE inline
#endif

namespace fm::fmath {

namespace detail {

FM_FORCE_INLINE float from_bits(std::int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
FM_FORCE_INLINE std::int32_t to_bits(float f) {
  std::int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;  // ln 2 split so n * kLn2Hi is exact for |n| <= 128
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpMax = 88.7228391116729f;   // ln(FLT_MAX): e^x overflows float above this
constexpr float kExpMin = -103.972077083992f;  // e^x is below half the least denormal under this
constexpr float kRoundMagic = 12582912.0f;      // 1.5 * 2^23: x + magic rounds x to an integer

// c ? a : b as bit masks. A plain ?: after an expensive expression lets GCC sink that
// expression into a branch (tree-sink), and a loop with a branch does not vectorize; the mask
// form leaves nothing to sink.
FM_FORCE_INLINE float sel(bool c, float a, float b) {
  const std::int32_t m = -static_cast<std::int32_t>(c);
  return from_bits((to_bits(a) & m) | (to_bits(b) & ~m));
}

// e^r for |r| <= ln2/2 (Cephes expf polynomial).
FM_FORCE_INLINE float exp_poly(float r) {
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * r * r + r + 1.0f;
}

// e^x for x in [kExpMin, kExpMax] (not NaN); callers select the out-of-range limits.
FM_FORCE_INLINE float exp_core(float x) {
  const float t = x * kLog2e + kRoundMagic;
  const std::int32_t n = to_bits(t) - to_bits(kRoundMagic);
  const float fn = t - kRoundMagic;
  const float r = (x - fn * kLn2Hi) - fn * kLn2Lo;
  // 2^n as two exponent-bit factors: n in [-150, 128] on the clamped range, each half in
  // [-75, 64], so the product also reaches the denormals and FLT_MAX without overflow.
  const std::int32_t n1 = n >> 1;
  const std::int32_t n2 = n - n1;
  return exp_poly(r) * from_bits((n1 + 127) << 23) * from_bits((n2 + 127) << 23);
}

}  // namespace detail

FM_FORCE_INLINE float exp_f(float x) {
  using detail::sel;
  // Clamp with selects, not std::fmin/fmax (library calls without -ffast-math). The
  // comparisons are written so that NaN fails them and is clamped too: exp_core builds 2^n
  // from the bits of x * log2(e) + 1.5 * 2^23, and for a NaN those bits are no integer in
  // range, so (n + 127) << 23 would shift a negative value or overflow (undefined behaviour,
  // reported by UBSan). The NaN itself is put back below.
  const float lo = sel(x >= detail::kExpMin, x, detail::kExpMin);
  const float xc = sel(lo <= detail::kExpMax, lo, detail::kExpMax);
  float y = detail::exp_core(xc);
  y = sel(x < detail::kExpMin, 0.0f, y);
  y = sel(x > detail::kExpMax, INFINITY, y);
  return sel(x != x, x, y);
}

// e^x - 1: the series near 0 (where e^x - 1 cancels), e^x - 1 elsewhere.
FM_FORCE_INLINE float expm1_f(float x) {
  // |x| < 0.25: Taylor to x^7 / 7!, truncation < 0.25^8/8! ~ 4e-10 relative.
  float p = 1.0f / 5040.0f;
  p = p * x + 1.0f / 720.0f;
  p = p * x + 1.0f / 120.0f;
  p = p * x + 1.0f / 24.0f;
  p = p * x + 1.0f / 6.0f;
  p = p * x + 0.5f;
  const float small = p * x * x + x;
  const float big = exp_f(x) - 1.0f;
  return detail::sel(std::fabs(x) < 0.25f, small, big);
}

FM_FORCE_INLINE float tanh_f(float x) {
  const float a = std::fabs(x);
  // |x| < 0.625: odd minimax polynomial (Cephes tanhf).
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  // 1 - 2 / (e^{2a} + 1): e^{2a} saturates to inf for large a, giving exactly 1.
  const float e = exp_f(2.0f * detail::sel(a < 44.0f, a, 44.0f));
  const float big = std::copysign(1.0f - 2.0f / (e + 1.0f), x);
  // NaN fails a < 44 above and would come out as +-1: put it back (small is NaN then).
  return detail::sel((a < 0.625f) | (x != x), small, big);
}

// 1 / (1 + e^{-x}), never exponentiating a positive number.
FM_FORCE_INLINE float sigmoid_f(float x) {
  const float e = exp_f(-std::fabs(x));
  const float s = 1.0f / (1.0f + e);
  return detail::sel(x >= 0.0f, s, e * s);
}

// log(1 + u) for u > -1.
FM_FORCE_INLINE float log1p_f(float u) {
  const float w = 1.0f + u;
  // w = m 2^k, m in [sqrt(1/2), sqrt(2)).
  const std::int32_t bits = detail::to_bits(w);
  std::int32_t k = ((bits >> 23) & 0xff) - 127;
  float m = detail::from_bits((bits & 0x007fffff) | 0x3f800000);  // [1, 2)
  const bool high = m > 1.41421356237f;
  m = detail::sel(high, 0.5f * m, m);
  k += static_cast<std::int32_t>(high);
  const float f = m - 1.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const float fk = static_cast<float>(k);
  float y = p * f * z - 0.5f * z + f;
  y = y + fk * detail::kLn2Lo + fk * detail::kLn2Hi;
  // Correct the rounding of 1 + u (matters when u is small against 1).
  y = y + (u - (w - 1.0f)) / w;
  // Small u: the series, exact where 1 + u rounds to 1.
  const float small = u * (1.0f - u * (0.5f - u * (1.0f / 3.0f)));
  y = detail::sel(std::fabs(u) < 1e-4f, small, y);
  y = detail::sel(u == -1.0f, -INFINITY, y);
  y = detail::sel(u == INFINITY, INFINITY, y);
  return detail::sel((u != u) | (u < -1.0f), NAN, y);
}

}  // namespace fm::fmath

namespace fm {

// Dispatch used by the formulas in csrc/common: the vectorizable float versions above in
// host code, the C library for double and on the device.
// c ? a : b; in host float code as bit masks (see detail::sel) so loops stay vectorizable.
template <class T>
FM_HD T fsel(bool c, T a, T b) {
#if defined(__CUDA_ARCH__)
  return c ? a : b;
#else
  if constexpr (std::is_same_v<T, float>) return fmath::detail::sel(c, a, b);
  else return c ? a : b;
#endif
}

template <class T>
FM_HD T fexp(T x) {
#if defined(__CUDA_ARCH__)
  return std::exp(x);
#else
  if constexpr (std::is_same_v<T, float>) return fmath::exp_f(x);
  else return std::exp(x);
#endif
}
template <class T>
FM_HD T fexpm1(T x) {
#if defined(__CUDA_ARCH__)
  return std::expm1(x);
#else
  if constexpr (std::is_same_v<T, float>) return fmath::expm1_f(x);
  else return std::expm1(x);
#endif
}
template <class T>
FM_HD T ftanh(T x) {
#if defined(__CUDA_ARCH__)
  return std::tanh(x);
#else
  if constexpr (std::is_same_v<T, float>) return fmath::tanh_f(x);
  else return std::tanh(x);
#endif
}
template <class T>
FM_HD T flog1p(T x) {
#if defined(__CUDA_ARCH__)
  return std::log1p(x);
#else
  if constexpr (std::is_same_v<T, float>) return fmath::log1p_f(x);
  else return std::log1p(x);
#endif
}

}  // namespace fm
