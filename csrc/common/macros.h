// Shared definitions for the CPU and CUDA backends: the host/device qualifier, the
// index type, and the exceptions every C++ entry point throws on bad input (the
// bindings turn them into Python ValueError / TypeError).
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

// Host code forces inlining too: the formulas are called from the elementwise loops, and a
// loop that keeps a call (GCC's inliner gives up in large translation units) does not vectorize.
#if defined(__CUDACC__)
#define FM_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define FM_HD inline __attribute__((always_inline))
#else
#define FM_HD inline
#endif

namespace fm {

using index_t = std::int64_t;

// Bad value, shape or hyper-parameter. Translated to Python ValueError.
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Wrong type / dtype. Translated to Python TypeError.
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}
}  // namespace detail

}  // namespace fm

// FM_CHECK(cond, "message parts", ...) throws fm::ValueError naming what was expected.
#define FM_CHECK(cond, ...)                                       \
  do {                                                            \
    if (!(cond)) throw ::fm::ValueError(::fm::detail::concat(__VA_ARGS__)); \
  } while (0)
