// The _core extension module: every CPU kernel family binds itself (FM_BINDINGS in
// csrc/bindings/core_*.cpp); this file creates the module, maps the C++ exceptions to
// Python ones, and exposes the thread controls.
#include <omp.h>

#include "bindings/common.h"
#include "cpu/blas.h"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "fusedmlp CPU kernels (C++, OpenBLAS, OpenMP)";
  fm::bindings::register_exception_translator();
  // OpenBLAS stays single-threaded: GEMMs are split over the OpenMP threads (cpu/blas.h).
  fm::cpu::set_blas_threads(1);
  m.def("set_num_threads", [](int n) {
    FM_CHECK(n >= 1, "n_threads: expected >= 1, got ", n);
    omp_set_num_threads(n);
  }, py::arg("n_threads"),
        "Threads of the kernels (one OpenMP pool: elementwise loops and GEMM blocks).");
  m.def("get_num_threads", []() { return omp_get_max_threads(); });
  m.def("native_build", []() {
#ifdef FM_NATIVE_BUILD
    return true;
#else
    return false;
#endif
  }, "True for a FUSEDMLP_NATIVE=ON build (-march=native: runs only on CPUs like the build's).");
  m.def("get_blas_threads", []() { return fm::cpu::blas_threads(); });
  for (auto& [name, bind] : fm::bindings::registry()) bind(m);
}
