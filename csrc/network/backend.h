// The interface a Network backend provides: the one place that states it.
//
// `Network<T, B>` (network/network_impl.h) holds the layer plan, the parameter / gradient /
// buffer / optimizer-state arenas and the training step, written once; everything that touches
// memory or runs a kernel goes through a backend object `be_` of type B. Two backends exist:
//   CpuBackend   network/cpu_backend.h  host memory, csrc/cpu kernels, synchronous.
//   CudaBackend  cuda_backend.h + .cu   device memory, csrc/cuda kernels, ordered on `stream`;
//                                       CudaNetwork<T> adds the CUDA-graph step on top.
// A backend is a plain struct (no virtual calls: the Network is a template over it). Every
// pointer it receives points into memory of its own kind (B::Vec); sizes are element counts.
//
// Types and constants
//   template <class U> using Vec        owning contiguous buffer: data(), size(), resize(n),
//                                       assign(n, v); std::vector on the CPU, DeviceVec on GPU.
//   static constexpr bool kHostMemory   true when the arenas are host memory: the Network may
//                                       then read values directly (the loss, the BN statistics)
//                                       and decides a skipped step on the host.
//   static index_t rbf_workspace_size(K)  scratch elements an RBF layer of K centres needs.
//
// Glue (elementwise, over n elements)
//   copy(dst, src, n), fill(dst, n, v), scale(x, n, w) x *= w, add(acc, src, n) acc += src
//   weighted_sum(v, w, out)   *out = sum_h w[h] v[h] in head order (the total loss)
//   read(src, n, dst)         copies n values from backend memory to the host (synchronizes)
//   all_finite(x, n)          whether every value is finite (device: synchronizes)
//
// Kernels: the op families of csrc/<backend>/, with the same arguments in the same order as
// csrc/cpu's functions (see each header there for shapes and formulas):
//   dense_forward / dense_backward            Z = X W + b, A = f(Z) and the fused backward
//   batchnorm_forward_train / _infer / batchnorm_backward
//   dropout_forward / dropout_backward / gaussian_noise_forward   Philox key (seed, step, layer)
//   activation_forward / activation_backward, softmax_*, maxout_*
//   rbf_widths / rbf_forward / rbf_backward / rbf_log_width_grad
//   loss_forward_backward(loss, logits, target, labels, sw, dlogits, rows, cols, p, out)
//                                       writes the batch loss into *out (backend memory).
//
// Optimizer
//   GradScale grad_scale(grads, n, clip_norm, loss)
//       The factor the update multiplies the gradients by: the clip factor
//       c / (||g|| + 1e-6) when clip_norm > 0, else 1. With `loss` given (device backends),
//       it also carries the skip rule: a non-finite loss or gradient makes the factor NaN,
//       which the optimizer kernels read as "leave everything as it is", and the loss slot
//       then reads NaN. Host backends return the factor in .host, device ones in .device.
//   optimizer_step(cfg, params, grads, state, segs, nseg, n, step, lr, scale)
//       One pass over the arenas (csrc/common/optimizer.h holds the update rules).
//
// The skip rule (both backends): a step whose loss or gradient (on the CPU also a BatchNorm
// statistic) is non-finite leaves the parameters, the optimizer state, the BatchNorm running
// statistics, opt_step and bn_updates as they were and reports a NaN loss; the RNG step still
// advances. On the CPU the Network decides it on the host (Network::update_if_finite); on the
// GPU the device does (grad_scale above, then restore_if_skipped(dst, backup, n, scale) puts the
// statistics back), so that a captured CUDA graph needs no host round trip; the host lowers the
// counters when it reads the NaN loss back (Network::count_skipped; sync=False leaves them).
//
// Trainer.fit's indexed step (Network::train_step_indexed; int64 row indices in backend memory)
//   indices_valid(idx, batch, n_rows)          every index in [0, n_rows) (device: synchronizes)
//   gather_rows(dst, src, idx, batch, width)   dst row i <- src row idx[i]  (T and int32)
//   scatter_rows(dst, src, idx, batch, width)  dst row idx[i] <- src row i
//   count_correct(mode, out, labels, target, threshold, batch, k, counter)
//                                              *counter += the rows counted correct (arg-max
//                                              against labels, or a threshold against 0/1)
//   read(src, n, dst)                          n values (double, int32, int64) to the host
#pragma once
