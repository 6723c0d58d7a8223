// CPU dropout (inverted, decks 000/001/002) and additive Gaussian noise (deck 002).
// Layout: n contiguous elements; element e draws from Philox block e / 4 (dropout) or
// e / 2 (noise) under the key (seed, step, layer), see csrc/common/philox.h.
// Cost: dropout 1 Philox block per 4 elements, 8-16 bytes read+written per element (float32 /
// float64); noise 1 block + log, sqrt, cos per element.
#include "cpu/dropout.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/parallel.h"

namespace fm::cpu {
namespace {

// Elements sharing one Philox block in the dropout draw (the 4 words of Philox4x32).
constexpr index_t kDropoutLanes = 4;
// Philox blocks generated per batch: their words are kept on the stack (1 KiB), and the block
// loop is vectorized across blocks (Philox's 32x32->64 multiplies map to vpmuludq).
constexpr index_t kBlocksPerBatch = 64;

// Philox blocks [b0, b1) of the mask applied to n elements (a dispatched clone).
template <class T>
FM_CPU_CLONES void mask_blocks(const T* in, T* out, index_t n, T rate, T scale,
                               const PhiloxKey& key, index_t b0, index_t b1) {
  // Locals, not captures: stores through `out` could otherwise alias them and force
  // reloads that block vectorization.
  const PhiloxKey k = key;
  const T r = rate, s = scale;
  std::uint32_t w[kBlocksPerBatch * kDropoutLanes];
  for (index_t c0 = b0; c0 < b1; c0 += kBlocksPerBatch) {
    const index_t nb = std::min(kBlocksPerBatch, b1 - c0);
#pragma omp simd
    for (index_t q = 0; q < nb; ++q) {
      const Philox4 p = philox_block(k, static_cast<std::uint64_t>(c0 + q));
      for (index_t l = 0; l < kDropoutLanes; ++l) w[q * kDropoutLanes + l] = p.v[l];
    }
    const index_t e0 = c0 * kDropoutLanes;
    const index_t m = std::min(nb * kDropoutLanes, n - e0);
    // Branch-free select: a data-dependent branch would mispredict at rate ~ 0.5.
#pragma omp simd
    for (index_t l = 0; l < m; ++l)
      out[e0 + l] = in[e0 + l] * (dropout_keep_word(w[l], r) ? s : T(0));
  }
}

// out[e] = in[e] * (keep(e) ? scale : 0) for e in [0, n). Threads own whole Philox blocks, so
// each block is generated once; the result is the same for any partition.
template <class T>
void apply_mask(const T* in, T* out, index_t n, T rate, const PhiloxKey& key) {
  if (rate == T(0)) {  // every u in (0, 1) is >= 0: all kept, scale 1
    if (out != in) std::memcpy(out, in, sizeof(T) * n);
    return;
  }
  const T scale = dropout_scale(rate);
  const index_t nblocks = (n + kDropoutLanes - 1) / kDropoutLanes;
  parallel_rows(nblocks, kDropoutLanes,
                [&](index_t b0, index_t b1) { mask_blocks(in, out, n, rate, scale, key, b0, b1); });
}

// Elements [e0, e1) of y = x + N(0, stddev^2) (a dispatched clone).
template <class T>
FM_CPU_CLONES void noise_range(const T* x, T* y, T stddev, const PhiloxKey& key, index_t e0,
                               index_t e1) {
  const PhiloxKey k = key;
  const T sd = stddev;
  for (index_t e = e0; e < e1; ++e)
    y[e] = x[e] + gaussian_noise(k, static_cast<std::uint64_t>(e), sd);
}

}  // namespace

template <class T>
void dropout_forward(const T* x, T* y, index_t n, T rate, const PhiloxKey& key) {
  FM_CHECK(rate >= T(0) && rate < T(1), "rate: expected a drop rate in [0, 1), got ", rate);
  apply_mask(x, y, n, rate, key);
}

template <class T>
void dropout_backward(const T* dy, T* dx, index_t n, T rate, const PhiloxKey& key) {
  FM_CHECK(rate >= T(0) && rate < T(1), "rate: expected a drop rate in [0, 1), got ", rate);
  apply_mask(dy, dx, n, rate, key);
}

template <class T>
void gaussian_noise_forward(const T* x, T* y, index_t n, T stddev, const PhiloxKey& key) {
  FM_CHECK(stddev >= T(0) && std::isfinite(stddev), "stddev: expected a finite value >= 0, got ",
           stddev);
  parallel_rows(n, 1, [&](index_t e0, index_t e1) { noise_range(x, y, stddev, key, e0, e1); });
}

template void dropout_forward<float>(const float*, float*, index_t, float, const PhiloxKey&);
template void dropout_forward<double>(const double*, double*, index_t, double, const PhiloxKey&);
template void dropout_backward<float>(const float*, float*, index_t, float, const PhiloxKey&);
template void dropout_backward<double>(const double*, double*, index_t, double, const PhiloxKey&);
template void gaussian_noise_forward<float>(const float*, float*, index_t, float, const PhiloxKey&);
template void gaussian_noise_forward<double>(const double*, double*, index_t, double,
                                             const PhiloxKey&);

}  // namespace fm::cpu
