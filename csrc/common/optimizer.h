// Optimizer update rules, one per-element definition shared by the CPU loop
// (csrc/cpu/optimizer.cpp) and the CUDA kernel: SGD (momentum, Nesterov), AdaGrad, RMSProp
// (centered, momentum), AdaDelta, Adam/AdamW (AMSGrad), NAdam, AdaMax, AdaBelief; Adafactor's
// elementwise parts (its factored second moment needs row/column reductions, done by the
// backends). Regularization is fused in front of every rule (deck 002): gradient scaling
// (global-norm clipping, factor computed by the caller), clipping by value, coupled L2 and L1
// penalties added to the gradient, decoupled weight decay applied to the parameter.
//
// Conventions. The default of every rule is torch.optim's documented algorithm, exactly;
// `deck_variant` switches to the decks' form where they differ:
//   SGD + momentum   torch / deck 000 "heavy ball":  b <- mu b + g,  theta <- theta - lr b
//                    decks 001-003 "velocity":       v <- mu v - lr g, theta <- theta + v
//                    With a constant lr, v = -lr b: the same trajectory. With a schedule they
//                    differ (the velocity keeps the old lrs).
//   Nesterov         torch: theta <- theta - lr (g + mu b) with b the new buffer. Deck 003
//                    (Alg. 3) evaluates the gradient at the look-ahead point theta + mu v;
//                    written on the look-ahead parameters phi = theta + mu v (Sutskever et al.
//                    2013, what libraries store) it is v <- mu v - lr g(phi),
//                    phi <- phi + mu v - lr g(phi), i.e. torch's rule with v = -lr b.
//   RMSProp          torch / deck 000 / deck 003: theta -= lr g / (sqrt(r) + eps);
//                    deck 002 Alg. 8.5: theta -= lr g / sqrt(eps + r).
//   Adam family      torch / deck 000 / deck 003: m_hat / (sqrt(v_hat) + eps);
//                    deck 002 Alg. 8.7: m_hat / sqrt(v_hat + eps).
//   NAdam            torch: momentum schedule mu_t = beta1 (1 - 0.5 * 0.96^(t psi)), psi =
//                    momentum_decay (Dozat 2016, as torch.optim.NAdam); variant: constant
//                    mu_t = beta1 (Dozat's simplified form; deck 000 names NAdam only).
// AdaGrad, AdaDelta, AdaMax, AdaBelief and Adafactor have one form; deck_variant is ignored.
//
// Cost per element: 1 read + 1 write of the parameter, 1 read of the gradient, 1 read + 1
// write of each state array (0 to 3 of them); 5-20 flops, one sqrt for the adaptive rules.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "common/macros.h"

namespace fm {

// Every optimizer, in the order of its code (fusedmlp.optim.OPTIMIZERS). An optimizer is one
// entry here and one OptRule<Opt::name> below: its traits (state slots, the flags of its
// variants, its momentum field) generate the state-array count, the CPU and CUDA dispatch and
// the table the bindings export (optimizer_table).
#define FM_OPT_LIST(X) \
  X(sgd)               \
  X(adagrad) X(rmsprop) X(adadelta) X(adam) X(adamw) X(nadam) X(adamax) X(adabelief) X(adafactor)

enum class Opt : int {
#define FM_OPT_ENUM(n) n,
  FM_OPT_LIST(FM_OPT_ENUM)
#undef FM_OPT_ENUM
      count
};

// Hyper-parameters of one optimizer. Fields a rule does not use are ignored. `lr` is the base
// learning rate; optimizer_step takes the scheduled lr of each step separately.
struct OptConfig {
  int opt = static_cast<int>(Opt::sgd);  // an Opt
  double lr = 1e-3;
  double momentum = 0.0;   // SGD, RMSProp: momentum (mu / deck "alpha" / "rho" of deck 000)
  double dampening = 0.0;  // SGD (torch): b <- mu b + (1 - dampening) g
  double beta1 = 0.9, beta2 = 0.999;  // Adam family (deck 002's rho_1, rho_2)
  double eps = 1e-8;          // delta of the decks; Adafactor: eps1 (0 = machine epsilon of T)
  double rho = 0.9;           // RMSProp decay rate (torch "alpha"), AdaDelta rho
  double weight_decay = 0.0;  // coupled L2: g += weight_decay * theta
  double l1 = 0.0;            // L1: g += l1 * sign(theta)
  double decoupled_weight_decay = 0.0;  // theta <- theta (1 - lr * decoupled_weight_decay)
  double clip_value = 0.0;              // clip g to [-clip_value, clip_value]; 0 = off
  double max_norm = 0.0;                // per-unit max-norm constraint radius c; 0 = off
  bool nesterov = false, amsgrad = false, centered = false, deck_variant = false, maximize = false;
  double lr_decay = 0.0;                   // AdaGrad: lr / (1 + (t - 1) lr_decay)
  double initial_accumulator_value = 0.0;  // AdaGrad: r_0
  double momentum_decay = 4e-3;            // NAdam psi
  double beta2_decay = -0.8;               // Adafactor: 1 - beta2_t = t^beta2_decay
  double eps2 = 1e-3;                      // Adafactor: floor of RMS(theta)
  double clip_threshold = 1.0;             // Adafactor d: U / max(1, RMS(U) / d)
  bool relative_step = true;               // Adafactor: rho_t = min(lr, 1/sqrt t) (else lr)
  bool scale_parameter = true;             // Adafactor: step alpha_t = max(eps2, RMS theta) rho_t
};

// Every field of OptConfig in declaration order: the bindings expose (CPU) and read (CUDA)
// each as the Python attribute of the same name.
// clang-format off
#define FM_OPT_CONFIG_FIELDS(X)                                                              \
  X(opt) X(lr) X(momentum) X(dampening) X(beta1) X(beta2) X(eps) X(rho) X(weight_decay) X(l1) \
  X(decoupled_weight_decay) X(clip_value) X(max_norm) X(nesterov) X(amsgrad) X(centered)     \
  X(deck_variant) X(maximize) X(lr_decay) X(initial_accumulator_value) X(momentum_decay)     \
  X(beta2_decay) X(eps2) X(clip_threshold) X(relative_step) X(scale_parameter)
// clang-format on

// One parameter tensor inside the flat arena: rows x cols elements from `offset`, row-major
// (vectors: rows = 1). `decay`: L2 / L1 / decoupled decay apply (weights, not biases or BN
// gamma/beta by default). `max_norm`: the per-unit max-norm constraint applies, a unit being
// a column of an (n_in, n_out) weight matrix.
struct Segment {
  index_t offset = 0, rows = 1, cols = 0;
  bool decay = true;
  bool max_norm = false;
};

inline const char* opt_name(Opt o) {
  switch (o) {
#define FM_OPT_CASE(n) \
  case Opt::n:         \
    return #n;
    FM_OPT_LIST(FM_OPT_CASE)
#undef FM_OPT_CASE
    default:
      return "?";
  }
}

// Throws ValueError naming the first hyper-parameter out of its published range.
inline void check_opt_config(const OptConfig& c) {
  FM_CHECK(c.opt >= 0 && c.opt < static_cast<int>(Opt::count), "opt: unknown optimizer code ",
           c.opt);
  const Opt o = static_cast<Opt>(c.opt);
  auto finite = [](double v) { return std::isfinite(v); };
  // lr = 0 is a valid step (warm-up from zero, frozen phases; torch.optim and Keras accept it).
  FM_CHECK(finite(c.lr) && c.lr >= 0, "lr: expected >= 0, got ", c.lr);
  FM_CHECK(finite(c.momentum) && c.momentum >= 0 && c.momentum < 1,
           "momentum: expected in [0, 1), got ", c.momentum);
  FM_CHECK(finite(c.dampening) && c.dampening >= 0 && c.dampening <= 1,
           "dampening: expected in [0, 1], got ", c.dampening);
  FM_CHECK(finite(c.beta1) && c.beta1 >= 0 && c.beta1 < 1, "beta1: expected in [0, 1), got ",
           c.beta1);
  FM_CHECK(finite(c.beta2) && c.beta2 >= 0 && c.beta2 < 1, "beta2: expected in [0, 1), got ",
           c.beta2);
  if (o == Opt::adafactor)
    FM_CHECK(finite(c.eps) && c.eps >= 0, "eps: expected >= 0 (0 = machine epsilon), got ", c.eps);
  else
    FM_CHECK(finite(c.eps) && c.eps > 0, "eps: expected > 0, got ", c.eps);
  if (o == Opt::adadelta)
    FM_CHECK(finite(c.rho) && c.rho >= 0 && c.rho <= 1, "rho: expected in [0, 1], got ", c.rho);
  else
    FM_CHECK(finite(c.rho) && c.rho >= 0 && c.rho < 1, "rho: expected in [0, 1), got ", c.rho);
  FM_CHECK(finite(c.weight_decay) && c.weight_decay >= 0, "weight_decay: expected >= 0, got ",
           c.weight_decay);
  FM_CHECK(finite(c.l1) && c.l1 >= 0, "l1: expected >= 0, got ", c.l1);
  FM_CHECK(finite(c.decoupled_weight_decay) && c.decoupled_weight_decay >= 0,
           "decoupled_weight_decay: expected >= 0, got ", c.decoupled_weight_decay);
  FM_CHECK(finite(c.clip_value) && c.clip_value >= 0, "clip_value: expected >= 0 (0 = off), got ",
           c.clip_value);
  FM_CHECK(finite(c.max_norm) && c.max_norm >= 0, "max_norm: expected >= 0 (0 = off), got ",
           c.max_norm);
  FM_CHECK(!c.nesterov || (o == Opt::sgd && c.momentum > 0 && c.dampening == 0),
           "nesterov: needs SGD with momentum > 0 and dampening = 0");
  FM_CHECK(finite(c.lr_decay) && c.lr_decay >= 0, "lr_decay: expected >= 0, got ", c.lr_decay);
  FM_CHECK(finite(c.initial_accumulator_value) && c.initial_accumulator_value >= 0,
           "initial_accumulator_value: expected >= 0, got ", c.initial_accumulator_value);
  FM_CHECK(finite(c.momentum_decay) && c.momentum_decay >= 0, "momentum_decay: expected >= 0, got ",
           c.momentum_decay);
  FM_CHECK(finite(c.beta2_decay) && c.beta2_decay <= 0, "beta2_decay: expected <= 0, got ",
           c.beta2_decay);
  FM_CHECK(finite(c.eps2) && c.eps2 >= 0, "eps2: expected >= 0, got ", c.eps2);
  FM_CHECK(finite(c.clip_threshold) && c.clip_threshold > 0, "clip_threshold: expected > 0, got ",
           c.clip_threshold);
}

// Global-norm gradient clipping factor (deck 002, "cliffs"): min(1, c / (||g|| + 1e-6)), the
// factor of torch.nn.utils.clip_grad_norm_ (the 1e-6 keeps a zero gradient finite). The Network
// and the standalone optimizers both use this one definition.
constexpr double kClipNormEps = 1e-6;
FM_HD double clip_norm_scale(double grad_norm, double max_norm) {
  const double s = max_norm / (grad_norm + kClipNormEps);
  return s < 1.0 ? s : 1.0;
}

// Adafactor factors the second moment of a matrix (rows >= 2 and cols >= 2): a row vector
// and a column vector instead of rows x cols (Shazeer & Stern 2018; deck 000's
// memory-efficient optimizer). Vectors keep the full second moment.
FM_HD bool adafactor_factored(index_t rows, index_t cols) {
  return rows >= 2 && cols >= 2;
}

// Throws ValueError unless the nseg segments are non-empty, sorted by offset, disjoint and
// inside an arena of n elements (both backends check their segment tables with this).
inline void check_opt_segments(const Segment* segs, int nseg, index_t n) {
  FM_CHECK(n >= 0, "n: expected >= 0, got ", n);
  FM_CHECK(nseg >= 0, "nseg: expected >= 0, got ", nseg);
  FM_CHECK(nseg == 0 || segs != nullptr, "segments: null pointer with nseg = ", nseg);
  index_t end = 0;
  for (int s = 0; s < nseg; ++s) {
    const Segment& g = segs[s];
    FM_CHECK(g.rows >= 1 && g.cols >= 1, "segments[", s,
             "]: expected rows >= 1 and cols >= 1, got (", g.rows, ", ", g.cols, ")");
    FM_CHECK(g.offset >= end, "segments[", s, "]: offset ", g.offset,
             " overlaps the previous segment or is out of order (previous end ", end, ")");
    end = g.offset + g.rows * g.cols;
    FM_CHECK(end <= n, "segments[", s, "]: ends at ", end, ", past the arena of ", n, " elements");
  }
}

// The config against the parameter type T: eps divides the update (sqrt(v) + eps, or the root
// of v + eps), so a positive eps that rounds to zero or to a subnormal in T (Adam(eps=1e-50)
// in float32) would turn a zero second moment into 0/0 = NaN weights. Rejected rather than
// clamped: the user asked for a value the parameters cannot hold. (Adafactor's eps = 0 means
// the machine epsilon of T.)
template <class T>
void check_opt_config_for(const OptConfig& c) {
  check_opt_config(c);
  const double tiny = static_cast<double>(std::numeric_limits<T>::min());
  FM_CHECK(c.eps == 0.0 || c.eps >= tiny, "eps: ", c.eps, " rounds to 0 or a subnormal in ",
           sizeof(T) == 4 ? "float32" : "float64",
           " (the parameters' dtype); expected eps >= ", tiny);
}

// Scalars of one step in the parameter type: constants of the rule, bias corrections and
// schedules evaluated once on the host (make_opt_coef), so the per-element code is the
// formula and nothing else. The torch and deck forms are folded into coefficients (see each
// rule), so the element loop has no data-independent branches and vectorizes.
template <class T>
struct OptCoef {
  T lr;
  T grad_mult;  // grad_scale, negated when maximizing
  T clip;       // clip_value, +inf when off
  T weight_decay, l1, decay_mult;
  T momentum, one_minus_beta1, one_minus_beta2, beta1, beta2, eps, rho, one_minus_rho;
  T sgd_gain, sgd_buf, sgd_grad;  // SGD: b <- mu b + sgd_gain g; theta += sgd_buf b + sgd_grad g
  T eps_in, eps_out;  // RMSProp/Adam denominators: sqrt(x c_in + eps_in) c_out + eps_out
  T c_in, c_out;
  T step_size;           // Adam family, AdaMax, AdaBelief: lr / (1 - beta1^t); AdaGrad: decayed lr
  T inv_bc2_sqrt;        // 1 / sqrt(1 - beta2^t)
  T nadam_c1, nadam_c2;  // NAdam: lr mu_{t+1} / (1 - prod_{i<=t+1} mu_i), lr (1 - mu_t) / (1 -
                         // prod_{i<=t} mu_i)
  T init_acc;            // AdaGrad r_0
  int slot_buf, slot_avg;  // RMSProp: state slots of the momentum buffer and the grad average
  bool has_momentum, centered, amsgrad;  // rule variants with their own state arrays
};

namespace opt_detail {
// NAdam's momentum schedule (torch.optim.NAdam): mu_i = beta1 (1 - 0.5 * 0.96^(i psi)).
inline double nadam_mu(const OptConfig& c, std::int64_t i) {
  if (c.deck_variant) return c.beta1;
  return c.beta1 * (1.0 - 0.5 * std::pow(0.96, double(i) * c.momentum_decay));
}
// prod_{i=1}^{t} mu_i, a function of t alone (so a restored run needs no extra state). Once
// the product is below 2^-60, 1 - product rounds to 1 in double and the loop stops.
inline double nadam_mu_product(const OptConfig& c, std::int64_t t) {
  if (c.deck_variant) return std::pow(c.beta1, double(t));
  double prod = 1.0;
  for (std::int64_t i = 1; i <= t && prod >= 0x1p-60; ++i) prod *= nadam_mu(c, i);
  return prod < 0x1p-60 ? 0.0 : prod;
}
}  // namespace opt_detail

// Host: the coefficients of step t (1-based) at learning rate lr, gradients first multiplied
// by grad_scale.
template <class T>
OptCoef<T> make_opt_coef(const OptConfig& c, std::int64_t t, double lr, double grad_scale) {
  const Opt o = static_cast<Opt>(c.opt);
  OptCoef<T> k{};
  k.lr = T(lr);
  k.grad_mult = T(c.maximize ? -grad_scale : grad_scale);
  k.clip = c.clip_value > 0 ? T(c.clip_value) : std::numeric_limits<T>::infinity();
  k.weight_decay = T(c.weight_decay);
  k.l1 = T(c.l1);
  k.decay_mult = T(1.0 - lr * c.decoupled_weight_decay);
  k.momentum = T(c.momentum);
  k.beta1 = T(c.beta1);
  k.beta2 = T(c.beta2);
  k.one_minus_beta1 = T(1.0 - c.beta1);
  k.one_minus_beta2 = T(1.0 - c.beta2);
  k.eps = T(c.eps);
  k.rho = T(c.rho);
  k.one_minus_rho = T(1.0 - c.rho);
  // SGD. torch: b <- mu b + g_d, theta += -lr b (Nesterov: -lr mu b - lr g); the first buffer
  // is g itself (g_d = g at t = 1, (1 - dampening) g after). Decks: v <- mu v - lr g_d,
  // theta += v (Nesterov: mu v - lr g).
  const double gd = t == 1 ? 1.0 : 1.0 - c.dampening;
  const double nb = c.nesterov ? c.momentum : 1.0;
  k.sgd_gain = T(c.deck_variant ? -lr * gd : gd);
  k.sgd_buf = T(c.deck_variant ? nb : -lr * nb);
  k.sgd_grad = T(c.nesterov ? -lr : 0.0);
  const double bc1 = 1.0 - std::pow(c.beta1, double(t));
  const double bc2 = 1.0 - std::pow(c.beta2, double(t));
  k.step_size = T(lr / bc1);
  if (o == Opt::adagrad) k.step_size = T(lr / (1.0 + double(t - 1) * c.lr_decay));
  k.inv_bc2_sqrt = T(1.0 / std::sqrt(bc2));
  // Denominators. RMSProp torch: sqrt(r) + eps; deck 002: sqrt(r + eps). Adam torch:
  // sqrt(v) / sqrt(bc2) + eps; deck 002: sqrt(v / bc2 + eps).
  const bool adam_like = o == Opt::adam || o == Opt::adamw;
  const double bc = adam_like ? bc2 : 1.0;
  k.c_in = T(c.deck_variant ? 1.0 / bc : 1.0);
  k.c_out = T(c.deck_variant ? 1.0 : 1.0 / std::sqrt(bc));
  k.eps_in = T(c.deck_variant ? c.eps : 0.0);
  k.eps_out = T(c.deck_variant ? 0.0 : c.eps);
  if (o == Opt::nadam) {
    const double mu = opt_detail::nadam_mu(c, t), mu_next = opt_detail::nadam_mu(c, t + 1);
    const double prod = opt_detail::nadam_mu_product(c, t);
    k.nadam_c1 = T(lr * mu_next / (1.0 - prod * mu_next));
    k.nadam_c2 = T(lr * (1.0 - mu) / (1.0 - prod));
  }
  k.init_acc = T(c.initial_accumulator_value);
  k.has_momentum = c.momentum > 0;
  k.centered = c.centered;
  k.amsgrad = c.amsgrad;
  k.slot_buf = k.has_momentum ? 1 : -1;
  k.slot_avg = c.centered ? (k.has_momentum ? 2 : 1) : -1;
  return k;
}

// The gradient the rule sees (deck 002): g * grad_scale, clipped by value, negated when
// maximizing (torch), plus lambda theta (coupled L2) and lambda_1 sign(theta) (L1) where the
// segment decays.
// wd and l1 are the segment's coefficients (0 where it does not decay).
template <class T>
FM_HD T opt_effective_grad(T g, T p, const OptCoef<T>& k, T wd, T l1) {
  g *= k.grad_mult;
  g = g > k.clip ? k.clip : g;
  g = g < -k.clip ? -k.clip : g;
  // sign(p) with sign(0) = 0 as arithmetic on the comparisons: conditionals here would stop
  // the compiler vectorizing the element loop.
  const T sgn = T(p > T(0)) - T(p < T(0));
  return g + wd * p + l1 * sgn;
}

// OptRule<O>::apply<A, B>(p, g, s, n, k): one element. p is the parameter (already multiplied
// by the decoupled decay factor), g the effective gradient, s points at the element's first
// state slot; slot j lives at s[j * n]. A and B select the variants that own state arrays
// (the caller passes opt_variant_a / opt_variant_b of the coefficients) so they are
// compile-time.
//
// Traits of every rule (defaults in OptRuleTraits, each rule overrides what differs):
//   kElementwise  the step is apply() per element; false: the backends' own loops (Adafactor)
//   kStateSlots   state arrays of n elements the rule always keeps
//   kVariantA/B   the config flag that switches variant A/B on; each variant owns one more
//                 state array (OptFlag::none: the rule has no such variant)
//   kMomentum     the hyper-parameter cyclical momentum drives (Network::set_momentum)
// The slot count, the dispatch of both backends and the bindings' optimizer_table are
// generated from these (opt_slots, opt_state_arrays, opt_dispatch below).
enum class OptFlag : int { none, momentum, centered, amsgrad };  // momentum: momentum > 0
enum class OptMomentum : int { none, momentum, beta1 };

struct OptRuleTraits {
  static constexpr bool kElementwise = true;
  static constexpr int kStateSlots = 0;
  static constexpr OptFlag kVariantA = OptFlag::none, kVariantB = OptFlag::none;
  static constexpr OptMomentum kMomentum = OptMomentum::none;
};

template <Opt O>
struct OptRule;

// SGD (deck 002 Alg. 8.1/8.2; deck 000 momentum; deck 003 Alg. 2/3; torch.optim.SGD).
// A = momentum. The coefficients (make_opt_coef) select torch's buffer or the decks' velocity.
template <>
struct OptRule<Opt::sgd> : OptRuleTraits {
  // State: [momentum buffer] (A).
  static constexpr OptFlag kVariantA = OptFlag::momentum;
  static constexpr OptMomentum kMomentum = OptMomentum::momentum;
  template <bool A, bool B, class T>
  static FM_HD void apply(T& p, T g, T* s, index_t n, const OptCoef<T>& k) {
    if constexpr (!A) {
      p -= k.lr * g;
    } else {
      T& b = s[0];
      b = k.momentum * b + k.sgd_gain * g;
      p += k.sgd_buf * b + k.sgd_grad * g;
    }
  }
};

// AdaGrad (deck 002 Alg. 8.4, delta outside the root; torch.optim.Adagrad with lr_decay and
// initial_accumulator_value). The slot holds r - r_0 so that zero-initialized state is right.
template <>
struct OptRule<Opt::adagrad> : OptRuleTraits {
  // State: sum of squares minus r_0.
  static constexpr int kStateSlots = 1;
  template <bool A, bool B, class T>
  static FM_HD void apply(T& p, T g, T* s, index_t n, const OptCoef<T>& k) {
    T& r = s[0];
    r += g * g;
    p -= k.step_size * g / (std::sqrt(r + k.init_acc) + k.eps);
  }
};

// RMSProp (deck 000; deck 002 Alg. 8.5; torch.optim.RMSprop). A = centered, B = momentum.
template <>
struct OptRule<Opt::rmsprop> : OptRuleTraits {
  // State: square average, [momentum buffer] (B), [gradient average] (A), in that order
  // (k.slot_buf, k.slot_avg).
  static constexpr int kStateSlots = 1;
  static constexpr OptFlag kVariantA = OptFlag::centered, kVariantB = OptFlag::momentum;
  static constexpr OptMomentum kMomentum = OptMomentum::momentum;
  template <bool A, bool B, class T>
  static FM_HD void apply(T& p, T g, T* s, index_t n, const OptCoef<T>& k) {
    T& sq = s[0];
    sq = k.rho * sq + k.one_minus_rho * g * g;
    T avg = sq;
    if constexpr (A) {
      T& ga = s[k.slot_avg * n];
      ga = k.rho * ga + k.one_minus_rho * g;
      avg -= ga * ga;
    }
    const T denom = std::sqrt(avg + k.eps_in) + k.eps_out;
    if constexpr (B) {
      T& b = s[k.slot_buf * n];
      b = k.momentum * b + g / denom;
      p -= k.lr * b;
    } else {
      p -= k.lr * g / denom;
    }
  }
};

// AdaDelta (Zeiler 2012; deck 001's "AdaDelta approximation" D G^-1; torch.optim.Adadelta).
template <>
struct OptRule<Opt::adadelta> : OptRuleTraits {
  // State: square average, delta average.
  static constexpr int kStateSlots = 2;
  template <bool A, bool B, class T>
  static FM_HD void apply(T& p, T g, T* s, index_t n, const OptCoef<T>& k) {
    T& sq = s[0];
    T& acc = s[n];
    sq = k.rho * sq + k.one_minus_rho * g * g;
    const T delta = std::sqrt(acc + k.eps) / std::sqrt(sq + k.eps) * g;
    acc = k.rho * acc + k.one_minus_rho * delta * delta;
    p -= k.lr * delta;
  }
};

// Adam with bias correction 1 - beta^t (deck 002 Alg. 8.7, deck 000; torch.optim.Adam). A =
// AMSGrad: the running maximum of v, bias-corrected. AdamW is the same rule; its decay is the
// decoupled one, applied before the rule.
template <>
struct OptRule<Opt::adam> : OptRuleTraits {
  // State: m, v, [running max of v] (A).
  static constexpr int kStateSlots = 2;
  static constexpr OptFlag kVariantA = OptFlag::amsgrad;
  static constexpr OptMomentum kMomentum = OptMomentum::beta1;
  template <bool A, bool B, class T>
  static FM_HD void apply(T& p, T g, T* s, index_t n, const OptCoef<T>& k) {
    T& m = s[0];
    T& v = s[n];
    m = k.beta1 * m + k.one_minus_beta1 * g;
    v = k.beta2 * v + k.one_minus_beta2 * g * g;
    T vv = v;
    if constexpr (A) {
      T& vmax = s[2 * n];
      vmax = vmax > v ? vmax : v;
      vv = vmax;
    }
    p -= k.step_size * m / (std::sqrt(vv * k.c_in + k.eps_in) * k.c_out + k.eps_out);
  }
};
template <>
struct OptRule<Opt::adamw> : OptRule<Opt::adam> {};

// NAdam (Dozat 2016; torch.optim.NAdam): Nesterov momentum inside Adam.
template <>
struct OptRule<Opt::nadam> : OptRuleTraits {
  // State: m, v.
  static constexpr int kStateSlots = 2;
  static constexpr OptMomentum kMomentum = OptMomentum::beta1;
  template <bool A, bool B, class T>
  static FM_HD void apply(T& p, T g, T* s, index_t n, const OptCoef<T>& k) {
    T& m = s[0];
    T& v = s[n];
    m = k.beta1 * m + k.one_minus_beta1 * g;
    v = k.beta2 * v + k.one_minus_beta2 * g * g;
    p -= (k.nadam_c1 * m + k.nadam_c2 * g) / (std::sqrt(v) * k.inv_bc2_sqrt + k.eps);
  }
};

// AdaMax (Kingma & Ba 2015 Alg. 2; torch.optim.Adamax): infinity-norm second moment.
template <>
struct OptRule<Opt::adamax> : OptRuleTraits {
  // State: m, u (infinity norm).
  static constexpr int kStateSlots = 2;
  static constexpr OptMomentum kMomentum = OptMomentum::beta1;
  template <bool A, bool B, class T>
  static FM_HD void apply(T& p, T g, T* s, index_t n, const OptCoef<T>& k) {
    T& m = s[0];
    T& u = s[n];
    m = k.beta1 * m + k.one_minus_beta1 * g;
    const T a = k.beta2 * u, b = std::fabs(g) + k.eps;
    u = a > b ? a : b;
    p -= k.step_size * m / u;
  }
};

// AdaBelief (Zhuang et al. 2020, Alg. 2, as the authors' adabelief-pytorch 0.2 without
// rectification): s tracks the "belief" (g - m)^2; eps is added to s every step. A = AMSGrad.
template <>
struct OptRule<Opt::adabelief> : OptRuleTraits {
  // State: m, s, [running max of s] (A).
  static constexpr int kStateSlots = 2;
  static constexpr OptFlag kVariantA = OptFlag::amsgrad;
  static constexpr OptMomentum kMomentum = OptMomentum::beta1;
  template <bool A, bool B, class T>
  static FM_HD void apply(T& p, T g, T* s, index_t n, const OptCoef<T>& k) {
    T& m = s[0];
    T& sv = s[n];
    m = k.beta1 * m + k.one_minus_beta1 * g;
    const T d = g - m;
    sv = k.beta2 * sv + k.one_minus_beta2 * d * d + k.eps;
    T ss = sv;
    if constexpr (A) {
      T& smax = s[2 * n];
      smax = smax > sv ? smax : sv;
      ss = smax;
    }
    p -= k.step_size * m / (std::sqrt(ss) * k.inv_bc2_sqrt + k.eps);
  }
};

// Adafactor (Shazeer & Stern 2018; torch.optim.Adafactor), elementwise parts. Per step t:
//   w_t = 1 - beta2_t = t^beta2_decay (w_1 = 1),  rho_t = min(lr, 1/sqrt t) (relative step)
//   or lr, alpha_t = max(eps2, RMS(theta)) rho_t (scale_parameter) or rho_t.
//   matrix: R <- lerp(R, mean_j g^2, w), C <- lerp(C, mean_i g^2, w),
//           V_ij = R_i C_j / max(mean(R), eps1)
//   vector: V <- lerp(V, g^2, w)
//   U = g / sqrt(max(V, eps1^2)),  theta <- theta - alpha_t / max(1, RMS(U) / d) * U.
template <class T>
FM_HD T adafactor_lerp(T a, T b, T w) {
  return a + w * (b - a);
}
template <class T>
FM_HD T adafactor_u(T g, T v, T eps1) {
  const T floor = eps1 * eps1;
  return g / std::sqrt(v > floor ? v : floor);
}

// Adafactor has no per-element rule: its factored second moment needs row and column
// reductions (the backends' Adafactor loops); its state layout is opt_state_size's.
template <>
struct OptRule<Opt::adafactor> : OptRuleTraits {
  static constexpr bool kElementwise = false;
};

// ------------------------------------------------------------------ generated from the traits

// Calls fn(std::integral_constant<Opt, O>{}) for the runtime value o, so each backend's loop is
// compiled once per rule with the formula inlined (as act_dispatch).
template <class F>
decltype(auto) opt_dispatch(Opt o, F&& fn) {
  switch (o) {
#define FM_OPT_CASE(n) \
  case Opt::n:         \
    return fn(std::integral_constant<Opt, Opt::n>{});
    FM_OPT_LIST(FM_OPT_CASE)
#undef FM_OPT_CASE
    default:
      break;
  }
  throw ValueError(detail::concat("opt: unknown optimizer code ", static_cast<int>(o)));
}

// Whether flag f is set in the config, or in the step coefficients made from it.
inline bool opt_flag(const OptConfig& c, OptFlag f) {
  return (f == OptFlag::momentum && c.momentum > 0) || (f == OptFlag::centered && c.centered) ||
         (f == OptFlag::amsgrad && c.amsgrad);
}
template <class T>
FM_HD bool opt_flag(const OptCoef<T>& k, OptFlag f) {
  return (f == OptFlag::momentum && k.has_momentum) || (f == OptFlag::centered && k.centered) ||
         (f == OptFlag::amsgrad && k.amsgrad);
}

// Whether rule O has a variant A / B (the backends instantiate only those).
template <Opt O>
constexpr bool kOptHasVariantA = OptRule<O>::kVariantA != OptFlag::none;
template <Opt O>
constexpr bool kOptHasVariantB = OptRule<O>::kVariantB != OptFlag::none;

// The variants of a step, for OptRule<O>::apply<A, B> (false where the rule has none).
template <Opt O, class T>
FM_HD bool opt_variant_a(const OptCoef<T>& k) {
  return opt_flag(k, OptRule<O>::kVariantA);
}
template <Opt O, class T>
FM_HD bool opt_variant_b(const OptCoef<T>& k) {
  return opt_flag(k, OptRule<O>::kVariantB);
}

// State arrays of rule O with variants A, B, at compile time.
template <Opt O, bool A, bool B>
FM_HD constexpr int opt_slots() {
  return OptRule<O>::kStateSlots + (A && kOptHasVariantA<O> ? 1 : 0) +
         (B && kOptHasVariantB<O> ? 1 : 0);
}

// State arrays of n elements for the config (Adafactor: 0, its state is per segment); the
// slot order of each rule is documented at its OptRule.
inline int opt_state_arrays(const OptConfig& c) {
  return opt_dispatch(static_cast<Opt>(c.opt), [&](auto o) {
    using R = OptRule<decltype(o)::value>;
    return R::kStateSlots + (opt_flag(c, R::kVariantA) ? 1 : 0) +
           (opt_flag(c, R::kVariantB) ? 1 : 0);
  });
}

// The hyper-parameter cyclical momentum drives for optimizer o.
inline OptMomentum opt_momentum(Opt o) {
  return opt_dispatch(o, [](auto r) { return OptRule<decltype(r)::value>::kMomentum; });
}

// Number of T elements of optimizer state for an arena of n elements split into `segs`
// (nseg = 0: the whole arena is one vector segment). Elementwise rules need
// opt_state_arrays(c) * n; Adafactor rows + cols per factored matrix and rows * cols per
// vector, laid out segment after segment. Validates the config and the segments.
inline index_t opt_state_size(const OptConfig& c, const Segment* segs, int nseg, index_t n) {
  check_opt_config(c);
  check_opt_segments(segs, nseg, n);
  if (static_cast<Opt>(c.opt) != Opt::adafactor) return index_t(opt_state_arrays(c)) * n;
  if (nseg == 0) return n;
  index_t size = 0;
  for (int s = 0; s < nseg; ++s)
    size += adafactor_factored(segs[s].rows, segs[s].cols) ? segs[s].rows + segs[s].cols
                                                           : segs[s].rows * segs[s].cols;
  return size;
}

}  // namespace fm
