// The Network: a plan of layers compiled once from the Python specs, parameters and
// gradients in flat arenas, preallocated workspaces, and the one-call training step
// (forward, loss, backward, regularization, optimizer update) run with the GIL released.
//
// Structure: a trunk chain of layers followed by one or more heads (each a chain of
// layers ending in a loss; deck 002's multi-task learning: the total loss is the
// weighted sum of the heads' losses and the trunk receives the sum of their gradients).
// A plain MLP is a trunk and one head with no layers of its own.
//
// Arenas: params (all W, b, activation parameters, BN gamma/beta, RBF centres and log
// widths), grads (same layout), optimizer state (size from optimizer_state_size), buffers
// (BN running statistics: not trained). Layers hold offsets into them. Workspaces are sized for the
// largest batch seen so far: a larger batch grows them once, a smaller one reuses them.
//
// Backends: the Network is a template over its backend B (network/cpu_backend.h: host
// memory and csrc/cpu's kernels; network/cuda_backend.h: device memory, csrc/cuda's kernels on a
// stream). The plan, the chains, the loss bookkeeping and the update logic are written once
// here (network/network_impl.h); B supplies the storage (B::Vec<T>), the kernels with the CPU
// signatures, and the few glue operations (copy, fill, scale, add, loss slots).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/activation.h"
#include "common/loss.h"
#include "common/optimizer.h"

namespace fm {

enum class LayerKind : int { dense, batchnorm, dropout, noise, activation, softmax, maxout, rbf };

// One layer as specified from Python (fusedmlp.layers builds it).
struct LayerSpec {
  int kind = 0;
  index_t units = 0;     // dense: n_out; maxout: pieces per unit; rbf: centres
  bool use_bias = true;  // dense
  int act = 0;           // dense / activation: activation code
  double alpha = 0.0, a = 1.0, b = 1.0, c = 1.0, d = 1.0, lower = 0.125, upper = 1.0 / 3.0;
  int hinges = 1;                     // APL
  double rate = 0.0;                  // dropout rate or noise standard deviation
  double momentum = 0.1, eps = 1e-5;  // batchnorm
  bool affine = true;                 // batchnorm: learnable gamma and beta
  bool init_from_batch = false;  // batchnorm: running stats start at the first batch (deck 001)
  bool max_norm = false;         // dense: the max-norm constraint applies to W's columns
  bool decay_bias = false;       // dense: weight decay / L1 / L2 also apply to b
};

// A head's loss: kind, weight in the total, and its parameters.
struct HeadSpec {
  std::vector<LayerSpec> layers;
  int loss = 0;
  double weight = 1.0;
  double label_smoothing = 0.0;
  bool smoothing_uniform_k = false;
  bool half = false;
};

// The gradient multiplier of one update: a host value, or (CUDA) a device scalar written by
// the clip-norm / finite-loss kernels (NaN there means "skip this update").
struct GradScale {
  double host = 1.0;
  const double* device = nullptr;
};

// A parameter tensor's place in the arena, for Python views and get_weights().
struct ParamInfo {
  int layer;         // global layer index (trunk first, then heads in order)
  std::string name;  // "W", "b", "alpha", "gamma", "beta", ...
  index_t offset, rows, cols;
  bool trainable;  // false for running statistics (in the buffer arena)
};

template <class T, class B>
class Network {
 public:
  using Vec = typename B::template Vec<T>;

  Network(index_t n_in, std::vector<LayerSpec> trunk, std::vector<HeadSpec> heads,
          std::uint64_t seed);

  // Held by the bindings around every call that reads or writes the arenas, the workspaces or
  // the counters: two threads stepping (or stepping and predicting with) one Network take turns
  // instead of sharing workspaces that a larger batch reallocates. The Network itself never
  // takes it, so a caller holding it may call any member.
  std::mutex& mutex() const { return mutex_; }

  index_t n_in() const { return n_in_; }
  index_t n_outputs(int head) const;
  int n_heads() const { return static_cast<int>(heads_.size()); }
  index_t n_params() const { return static_cast<index_t>(params_.size()); }
  const std::vector<ParamInfo>& param_info() const { return info_; }
  T* params() { return params_.data(); }
  T* grads() { return grads_.data(); }
  T* buffers() { return buffers_.data(); }
  index_t n_buffers() const { return static_cast<index_t>(buffers_.size()); }
  T* opt_state() { return state_.data(); }
  index_t n_opt_state() const { return static_cast<index_t>(state_.size()); }

  // The loss of head h (kind, weight in the total, label smoothing, MSE 1/2 convention).
  void set_head_loss(int head, int loss, double weight, double label_smoothing,
                     bool smoothing_uniform_k, bool half);

  // Optimizer: configuration and (re)allocation of its zeroed state.
  void set_optimizer(const OptConfig& cfg);
  const OptConfig& optimizer() const { return opt_; }
  std::int64_t opt_step() const { return opt_step_; }
  void set_opt_step(std::int64_t s) { opt_step_ = s; }
  // Gradient clipping by global norm (0 = off), applied before the update.
  void set_clip_norm(double c) {
    clip_norm_ = c;
    touch_plan();
  }
  // The momentum of a cycling schedule (1-cycle, deck 003): SGD/RMSProp's momentum, or beta1 of
  // the Adam family, changed between steps without touching the optimizer state.
  void set_momentum(double m);
  // Which parameters penalties, decoupled decay and max-norm touch (the optimizer's `decay`):
  // 0 "weights" (each layer's default: dense W, and b when its spec says so), 1 all, 2 none.
  void set_decay_scope(int scope);

  // Random stream position (dropout, noise, RReLU): step counter of the Philox key.
  std::uint64_t rng_step() const { return rng_step_; }
  void set_rng_step(std::uint64_t s) { rng_step_ = s; }
  std::uint64_t seed() const { return seed_; }
  std::int64_t bn_updates() const { return bn_updates_; }
  void set_bn_updates(std::int64_t n) { bn_updates_ = n; }

  // Inference (training = false: running BN stats, no dropout/noise) or training-mode
  // forward. Writes head h's output (batch, n_outputs(h)) to out[h].
  void forward(const T* X, index_t batch, const std::vector<T*>& out, bool training);

  // Targets of head h: dense (batch, n_outputs(h)) in target[h] or int32 labels in labels[h];
  // sample_weight (batch) or null. Returns the weighted total loss; fills the gradient arena
  // (and dX (batch, n_in) when non-null: the input gradient, for FGSM).
  // Always in training mode (batch statistics, dropout at the current RNG step, which is
  // not advanced: calling it twice gives the same gradients).
  double compute_gradients(const T* X, index_t batch, const std::vector<const T*>& target,
                           const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                           T* dX, std::vector<double>* head_losses = nullptr);

  // The fused step: compute_gradients (training mode), clipping, the optimizer update with
  // learning rate lr, the max-norm constraint. Advances the RNG and optimizer steps.
  // A non-finite loss skips the update and is returned. CPU: so does a non-finite gradient or
  // BatchNorm running statistic with a finite loss (BatchNorm over finite inputs whose variance
  // overflows T); the step then returns NaN. A skipped step leaves the parameters, the optimizer
  // state and step, and (CPU) the BatchNorm statistics as they were; the RNG step advances.
  double train_step(const T* X, index_t batch, const std::vector<const T*>& target,
                    const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                    double lr);

  // The same step without reading the loss back to the host: the loss stays in loss_slot()
  // (a device scalar on the GPU) and a non-finite loss skips the update on the device (the
  // optimizer's step count still advances; the CPU backend checks on the host as train_step).
  void train_step_async(const T* X, index_t batch, const std::vector<const T*>& target,
                        const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                        double lr);
  // The weighted total loss of the last compute_gradients / train_step(_async) / evaluate,
  // in the backend's memory (host for the CPU, device for CUDA).
  const double* loss_slot() const { return loss_.data() + heads_.size(); }
  B& backend() { return be_; }

  // The epoch statistics of Trainer.fit's running metrics (Keras reports training metrics the
  // same way): train_step_indexed adds each step's loss and, per head, what its accuracy needs,
  // from the outputs the step's own (training-mode) forward pass computed; no second pass.
  // The host keeps the loss sum and the plan; the correct-row counters and the kept outputs
  // live in the backend's memory (on the GPU nothing crosses to the host until they are read).
  struct StepStats {
    double loss_sum = 0.0;  // sum over the finite steps of (batch loss) * (batch rows)
    std::int64_t rows = 0;  // rows of those steps
    // Per head: how its accuracy is counted (kNoCount, kArgmax: arg-max of the outputs against
    // int32 labels, kThreshold: one output column, prediction (output >= threshold) compared
    // with the 0/1 target) and the threshold.
    std::vector<int> mode;
    std::vector<double> threshold;
    index_t n_rows = 0;  // rows of the training set (the kept outputs' row count)
  };
  static constexpr int kNoCount = 0, kArgmax = 1, kThreshold = 2;
  // Starts an epoch's statistics over a training set of n_rows rows (mode, threshold and
  // keep_outputs: one entry per head).
  void reset_step_stats(index_t n_rows, const std::vector<int>& mode,
                        const std::vector<double>& threshold,
                        const std::vector<bool>& keep_outputs);
  const StepStats& step_stats() const { return stats_; }
  // Per head, the rows counted correct since reset_step_stats (reads backend memory: on the GPU
  // this synchronizes the stream).
  std::vector<std::int64_t> step_correct();
  // Head h's kept outputs, (n_rows, n_outputs(h)) in backend memory: the outputs of each step's
  // rows at their row index; null when reset_step_stats did not ask to keep them.
  const T* step_outputs(int h) const;

  // Trainer.fit's step on rows idx[0..batch) of the full training set: X (n_rows, n_in); the
  // targets (n_rows, n_outputs(h)) or labels (n_rows) of head h; sample_weight (n_rows) or null;
  // idx (batch) int64 row indices. All in backend memory. The rows are gathered into the
  // Network's own workspace (no copy through Python), the fused train_step runs on them and its
  // outputs feed the step statistics. An index outside [0, n_rows) is a ValueError.
  double train_step_indexed(const T* X, index_t n_rows, const std::int64_t* idx, index_t batch,
                            const std::vector<const T*>& target,
                            const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                            double lr);

  // The update alone (after compute_gradients): clipping, optimizer, max-norm. Used by
  // callers that inspect or modify the gradients in between (FGSM, gradient checks, the
  // data-parallel all-reduce). The skip rule holds here too: a non-finite gradient leaves the
  // parameters, the optimizer state and opt_step as they were (the caller checked the loss).
  // Returns whether the update ran; the RNG step advances either way.
  bool train_step_update_only(double lr) {
    const bool finite = be_.all_finite(grads_.data(), n_params());
    if (finite) apply_update(lr);
    ++rng_step_;
    return finite;
  }

  // Freezing (deck 003's 2-step RBF learning, fine-tuning): a frozen layer's parameters keep
  // their values; their gradient segment is held at zero (so global-norm clipping ignores
  // them) and the optimizer step skips them. Its input gradient still flows to the layers
  // below. BN running statistics still update in training mode.
  void set_layer_trainable(int layer, bool trainable);
  bool layer_trainable(int layer) const;

  // Loss only (inference mode, no parameter change).
  // out (one pointer per head, null entries skipped) receives the outputs as forward() does.
  double evaluate(const T* X, index_t batch, const std::vector<const T*>& target,
                  const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                  std::vector<double>* head_losses = nullptr, const std::vector<T*>* out = nullptr);

  // Per-layer outputs of the last forward pass (diagnostics): layer l's (batch, width).
  const T* layer_output(int layer) const;
  index_t layer_width(int layer) const;
  int n_layers() const { return static_cast<int>(layers_.size()); }
  index_t last_batch() const { return last_batch_; }

  // Diagnostics (fusedmlp.diagnostics): while on, compute_gradients keeps a copy of the
  // gradient of the loss w.r.t. every layer's output, layer_grad(l) (grad_batch(), width).
  // Off by default: the training step then makes no copy.
  void set_record_layer_grads(bool on) { record_grads_ = on; }
  bool record_layer_grads() const { return record_grads_; }
  const T* layer_grad(int layer) const;
  index_t grad_batch() const { return grad_batch_; }

 protected:
  struct Layer {
    LayerSpec spec;
    index_t n_in = 0, n_out = 0;
    index_t w = -1, b = -1, p = -1, gamma = -1, beta = -1;  // param arena offsets
    index_t rmean = -1, rvar = -1;                          // buffer arena offsets
    std::uint32_t id = 0;                                   // Philox layer number
    Vec Z, A, mean, invstd;                                 // workspaces
    index_t mu = -1, log_sigma = -1;  // rbf: centres (K, n_in), log widths (K): param arena
    Vec rbf_ws;                       // rbf: sigma (K), then the kernel's scratch
    bool frozen = false;              // set_layer_trainable(false)
    Vec dout;                         // dL/d(output) of the last backward (only when recording)
    const T* in = nullptr;            // input of the last forward
    const T* out = nullptr;           // output of the last forward
  };
  struct Head {
    std::vector<int> layers;  // indices into layers_
    HeadSpec spec;
    index_t n_out = 0;
    Vec dlogits;
    const T* out = nullptr;
  };

  // train_step_indexed in two halves around the step, so that CudaNetwork runs its own
  // (graph-captured) step between them: the batch gathered into the gather_* workspaces, then
  // the step's loss and outputs added to the statistics.
  struct Gathered {
    std::vector<const T*> target;
    std::vector<const std::int32_t*> labels;
    const T* weight = nullptr;
  };
  Gathered gather_batch(const T* X, index_t n_rows, const std::int64_t* idx, index_t batch,
                        const std::vector<const T*>& target,
                        const std::vector<const std::int32_t*>& labels, const T* sample_weight);
  void record_step(double loss, const std::int64_t* idx, index_t batch, const Gathered& g);

  void ensure_workspace(index_t batch);
  ActParams<T> act_params(const Layer& L, bool training) const;
  const T* forward_chain(const std::vector<int>& chain, const T* x, index_t batch, bool training);
  // Backward through a chain from dout (batch, width of the chain's output), given the
  // chain's input x; writes the input gradient into dx when non-null.
  void backward_chain(const std::vector<int>& chain, index_t batch, T* dout, T* dx);
  // Each head's loss into loss_[h], the weighted total into loss_[n_heads] (backend memory).
  void head_losses(index_t batch, const std::vector<const T*>& target,
                   const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                   bool want_grad);
  // The losses read back to the host: returns the total, fills per_head when non-null.
  double read_losses(std::vector<double>* per_head);
  // Forward + losses + backward (compute_gradients without reading the loss).
  void gradients_async(const T* X, index_t batch, const std::vector<const T*>& target,
                       const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                       T* dX);
  T* other_buffer(const T* g);
  // Clipping, the optimizer and max-norm. skip_if_nonfinite: the backend skips the update on
  // the device when the total loss in loss_slot() is not finite (no host read).
  GradScale apply_update(double lr, bool skip_if_nonfinite = false);
  // The device step (device backends): forward, losses, backward and the update queued with no
  // host round trip; the device decides the skip (see backend.h) and then also puts the
  // BatchNorm statistics back. CudaNetwork captures exactly this into its graph.
  void device_step(const T* X, index_t batch, const std::vector<const T*>& target,
                   const std::vector<const std::int32_t*>& labels, const T* sample_weight,
                   double lr);
  // A device-decided skip seen on the host (a read-back NaN loss): the counters the step
  // advanced go back, as the CPU's update_if_finite does.
  void count_skipped() {
    --opt_step_;
    if (has_bn_) --bn_updates_;
  }
  // The BatchNorm statistics before a step (bn_backup_), and back with bn_updates_ when the step
  // is skipped (both backends).
  void save_bn_stats();
  void restore_bn_stats();
  // CPU: the update after gradients_async unless the loss, a gradient or a BatchNorm statistic
  // is not finite; then restore_bn_stats(). Returns whether the update ran.
  bool update_if_finite(double lr, double loss);
  // The optimizer step over the trainable segments (all of them unless a layer is frozen).
  void update_params(double lr, const GradScale& grad_scale);
  // Plan changes that captured work (CUDA graphs) depends on bump this counter.
  void touch_plan() { ++plan_version_; }
  void zero_layer_grads(int layer);

  index_t n_in_;
  std::uint64_t seed_;
  std::vector<Layer> layers_;
  std::vector<int> trunk_;
  std::vector<Head> heads_;
  B be_;
  Vec params_, grads_, buffers_, state_;
  typename B::template Vec<double> loss_;  // per-head losses, then the weighted total
  std::vector<double> head_weights_;
  std::vector<ParamInfo> info_;
  std::vector<Segment> segments_;
  std::vector<char> decay_default_;  // per segment: the layer's own decay flag (scope "weights")
  bool any_frozen_ = false;
  std::vector<Segment> active_segments_;  // segments_ of the trainable layers
  std::vector<char> segment_frozen_;      // per entry of segments_
  OptConfig opt_{};
  bool has_opt_ = false;
  std::int64_t opt_step_ = 0;
  double clip_norm_ = 0.0;
  std::uint64_t rng_step_ = 0;
  std::int64_t bn_updates_ = 0;
  index_t capacity_ = 0, last_batch_ = 0, max_width_ = 0;
  bool record_grads_ = false;
  index_t grad_batch_ = 0;  // batch of the recorded layer gradients (0: none)
  Vec gbuf0_, gbuf1_, trunk_grad_, head_dx_;
  const T* trunk_out_ = nullptr;
  bool has_bn_ = false;
  Vec bn_backup_;  // BatchNorm statistics before a step, restored if the step is skipped
  std::uint64_t plan_version_ = 0;
  StepStats stats_;
  typename B::template Vec<std::int64_t> correct_;  // per head: rows counted correct
  std::vector<Vec> kept_;                           // per head: kept outputs (or empty)
  // train_step_indexed's gathered batch: rows, targets, labels, weights (backend memory).
  Vec gather_x_, gather_w_;
  std::vector<Vec> gather_t_;
  std::vector<typename B::template Vec<std::int32_t>> gather_l_;
  mutable std::mutex mutex_;
};

}  // namespace fm
