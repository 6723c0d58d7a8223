// __cuda_array_interface__ parsing shared by the _cuda bindings (cuda.cpp: the kernels,
// cuda_network.cpp: the GPU Network): shape, dtype, contiguity, device and stream checks, with
// errors that name the argument.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "cuda/common.cuh"

namespace fm::bindings {

// --------------------------------------------------------------- __cuda_array_interface__

// 0 and 1 both name the legacy default stream (this module is built without per-thread default
// streams, so handle 0 is the legacy stream); 2 the per-thread default stream.
inline cudaStream_t stream_from_int(std::uintptr_t s) {
  if (s == 0 || s == 1) return nullptr;
  if (s == 2) return cudaStreamPerThread;
  return reinterpret_cast<cudaStream_t>(s);
}

struct DevArray {
  const char* name = "";
  std::uintptr_t ptr = 0;
  std::vector<index_t> shape;
  DType dtype = DType::f32;
  bool int32 = false;  // int32 class labels (read_array with labels = true)
  bool readonly = false;
  std::optional<cudaStream_t> stream;  // the producer's stream, when the object names one

  index_t size() const {
    index_t n = 1;
    for (index_t s : shape) n *= s;
    return n;
  }
  index_t dim(size_t i) const { return shape.at(i); }
  index_t itemsize() const { return int32 || dtype == DType::f32 ? 4 : 8; }
  template <class T>
  T* data() const {
    return reinterpret_cast<T*>(ptr);
  }
};

inline std::string shape_str(const std::vector<index_t>& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i] << (s.size() == 1 ? "," : "");
  o << ")";
  return o.str();
}

// labels = true: an int32 array of class labels instead of a float32/float64 one.
inline DevArray read_array(const py::handle& obj, const char* name, bool labels = false) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw TypeError(detail::concat(
        name, ": expected a GPU array exposing __cuda_array_interface__ (e.g. CuPy), got ",
        std::string(py::str(py::type::handle_of(obj).attr("__name__")))));
  const py::dict cai = obj.attr("__cuda_array_interface__");
  DevArray a;
  a.name = name;
  for (const auto& s : cai["shape"].cast<py::tuple>()) a.shape.push_back(s.cast<index_t>());
  const std::string ts = cai["typestr"].cast<std::string>();
  if (labels) {
    if (ts != "<i4" && ts != "=i4")
      throw TypeError(
          detail::concat(name, ": expected int32 class labels, got typestr '", ts, "'"));
    a.int32 = true;
  } else if (ts == "<f4" || ts == "=f4")
    a.dtype = DType::f32;
  else if (ts == "<f8" || ts == "=f8")
    a.dtype = DType::f64;
  else
    throw TypeError(
        detail::concat(name, ": expected dtype float32 or float64, got typestr '", ts, "'"));
  const py::tuple data = cai["data"].cast<py::tuple>();
  a.ptr = data[0].cast<std::uintptr_t>();
  a.readonly = data[1].cast<bool>();
  if (cai.contains("mask") && !cai["mask"].is_none())
    throw ValueError(detail::concat(name, ": masked arrays are not supported"));
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    const py::tuple st = cai["strides"].cast<py::tuple>();
    const index_t item = a.itemsize();
    index_t expect = item;
    for (size_t i = a.shape.size(); i-- > 0;) {
      if (a.shape[i] != 1 && st[i].cast<index_t>() != expect)
        throw ValueError(
            detail::concat(name, ": expected a C-contiguous array (use cupy.ascontiguousarray)"));
      expect *= a.shape[i];
    }
  }
  if (cai.contains("stream") && !cai["stream"].is_none()) {
    const auto s = cai["stream"].cast<std::uintptr_t>();
    FM_CHECK(s != 0, name, ": __cuda_array_interface__ stream 0 is disallowed by the protocol");
    a.stream = stream_from_int(s);
  }
  FM_CHECK(a.size() == 0 || a.ptr != 0, name, ": null data pointer");
  return a;
}

inline std::optional<DevArray> read_optional(const py::object& obj, const char* name) {
  if (obj.is_none()) return std::nullopt;
  return read_array(obj, name);
}

inline void expect_shape(const DevArray& a, const std::vector<index_t>& shape) {
  if (a.shape != shape)
    throw ValueError(detail::concat(a.name, ": expected shape ", shape_str(shape), ", got ",
                                    shape_str(a.shape)));
}

inline void expect_2d(const DevArray& a) {
  FM_CHECK(a.shape.size() == 2, a.name, ": expected a 2-d (batch, features) array, got shape ",
           shape_str(a.shape));
  FM_CHECK(a.size() > 0, a.name, ": expected a non-empty array, got shape ", shape_str(a.shape));
}

inline void expect_writable(const DevArray& a) {
  FM_CHECK(!a.readonly, a.name, ": expected a writeable output array");
}

inline void expect_dtype(const DevArray& a, const DevArray& like) {
  if (a.dtype != like.dtype)
    throw TypeError(detail::concat(
        a.name, ": expected dtype ", like.dtype == DType::f32 ? "float32" : "float64",
        " (the dtype of ", like.name, "), got ", a.dtype == DType::f32 ? "float32" : "float64"));
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
        stream = *a->stream;
        break;
      }
  }
  for (const DevArray* a : arrays) {
    if (!a->stream || *a->stream == stream) continue;
    cudaEvent_t ev;
    FM_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    FM_CUDA_CHECK(cudaEventRecord(ev, *a->stream));
    const cudaError_t e = cudaStreamWaitEvent(stream, ev, 0);
    cudaEventDestroy(ev);
    FM_CUDA_CHECK(e);
  }
  return stream;
}

template <class F>
decltype(auto) dispatch(DType t, F&& fn) {
  if (t == DType::f32) return fn(float{});
  return fn(double{});
}

}  // namespace fm::bindings
