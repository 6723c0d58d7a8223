// The Network's plan, arenas, forward/backward over the layer chains and the fused step,
// written once for every backend (included by network/network.cpp for the CPU and by
// network/cuda_backend.cu for the GPU; B is the backend, see network/network.h).
// Cost per training step: the layers' own costs (csrc/cpu/*.cpp, csrc/cuda/*.cu) plus one pass
// of the optimizer over the parameter arena; no allocation once the workspaces fit the batch.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "network/network.h"

namespace fm {

namespace {

bool is_kind(const LayerSpec& s, LayerKind k) {
  return s.kind == static_cast<int>(k);
}

// The BLAS interfaces (OpenBLAS LP64, cuBLAS) take int dimensions: no width may exceed this.
constexpr index_t kMaxWidth = std::numeric_limits<std::int32_t>::max();

const char* kind_name(int kind) {
  static const char* names[] = {"Dense",      "BatchNorm", "Dropout", "GaussianNoise",
                                "Activation", "Softmax",   "Maxout",  "RBF"};
  return kind >= 0 && kind <= static_cast<int>(LayerKind::rbf) ? names[kind] : "layer";
}

std::string format_bytes(double bytes) {
  static const char* units[] = {"B", "KB", "MB", "GB", "TB", "PB", "EB", "ZB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 7) {
    bytes /= 1000.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", bytes, units[u]);
  return buf;
}

// The most bytes one Network may hold: the machine's physical memory for host arenas (a larger
// request can only fail, or swap the machine to a halt), else what a 64-bit size can count
// (device memory: the allocation reports its own failure).
template <class B>
double memory_limit_bytes() {
  if constexpr (B::kHostMemory) {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) return static_cast<double>(pages) * static_cast<double>(page);
  }
  return static_cast<double>(std::numeric_limits<index_t>::max());
}

void check_spec(const LayerSpec& s, index_t width, size_t index) {
  FM_CHECK(s.kind >= 0 && s.kind <= static_cast<int>(LayerKind::rbf), "layers[", index,
           "]: unknown layer kind ", s.kind);
  if (is_kind(s, LayerKind::dense))
    FM_CHECK(s.units >= 1 && s.units <= kMaxWidth, "layers[", index, "]: units must be in [1, ",
             kMaxWidth, "], got ", s.units);
  if (is_kind(s, LayerKind::rbf))
    FM_CHECK(s.units >= 1 && s.units <= kMaxWidth, "layers[", index, "]: n_centers must be in [1, ",
             kMaxWidth, "], got ", s.units);
  if (is_kind(s, LayerKind::dense) || is_kind(s, LayerKind::activation))
    FM_CHECK(s.act >= 0 && s.act < static_cast<int>(Act::count), "layers[", index,
             "]: unknown activation code ", s.act);
  if (is_kind(s, LayerKind::dropout))
    FM_CHECK(s.rate >= 0.0 && s.rate < 1.0, "layers[", index,
             "]: dropout rate must be in [0, 1), got ", s.rate);
  if (is_kind(s, LayerKind::noise))
    FM_CHECK(s.rate >= 0.0, "layers[", index, "]: noise stddev must be >= 0, got ", s.rate);
  if (is_kind(s, LayerKind::batchnorm)) {
    FM_CHECK(s.momentum >= 0.0 && s.momentum <= 1.0, "layers[", index,
             "]: momentum must be in [0, 1]");
    FM_CHECK(s.eps > 0.0, "layers[", index, "]: eps must be > 0");
  }
  if (is_kind(s, LayerKind::maxout))
    FM_CHECK(s.units >= 1 && width % s.units == 0, "layers[", index, "]: maxout pieces (", s.units,
             ") must divide the input width (", width, ")");
}

}  // namespace

template <class T, class B>
Network<T, B>::Network(index_t n_in, std::vector<LayerSpec> trunk, std::vector<HeadSpec> heads,
                       std::uint64_t seed)
    : n_in_(n_in), seed_(seed) {
  FM_CHECK(n_in >= 1 && n_in <= kMaxWidth, "n_in: expected in [1, ", kMaxWidth, "], got ", n_in);
  FM_CHECK(!heads.empty(), "heads: a network needs at least one output head");
  index_t n_params = 0, n_buffers = 0;
  // Sizes are checked in floating point (no overflow) before n_params grows and before
  // anything is allocated: parameters and their gradients, T each.
  const double limit = memory_limit_bytes<B>();
  auto add_param = [&](Layer& L, index_t& off, const char* name, index_t rows, index_t cols,
                       bool decay, bool max_norm) {
    const double layer_bytes = 2.0 * sizeof(T) * static_cast<double>(rows) * cols;
    const double total_bytes = 2.0 * sizeof(T) * static_cast<double>(n_params) + layer_bytes;
    if (total_bytes > limit)
      throw MemoryError(detail::concat(
          "layer ", layers_.size(), " (", kind_name(L.spec.kind), " ", L.n_in, "x", L.n_out,
          "): its ", name, " (", rows, "x", cols, ") and gradient need ", format_bytes(layer_bytes),
          ", the network ", format_bytes(total_bytes), " so far: more than ",
          B::kHostMemory ? "this machine's memory (" + format_bytes(limit) + ")"
                         : std::string("a 64-bit size can count")));
    off = n_params;
    info_.push_back(ParamInfo{static_cast<int>(layers_.size()), name, off, rows, cols, true});
    Segment seg{};
    seg.offset = off;
    seg.rows = rows;
    seg.cols = cols;
    seg.decay = decay;
    seg.max_norm = max_norm;
    segments_.push_back(seg);
    decay_default_.push_back(decay ? 1 : 0);
    n_params += rows * cols;
  };
  auto add_buffer = [&](Layer& L, index_t& off, const char* name, index_t n) {
    off = n_buffers;
    info_.push_back(ParamInfo{static_cast<int>(layers_.size()), name, off, 1, n, false});
    n_buffers += n;
  };
  auto build = [&](const std::vector<LayerSpec>& specs, index_t width, std::vector<int>& chain) {
    for (size_t i = 0; i < specs.size(); ++i) {
      const LayerSpec& s = specs[i];
      check_spec(s, width, layers_.size());
      Layer L;
      L.spec = s;
      L.n_in = width;
      L.id = static_cast<std::uint32_t>(layers_.size() + 1);
      const auto kind = static_cast<LayerKind>(s.kind);
      L.n_out = kind == LayerKind::dense || kind == LayerKind::rbf ? s.units
                : kind == LayerKind::maxout                        ? width / s.units
                                                                   : width;
      if (kind == LayerKind::dense) {
        add_param(L, L.w, "W", L.n_in, L.n_out, true, s.max_norm);
        if (s.use_bias) add_param(L, L.b, "b", 1, L.n_out, s.decay_bias, false);
      }
      if (kind == LayerKind::dense || kind == LayerKind::activation) {
        const int np = act_num_params(static_cast<Act>(s.act), s.hinges);
        if (np > 0) add_param(L, L.p, "act_params", np, L.n_out, false, false);
      }
      if (kind == LayerKind::rbf) {
        // Centres live in input space and widths are scales: no weight decay on either.
        add_param(L, L.mu, "centers", L.n_out, L.n_in, false, false);
        add_param(L, L.log_sigma, "log_widths", 1, L.n_out, false, false);
        L.rbf_ws.assign(L.n_out + B::rbf_workspace_size(L.n_out), T(0));
      }
      if (kind == LayerKind::batchnorm) {
        if (s.affine) {
          add_param(L, L.gamma, "gamma", 1, width, false, false);
          add_param(L, L.beta, "beta", 1, width, false, false);
        }
        add_buffer(L, L.rmean, "running_mean", width);
        add_buffer(L, L.rvar, "running_var", width);
      }
      max_width_ = std::max({max_width_, L.n_in, L.n_out});
      chain.push_back(static_cast<int>(layers_.size()));
      layers_.push_back(std::move(L));
      width = layers_.back().n_out;
    }
    return width;
  };
  const index_t trunk_width = build(trunk, n_in, trunk_);
  max_width_ = std::max(max_width_, n_in);
  for (auto& hs : heads) {
    Head h;
    h.spec = hs;
    FM_CHECK(hs.loss >= 0 && hs.loss <= static_cast<int>(Loss::cross_entropy),
             "heads: unknown loss ", hs.loss);
    FM_CHECK(std::isfinite(hs.weight) && hs.weight >= 0.0, "heads: loss weight must be >= 0");
    h.n_out = build(hs.layers, trunk_width, h.layers);
    heads_.push_back(std::move(h));
  }
  params_.assign(n_params, T(0));
  grads_.assign(n_params, T(0));
  buffers_.assign(n_buffers, T(0));
  // Defaults: BN gamma = 1, running variance = 1; everything else 0 (Python initializes W).
  for (auto& L : layers_) {
    if (L.gamma >= 0) be_.fill(params_.data() + L.gamma, L.n_in, T(1));
    if (L.rvar >= 0) be_.fill(buffers_.data() + L.rvar, L.n_in, T(1));
    if (L.spec.kind == static_cast<int>(LayerKind::batchnorm)) has_bn_ = true;
  }
  loss_.assign(heads_.size() + 1, 0.0);
  for (auto& h : heads_) head_weights_.push_back(h.spec.weight);
}

template <class T, class B>
index_t Network<T, B>::n_outputs(int head) const {
  FM_CHECK(head >= 0 && head < n_heads(), "head: expected 0 <= head < ", n_heads(), ", got ", head);
  return heads_[head].n_out;
}

template <class T, class B>
void Network<T, B>::set_head_loss(int head, int loss, double weight, double label_smoothing,
                                  bool smoothing_uniform_k, bool half) {
  FM_CHECK(head >= 0 && head < n_heads(), "head: expected 0 <= head < ", n_heads(), ", got ", head);
  FM_CHECK(loss >= 0 && loss <= static_cast<int>(Loss::cross_entropy), "loss: unknown loss code ",
           loss);
  FM_CHECK(std::isfinite(weight) && weight >= 0.0, "loss_weights: expected >= 0, got ", weight);
  FM_CHECK(label_smoothing >= 0.0 && label_smoothing < 1.0,
           "label_smoothing: expected in [0, 1), got ", label_smoothing);
  HeadSpec& s = heads_[head].spec;
  s.loss = loss;
  s.weight = weight;
  s.label_smoothing = label_smoothing;
  s.smoothing_uniform_k = smoothing_uniform_k;
  s.half = half;
  head_weights_[head] = weight;
  touch_plan();
}

template <class T, class B>
void Network<T, B>::set_optimizer(const OptConfig& cfg) {
  check_opt_config_for<T>(cfg);
  opt_ = cfg;
  has_opt_ = true;
  state_.assign(
      opt_state_size(cfg, segments_.data(), static_cast<int>(segments_.size()), n_params()), T(0));
  opt_step_ = 0;
  touch_plan();
}

template <class T, class B>
void Network<T, B>::set_momentum(double m) {
  FM_CHECK(has_opt_, "optimizer: set an optimizer before setting its momentum");
  FM_CHECK(std::isfinite(m) && m >= 0 && m < 1, "momentum: expected a value in [0, 1), got ", m);
  switch (opt_momentum(static_cast<Opt>(opt_.opt))) {
    case OptMomentum::momentum:
      // The momentum buffer exists only when the optimizer was configured with momentum > 0.
      FM_CHECK(opt_.momentum > 0,
               "momentum: cycling needs an optimizer configured with momentum > 0");
      opt_.momentum = m;
      break;
    case OptMomentum::beta1:
      opt_.beta1 = m;
      break;
    case OptMomentum::none:
      FM_CHECK(false, "momentum: ", opt_name(static_cast<Opt>(opt_.opt)),
               " has no momentum to cycle");
  }
}

template <class T, class B>
void Network<T, B>::ensure_workspace(index_t batch) {
  FM_CHECK(batch >= 1, "X: expected at least one row");
  if (batch <= capacity_) {
    last_batch_ = batch;
    return;
  }
  // Per row: each layer's Z and A, each head's logit gradient, and the four (batch, max width)
  // gradient buffers. Checked before allocating (no overflow, no multi-terabyte request).
  double per_row = 4.0 * static_cast<double>(max_width_);
  for (const auto& L : layers_) per_row += 2.0 * static_cast<double>(L.n_out);
  for (const auto& h : heads_) per_row += static_cast<double>(h.n_out);
  const double need = per_row * sizeof(T) * static_cast<double>(batch),
               limit = memory_limit_bytes<B>();
  if (need > limit)
    throw MemoryError(detail::concat(
        "X: a batch of ", batch, " rows needs ", format_bytes(need), " of workspaces: more than ",
        B::kHostMemory ? "this machine's memory (" + format_bytes(limit) + ")"
                       : std::string("a 64-bit size can count"),
        "; use smaller batches"));
  touch_plan();  // workspaces move
  for (auto& L : layers_) {
    const auto kind = static_cast<LayerKind>(L.spec.kind);
    const bool identity_dense =
        kind == LayerKind::dense && L.spec.act == static_cast<int>(Act::identity);
    if (kind == LayerKind::dense || kind == LayerKind::rbf) L.Z.resize(batch * L.n_out);
    if (!identity_dense) L.A.resize(batch * L.n_out);
    if (kind == LayerKind::batchnorm) {
      L.mean.resize(L.n_in);
      L.invstd.resize(L.n_in);
    }
  }
  for (auto& h : heads_) h.dlogits.resize(batch * h.n_out);
  gbuf0_.resize(batch * max_width_);
  gbuf1_.resize(batch * max_width_);
  head_dx_.resize(batch * max_width_);
  if (heads_.size() > 1) trunk_grad_.resize(batch * max_width_);
  // Only once every workspace holds the batch: after a failed allocation (std::bad_alloc) the
  // old capacity still describes every buffer.
  capacity_ = batch;
  last_batch_ = batch;
}

template <class T, class B>
ActParams<T> Network<T, B>::act_params(const Layer& L, bool training) const {
  ActParams<T> p;
  const LayerSpec& s = L.spec;
  p.alpha = T(s.alpha);
  p.a = T(s.a);
  p.b = T(s.b);
  p.c = T(s.c);
  p.d = T(s.d);
  p.lower = T(s.lower);
  p.upper = T(s.upper);
  p.hinges = s.hinges;
  p.unit = L.p >= 0 ? params_.data() + L.p : nullptr;
  p.cols = L.n_out;
  p.key = PhiloxKey{seed_, rng_step_, L.id};
  p.training = training;
  return p;
}

template <class T, class B>
const T* Network<T, B>::forward_chain(const std::vector<int>& chain, const T* x, index_t batch,
                                      bool training) {
  const T* cur = x;
  for (int li : chain) {
    Layer& L = layers_[li];
    const LayerSpec& s = L.spec;
    const index_t n = L.n_out;
    L.in = cur;
    T* A = L.A.data();
    switch (static_cast<LayerKind>(s.kind)) {
      case LayerKind::dense: {
        const Act act = static_cast<Act>(s.act);
        be_.dense_forward(cur, params_.data() + L.w, L.b >= 0 ? params_.data() + L.b : nullptr,
                          L.Z.data(), act == Act::identity ? L.Z.data() : A, batch, L.n_in, n, act,
                          act_params(L, training));
        L.out = act == Act::identity ? L.Z.data() : A;
        break;
      }
      case LayerKind::batchnorm: {
        const T* g = L.gamma >= 0 ? params_.data() + L.gamma : nullptr;
        const T* b = L.beta >= 0 ? params_.data() + L.beta : nullptr;
        if (training) {
          be_.batchnorm_forward_train(cur, A, g, b, L.mean.data(), L.invstd.data(),
                                      buffers_.data() + L.rmean, buffers_.data() + L.rvar, batch, n,
                                      T(s.momentum), T(s.eps),
                                      s.init_from_batch && bn_updates_ == 0);
        } else {
          be_.batchnorm_forward_infer(cur, A, g, b, buffers_.data() + L.rmean,
                                      buffers_.data() + L.rvar, batch, n, T(s.eps));
        }
        L.out = A;
        break;
      }
      case LayerKind::dropout:
        if (training && s.rate > 0.0) {
          be_.dropout_forward(cur, A, batch * n, T(s.rate), PhiloxKey{seed_, rng_step_, L.id});
          L.out = A;
        } else {
          L.out = cur;
        }
        break;
      case LayerKind::noise:
        if (training && s.rate > 0.0) {
          be_.gaussian_noise_forward(cur, A, batch * n, T(s.rate),
                                     PhiloxKey{seed_, rng_step_, L.id});
          L.out = A;
        } else {
          L.out = cur;
        }
        break;
      case LayerKind::activation:
        be_.activation_forward(static_cast<Act>(s.act), cur, A, batch, n, act_params(L, training));
        L.out = A;
        break;
      case LayerKind::softmax:
        be_.softmax_forward(cur, A, batch, n);
        L.out = A;
        break;
      case LayerKind::maxout:
        be_.maxout_forward(cur, A, batch, n, s.units);
        L.out = A;
        break;
      case LayerKind::rbf: {
        // Z keeps the squared distances, A the features; sigma = exp(log sigma) > 0.
        T* sigma = L.rbf_ws.data();
        be_.rbf_widths(params_.data() + L.log_sigma, sigma, n);
        be_.rbf_forward(cur, params_.data() + L.mu, sigma, L.Z.data(), A, sigma + n, batch, L.n_in,
                        n);
        L.out = A;
        break;
      }
    }
    cur = L.out;
  }
  return cur;
}

template <class T, class B>
T* Network<T, B>::other_buffer(const T* g) {
  return g == gbuf0_.data() ? gbuf1_.data() : gbuf0_.data();
}

template <class T, class B>
void Network<T, B>::backward_chain(const std::vector<int>& chain, index_t batch, T* dout, T* dx) {
  T* g = dout;
  for (int pos = static_cast<int>(chain.size()) - 1; pos >= 0; --pos) {
    Layer& L = layers_[chain[pos]];
    const LayerSpec& s = L.spec;
    const bool first = pos == 0;
    // Where this layer's input gradient goes: the caller's dx for the first layer (null:
    // not needed), else the ping-pong buffer g is not in.
    T* gin = first ? dx : other_buffer(g);
    const index_t n = L.n_out, m = L.n_in;
    if (record_grads_) {  // diagnostics: g is overwritten in place below (dense: dA -> dZ)
      if (L.dout.size() < static_cast<size_t>(batch * n)) L.dout.resize(batch * n);
      be_.copy(L.dout.data(), g, batch * n);
    }
    switch (static_cast<LayerKind>(s.kind)) {
      case LayerKind::dense: {
        const Act act = static_cast<Act>(s.act);
        be_.dense_backward(L.in, params_.data() + L.w, L.Z.data(), g, g, grads_.data() + L.w,
                           L.b >= 0 ? grads_.data() + L.b : nullptr, gin,
                           L.p >= 0 ? grads_.data() + L.p : nullptr, batch, m, n, act,
                           act_params(L, true));
        break;
      }
      case LayerKind::batchnorm: {
        T* dgamma = L.gamma >= 0 ? grads_.data() + L.gamma : nullptr;
        T* dbeta = L.beta >= 0 ? grads_.data() + L.beta : nullptr;
        T* target = gin ? gin : other_buffer(g);
        be_.batchnorm_backward(L.in, g, L.gamma >= 0 ? params_.data() + L.gamma : nullptr,
                               L.mean.data(), L.invstd.data(), target, dgamma, dbeta, batch, n);
        break;
      }
      case LayerKind::dropout:
        if (!gin) break;
        if (L.out != L.in)
          be_.dropout_backward(g, gin, batch * n, T(s.rate), PhiloxKey{seed_, rng_step_, L.id});
        else
          be_.copy(gin, g, batch * n);
        break;
      case LayerKind::noise:
        if (gin) be_.copy(gin, g, batch * n);
        break;
      case LayerKind::activation: {
        T* dp = L.p >= 0 ? grads_.data() + L.p : nullptr;
        if (!gin && !dp) break;
        T* target = gin ? gin : other_buffer(g);
        be_.activation_backward(static_cast<Act>(s.act), L.in, g, target, static_cast<T*>(nullptr),
                                dp, batch, n, act_params(L, true));
        break;
      }
      case LayerKind::softmax:
        if (gin) be_.softmax_backward(L.out, g, gin, batch, n);
        break;
      case LayerKind::maxout:
        if (gin) be_.maxout_backward(L.in, g, gin, batch, n, s.units);
        break;
      case LayerKind::rbf: {
        if (!gin && L.frozen) break;
        // sigma as the forward computed it; g (dL/dPhi) becomes dL/dD in place.
        const T* sigma = L.rbf_ws.data();
        T* dmu = L.frozen ? nullptr : grads_.data() + L.mu;
        T* dlog_sigma = L.frozen ? nullptr : grads_.data() + L.log_sigma;
        be_.rbf_backward(L.in, params_.data() + L.mu, sigma, L.Z.data(), L.A.data(), g, gin, dmu,
                         dlog_sigma, L.rbf_ws.data() + n, batch, m, n);
        if (dlog_sigma) be_.rbf_log_width_grad(dlog_sigma, sigma, n);
        break;
      }
    }
    if (L.frozen) zero_layer_grads(chain[pos]);
    if (!first) g = gin;
  }
}

template <class T, class B>
void Network<T, B>::head_losses(index_t batch, const std::vector<const T*>& target,
                                const std::vector<const std::int32_t*>& labels,
                                const T* sample_weight, bool want_grad) {
  FM_CHECK(target.size() == heads_.size() && labels.size() == heads_.size(),
           "y: expected targets for ", heads_.size(), " head(s)");
  for (size_t h = 0; h < heads_.size(); ++h) {
    Head& H = heads_[h];
    LossParams<T> lp;
    lp.label_smoothing = T(H.spec.label_smoothing);
    lp.smoothing_uniform_k = H.spec.smoothing_uniform_k;
    lp.half = H.spec.half;
    be_.loss_forward_backward(static_cast<Loss>(H.spec.loss), H.out, target[h], labels[h],
                              sample_weight, want_grad ? H.dlogits.data() : nullptr, batch, H.n_out,
                              lp, loss_.data() + h);
    if (want_grad && H.spec.weight != 1.0)
      be_.scale(H.dlogits.data(), batch * H.n_out, T(H.spec.weight));
  }
  be_.weighted_sum(loss_.data(), head_weights_, loss_.data() + heads_.size());
}

template <class T, class B>
double Network<T, B>::read_losses(std::vector<double>* per_head) {
  std::vector<double> host(heads_.size() + 1);
  be_.read(loss_.data(), host.size(), host.data());
  if (per_head) per_head->assign(host.begin(), host.end() - 1);
  return host.back();
}

template <class T, class B>
void Network<T, B>::forward(const T* X, index_t batch, const std::vector<T*>& out, bool training) {
  FM_CHECK(out.size() == heads_.size(), "out: expected one output per head");
  ensure_workspace(batch);
  trunk_out_ = forward_chain(trunk_, X, batch, training);
  for (size_t h = 0; h < heads_.size(); ++h) {
    heads_[h].out = forward_chain(heads_[h].layers, trunk_out_, batch, training);
    if (out[h]) be_.copy(out[h], heads_[h].out, batch * heads_[h].n_out);
  }
  if (training && has_bn_) ++bn_updates_;
}

template <class T, class B>
double Network<T, B>::compute_gradients(const T* X, index_t batch,
                                        const std::vector<const T*>& target,
                                        const std::vector<const std::int32_t*>& labels,
                                        const T* sample_weight, T* dX,
                                        std::vector<double>* per_head) {
  gradients_async(X, batch, target, labels, sample_weight, dX);
  return read_losses(per_head);
}

template <class T, class B>
void Network<T, B>::gradients_async(const T* X, index_t batch, const std::vector<const T*>& target,
                                    const std::vector<const std::int32_t*>& labels,
                                    const T* sample_weight, T* dX) {
  std::vector<T*> none(heads_.size(), nullptr);
  grad_batch_ = 0;
  forward(X, batch, none, true);
  head_losses(batch, target, labels, sample_weight, true);
  T* trunk_dout;
  if (heads_.size() == 1) {
    Head& H = heads_[0];
    if (H.layers.empty()) {
      trunk_dout = H.dlogits.data();
    } else {
      // the head's input gradient goes to its own buffer (never one of the ping-pong pair)
      trunk_dout = head_dx_.data();
      backward_chain(H.layers, batch, H.dlogits.data(), trunk_dout);
    }
  } else {
    const index_t w = trunk_.empty() ? n_in_ : layers_[trunk_.back()].n_out;
    be_.fill(trunk_grad_.data(), batch * w, T(0));
    for (auto& H : heads_) {
      const T* src = H.dlogits.data();
      if (!H.layers.empty()) {
        backward_chain(H.layers, batch, H.dlogits.data(), head_dx_.data());
        src = head_dx_.data();
      }
      be_.add(trunk_grad_.data(), src, batch * w);
    }
    trunk_dout = trunk_grad_.data();
  }
  if (trunk_.empty()) {
    if (dX) be_.copy(dX, trunk_dout, batch * n_in_);
  } else {
    backward_chain(trunk_, batch, trunk_dout, dX);
  }
  if (record_grads_) grad_batch_ = batch;
}

template <class T, class B>
GradScale Network<T, B>::apply_update(double lr, bool skip_if_nonfinite) {
  FM_CHECK(has_opt_, "optimizer: set an optimizer before training");
  const GradScale scale = be_.grad_scale(grads_.data(), n_params(), clip_norm_,
                                         skip_if_nonfinite ? loss_slot() : nullptr);
  ++opt_step_;
  update_params(lr, scale);
  return scale;
}

template <class T, class B>
void Network<T, B>::device_step(const T* X, index_t batch, const std::vector<const T*>& target,
                                const std::vector<const std::int32_t*>& labels,
                                const T* sample_weight, double lr) {
  if constexpr (!B::kHostMemory) {
    save_bn_stats();
    gradients_async(X, batch, target, labels, sample_weight, nullptr);
    const GradScale scale = apply_update(lr, true);
    if (has_bn_) be_.restore_if_skipped(buffers_.data(), bn_backup_.data(), n_buffers(), scale);
  } else {
    FM_CHECK(false, "device_step: device backends only");
  }
}

template <class T, class B>
void Network<T, B>::update_params(double lr, const GradScale& grad_scale) {
  if (!any_frozen_) {
    be_.optimizer_step(opt_, params_.data(), grads_.data(), state_.data(), segments_.data(),
                       static_cast<int>(segments_.size()), n_params(), opt_step_, lr, grad_scale);
    return;
  }
  // An empty segment list means "the whole arena" to optimizer_step: nothing to do instead.
  if (active_segments_.empty()) return;
  if (static_cast<Opt>(opt_.opt) != Opt::adafactor) {
    // Elementwise rules index their state by arena position: the trainable subset in one call.
    be_.optimizer_step(opt_, params_.data(), grads_.data(), state_.data(), active_segments_.data(),
                       static_cast<int>(active_segments_.size()), n_params(), opt_step_, lr,
                       grad_scale);
    return;
  }
  // Adafactor lays its state out segment after segment: step each trainable segment on its
  // own, at its place in the layout of all segments.
  index_t state_off = 0;
  for (size_t i = 0; i < segments_.size(); ++i) {
    Segment local = segments_[i];
    local.offset = 0;
    const index_t size = local.rows * local.cols;
    if (!segment_frozen_[i])
      be_.optimizer_step(opt_, params_.data() + segments_[i].offset,
                         grads_.data() + segments_[i].offset, state_.data() + state_off, &local, 1,
                         size, opt_step_, lr, grad_scale);
    state_off += opt_state_size(opt_, &local, 1, size);
  }
}

template <class T, class B>
void Network<T, B>::set_decay_scope(int scope) {
  FM_CHECK(scope >= 0 && scope <= 2, "decay: expected 0 (weights), 1 (all) or 2 (none), got ",
           scope);
  for (size_t i = 0; i < segments_.size(); ++i)
    segments_[i].decay = scope == 0 ? decay_default_[i] != 0 : scope == 1;
  touch_plan();
  if (!any_frozen_) return;
  active_segments_.clear();  // the trainable subset carries copies of the flags
  for (size_t i = 0; i < segments_.size(); ++i)
    if (!segment_frozen_[i]) active_segments_.push_back(segments_[i]);
}

template <class T, class B>
void Network<T, B>::zero_layer_grads(int layer) {
  for (const ParamInfo& p : info_)
    if (p.layer == layer && p.trainable) be_.fill(grads_.data() + p.offset, p.rows * p.cols, T(0));
}

template <class T, class B>
void Network<T, B>::set_layer_trainable(int layer, bool trainable) {
  FM_CHECK(layer >= 0 && layer < n_layers(), "layer: expected 0 <= layer < ", n_layers(), ", got ",
           layer);
  layers_[layer].frozen = !trainable;
  touch_plan();
  // info_ lists the parameters (trainable = in the param arena) in the order of segments_.
  active_segments_.clear();
  segment_frozen_.assign(segments_.size(), 0);
  any_frozen_ = false;
  size_t seg = 0;
  for (const ParamInfo& p : info_) {
    if (!p.trainable) continue;
    if (layers_[p.layer].frozen) {
      segment_frozen_[seg] = 1;
      any_frozen_ = true;
    } else {
      active_segments_.push_back(segments_[seg]);
    }
    ++seg;
  }
  zero_layer_grads(layer);
}

template <class T, class B>
bool Network<T, B>::layer_trainable(int layer) const {
  FM_CHECK(layer >= 0 && layer < n_layers(), "layer: expected 0 <= layer < ", n_layers(), ", got ",
           layer);
  return !layers_[layer].frozen;
}

// The BatchNorm statistics before a step, put back when it is skipped (both backends).
template <class T, class B>
void Network<T, B>::save_bn_stats() {
  if (has_bn_) {
    bn_backup_.resize(static_cast<size_t>(n_buffers()));
    be_.copy(bn_backup_.data(), buffers_.data(), n_buffers());
  }
}

template <class T, class B>
void Network<T, B>::restore_bn_stats() {
  if (has_bn_) {
    be_.copy(buffers_.data(), bn_backup_.data(), n_buffers());
    --bn_updates_;  // the forward pass counted this batch
  }
}

// Host-memory backends only (the CPU's synchronous step). A device backend decides the skip on
// the device (CudaBackend::grad_scale's finite_step_kernel, device_step) and never calls it;
// the body is compiled out for it because every member of the explicitly instantiated class
// is built.
template <class T, class B>
bool Network<T, B>::update_if_finite(double lr, double loss) {
  if constexpr (B::kHostMemory) {
    // One pass over the gradients and the (small) statistics arena: the step must not turn
    // finite weights into NaN when only the loss looked fine.
    const bool finite = std::isfinite(loss) && be_.all_finite(grads_.data(), n_params()) &&
                        (!has_bn_ || be_.all_finite(buffers_.data(), n_buffers()));
    if (finite) {
      apply_update(lr);
      return true;
    }
    restore_bn_stats();
    return false;
  } else {
    FM_CHECK(false, "update_if_finite: host-memory backends only");
    return false;
  }
}

template <class T, class B>
double Network<T, B>::train_step(const T* X, index_t batch, const std::vector<const T*>& target,
                                 const std::vector<const std::int32_t*>& labels,
                                 const T* sample_weight, double lr) {
  if constexpr (B::kHostMemory) {
    save_bn_stats();
    const double loss =
        compute_gradients(X, batch, target, labels, sample_weight, nullptr, nullptr);
    const bool applied = update_if_finite(lr, loss);
    ++rng_step_;
    return applied || !std::isfinite(loss) ? loss : std::numeric_limits<double>::quiet_NaN();
  } else {
    // The eager device step with the loss read on the host (Adafactor: its kernels take no
    // device skip signal): the same rule, decided here.
    save_bn_stats();
    const double loss =
        compute_gradients(X, batch, target, labels, sample_weight, nullptr, nullptr);
    const bool finite = std::isfinite(loss) && be_.all_finite(grads_.data(), n_params());
    if (finite)
      apply_update(lr);
    else
      restore_bn_stats();
    ++rng_step_;
    return finite || !std::isfinite(loss) ? loss : std::numeric_limits<double>::quiet_NaN();
  }
}

template <class T, class B>
void Network<T, B>::train_step_async(const T* X, index_t batch, const std::vector<const T*>& target,
                                     const std::vector<const std::int32_t*>& labels,
                                     const T* sample_weight, double lr) {
  if constexpr (B::kHostMemory) {
    save_bn_stats();
    gradients_async(X, batch, target, labels, sample_weight, nullptr);
    const double loss = *loss_slot();
    if (!update_if_finite(lr, loss) && std::isfinite(loss))
      loss_[heads_.size()] = std::numeric_limits<double>::quiet_NaN();  // skipped: say so
  } else {
    device_step(X, batch, target, labels, sample_weight, lr);
  }
  ++rng_step_;
}

template <class T, class B>
void Network<T, B>::reset_step_stats(index_t n_rows, const std::vector<int>& mode,
                                     const std::vector<double>& threshold,
                                     const std::vector<bool>& keep_outputs) {
  const size_t nh = heads_.size();
  FM_CHECK(n_rows >= 1, "n_rows: expected at least one row, got ", n_rows);
  FM_CHECK(mode.size() == nh && threshold.size() == nh && keep_outputs.size() == nh,
           "reset_step_stats: expected one mode, threshold and keep_outputs flag per head");
  for (size_t h = 0; h < nh; ++h) {
    FM_CHECK(mode[h] >= kNoCount && mode[h] <= kThreshold, "mode: unknown counting mode ", mode[h]);
    FM_CHECK(mode[h] != kArgmax || heads_[h].n_out >= 2,
             "mode: arg-max counting needs at least two outputs");
    FM_CHECK(mode[h] != kThreshold || heads_[h].n_out == 1,
             "mode: threshold counting needs one output column");
  }
  stats_ = StepStats{};
  stats_.mode = mode;
  stats_.threshold = threshold;
  stats_.n_rows = n_rows;
  correct_.resize(nh);
  be_.fill(correct_.data(), static_cast<index_t>(nh), std::int64_t(0));
  kept_.resize(nh);
  for (size_t h = 0; h < nh; ++h) {
    const index_t size = keep_outputs[h] ? n_rows * heads_[h].n_out : 0;
    kept_[h].resize(static_cast<size_t>(size));
    // rows no step visits (a stopped epoch) read 0, as on every backend
    if (size > 0) be_.fill(kept_[h].data(), size, T(0));
  }
}

template <class T, class B>
std::vector<std::int64_t> Network<T, B>::step_correct() {
  std::vector<std::int64_t> out(correct_.size(), 0);
  if (!out.empty()) be_.read(correct_.data(), out.size(), out.data());
  return out;
}

template <class T, class B>
const T* Network<T, B>::step_outputs(int h) const {
  FM_CHECK(h >= 0 && h < static_cast<int>(kept_.size()), "head: expected 0 <= head < ",
           kept_.size(), " (call reset_step_stats first)");
  return kept_[h].size() ? kept_[h].data() : nullptr;
}

template <class T, class B>
typename Network<T, B>::Gathered Network<T, B>::gather_batch(
    const T* X, index_t n_rows, const std::int64_t* idx, index_t batch,
    const std::vector<const T*>& target, const std::vector<const std::int32_t*>& labels,
    const T* sample_weight) {
  const size_t nh = heads_.size();
  FM_CHECK(batch >= 1, "idx: expected at least one row index");
  FM_CHECK(target.size() == nh && labels.size() == nh, "y: expected targets for ", nh, " head(s)");
  FM_CHECK(stats_.mode.size() == nh, "train_step_indexed: call reset_step_stats first");
  FM_CHECK(n_rows == stats_.n_rows, "X: expected the ", stats_.n_rows,
           " rows reset_step_stats was given, got ", n_rows);
  FM_CHECK(be_.indices_valid(idx, batch, n_rows), "idx: a row index is out of range [0, ", n_rows,
           ")");
  // The gather: one contiguous copy of each selected row; the first layer's GEMM then reads
  // the batch from cache.
  gather_x_.resize(static_cast<size_t>(batch * n_in_));
  be_.gather_rows(gather_x_.data(), X, idx, batch, n_in_);
  gather_t_.resize(nh);
  gather_l_.resize(nh);
  Gathered g;
  g.target.assign(nh, nullptr);
  g.labels.assign(nh, nullptr);
  for (size_t h = 0; h < nh; ++h) {
    const index_t k = heads_[h].n_out;
    if (labels[h]) {
      gather_l_[h].resize(batch);
      be_.gather_rows(gather_l_[h].data(), labels[h], idx, batch, index_t(1));
      g.labels[h] = gather_l_[h].data();
    } else {
      FM_CHECK(target[h] != nullptr, "y: head ", h, " has neither targets nor labels");
      gather_t_[h].resize(static_cast<size_t>(batch * k));
      be_.gather_rows(gather_t_[h].data(), target[h], idx, batch, k);
      g.target[h] = gather_t_[h].data();
    }
    FM_CHECK(stats_.mode[h] != kArgmax || g.labels[h] != nullptr,
             "mode: arg-max counting needs int32 labels");
    FM_CHECK(stats_.mode[h] != kThreshold || g.target[h] != nullptr,
             "mode: threshold counting needs dense targets");
  }
  if (sample_weight) {
    gather_w_.resize(batch);
    be_.gather_rows(gather_w_.data(), sample_weight, idx, batch, index_t(1));
    g.weight = gather_w_.data();
  }
  return g;
}

template <class T, class B>
void Network<T, B>::record_step(double loss, const std::int64_t* idx, index_t batch,
                                const Gathered& g) {
  if (!std::isfinite(loss)) return;  // skipped: the caller stops the epoch, nothing to count
  stats_.loss_sum += loss * static_cast<double>(batch);
  stats_.rows += batch;
  // The head outputs of the step's forward pass (before its update): the backward pass
  // writes only the gradient buffers, so they are intact here.
  for (size_t h = 0; h < heads_.size(); ++h) {
    const index_t k = heads_[h].n_out;
    if (kept_[h].size()) be_.scatter_rows(kept_[h].data(), heads_[h].out, idx, batch, k);
    if (stats_.mode[h] != kNoCount)
      be_.count_correct(stats_.mode[h], heads_[h].out, g.labels[h], g.target[h],
                        T(stats_.threshold[h]), batch, k, correct_.data() + h);
  }
}

template <class T, class B>
double Network<T, B>::train_step_indexed(const T* X, index_t n_rows, const std::int64_t* idx,
                                         index_t batch, const std::vector<const T*>& target,
                                         const std::vector<const std::int32_t*>& labels,
                                         const T* sample_weight, double lr) {
  const Gathered g = gather_batch(X, n_rows, idx, batch, target, labels, sample_weight);
  const double loss = train_step(gather_x_.data(), batch, g.target, g.labels, g.weight, lr);
  record_step(loss, idx, batch, g);
  return loss;
}

template <class T, class B>
double Network<T, B>::evaluate(const T* X, index_t batch, const std::vector<const T*>& target,
                               const std::vector<const std::int32_t*>& labels,
                               const T* sample_weight, std::vector<double>* per_head,
                               const std::vector<T*>* out) {
  std::vector<T*> none(heads_.size(), nullptr);
  forward(X, batch, out ? *out : none, false);
  head_losses(batch, target, labels, sample_weight, false);
  return read_losses(per_head);
}

template <class T, class B>
const T* Network<T, B>::layer_output(int layer) const {
  FM_CHECK(layer >= 0 && layer < n_layers(), "layer: expected 0 <= layer < ", n_layers());
  FM_CHECK(layers_[layer].out != nullptr, "layer: run a forward pass first");
  return layers_[layer].out;
}

template <class T, class B>
const T* Network<T, B>::layer_grad(int layer) const {
  FM_CHECK(layer >= 0 && layer < n_layers(), "layer: expected 0 <= layer < ", n_layers());
  FM_CHECK(grad_batch_ > 0, "layer_grad: no recorded gradients; set record_layer_grads and call ",
           "compute_gradients first");
  return layers_[layer].dout.data();
}

template <class T, class B>
index_t Network<T, B>::layer_width(int layer) const {
  FM_CHECK(layer >= 0 && layer < n_layers(), "layer: expected 0 <= layer < ", n_layers());
  return layers_[layer].n_out;
}

}  // namespace fm
