// Threading and instruction-set dispatch of the CPU elementwise loops. OpenMP only above a
// size threshold: below it the fork/join (~1-3 us) costs more than the loop. Reductions are
// partitioned over columns so each output is summed by one thread in row order, and sums
// along a row use fixed lanes (lane_sums): results depend neither on the thread count nor on
// the vector width or the arrays' alignment.
#pragma once

#include <omp.h>

#include <algorithm>

#include "common/macros.h"

// Runtime dispatch of the hot loops (portable build, FM_CPU_DISPATCH set by CMakeLists.txt on
// x86-64 with GCC): the function is compiled for the x86-64-v2 baseline and again for AVX2 and
// AVX-512, and the loader picks the widest the CPU has (an ifunc). Put on functions with
// internal linkage that hold the loops themselves (not an OpenMP region: the outlined body of a
// parallel region would not inherit the clones). The clones give identical results because
// the sources are built with -ffp-contract=off and sums use lane_sums.
#if defined(FM_CPU_DISPATCH) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FM_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FM_CPU_CLONES
#endif

namespace fm::cpu {

// Loops over fewer elements than this run on the calling thread.
constexpr index_t kParallelMinElements = index_t(1) << 15;
// Column block of the reduction loops (a multiple of the widest SIMD vector).
constexpr index_t kColumnBlock = 64;

// Lanes of lane_sums: a multiple of every vector width (8 doubles fill an AVX-512 register).
constexpr int kSumLanes = 8;

// K sums over [i0, i1): add(i, s, l) adds element i's K terms into s[q][l], q < K. Element i
// goes to lane (i - i0) % kSumLanes and the lanes are combined in a fixed tree, so the order
// of the additions is the same whatever the vector width, the clone or the address (an
// `omp simd reduction` would instead sum in as many lanes as the vector has, starting wherever
// the compiler peels for alignment).
template <class Acc, int K, class F>
inline void lane_sums(index_t i0, index_t i1, Acc* out, F&& add) {
  static_assert(kSumLanes == 8, "the combining tree below has 8 leaves");
  Acc s[K][kSumLanes] = {};
  index_t i = i0;
  for (; i + kSumLanes <= i1; i += kSumLanes) {
#pragma omp simd
    for (int l = 0; l < kSumLanes; ++l) add(i + l, s, l);
  }
  for (int l = 0; i + l < i1; ++l) add(i + l, s, l);
  for (int q = 0; q < K; ++q) {
    const Acc* v = s[q];
    out[q] = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
  }
}

inline int num_threads() {
  return omp_get_max_threads();
}

// fn(r0, r1) over row ranges [r0, r1) covering [0, rows).
template <class F>
void parallel_rows(index_t rows, index_t cols, F&& fn) {
  const int nt = num_threads();
  if (nt <= 1 || rows * cols < kParallelMinElements || rows < 2) {
    fn(index_t(0), rows);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const index_t t = omp_get_thread_num(), n = omp_get_num_threads();
    const index_t r0 = rows * t / n, r1 = rows * (t + 1) / n;
    if (r0 < r1) fn(r0, r1);
  }
}

// fn(c0, c1) over column blocks [c0, c1) covering [0, cols); every column lies in exactly
// one block and its block is processed by one thread.
template <class F>
void parallel_column_blocks(index_t rows, index_t cols, F&& fn) {
  const index_t nblocks = (cols + kColumnBlock - 1) / kColumnBlock;
  const int nt = num_threads();
  if (nt <= 1 || nblocks < 2 || rows * cols < kParallelMinElements) {
    fn(index_t(0), cols);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(nt)
  for (index_t blk = 0; blk < nblocks; ++blk)
    fn(blk * kColumnBlock, std::min(cols, (blk + 1) * kColumnBlock));
}

}  // namespace fm::cpu
