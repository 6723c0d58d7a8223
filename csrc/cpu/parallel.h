// Threading of the CPU elementwise loops. OpenMP only above a size threshold: below it the
// fork/join (~1-3 us) costs more than the loop. Reductions are partitioned over columns so
// each output is summed by one thread in row order: results do not depend on the thread count.
#pragma once

#include <omp.h>

#include <algorithm>

#include "common/macros.h"

namespace fm::cpu {

// Loops over fewer elements than this run on the calling thread.
constexpr index_t kParallelMinElements = index_t(1) << 15;
// Column block of the reduction loops (a multiple of the widest SIMD vector).
constexpr index_t kColumnBlock = 64;

inline int num_threads() { return omp_get_max_threads(); }

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
