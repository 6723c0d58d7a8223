// Bindings of the dropout and Gaussian-noise kernels (csrc/cpu/dropout.cpp). Arrays of any
// shape are accepted (C-contiguous; the flat index is the Philox element index); outputs
// are allocated here and the GIL is released around every kernel.
#include "bindings/common.h"
#include "common/philox.h"
#include "cpu/dropout.h"

namespace fm::bindings {
namespace {

template <class T>
py::array_t<T> empty_like_any(const py::array& a) {
  return py::array_t<T>(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
}

// Shared body: out = kernel(in) elementwise with a Philox key.
template <class Kernel>
py::array run_keyed(py::array in, const char* name, double value, std::uint64_t seed,
                    std::uint64_t step, std::uint32_t layer, Kernel&& kernel) {
  return dtype_dispatch(in, name, [&](auto tag) -> py::array {
    using T = decltype(tag);
    const T* ip = checked_ptr<T>(in, name, -1);
    const index_t n = static_cast<index_t>(in.size());
    auto out = empty_like_any<T>(in);
    T* op = out.mutable_data();
    const PhiloxKey key{seed, step, layer};
    {
      py::gil_scoped_release nogil;
      kernel(ip, op, n, T(value), key);
    }
    return out;
  });
}

}  // namespace

FM_BINDINGS(dropout) {
  m.def("dropout_forward", [](py::array x, double rate, std::uint64_t seed, std::uint64_t step,
                              std::uint32_t layer) {
    return run_keyed(x, "x", rate, seed, step, layer,
                     [](auto... a) { cpu::dropout_forward(a...); });
  }, py::arg("x"), py::arg("rate"), py::arg("seed"), py::arg("step"), py::arg("layer"));

  m.def("dropout_backward", [](py::array dy, double rate, std::uint64_t seed, std::uint64_t step,
                               std::uint32_t layer) {
    return run_keyed(dy, "grad_output", rate, seed, step, layer,
                     [](auto... a) { cpu::dropout_backward(a...); });
  }, py::arg("grad_output"), py::arg("rate"), py::arg("seed"), py::arg("step"), py::arg("layer"));

  m.def("gaussian_noise_forward", [](py::array x, double stddev, std::uint64_t seed,
                                     std::uint64_t step, std::uint32_t layer) {
    return run_keyed(x, "x", stddev, seed, step, layer,
                     [](auto... a) { cpu::gaussian_noise_forward(a...); });
  }, py::arg("x"), py::arg("stddev"), py::arg("seed"), py::arg("step"), py::arg("layer"));
}

}  // namespace fm::bindings
