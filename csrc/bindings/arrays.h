// The one calling convention of both binding modules (_core: host memory, _cuda: device
// memory): every array argument is read into an `Arr` record (pointer, shape, dtype, writeable,
// the producer's stream) by a memory policy, so one binding body serves both modules.
//
//   struct HostMem (here)            NumPy arrays (anything exposing the buffer protocol as a
//                                    numpy.ndarray); stream arguments are accepted and ignored.
//   struct DevMem (cuda_arrays.h)    objects exposing __cuda_array_interface__ (CuPy, PyTorch,
//                                    Numba); launches go to the `stream` argument, else the
//                                    inputs' stream, else the legacy default stream.
//
// A policy provides:
//   using Backend                      CpuBackend / CudaBackend (network/backend.h)
//   static constexpr bool kDevice
//   static Arr read(obj, name, labels = false)   checked record; labels: int32 class labels
//   static Arr read_index(obj, name)              checked record of int64 row indices
//   static bool is_labels(obj)                    whether obj holds int32 labels
//   static Backend::Stream-ish prepare(stream_arg, arrays)  the stream of one call (device:
//                                    inputs' producer streams waited for, every pointer checked
//                                    to be device memory of the current device)
//   template <class T> static py::object view(ptr, shape, owner)
//                                    an array object over memory `owner` keeps alive: a NumPy
//                                    view on the host; on the device an object exposing
//                                    __cuda_array_interface__ (fusedmlp._backend wraps it as a
//                                    CuPy array without a copy)
// Outputs are always preallocated by the caller (fusedmlp._backend: be.empty) and passed in;
// the bindings never allocate arrays for Python.
#pragma once

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bindings/common.h"

namespace fm::bindings {

struct Arr {
  const char* name = "";
  std::uintptr_t ptr = 0;
  std::vector<index_t> shape;
  DType dtype = DType::f32;
  bool int32 = false;  // int32 class labels (read with labels = true)
  bool int64 = false;  // int64 row indices (read with index = true)
  bool readonly = false;
  // The producer's stream as the __cuda_array_interface__ names it (device arrays only).
  std::optional<std::uintptr_t> stream;

  index_t size() const {
    index_t n = 1;
    for (index_t s : shape) n *= s;
    return n;
  }
  index_t dim(size_t i) const { return shape.at(i); }
  index_t itemsize() const { return !int64 && (int32 || dtype == DType::f32) ? 4 : 8; }
  template <class T>
  T* data() const {
    return reinterpret_cast<T*>(ptr);
  }
};

inline const char* dtype_name(DType t) {
  return t == DType::f32 ? "float32" : "float64";
}

template <class T>
constexpr DType dtype_tag() {
  return std::is_same_v<T, float> ? DType::f32 : DType::f64;
}

inline std::string shape_str(const std::vector<index_t>& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i] << (s.size() == 1 ? "," : "");
  o << ")";
  return o.str();
}

inline void expect_shape(const Arr& a, const std::vector<index_t>& shape) {
  if (a.shape != shape)
    throw ValueError(detail::concat(a.name, ": expected shape ", shape_str(shape), ", got ",
                                    shape_str(a.shape)));
}

inline void expect_2d(const Arr& a) {
  FM_CHECK(a.shape.size() == 2, a.name, ": expected a 2-d (batch, features) array, got shape ",
           shape_str(a.shape));
  FM_CHECK(a.size() > 0, a.name, ": expected a non-empty array, got shape ", shape_str(a.shape));
}

inline void expect_writable(const Arr& a) {
  FM_CHECK(!a.readonly, a.name, ": expected a writeable output array");
}

inline void expect_dtype(const Arr& a, const Arr& like) {
  if (a.dtype != like.dtype)
    throw TypeError(detail::concat(a.name, ": expected dtype ", dtype_name(like.dtype),
                                   " (the dtype of ", like.name, "), got ", dtype_name(a.dtype)));
}

// A float array of dtype T (the network's dtype).
template <class T>
void expect_type(const Arr& a, const char* whose = "the network's dtype") {
  if (a.int32 || a.int64 || a.dtype != dtype_tag<T>())
    throw TypeError(detail::concat(a.name, ": expected dtype ", dtype_name(dtype_tag<T>()), " (",
                                   whose, "), got ",
                                   a.int32   ? "int32"
                                   : a.int64 ? "int64"
                                             : dtype_name(a.dtype)));
}

template <class F>
decltype(auto) dispatch(DType t, F&& fn) {
  if (t == DType::f32) return fn(float{});
  return fn(double{});
}

// Parses a dtype string of the array interfaces ("<f4", "=f8", "<i4", ...) into `a`.
inline void parse_typestr(Arr& a, const std::string& ts, const char* name, bool labels,
                          bool index = false) {
  const bool native = !ts.empty() && (ts[0] == '<' || ts[0] == '=' || ts[0] == '|');
  const std::string kind = native ? ts.substr(1) : ts;
  if (index) {
    if (!native || kind != "i8")
      throw TypeError(
          detail::concat(name, ": expected an int64 array of row indices, got typestr '", ts, "'"));
    a.int64 = true;
  } else if (labels) {
    if (!native || kind != "i4")
      throw TypeError(
          detail::concat(name, ": expected int32 class labels, got typestr '", ts, "'"));
    a.int32 = true;
  } else if (native && kind == "f4") {
    a.dtype = DType::f32;
  } else if (native && kind == "f8") {
    a.dtype = DType::f64;
  } else {
    throw TypeError(
        detail::concat(name, ": expected dtype float32 or float64, got typestr '", ts, "'"));
  }
}

// Checks C-contiguity from element strides given in bytes (dimensions of extent 1 are free;
// an empty array is contiguous whatever its strides, as NumPy reports it).
inline void expect_c_order(const Arr& a, const std::vector<index_t>& byte_strides,
                           const char* hint) {
  if (a.size() == 0) return;
  index_t expect = a.itemsize();
  for (size_t i = a.shape.size(); i-- > 0;) {
    if (a.shape[i] != 1 && byte_strides[i] != expect)
      throw ValueError(detail::concat(a.name, ": expected a C-contiguous array (", hint, ")"));
    expect *= a.shape[i];
  }
}

// ------------------------------------------------------------------------------ host memory

struct HostMem {
  static constexpr bool kDevice = false;
  using Stream = int;

  static bool is_labels(const py::handle& obj) {
    return py::isinstance<py::array>(obj) &&
           py::reinterpret_borrow<py::array>(obj).dtype().equal(py::dtype::of<std::int32_t>());
  }

  static Arr read(const py::handle& obj, const char* name, bool labels = false) {
    return read_as(obj, name, labels, false);
  }
  static Arr read_index(const py::handle& obj, const char* name) {
    return read_as(obj, name, false, true);
  }
  static Arr read_as(const py::handle& obj, const char* name, bool labels, bool index) {
    if (!py::isinstance<py::array>(obj))
      throw TypeError(
          detail::concat(name, ": expected a NumPy array, got ",
                         std::string(py::str(py::type::handle_of(obj).attr("__name__")))));
    const auto a = py::reinterpret_borrow<py::array>(obj);
    Arr r;
    r.name = name;
    for (py::ssize_t i = 0; i < a.ndim(); ++i) r.shape.push_back(a.shape(i));
    if (index) {
      if (!a.dtype().equal(py::dtype::of<std::int64_t>()))
        throw TypeError(detail::concat(name, ": expected an int64 array of row indices, got dtype ",
                                       std::string(py::str(a.dtype()))));
      r.int64 = true;
    } else if (labels) {
      if (!a.dtype().equal(py::dtype::of<std::int32_t>()))
        throw TypeError(detail::concat(name, ": expected int32 class labels, got dtype ",
                                       std::string(py::str(a.dtype()))));
      r.int32 = true;
    } else if (a.dtype().equal(py::dtype::of<float>())) {
      r.dtype = DType::f32;
    } else if (a.dtype().equal(py::dtype::of<double>())) {
      r.dtype = DType::f64;
    } else {
      throw TypeError(detail::concat(name, ": expected dtype float32 or float64, got ",
                                     std::string(py::str(a.dtype()))));
    }
    std::vector<index_t> strides;
    for (py::ssize_t i = 0; i < a.ndim(); ++i) strides.push_back(a.strides(i));
    expect_c_order(r, strides, "use numpy.ascontiguousarray");
    r.ptr = reinterpret_cast<std::uintptr_t>(a.data());
    r.readonly = !a.writeable();
    return r;
  }

  // The host runs every call synchronously: the stream argument is accepted and ignored.
  static Stream prepare(const py::object& /*stream_arg*/, const std::vector<const Arr*>& /*a*/) {
    return 0;
  }

  template <class T>
  static py::object view(T* ptr, const std::vector<index_t>& shape, py::handle owner) {
    std::vector<py::ssize_t> sh(shape.begin(), shape.end()), st(shape.size());
    py::ssize_t s = sizeof(T);
    for (size_t i = shape.size(); i-- > 0;) {
      st[i] = s;
      s *= shape[i];
    }
    return py::array_t<T>(sh, st, ptr, owner);
  }
};

}  // namespace fm::bindings
