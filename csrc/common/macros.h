// Shared definitions for the CPU and CUDA backends: the host/device qualifier, the
// index type, and the exceptions every C++ entry point throws on bad input (the
// bindings turn them into Python ValueError / TypeError).
#pragma once

#include <cstdint>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

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

// A size no allocation can satisfy (larger than the memory, or than 64 bits can count), found
// before allocating. Translated to Python MemoryError: pybind11 maps std::bad_alloc to
// MemoryError with what() as the message.
struct MemoryError : std::bad_alloc {
  explicit MemoryError(std::string msg) : msg_(std::move(msg)) {}
  const char* what() const noexcept override { return msg_.c_str(); }

 private:
  std::string msg_;
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
