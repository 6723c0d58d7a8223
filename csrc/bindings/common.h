// Helpers shared by the pybind11 binding files of _core: a registry so each op family
// binds itself from its own file, array checks that turn bad input into Python
// exceptions, and the activation configuration object.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/activation.h"

namespace fm::bindings {

namespace py = pybind11;

using Binder = void (*)(py::module_&);

inline std::vector<std::pair<std::string, Binder>>& registry() {
  static std::vector<std::pair<std::string, Binder>> r;
  return r;
}

struct Register {
  Register(const char* name, Binder b) { registry().emplace_back(name, b); }
};

// FM_BINDINGS(name) { m.def(...); } registers a binder run at module import.
#define FM_BINDINGS(name)                                                     \
  static void fm_bind_##name(::pybind11::module_& m);                         \
  static ::fm::bindings::Register fm_register_##name(#name, &fm_bind_##name); \
  static void fm_bind_##name(::pybind11::module_& m)

// The one exception translator (fm::TypeError -> TypeError, fm::ValueError -> ValueError),
// registered module-locally by each module at import: each module translates the exceptions of
// its own functions with its own C++ runtime (a toolchain may link libstdc++ into each module;
// see CMakeLists.txt), so the translator is compiled into both rather than shared across them.
inline void register_exception_translator() {
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fm::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const fm::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
}

enum class DType { f32, f64 };

// Checks a C-contiguous array of dtype T with the given number of dimensions and returns its
// data pointer. Outputs must be writeable.
template <class T>
T* checked_ptr(const py::array& a, const char* name, int ndim, bool writeable = false) {
  if (!a.dtype().equal(py::dtype::of<T>()))
    throw TypeError(detail::concat(name, ": expected dtype ",
                                   std::string(py::str(py::dtype::of<T>())), ", got ",
                                   std::string(py::str(a.dtype()))));
  FM_CHECK(ndim < 0 || a.ndim() == ndim, name, ": expected a ", ndim, "-d array, got ", a.ndim(),
           "-d");
  FM_CHECK(a.flags() & py::array::c_style, name, ": expected a C-contiguous array");
  if (writeable) FM_CHECK(a.writeable(), name, ": expected a writeable array");
  return static_cast<T*>(const_cast<void*>(a.data()));
}

template <class T>
T* checked_ptr_or_null(const py::object& o, const char* name, int ndim, bool writeable = false) {
  if (o.is_none()) return nullptr;
  return checked_ptr<T>(py::cast<py::array>(o), name, ndim, writeable);
}

inline void check_shape(const py::array& a, const char* name, std::vector<index_t> shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
  if (!ok) {
    std::ostringstream s;
    s << name << ": expected shape (";
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
    s << "), got (";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
    s << ")";
    throw ValueError(s.str());
  }
}

// Activation choice and hyper-parameters as passed from Python (fusedmlp.ops builds it).
struct ActConfig {
  int code = 0;
  double alpha = 0.0, a = 1.0, b = 1.0, c = 1.0, d = 1.0, lower = 0.125, upper = 1.0 / 3.0;
  int hinges = 1;
  std::uint64_t seed = 0, step = 0;
  std::uint32_t layer = 0;
  bool training = false;

  Act act() const {
    FM_CHECK(code >= 0 && code < static_cast<int>(Act::count), "activation: unknown code ", code);
    return static_cast<Act>(code);
  }
  template <class T>
  ActParams<T> params(const T* unit, index_t cols) const {
    ActParams<T> p;
    p.alpha = T(alpha);
    p.a = T(a);
    p.b = T(b);
    p.c = T(c);
    p.d = T(d);
    p.lower = T(lower);
    p.upper = T(upper);
    p.hinges = hinges;
    p.unit = unit;
    p.cols = cols;
    p.key = PhiloxKey{seed, step, layer};
    p.training = training;
    return p;
  }
};

}  // namespace fm::bindings
