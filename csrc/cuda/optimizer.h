// CUDA optimizer step over a flat parameter arena (csrc/common/optimizer.h has the rules;
// csrc/cpu/optimizer.h the same contracts on the host). Device pointers, queued on `stream`,
// nothing synchronized. The state layout is the CPU's, so a state arena moves between the
// backends unchanged; its size is fm::opt_state_size (csrc/common/optimizer.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/optimizer.h"

namespace fm::cuda {

// One optimizer step, in place, over the arena: for every element of every segment the
// effective gradient (grads * grad_scale [* *device_grad_scale], clip_value, maximize, L2 / L1
// on decaying segments), the decoupled decay, then the rule of c.opt; afterwards the max-norm
// constraint on the segments that ask for it. `segs` (host memory, nseg entries; nseg = 0: the
// whole arena is one decaying vector) must be sorted and disjoint; elements outside every
// segment are not touched. `state` holds opt_state_size(c, segs, nseg, n) elements, zero
// before the first step. `step` is the 1-based step t, `lr` the scheduled learning rate.
// device_grad_scale (may be null) points at a device double that multiplies the gradients
// too: the global-norm clipping factor written by grad_sq_norm, read by the kernels so that
// no host synchronization is needed. A NaN there skips the elementwise update (the Network's
// "non-finite loss" signal, set on the device).
// device_coef (may be null; not for Adafactor) points at a device copy of
// make_opt_coef<T>(c, step, lr, grad_scale) that the elementwise kernel reads instead of the
// coefficients passed by value: a replayed CUDA graph gets each step's lr and bias
// corrections from there.
// Launches: elementwise rules one kernel over the arena (16-byte vector accesses when the
// arrays are aligned for them); Adafactor six small kernels for its factored statistics;
// max-norm one more. Up to 64 decay runs / 64 max-norm segments / 32 Adafactor segments go in
// one launch (longer tables take several). Throws fm::ValueError on a bad config, bad
// segments, step < 1, lr < 0 or a negative or non-finite grad_scale.
template <class T>
void optimizer_step(const OptConfig& c, T* params, const T* grads, T* state, const Segment* segs,
                    int nseg, index_t n, std::int64_t step, double lr, double grad_scale,
                    const double* device_grad_scale, cudaStream_t stream,
                    const OptCoef<T>* device_coef = nullptr);

// Global gradient norm on the device, in two stages (per-block partial sums in double, then one
// block adding them in index order; the partition depends only on n, so the result is the same
// on every device and run); the norm ||g|| by Blue's scaled sums (common/norm.h), finite for
// any finite gradients below DBL_MAX. Writes *sq_norm = ||g||^2 (inf beyond ~1e154) and
// *clip_scale = clip_norm_scale(||g||, max_norm) = min(1, max_norm / (||g|| + 1e-6)),
// each when its pointer (a device double) is not null; max_norm must be > 0 when clip_scale
// is given.
template <class T>
void grad_sq_norm(const T* grads, index_t n, double* sq_norm, double* clip_scale, double max_norm,
                  cudaStream_t stream);

}  // namespace fm::cuda
