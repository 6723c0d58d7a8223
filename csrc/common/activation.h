// Every elementwise activation of the decks, value and derivative from one definition
// used by the CPU loops (csrc/cpu/activation.cpp, dense.cpp) and the CUDA kernels.
//
// Sources: the activation tables of deck 000 (Training II) and deck 004 (Training I),
// the "activation operators" slides of deck 003, and the original papers where the PDF
// text is garbled. Deviations from the deck text, all misprints there:
//   * SELU: lambda = 1.0507 (deck 004, deck 003, Klambauer et al.); deck 000 prints 1.6507.
//   * ISRLU: x / sqrt(1 + a x^2) for x < 0 (Carlile et al.); deck 000 prints 1 - a x^2,
//     while its own range column (-1/sqrt(a), inf) is that of 1 + a x^2.
//   * BReLU odd units: f = -ReLU(-x), so f'(x) = ReLU'(-x) (deck prints -ReLU'(-x)).
//   * The rows "Sinc" and "Sincos" of deck 000 are shifted: sinusoid is sin(x) and sinc is
//     sin(x)/x (value 1, derivative 0 at 0).
//   * SReLU: t_l + a_l (x - t_l) for x <= t_l, x between, t_r + a_r (x - t_r) for x >= t_r
//     (Jin et al.); the deck's "t_1" is t_l and the middle branch is the identity.
//   * Soft clipping derivative: (1/2) sinh(a/2) sech(a x/2) sech(a (x-1)/2); the deck prints
//     sinh(a x / 2). We use the equal form sigma(a x) - sigma(a (x - 1)).
//   * Soft exponential (Godfrey & Gashler): -ln(1 - a (x + a)) / a for a < 0, x for a = 0,
//     (e^{a x} - 1) / a + a for a > 0; derivative 1 / (1 - a (a + x)) and e^{a x}.
// Kinks: the derivative at a kink takes the left-hand value, so ReLU'(0) = 0 (deck 000),
// likewise leaky/P/R-ReLU, BReLU, APL's hinges; binary step has derivative 0 everywhere.
//
// Cost: 1 read + 1 write per element forward; 2 reads + 1 write backward; transcendental
// functions dominate (exp/tanh/erf ~ 10-20 flops).
#pragma once

#include <cmath>
#include <type_traits>

#include "common/fastmath.h"
#include "common/macros.h"
#include "common/philox.h"

namespace fm {

// X(name, learnable parameters per unit)
#define FM_ACT_LIST(X)                                                                       \
  X(identity) X(binary_step) X(sigmoid) X(tanh) X(arctan) X(arsinh) X(softsign) X(isru)       \
  X(isrlu) X(sqnl) X(relu) X(brelu) X(leaky_relu) X(prelu) X(rrelu) X(elu) X(selu) X(srelu)   \
  X(apl) X(softplus) X(bent_identity) X(silu) X(soft_exponential) X(soft_clipping)           \
  X(sinusoid) X(sinc) X(gaussian) X(gelu) X(gelu_tanh) X(soboleva_tanh) X(lecun_tanh)

enum class Act : int {
#define FM_ACT_ENUM(n) n,
  FM_ACT_LIST(FM_ACT_ENUM)
#undef FM_ACT_ENUM
      count
};

// Scalar hyper-parameters and per-unit learnable parameters of an activation.
// `unit` points at a (n_params, cols) row-major block: parameter k of unit j is
// unit[k * cols + j]. Which fields an activation reads is documented at its ActFn.
template <class T>
struct ActParams {
  T alpha = T(0);                        // leaky_relu slope, ISRU/ISRLU/ELU/soft clipping alpha
  T a = T(1), b = T(1), c = T(1), d = T(1);  // Soboleva modified tanh
  T lower = T(0.125), upper = T(1.0 / 3.0);  // RReLU slope range
  int hinges = 1;                        // APL: number of hinges S
  const T* unit = nullptr;               // learnable per-unit parameters
  index_t cols = 0;                      // number of units (row stride of `unit`)
  PhiloxKey key{0, 0, 0};                // RReLU draws in training
  const std::uint64_t* step_ptr = nullptr;  // CUDA graph replay: key.step read on the device
  // RReLU: random slopes (true) or their mean (false). The CPU dense layer also picks its GEMM
  // by it: OpenBLAS in training, the batch-invariant gemm_rows in inference (cpu/dense.cpp).
  bool training = false;
};

// Number of learnable parameters per unit (rows of the `unit` block).
FM_HD int act_num_params(Act a, int hinges) {
  switch (a) {
    case Act::prelu: return 1;             // alpha
    case Act::soft_exponential: return 1;  // alpha
    case Act::srelu: return 4;             // t_l, a_l, t_r, a_r
    case Act::apl: return 2 * hinges;      // a_1..a_S, b_1..b_S
    default: return 0;
  }
}

namespace act_detail {

template <class T>
FM_HD T sigmoid(T x) {
  // Never exponentiates a positive number: no overflow for |x| large. Branch-free (a select),
  // so the CPU loops vectorize.
  const T e = fexp(-std::fabs(x));
  const T s = T(1) / (T(1) + e);
  return fsel(x >= T(0), s, e * s);
}

template <class T>
FM_HD T softplus(T x) {
  // ln(1 + e^x) = max(x, 0) + ln(1 + e^{-|x|}).
  return fsel(x > T(0), x, T(0)) + flog1p(fexp(-std::fabs(x)));
}

constexpr double kSeluLambda = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSqrt2OverPi = 0.79788456080286535587989211986876;
constexpr double kInvSqrt2 = 0.70710678118654752440084436210485;
constexpr double kInvSqrt2Pi = 0.39894228040143267793994605993438;
constexpr double kGeluTanhC = 0.044715;
constexpr double kLecunA = 1.7159, kLecunB = 2.0 / 3.0;

}  // namespace act_detail

// ActFn<A>::f(x, p, j, e): value at x of unit j, flat element e (for RReLU's draw).
// ActFn<A>::df(x, p, j, e): derivative with respect to x.
// ActFn<A>::dparam(x, g, p, j, dP): for learnable activations, dP[k * p.cols + j] +=
//   g * d f / d theta_k (the upstream gradient g times the parameter derivative).
template <Act A>
struct ActFn;

#define FM_ACT_SIMPLE(NAME, F, DF)                                   \
  template <>                                                       \
  struct ActFn<Act::NAME> {                                         \
    template <class T>                                              \
    static FM_HD T f(T x, const ActParams<T>& p, index_t j, index_t e) { \
      return F;                                                     \
    }                                                               \
    template <class T>                                              \
    static FM_HD T df(T x, const ActParams<T>& p, index_t j, index_t e) { \
      return DF;                                                    \
    }                                                               \
  };

// clang-format off
FM_ACT_SIMPLE(identity, x, T(1))
FM_ACT_SIMPLE(binary_step, x >= T(0) ? T(1) : T(0), T(0))
FM_ACT_SIMPLE(sigmoid, act_detail::sigmoid(x),
              (act_detail::sigmoid(x) * (T(1) - act_detail::sigmoid(x))))
FM_ACT_SIMPLE(tanh, ftanh(x), (T(1) - ftanh(x) * ftanh(x)))
FM_ACT_SIMPLE(arctan, std::atan(x), T(1) / (x * x + T(1)))
FM_ACT_SIMPLE(arsinh, std::asinh(x), T(1) / std::sqrt(x * x + T(1)))
FM_ACT_SIMPLE(softsign, x / (T(1) + std::fabs(x)),
              T(1) / ((T(1) + std::fabs(x)) * (T(1) + std::fabs(x))))
// ISRU(alpha): x / sqrt(1 + alpha x^2); derivative (1 / sqrt(1 + alpha x^2))^3. alpha > 0.
FM_ACT_SIMPLE(isru, x / std::sqrt(T(1) + p.alpha * x * x),
              (T(1) / std::sqrt(T(1) + p.alpha * x * x)) / (T(1) + p.alpha * x * x))
// ISRLU(alpha): ISRU for x < 0, identity for x >= 0. alpha > 0.
FM_ACT_SIMPLE(isrlu, x < T(0) ? x / std::sqrt(T(1) + p.alpha * x * x) : x,
              x < T(0) ? (T(1) / std::sqrt(T(1) + p.alpha * x * x)) / (T(1) + p.alpha * x * x) : T(1))
// SQNL: 1 (x > 2), x - x^2/4 (0..2), x + x^2/4 (-2..0), -1 (x < -2); derivative 1 -+ x/2.
FM_ACT_SIMPLE(sqnl,
              x > T(2) ? T(1) : (x >= T(0) ? x - x * x / T(4) : (x >= T(-2) ? x + x * x / T(4) : T(-1))),
              x > T(2) ? T(0) : (x >= T(0) ? T(1) - x / T(2) : (x >= T(-2) ? T(1) + x / T(2) : T(0))))
FM_ACT_SIMPLE(relu, x > T(0) ? x : T(0), x > T(0) ? T(1) : T(0))
// BReLU: even units ReLU(x), odd units -ReLU(-x) = min(x, 0).
FM_ACT_SIMPLE(brelu, (j & 1) ? (x < T(0) ? x : T(0)) : (x > T(0) ? x : T(0)),
              (j & 1) ? (x < T(0) ? T(1) : T(0)) : (x > T(0) ? T(1) : T(0)))
// Leaky ReLU: slope alpha (0.01 by default, deck 000) for x <= 0.
FM_ACT_SIMPLE(leaky_relu, x > T(0) ? x : p.alpha * x, x > T(0) ? T(1) : p.alpha)
// ELU(alpha): alpha (e^x - 1) for x <= 0; derivative f + alpha = alpha e^x there.
FM_ACT_SIMPLE(elu, fsel(x > T(0), x, p.alpha * fexpm1(x)), fsel(x > T(0), T(1), p.alpha * fexp(x)))
// SELU: lambda * ELU(alpha) with the fixed-point constants of Klambauer et al.
FM_ACT_SIMPLE(selu,
              T(act_detail::kSeluLambda) * fsel(x > T(0), x, T(act_detail::kSeluAlpha) * fexpm1(x)),
              T(act_detail::kSeluLambda) * fsel(x > T(0), T(1), T(act_detail::kSeluAlpha) * fexp(x)))
FM_ACT_SIMPLE(softplus, act_detail::softplus(x), act_detail::sigmoid(x))
FM_ACT_SIMPLE(bent_identity, (std::sqrt(x * x + T(1)) - T(1)) / T(2) + x,
              x / (T(2) * std::sqrt(x * x + T(1))) + T(1))
// SiLU / swish: x sigma(x); derivative sigma(x) (1 + x (1 - sigma(x))) = f + sigma (1 - f).
// At x = -inf both are their limits 0, at +inf the derivative is its limit 1: a pre-activation
// that overflowed to +-inf (a dense layer's huge finite product) would otherwise give
// inf * 0 = NaN. The tests compare with +-inf, so a NaN input still gives NaN.
FM_ACT_SIMPLE(silu, fsel(x == T(-HUGE_VAL), T(0), x * act_detail::sigmoid(x)),
              fsel(x == T(-HUGE_VAL), T(0),
                   fsel(x == T(HUGE_VAL), T(1),
                        act_detail::sigmoid(x) * (T(1) + x * (T(1) - act_detail::sigmoid(x))))))
// Soft clipping(alpha) = (1/alpha) ln((1 + e^{alpha x}) / (1 + e^{alpha (x - 1)}))
//   = (softplus(alpha x) - softplus(alpha (x - 1))) / alpha, overflow-free;
// derivative sigma(alpha x) - sigma(alpha (x - 1)) (equal to the deck's sinh/sech form).
FM_ACT_SIMPLE(soft_clipping,
              (act_detail::softplus(p.alpha * x) - act_detail::softplus(p.alpha * (x - T(1)))) / p.alpha,
              act_detail::sigmoid(p.alpha * x) - act_detail::sigmoid(p.alpha * (x - T(1))))
FM_ACT_SIMPLE(sinusoid, std::sin(x), std::cos(x))
FM_ACT_SIMPLE(gaussian, fexp(-x * x), T(-2) * x * fexp(-x * x))
// GELU, exact: x Phi(x) = x/2 (1 + erf(x / sqrt 2)); derivative Phi(x) + x phi(x) (deck 003).
// At x = -inf both are their limits 0, at +inf the derivative is 1 (as for SiLU: no inf * 0).
FM_ACT_SIMPLE(gelu,
              fsel(x == T(-HUGE_VAL), T(0),
                   T(0.5) * x * (T(1) + std::erf(x * T(act_detail::kInvSqrt2)))),
              fsel(x == T(-HUGE_VAL), T(0),
                   fsel(x == T(HUGE_VAL), T(1),
                        T(0.5) * (T(1) + std::erf(x * T(act_detail::kInvSqrt2))) +
                            x * T(act_detail::kInvSqrt2Pi) * fexp(T(-0.5) * x * x))))
// LeCun's scaled tanh 1.7159 tanh(2x/3) (deck 003, "Efficient BackProp").
FM_ACT_SIMPLE(lecun_tanh, T(act_detail::kLecunA) * ftanh(T(act_detail::kLecunB) * x),
              T(act_detail::kLecunA * act_detail::kLecunB) *
                  (T(1) - ftanh(T(act_detail::kLecunB) * x) * ftanh(T(act_detail::kLecunB) * x)))
// clang-format on
#undef FM_ACT_SIMPLE

// GELU, tanh approximation: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <>
struct ActFn<Act::gelu_tanh> {
  template <class T>
  static FM_HD T f(T x, const ActParams<T>& p, index_t j, index_t e) {
    const T u = T(act_detail::kSqrt2OverPi) * (x + T(act_detail::kGeluTanhC) * x * x * x);
    return T(0.5) * x * (T(1) + ftanh(u));
  }
  template <class T>
  static FM_HD T df(T x, const ActParams<T>& p, index_t j, index_t e) {
    const T u = T(act_detail::kSqrt2OverPi) * (x + T(act_detail::kGeluTanhC) * x * x * x);
    const T t = ftanh(u);
    const T du = T(act_detail::kSqrt2OverPi) * (T(1) + T(3 * act_detail::kGeluTanhC) * x * x);
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
  }
};

// sinc: sin(x)/x, 1 at 0; derivative cos(x)/x - sin(x)/x^2, 0 at 0. Near 0 both lose all
// digits to cancellation, so |x| < 1e-2 uses the Taylor series (next term < 1e-13 relative).
template <>
struct ActFn<Act::sinc> {
  template <class T>
  static FM_HD T f(T x, const ActParams<T>& p, index_t j, index_t e) {
    if (std::fabs(x) < T(1e-2)) return T(1) - x * x / T(6) + x * x * x * x / T(120);
    return std::sin(x) / x;
  }
  template <class T>
  static FM_HD T df(T x, const ActParams<T>& p, index_t j, index_t e) {
    if (std::fabs(x) < T(1e-2)) return -x / T(3) + x * x * x / T(30);
    return std::cos(x) / x - std::sin(x) / (x * x);
  }
};

// Soboleva modified tanh (deck 003): (e^{a x} - e^{-b x}) / (e^{c x} + e^{-d x}).
// Every exponential is scaled by the dominant denominator term e^{m}, m = c x (x >= 0) or
// -d x (x < 0), so nothing overflows unless the function itself does (a > c or b > d).
// Needs c + d > 0 (checked by the entry points).
template <>
struct ActFn<Act::soboleva_tanh> {
  template <class T>
  static FM_HD void terms(T x, const ActParams<T>& p, T& ea, T& eb, T& ec, T& ed) {
    const T m = x >= T(0) ? p.c * x : -p.d * x;
    ea = fexp(p.a * x - m);
    eb = fexp(-p.b * x - m);
    ec = fexp(p.c * x - m);
    ed = fexp(-p.d * x - m);
  }
  template <class T>
  static FM_HD T f(T x, const ActParams<T>& p, index_t j, index_t e) {
    T ea, eb, ec, ed;
    terms(x, p, ea, eb, ec, ed);
    return (ea - eb) / (ec + ed);
  }
  template <class T>
  static FM_HD T df(T x, const ActParams<T>& p, index_t j, index_t e) {
    T ea, eb, ec, ed;
    terms(x, p, ea, eb, ec, ed);
    const T den = ec + ed;
    const T val = (ea - eb) / den;
    return ((p.a * ea + p.b * eb) - val * (p.c * ec - p.d * ed)) / den;
  }
};

// RReLU (Xu et al., deck 000): slope a ~ U(lower, upper) drawn per element in training
// from Philox (key p.key, element e), fixed at (lower + upper) / 2 at inference.
template <>
struct ActFn<Act::rrelu> {
  template <class T>
  static FM_HD T slope(const ActParams<T>& p, index_t e) {
    if (!p.training) return (p.lower + p.upper) * T(0.5);
    PhiloxKey key = p.key;
#ifdef __CUDA_ARCH__
    if (p.step_ptr) key.step = *p.step_ptr;
#endif
    return p.lower + (p.upper - p.lower) * philox_uniform<T>(key, static_cast<std::uint64_t>(e));
  }
  template <class T>
  static FM_HD T f(T x, const ActParams<T>& p, index_t j, index_t e) {
    return x > T(0) ? x : slope(p, e) * x;
  }
  template <class T>
  static FM_HD T df(T x, const ActParams<T>& p, index_t j, index_t e) {
    return x > T(0) ? T(1) : slope(p, e);
  }
};

// PReLU (He et al., deck 000): learnable slope alpha_j per unit; df/dalpha = x for x <= 0.
template <>
struct ActFn<Act::prelu> {
  template <class T>
  static FM_HD T f(T x, const ActParams<T>& p, index_t j, index_t e) {
    return x > T(0) ? x : p.unit[j] * x;
  }
  template <class T>
  static FM_HD T df(T x, const ActParams<T>& p, index_t j, index_t e) {
    return x > T(0) ? T(1) : p.unit[j];
  }
  template <class T>
  static FM_HD void dparam(T x, T g, const ActParams<T>& p, index_t j, T* dP) {
    dP[j] += x > T(0) ? T(0) : g * x;
  }
};

// SReLU: parameters per unit t_l, a_l, t_r, a_r (rows 0..3 of the unit block).
template <>
struct ActFn<Act::srelu> {
  template <class T>
  static FM_HD T f(T x, const ActParams<T>& p, index_t j, index_t e) {
    const T tl = p.unit[j], al = p.unit[p.cols + j];
    const T tr = p.unit[2 * p.cols + j], ar = p.unit[3 * p.cols + j];
    if (x <= tl) return tl + al * (x - tl);
    if (x >= tr) return tr + ar * (x - tr);
    return x;
  }
  template <class T>
  static FM_HD T df(T x, const ActParams<T>& p, index_t j, index_t e) {
    const T tl = p.unit[j], tr = p.unit[2 * p.cols + j];
    if (x <= tl) return p.unit[p.cols + j];
    if (x >= tr) return p.unit[3 * p.cols + j];
    return T(1);
  }
  template <class T>
  static FM_HD void dparam(T x, T g, const ActParams<T>& p, index_t j, T* dP) {
    const index_t n = p.cols;
    const T tl = p.unit[j], al = p.unit[n + j];
    const T tr = p.unit[2 * n + j], ar = p.unit[3 * n + j];
    if (x <= tl) {
      dP[j] += g * (T(1) - al);  // d/dt_l
      dP[n + j] += g * (x - tl);  // d/da_l
    } else if (x >= tr) {
      dP[2 * n + j] += g * (T(1) - ar);  // d/dt_r
      dP[3 * n + j] += g * (x - tr);      // d/da_r
    }
  }
};

// APL (Agostinelli et al.): max(0, x) + sum_s a_s max(0, -x + b_s); rows 0..S-1 hold a_s,
// rows S..2S-1 hold b_s. df/dx = H(x) - sum_s a_s H(b_s - x); df/da_s = max(0, b_s - x);
// df/db_s = a_s H(b_s - x), with H(0) = 0.
template <>
struct ActFn<Act::apl> {
  template <class T>
  static FM_HD T f(T x, const ActParams<T>& p, index_t j, index_t e) {
    T y = x > T(0) ? x : T(0);
    for (int s = 0; s < p.hinges; ++s) {
      const T h = p.unit[(p.hinges + s) * p.cols + j] - x;
      y += p.unit[s * p.cols + j] * (h > T(0) ? h : T(0));
    }
    return y;
  }
  template <class T>
  static FM_HD T df(T x, const ActParams<T>& p, index_t j, index_t e) {
    T d = x > T(0) ? T(1) : T(0);
    for (int s = 0; s < p.hinges; ++s)
      if (p.unit[(p.hinges + s) * p.cols + j] - x > T(0)) d -= p.unit[s * p.cols + j];
    return d;
  }
  template <class T>
  static FM_HD void dparam(T x, T g, const ActParams<T>& p, index_t j, T* dP) {
    for (int s = 0; s < p.hinges; ++s) {
      const T h = p.unit[(p.hinges + s) * p.cols + j] - x;
      if (h > T(0)) {
        dP[s * p.cols + j] += g * h;
        dP[(p.hinges + s) * p.cols + j] += g * p.unit[s * p.cols + j];
      }
    }
  }
};

// Soft exponential with a learnable alpha per unit (see the header for the formula).
// df/dalpha: a > 0: x e^{ax}/a - (e^{ax} - 1)/a^2 + 1;  a < 0, u = 1 - a(x + a):
// ln(u)/a^2 + (x + 2a)/(a u);  a = 0: 1 + x^2/2 (both one-sided limits).
template <>
struct ActFn<Act::soft_exponential> {
  template <class T>
  static FM_HD T f(T x, const ActParams<T>& p, index_t j, index_t e) {
    const T a = p.unit[j];
    if (a > T(0)) return fexpm1(a * x) / a + a;
    if (a < T(0)) return -flog1p(-a * (x + a)) / a;
    return x;
  }
  template <class T>
  static FM_HD T df(T x, const ActParams<T>& p, index_t j, index_t e) {
    const T a = p.unit[j];
    if (a > T(0)) return fexp(a * x);
    if (a < T(0)) return T(1) / (T(1) - a * (a + x));
    return T(1);
  }
  template <class T>
  static FM_HD void dparam(T x, T g, const ActParams<T>& p, index_t j, T* dP) {
    const T a = p.unit[j];
    T da;
    if (a > T(0)) {
      da = x * fexp(a * x) / a - fexpm1(a * x) / (a * a) + T(1);
    } else if (a < T(0)) {
      const T u = T(1) - a * (x + a);
      da = std::log(u) / (a * a) + (x + T(2) * a) / (a * u);
    } else {
      da = T(1) + x * x / T(2);
    }
    dP[j] += g * da;
  }
};

// Whether ActFn<A> has learnable parameters (a dparam member).
template <Act A>
struct ActLearnable {
  static constexpr bool value = A == Act::prelu || A == Act::srelu || A == Act::apl ||
                                A == Act::soft_exponential;
};

// Calls fn(std::integral_constant<Act, A>{}) for the runtime value a, so loops are compiled
// once per activation with the formula inlined (no switch inside the inner loop).
template <class F>
decltype(auto) act_dispatch(Act a, F&& fn) {
  switch (a) {
#define FM_ACT_CASE(n) \
  case Act::n:        \
    return fn(std::integral_constant<Act, Act::n>{});
    FM_ACT_LIST(FM_ACT_CASE)
#undef FM_ACT_CASE
    default:
      break;
  }
  throw ValueError(detail::concat("activation: unknown activation code ", static_cast<int>(a)));
}

}  // namespace fm
