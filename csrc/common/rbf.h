// Radial basis function (RBF) layer formulas, deck 003 ("Radial Basis Function Nets"):
//   phi_k(x) = exp(-||x - mu_k||^2 / (2 sigma_k^2)),   k = 0 .. K-1,
// one Gaussian feature per centre mu_k with width sigma_k. The squared distance comes from
// one GEMM through the expansion
//   D = ||x||^2 + ||mu||^2 - 2 x . mu,
// clamped at 0: when x is close to mu the expansion cancels and rounding can leave a tiny
// negative number where the true value is >= 0 (the same guard as torch.cdist's mm path).
// Gradients (chain rule through D; the clamp only removes rounding, so the derivative used is
// the one of the true distance):
//   dL/dD     = dL/dphi * phi * (-1 / (2 sigma^2))
//   dL/dx_n   = sum_k dL/dD_nk 2 (x_n - mu_k)  = 2 (sum_k dL/dD_nk) x_n - 2 (dL/dD mu)_n
//   dL/dmu_k  = sum_n dL/dD_nk 2 (mu_k - x_n) = 2 (sum_n dL/dD_nk) mu_k - 2 (dL/dD^T X)_k
//   dL/dsigma_k = sum_n dL/dphi_nk phi_nk D_nk / sigma_k^3
// The Network stores s = log sigma (sigma = exp(s) > 0 whatever the optimizer does, and a
// step changes a width by a factor, the same for narrow and wide units):
//   dL/ds_k = sigma_k dL/dsigma_k.
// Functions are FM_HD so a CUDA backend computes the same formula from this definition.
#pragma once

#include <cmath>

#include "common/macros.h"

namespace fm {

// The exponent's coefficient c_k = 1 / (2 sigma_k^2).
template <class T>
FM_HD T rbf_coef(T sigma) {
  return T(1) / (T(2) * sigma * sigma);
}

// ||x - mu||^2 from ||x||^2, ||mu||^2 and x . mu, clamped at 0 (cancellation, see above).
template <class T>
FM_HD T rbf_sq_dist(T x_sq_norm, T mu_sq_norm, T dot) {
  const T d = x_sq_norm + mu_sq_norm - T(2) * dot;
  return d > T(0) ? d : T(0);
}

// phi = exp(-c D); D >= 0 and c > 0, so phi is in (0, 1] (0 after underflow, never NaN).
template <class T>
FM_HD T rbf_phi(T sq_dist, T coef) {
  return std::exp(-coef * sq_dist);
}

// dL/dD = dL/dphi * dphi/dD = dL/dphi * (-c phi).
template <class T>
FM_HD T rbf_grad_sq_dist(T grad_phi, T phi, T coef) {
  return -coef * grad_phi * phi;
}

// One sample's term of sigma^3 dL/dsigma: dL/dphi * phi * D (dphi/dsigma = phi D / sigma^3).
template <class T>
FM_HD T rbf_width_term(T grad_phi, T phi, T sq_dist) {
  return grad_phi * phi * sq_dist;
}

// dL/dsigma from the summed terms.
template <class T>
FM_HD T rbf_grad_width(T term_sum, T sigma) {
  return term_sum / (sigma * sigma * sigma);
}

// dL/d(log sigma) = sigma dL/dsigma.
template <class T>
FM_HD T rbf_grad_log_width(T grad_sigma, T sigma) {
  return sigma * grad_sigma;
}

// Host-side argument checks of both backends' RBF kernels.
inline void rbf_check_sizes(index_t batch, index_t n_in, index_t K) {
  FM_CHECK(batch >= 1, "X: expected at least one row, got ", batch);
  FM_CHECK(n_in >= 1, "X: expected at least one feature, got ", n_in);
  FM_CHECK(K >= 1, "centers: expected at least one centre, got ", K);
}

}  // namespace fm
