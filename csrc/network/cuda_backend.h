// The GPU Network: the generic plan and step of network/network_impl.h over device memory and
// the kernels of csrc/cuda, plus the whole training step captured as a CUDA graph.
//
// Memory: every arena and workspace is device memory (DeviceVec); the host keeps only the
// plan. All launches go to one stream (set_stream; the caller's CuPy stream).
// Graphs: train_step captures forward, losses, backward, clipping and the optimizer once per
// (batch, target kinds, sample weights), after one eager warm-up step of that shape, and
// replays the graph afterwards. The step runs on the Network's own stream, ordered after the
// caller's stream and before it again. The inputs are first
// copied into the Network's own staging buffers (a graph bakes its pointers), and the
// quantities that change every step (the Philox step of dropout / noise / RReLU, the
// optimizer's learning rate and bias corrections) are read by the kernels from a small device
// block written before each launch. A plan change (optimizer, clipping, losses, freezing,
// decay scope, larger batch) drops the captured graphs. Steps run eagerly (same kernels)
// with Adafactor (host-computed step scalars), while the first batch initializes BatchNorm's
// running statistics, while layer gradients are recorded, or when graphs are switched off.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "common/optimizer.h"
#include "cuda/common.cuh"
#include "network/backend.h"
#include "network/network.h"

namespace fm::cuda {

// A device array that grows (contents kept) and frees itself; not copyable.
template <class U>
class DeviceVec {
 public:
  DeviceVec() = default;
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;
  DeviceVec(DeviceVec&& o) noexcept : p_(o.p_), n_(o.n_), cap_(o.cap_) {
    o.p_ = nullptr;
    o.n_ = o.cap_ = 0;
  }
  DeviceVec& operator=(DeviceVec&& o) noexcept;
  ~DeviceVec();
  U* data() { return p_; }
  const U* data() const { return p_; }
  size_t size() const { return n_; }
  void resize(size_t n);
  void assign(size_t n, U v);

 private:
  U* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

// The device values a replayed graph reads each step (written by train_step before a launch).
template <class T>
struct StepBlock {
  OptCoef<T> coef;         // make_opt_coef for this step
  std::uint64_t rng_step;  // the Philox key's step
};

struct CudaBackend {
  template <class U>
  using Vec = DeviceVec<U>;
  static constexpr bool kHostMemory = false;
  static index_t rbf_workspace_size(index_t K);

  cudaStream_t stream = nullptr;
  // While a graph is being captured: device pointers to the per-step values (else null).
  const std::uint64_t* dev_step = nullptr;
  const void* dev_coef = nullptr;    // const OptCoef<T>*
  DeviceVec<double> scale_buf;       // the clip / skip factor of the update
  DeviceVec<std::int32_t> flag_buf;  // indices_valid's and all_finite's answer
  // GEMM operand precision of the float32 dense layers: 0 float32, 1 bfloat16, 2 float16
  // (mixed precision: fp32 master weights, gradients, optimizer state and elementwise math;
  // half-width copies of X, W and dZ feed the tensor cores, accumulating in fp32).
  int precision = 0;

  template <class T>
  void copy(T* dst, const T* src, index_t n);
  template <class T>
  void fill(T* dst, index_t n, T v);
  template <class T>
  void scale(T* x, index_t n, T w);
  template <class T>
  void add(T* acc, const T* src, index_t n);
  void weighted_sum(const double* v, const std::vector<double>& w, double* out);
  template <class U>
  void read(const U* src, size_t n, U* dst);  // synchronizes the stream
  // Whether all n values are finite (one pass, a flag read back: synchronizes).
  template <class T>
  bool all_finite(const T* x, index_t n);
  // Trainer.fit's indexed step (see CpuBackend): index check (synchronizes), row gather /
  // scatter, running accuracy count (an int64 counter in device memory).
  bool indices_valid(const std::int64_t* idx, index_t batch, index_t n_rows);
  // dst <- backup when the step's update factor (grad_scale) says "skipped" (NaN).
  template <class T>
  void restore_if_skipped(T* dst, const T* backup, index_t n, const GradScale& scale);
  template <class U>
  void gather_rows(U* dst, const U* src, const std::int64_t* idx, index_t batch, index_t width);
  template <class U>
  void scatter_rows(U* dst, const U* src, const std::int64_t* idx, index_t batch, index_t width);
  template <class T>
  void count_correct(int mode, const T* out, const std::int32_t* labels, const T* target,
                     T threshold, index_t batch, index_t k, std::int64_t* counter);

  template <class T>
  void dense_forward(const T* X, const T* W, const T* b, T* Z, T* A, index_t batch, index_t n_in,
                     index_t n_out, Act act, const ActParams<T>& p);
  template <class T>
  void dense_backward(const T* X, const T* W, const T* Z, const T* dA, T* dZ, T* dW, T* db, T* dX,
                      T* dparams, index_t batch, index_t n_in, index_t n_out, Act act,
                      const ActParams<T>& p);
  template <class T>
  void batchnorm_forward_train(const T* x, T* y, const T* gamma, const T* beta, T* mean, T* invstd,
                               T* rmean, T* rvar, index_t rows, index_t cols, T momentum, T eps,
                               bool init_from_batch);
  template <class T>
  void batchnorm_forward_infer(const T* x, T* y, const T* gamma, const T* beta, const T* rmean,
                               const T* rvar, index_t rows, index_t cols, T eps);
  template <class T>
  void batchnorm_backward(const T* x, const T* dy, const T* gamma, const T* mean, const T* invstd,
                          T* dx, T* dgamma, T* dbeta, index_t rows, index_t cols);
  template <class T>
  void dropout_forward(const T* x, T* y, index_t n, T rate, const PhiloxKey& key);
  template <class T>
  void dropout_backward(const T* dy, T* dx, index_t n, T rate, const PhiloxKey& key);
  template <class T>
  void gaussian_noise_forward(const T* x, T* y, index_t n, T stddev, const PhiloxKey& key);
  template <class T>
  void activation_forward(Act a, const T* z, T* y, index_t rows, index_t cols,
                          const ActParams<T>& p);
  template <class T>
  void activation_backward(Act a, const T* z, const T* dy, T* dz, T* dbias, T* dparams,
                           index_t rows, index_t cols, const ActParams<T>& p);
  template <class T>
  void softmax_forward(const T* z, T* y, index_t rows, index_t cols);
  template <class T>
  void softmax_backward(const T* y, const T* dy, T* dz, index_t rows, index_t cols);
  template <class T>
  void maxout_forward(const T* z, T* y, index_t rows, index_t units, index_t pieces);
  template <class T>
  void maxout_backward(const T* z, const T* dy, T* dz, index_t rows, index_t units, index_t pieces);
  template <class T>
  void rbf_widths(const T* log_sigma, T* sigma, index_t K);
  template <class T>
  void rbf_forward(const T* X, const T* C, const T* sigma, T* D, T* Phi, T* work, index_t batch,
                   index_t n_in, index_t K);
  template <class T>
  void rbf_backward(const T* X, const T* C, const T* sigma, const T* D, const T* Phi, T* G, T* dX,
                    T* dC, T* dsigma, T* work, index_t batch, index_t n_in, index_t K);
  template <class T>
  void rbf_log_width_grad(T* dlog_sigma, const T* sigma, index_t K);
  template <class T>
  void loss_forward_backward(Loss loss, const T* logits, const T* target,
                             const std::int32_t* labels, const T* sw, T* dlogits, index_t rows,
                             index_t cols, const LossParams<T>& p, double* out);
  // Clip factor and (loss != null) the finite-loss check, both on the device.
  template <class T>
  GradScale grad_scale(const T* grads, index_t n, double clip_norm, const double* loss);
  template <class T>
  void optimizer_step(const OptConfig& c, T* params, const T* grads, T* state, const Segment* segs,
                      int nseg, index_t n, std::int64_t step, double lr, const GradScale& scale);

 private:
  void dense_forward_half(const float* X, const float* W, const float* b, float* Z, float* A,
                          index_t batch, index_t n_in, index_t n_out, Act act,
                          const ActParams<float>& p);
  void dense_backward_half(const float* X, const float* W, const float* Z, const float* dA,
                           float* dZ, float* dW, float* db, float* dX, float* dparams,
                           index_t batch, index_t n_in, index_t n_out, Act act,
                           const ActParams<float>& p);
  template <class T>
  ActParams<T> replay(const ActParams<T>& p) const {
    ActParams<T> q = p;
    q.step_ptr = dev_step;
    return q;
  }
};

// The non-blocking stream the training steps of every CudaNetwork on `device` run on.
cudaStream_t network_stream(int device);

template <class T>
class CudaNetwork : public Network<T, CudaBackend> {
  using Base = Network<T, CudaBackend>;

 public:
  // The arenas are filled on the legacy default stream; the constructor waits for that, so
  // a caller on any stream sees initialized memory.
  CudaNetwork(index_t n_in, std::vector<LayerSpec> trunk, std::vector<HeadSpec> heads,
              std::uint64_t seed)
      : Base(n_in, std::move(trunk), std::move(heads), seed) {
    FM_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  }
  CudaNetwork(const CudaNetwork&) = delete;
  CudaNetwork& operator=(const CudaNetwork&) = delete;
  ~CudaNetwork();

  void set_stream(cudaStream_t s) { this->be_.stream = s; }
  // The device the arenas live on (current at construction).
  int device() const { return device_; }
  cudaStream_t stream() const { return this->be_.stream; }
  void set_use_graphs(bool on);  // off: every step runs eagerly
  // The base versions, ordered with the device work queued on any stream.
  void set_layer_trainable(int layer, bool trainable);
  void set_optimizer(const OptConfig& cfg);
  // GEMM operand precision (0 float32, 1 bfloat16, 2 float16); float32 networks only.
  void set_precision(int p);
  int precision() const { return this->be_.precision; }
  bool use_graphs() const { return use_graphs_; }
  int n_graphs() const { return static_cast<int>(graphs_.size()); }

  // The fused step. sync = true: returns the loss (read back; a non-finite loss leaves the
  // parameters and the optimizer's step count unchanged, as on the CPU). sync = false: no host
  // synchronization; the loss stays in loss_slot() and NaN is returned (a non-finite loss
  // skips the update on the device, the step count advances).
  double train_step(const T* X, index_t batch, const std::vector<const T*>& target,
                    const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                    double lr, bool sync);
  // Network::train_step_indexed around this class's (graph-captured) step: the gather and the
  // statistics run on the caller's stream, the step between them; returns the loss (read back).
  double train_step_indexed(const T* X, index_t n_rows, const std::int64_t* idx, index_t batch,
                            const std::vector<const T*>& target,
                            const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                            double lr) {
    const auto g = this->gather_batch(X, n_rows, idx, batch, target, labels, sample_weight);
    const double loss =
        train_step(this->gather_x_.data(), batch, g.target, g.labels, g.weight, lr, true);
    this->record_step(loss, idx, batch, g);
    return loss;
  }

 private:
  using Key = std::tuple<index_t, std::vector<int>, bool, bool>;  // + TF32 (baked into GEMMs)
  bool graph_eligible() const;
  void drop_graphs();
  void stage(const T* X, index_t batch, const std::vector<const T*>& target,
             const std::vector<const std::int32_t*>& labels, const T* sample_weight,
             std::vector<const T*>& st_target, std::vector<const std::int32_t*>& st_labels);

  static int current_device() {
    int d = 0;
    FM_CUDA_CHECK(cudaGetDevice(&d));
    return d;
  }
  int device_ = current_device();
  bool use_graphs_ = true;
  std::map<Key, cudaGraphExec_t> graphs_;
  std::set<Key> warmed_;               // shapes that had their eager first step
  cudaStream_t own_stream_ = nullptr;  // network_stream(device_): shared, never destroyed
  cudaEvent_t enter_ = nullptr, leave_ = nullptr;
  std::uint64_t graph_version_ = 0;
  DeviceVec<T> x_stage_, t_stage_, w_stage_;
  DeviceVec<std::int32_t> l_stage_;
  DeviceVec<StepBlock<T>> block_;
  // Pinned host copies of the step block (two, alternating; an event guards reuse).
  StepBlock<T>* host_block_ = nullptr;
  cudaEvent_t block_done_[2] = {nullptr, nullptr};
  int block_slot_ = 0;
};

}  // namespace fm::cuda
