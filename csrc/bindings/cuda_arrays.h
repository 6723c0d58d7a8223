// __cuda_array_interface__ parsing shared by the _cuda bindings (cuda.cpp: the kernels,
// cuda_network.cpp: the GPU Network): shape, dtype, contiguity, device and stream checks, with
// errors that name the argument; the device memory policy DevMem and its kernel trait
// (bindings/ops.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/common.h"
#include "cuda/activation.h"
#include "cuda/common.cuh"
#include "cuda/gemm.h"
#include "cuda/loss.h"
#include "cuda/optimizer.h"
#include "network/cuda_backend.h"

namespace fm::bindings {

// --------------------------------------------------------------- __cuda_array_interface__

// 0 and 1 both name the legacy default stream (this module is built without per-thread default
// streams, so handle 0 is the legacy stream); 2 the per-thread default stream.
inline cudaStream_t stream_from_int(std::uintptr_t s) {
  if (s == 0 || s == 1) return nullptr;
  if (s == 2) return cudaStreamPerThread;
  return reinterpret_cast<cudaStream_t>(s);
}

using DevArray = Arr;

// labels = true: an int32 array of class labels instead of a float32/float64 one; index = true:
// an int64 array of row indices.
inline DevArray read_array(const py::handle& obj, const char* name, bool labels = false,
                           bool index = false) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw TypeError(detail::concat(
        name, ": expected a GPU array exposing __cuda_array_interface__ (e.g. CuPy), got ",
        std::string(py::str(py::type::handle_of(obj).attr("__name__")))));
  const py::dict cai = obj.attr("__cuda_array_interface__");
  DevArray a;
  a.name = name;
  for (const auto& s : cai["shape"].cast<py::tuple>()) a.shape.push_back(s.cast<index_t>());
  parse_typestr(a, cai["typestr"].cast<std::string>(), name, labels, index);
  const py::tuple data = cai["data"].cast<py::tuple>();
  a.ptr = data[0].cast<std::uintptr_t>();
  a.readonly = data[1].cast<bool>();
  if (cai.contains("mask") && !cai["mask"].is_none())
    throw ValueError(detail::concat(name, ": masked arrays are not supported"));
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    std::vector<index_t> st;
    for (const auto& x : cai["strides"].cast<py::tuple>()) st.push_back(x.cast<index_t>());
    expect_c_order(a, st, "use cupy.ascontiguousarray");
  }
  if (cai.contains("stream") && !cai["stream"].is_none()) {
    const auto s = cai["stream"].cast<std::uintptr_t>();
    FM_CHECK(s != 0, name, ": __cuda_array_interface__ stream 0 is disallowed by the protocol");
    a.stream = s;
  }
  FM_CHECK(a.size() == 0 || a.ptr != 0, name, ": null data pointer");
  return a;
}

inline std::optional<DevArray> read_optional(const py::object& obj, const char* name) {
  if (obj.is_none()) return std::nullopt;
  return read_array(obj, name);
}

// The stream every launch of one call runs on, with the inputs' producer streams waited for
// and every pointer checked to be device memory of the current device.
inline cudaStream_t prepare(const py::object& stream_arg,
                            const std::vector<const DevArray*>& arrays) {
  int device = 0;
  fm::cuda::check_cuda(cudaGetDevice(&device), "cudaGetDevice", __FILE__, __LINE__);
  for (const DevArray* a : arrays) {
    if (a->size() == 0) continue;
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(a->ptr));
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw ValueError(
          detail::concat(a->name, ": not a CUDA device pointer (", cudaGetErrorString(e), ")"));
    }
    FM_CHECK(attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged, a->name,
             ": expected device memory, got a host pointer");
    FM_CHECK(attr.device == device, a->name, ": the array is on device ", attr.device,
             " but the current device is ", device, "; mixing devices is an error");
  }
  cudaStream_t stream = nullptr;
  if (!stream_arg.is_none()) {
    stream = stream_from_int(stream_arg.cast<std::uintptr_t>());
  } else {
    for (const DevArray* a : arrays)
      if (a->stream) {
        stream = stream_from_int(*a->stream);
        break;
      }
  }
  for (const DevArray* a : arrays) {
    if (!a->stream || stream_from_int(*a->stream) == stream) continue;
    cudaEvent_t ev;
    FM_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    FM_CUDA_CHECK(cudaEventRecord(ev, stream_from_int(*a->stream)));
    const cudaError_t e = cudaStreamWaitEvent(stream, ev, 0);
    cudaEventDestroy(ev);
    FM_CUDA_CHECK(e);
  }
  return stream;
}

// ---------------------------------------------------------------------------- device memory

// An array object over device memory that `owner` keeps alive: what the _cuda bindings hand
// back (arena views, layer outputs); Python sees it through __cuda_array_interface__ (v3).
struct DeviceView {
  std::uintptr_t ptr = 0;
  std::vector<index_t> shape;
  const char* typestr = "<f4";
  py::object owner;

  py::dict interface() const {
    py::dict d;
    py::tuple sh(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) sh[i] = shape[i];
    d["shape"] = sh;
    d["typestr"] = typestr;
    d["data"] = py::make_tuple(ptr, false);
    d["strides"] = py::none();
    d["version"] = 3;
    d["stream"] = py::none();  // the producer synchronizes itself (the Network's stream order)
    return d;
  }
};

// Registers DeviceView in the _cuda module (cuda.cpp calls it once at import).
inline void bind_device_view(py::module_& m) {
  py::class_<DeviceView>(m, "DeviceView",
                         "A device array view (pointer, shape, dtype) that keeps its owner "
                         "alive; read it through __cuda_array_interface__ (cupy.asarray).")
      .def_property_readonly("__cuda_array_interface__", &DeviceView::interface)
      .def_property_readonly("shape", [](const DeviceView& v) {
        py::tuple sh(v.shape.size());
        for (size_t i = 0; i < v.shape.size(); ++i) sh[i] = v.shape[i];
        return sh;
      });
}

struct DevMem {
  static constexpr bool kDevice = true;
  using Stream = cudaStream_t;

  static bool is_labels(const py::handle& obj) {
    if (!py::hasattr(obj, "__cuda_array_interface__")) return false;
    const py::dict cai = obj.attr("__cuda_array_interface__");
    const std::string ts = cai["typestr"].cast<std::string>();
    return ts == "<i4" || ts == "=i4" || ts == "|i4";
  }
  static Arr read(const py::handle& obj, const char* name, bool labels = false) {
    return read_array(obj, name, labels);
  }
  static Arr read_index(const py::handle& obj, const char* name) {
    return read_array(obj, name, false, true);
  }
  static Stream prepare(const py::object& stream_arg, const std::vector<const Arr*>& arrays) {
    return fm::bindings::prepare(stream_arg, arrays);
  }
  template <class T>
  static py::object view(T* ptr, const std::vector<index_t>& shape, py::handle owner) {
    DeviceView v;
    v.ptr = reinterpret_cast<std::uintptr_t>(ptr);
    v.shape = shape;
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> ||
                      std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::int64_t>,
                  "DeviceView: float32, float64, int32 or int64");
    v.typestr = std::is_same_v<T, float>          ? "<f4"
                : std::is_same_v<T, double>       ? "<f8"
                : std::is_same_v<T, std::int32_t> ? "<i4"
                                                  : "<i8";
    v.owner = py::reinterpret_borrow<py::object>(owner);
    return py::cast(std::move(v));
  }
};

template <class Mem>
struct OpKernels;

// The kernel trait of the device memory policy (bindings/ops.h): the Network's CUDA backend on
// the call's stream plus the ops the Network does not call.
template <>
struct OpKernels<DevMem> : cuda::CudaBackend {
  static OpKernels make(DevMem::Stream s) {
    OpKernels k;
    k.stream = s;
    return k;
  }

  template <class T>
  void activation_derivative(Act a, const T* z, T* g, index_t rows, index_t cols,
                             const ActParams<T>& p) {
    cuda::activation_derivative(a, z, g, rows, cols, p, stream);
  }
  template <class T>
  void loss_output(Loss loss, const T* logits, T* out, index_t rows, index_t cols) {
    cuda::loss_output(loss, logits, out, rows, cols, stream);
  }
  template <class T>
  void grad_sq_norm(const T* grads, index_t n, double* sq_norm, double* clip_scale,
                    double max_norm) {
    cuda::grad_sq_norm(grads, n, sq_norm, clip_scale, max_norm, stream);
  }
  template <class T>
  void gemm(bool ta, bool tb, index_t m, index_t n, index_t k, const T* A, index_t lda, const T* B,
            index_t ldb, T* C) {
    cuda::gemm(ta, tb, m, n, k, A, lda, B, ldb, C, n, cuda::Epilogue::none, nullptr, nullptr, 0,
               stream);
  }
  // The loss written to *out (a device float64 scalar) when given; the kernel skips the
  // reduction when out is null.
  template <class T>
  void loss_value(Loss loss, const T* logits, const T* target, const std::int32_t* labels,
                  const T* sw, T* dlogits, index_t rows, index_t cols, const LossParams<T>& p,
                  double* out) {
    loss_forward_backward(loss, logits, target, labels, sw, dlogits, rows, cols, p, out);
  }
  // A device float64 scalar (may be null) the optimizer kernels read as a gradient factor;
  // NaN there skips the elementwise update on the device (cuda/optimizer.h).
  static bool take_device_scale(const double* device_scale, GradScale& scale) {
    scale.device = device_scale;
    return true;
  }
};

}  // namespace fm::bindings
