// L2 norm without overflow or underflow: Blue's algorithm (ACM TOMS 4, 1978), as in LAPACK
// 3.10's dnrm2 (Anderson, "Algorithm 978: Safe scaling in the Level 1 BLAS", 2017). Squares
// of elements above kBig are taken after scaling down by kScaleBig, below kSmall after
// scaling up by kScaleSmall, the rest as they are; three additive sums, so blocks of elements
// can be summed apart and added in a fixed order (deterministic for any partition), and the
// norm of finite values is finite whenever it is below DBL_MAX. Shared by the CPU and CUDA
// gradient norms (the global-norm clip, deck 002 "cliffs").
#pragma once

#include <cmath>

#include "common/macros.h"

namespace fm {

namespace norm_detail {
// double: radix 2, 53 digits, exponents [-1021, 1024] (LAPACK's tsml, tbig, ssml, sbig)
constexpr double kSmall = 0x1p-511;      // 2^ceil((emin - 1) / 2)
constexpr double kBig = 0x1p486;         // 2^floor((emax - digits + 1) / 2)
constexpr double kScaleSmall = 0x1p537;  // 2^-floor((emin - digits) / 2)
constexpr double kScaleBig = 0x1p-538;   // 2^-ceil((emax + digits - 1) / 2)
}  // namespace norm_detail

// s[0] += small squares (scaled up), s[1] += medium squares, s[2] += big squares (scaled down).
FM_HD void sum_sq_add(double x, double* s) {
  using namespace norm_detail;
  const double a = std::fabs(x);
  if (a > kBig) {
    s[2] += (a * kScaleBig) * (a * kScaleBig);
  } else if (a < kSmall) {
    s[0] += (a * kScaleSmall) * (a * kScaleSmall);
  } else {
    s[1] += a * a;
  }
}

// The norm sqrt(sum x^2) from the three sums of sum_sq_add (LAPACK dnrm2's combination).
FM_HD double sum_sq_norm(const double* s) {
  using namespace norm_detail;
  double asml = s[0], amed = s[1], abig = s[2];
  if (abig > 0) {  // the medium sum matters only if it is not swamped: fold it in scaled
    if (amed > 0 || amed != amed) abig += (amed * kScaleBig) * kScaleBig;
    return std::sqrt(abig) / kScaleBig;
  }
  if (asml > 0) {
    if (amed > 0 || amed != amed) {
      amed = std::sqrt(amed);
      asml = std::sqrt(asml) / kScaleSmall;
      const double ymax = asml > amed ? asml : amed, ymin = asml > amed ? amed : asml;
      return ymax * std::sqrt(1.0 + (ymin / ymax) * (ymin / ymax));
    }
    return std::sqrt(asml) / kScaleSmall;
  }
  return std::sqrt(amed);
}

}  // namespace fm
