// CPU optimizer step over a flat parameter arena (csrc/common/optimizer.h has the rules).
#pragma once

#include <cstdint>

#include "common/optimizer.h"

namespace fm::cpu {

// Number of T elements of optimizer state for an arena of n elements split into `segs`
// (nseg = 0: the whole arena is one vector segment that decays). Every rule but Adafactor
// needs opt_state_arrays(c) * n; Adafactor rows + cols per factored matrix and rows * cols
// per vector, laid out segment after segment.
index_t optimizer_state_size(const OptConfig& c, const Segment* segs, int nseg, index_t n);

// One optimizer step, in place, over the arena: for every element of every segment,
//   g <- effective gradient (grads * grad_scale, clip_value, maximize, L2 / L1 on decaying
//        segments), theta <- theta (1 - lr * decoupled_weight_decay) on decaying segments,
//   then the rule of c.opt; afterwards the max-norm constraint on segments that ask for it.
// Segments must be sorted by offset and disjoint; elements outside every segment are not
// touched. `state` holds optimizer_state_size(...) elements, zero before the first step.
// `step` is the 1-based step t; `lr` the scheduled learning rate of this step (c.lr is not
// read); `grad_scale` multiplies the gradients first (the caller's global-norm clipping
// factor, 1 = none). Threaded above kParallelMinElements; the result does not depend on
// the thread count.
template <class T>
void optimizer_step(const OptConfig& c, T* params, const T* grads, T* state, const Segment* segs,
                    int nseg, index_t n, std::int64_t step, double lr, double grad_scale);

// sum_i grads[i]^2 in double, summed in fixed blocks in a fixed order (deterministic for any
// thread count): the caller's global-norm clipping scale is min(1, max / (sqrt(sum) + 1e-6)).
template <class T>
double grad_sq_norm(const T* grads, index_t n);

// ||grads||_2 without overflow or underflow (common/norm.h, Blue's three sums), summed like
// grad_sq_norm: finite for finite gradients whose norm is below DBL_MAX (grad_sq_norm's sum
// of squares overflows from ~1e154 on).
template <class T>
double grad_norm(const T* grads, index_t n);

}  // namespace fm::cpu
