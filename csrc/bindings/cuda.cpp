// The _cuda extension module: the CUDA kernels (csrc/cuda/) on device arrays.
//
// Arrays are any objects exposing __cuda_array_interface__ (CuPy, Numba, PyTorch ...): shape,
// typestr (<f4 or <f8), data pointer, C-contiguous (strides None or the C-order strides), no
// mask. The ops are those of _core with the same arguments (bindings/ops.h, instantiated here
// over device memory): outputs are passed in preallocated by the caller (fusedmlp._backend
// allocates them with CuPy); this module only takes pointers, checks them and launches. Every
// launch is queued on one stream: `stream` when given (a cudaStream_t as an int; 1 and 2 are the
// legacy and per-thread default streams, as in the interface's v3 "stream" field), else the
// first array's "stream" field, else the legacy default stream. Inputs whose "stream" differs
// are waited for with an event first. The GIL is released around every launch; nothing is
// synchronized after.
#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "bindings/common.h"
#include "bindings/cuda_arrays.h"
#include "bindings/ops.h"
#include "cuda/activation.h"
#include "cuda/gemm.h"

namespace fm::bindings {
namespace {

// --------------------------------------------------------------- device discovery

// cudaGetDeviceCount with every failure (no driver, driver too old, no device) mapped to 0
// and its reason kept for unavailable_reason().
std::pair<int, std::string> probe_devices() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return {0, detail::concat("the CUDA runtime reports ", cudaGetErrorName(e), ": ",
                              cudaGetErrorString(e))};
  }
  if (n <= 0) return {0, "no CUDA device is present"};
  return {n, ""};
}

}  // namespace
}  // namespace fm::bindings

namespace py = pybind11;
using namespace fm::bindings;
using fm::index_t;
namespace fcu = fm::cuda;

PYBIND11_MODULE(_cuda, m) {
  m.doc() =
      "fusedmlp CUDA kernels (cuBLASLt GEMMs with fused epilogues, elementwise and row kernels)";
  fm::bindings::register_exception_translator();
  bind_device_view(m);

  m.def(
      "device_count", []() { return probe_devices().first; },
      "Number of usable CUDA devices; 0 (never an exception) without a driver or a device.");
  m.def(
      "unavailable_reason",
      []() -> py::object {
        const auto [n, why] = probe_devices();
        if (n > 0) return py::none();
        return py::str(why);
      },
      "Why no CUDA device can be used, or None when one can.");
  m.def(
      "set_allow_tf32", [](bool on) { fcu::set_allow_tf32(on); }, py::arg("on"),
      "Allow TF32 tensor-core math in float32 GEMMs (off by default).");
  m.def("get_allow_tf32", []() { return fcu::allow_tf32(); });
  m.def(
      "relu_mask_bytes",
      [](index_t rows, index_t cols) { return fcu::relu_mask_bytes(rows, cols); }, py::arg("rows"),
      py::arg("cols"), "Bytes of the ReLU bit-mask of a (rows, cols) output.");

  bind_ops<DevMem>(m);

  for (auto& [name, bind] : fm::bindings::registry()) bind(m);  // cuda_*.cpp: the GPU Network
}
