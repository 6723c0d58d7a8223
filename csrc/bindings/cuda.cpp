// The _cuda extension module: the CUDA kernels (csrc/cuda/) on device arrays.
//
// Arrays are any objects exposing __cuda_array_interface__ (CuPy, Numba, PyTorch ...): shape,
// typestr (<f4 or <f8), data pointer, C-contiguous (strides None or the C-order strides), no
// mask. Outputs are passed in preallocated by the caller (fusedmlp._cuda_ops allocates them with
// CuPy); this module only takes pointers, checks them and launches. Every launch is queued on
// one stream: `stream` when given (a cudaStream_t as an int; 1 and 2 are the legacy and
// per-thread default streams, as in the interface's v3 "stream" field), else the first array's
// "stream" field, else the legacy default stream. Inputs whose "stream" differs are waited for
// with an event first. The GIL is released around every launch; nothing is synchronized after.
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "cuda/activation.h"
#include "cuda/common.cuh"
#include "cuda/dense.h"
#include "cuda/gemm.h"

namespace fm::bindings {
namespace {

// --------------------------------------------------------------- __cuda_array_interface__

// 0 and 1 both name the legacy default stream (this module is built without per-thread default
// streams, so handle 0 is the legacy stream); 2 the per-thread default stream.
cudaStream_t stream_from_int(std::uintptr_t s) {
  if (s == 0 || s == 1) return nullptr;
  if (s == 2) return cudaStreamPerThread;
  return reinterpret_cast<cudaStream_t>(s);
}

struct DevArray {
  const char* name = "";
  std::uintptr_t ptr = 0;
  std::vector<index_t> shape;
  DType dtype = DType::f32;
  bool readonly = false;
  std::optional<cudaStream_t> stream;  // the producer's stream, when the object names one

  index_t size() const {
    index_t n = 1;
    for (index_t s : shape) n *= s;
    return n;
  }
  index_t dim(size_t i) const { return shape.at(i); }
  template <class T>
  T* data() const {
    return reinterpret_cast<T*>(ptr);
  }
};

std::string shape_str(const std::vector<index_t>& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i] << (s.size() == 1 ? "," : "");
  o << ")";
  return o.str();
}

DevArray read_array(const py::handle& obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw TypeError(detail::concat(
        name, ": expected a GPU array exposing __cuda_array_interface__ (e.g. CuPy), got ",
        std::string(py::str(py::type::handle_of(obj).attr("__name__")))));
  const py::dict cai = obj.attr("__cuda_array_interface__");
  DevArray a;
  a.name = name;
  for (const auto& s : cai["shape"].cast<py::tuple>()) a.shape.push_back(s.cast<index_t>());
  const std::string ts = cai["typestr"].cast<std::string>();
  if (ts == "<f4" || ts == "=f4")
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
    const index_t item = a.dtype == DType::f32 ? 4 : 8;
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

std::optional<DevArray> read_optional(const py::object& obj, const char* name) {
  if (obj.is_none()) return std::nullopt;
  return read_array(obj, name);
}

void expect_shape(const DevArray& a, const std::vector<index_t>& shape) {
  if (a.shape != shape)
    throw ValueError(detail::concat(a.name, ": expected shape ", shape_str(shape), ", got ",
                                    shape_str(a.shape)));
}

void expect_2d(const DevArray& a) {
  FM_CHECK(a.shape.size() == 2, a.name, ": expected a 2-d (batch, features) array, got shape ",
           shape_str(a.shape));
  FM_CHECK(a.size() > 0, a.name, ": expected a non-empty array, got shape ", shape_str(a.shape));
}

void expect_writable(const DevArray& a) {
  FM_CHECK(!a.readonly, a.name, ": expected a writeable output array");
}

void expect_dtype(const DevArray& a, const DevArray& like) {
  if (a.dtype != like.dtype)
    throw TypeError(detail::concat(
        a.name, ": expected dtype ", like.dtype == DType::f32 ? "float32" : "float64",
        " (the dtype of ", like.name, "), got ", a.dtype == DType::f32 ? "float32" : "float64"));
}

// The stream every launch of one call runs on, with the inputs' producer streams waited for
// and every pointer checked to be device memory of the current device.
cudaStream_t prepare(const py::object& stream_arg, const std::vector<const DevArray*>& arrays) {
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

// --------------------------------------------------------------- activation configuration

// Reads the activation configuration from any object with ActConfig's attributes
// (fusedmlp._core.ActConfig as built by fusedmlp._activations.ActivationSpec.config()).
ActConfig read_config(const py::handle& o) {
  ActConfig c;
  c.code = o.attr("code").cast<int>();
  c.alpha = o.attr("alpha").cast<double>();
  c.a = o.attr("a").cast<double>();
  c.b = o.attr("b").cast<double>();
  c.c = o.attr("c").cast<double>();
  c.d = o.attr("d").cast<double>();
  c.lower = o.attr("lower").cast<double>();
  c.upper = o.attr("upper").cast<double>();
  c.hinges = o.attr("hinges").cast<int>();
  c.seed = o.attr("seed").cast<std::uint64_t>();
  c.step = o.attr("step").cast<std::uint64_t>();
  c.layer = o.attr("layer").cast<std::uint32_t>();
  c.training = o.attr("training").cast<bool>();
  c.act();  // validates the code
  FM_CHECK(c.hinges >= 1, "hinges: expected >= 1, got ", c.hinges);
  return c;
}

// The learnable per-unit parameter block (n_params, cols) of the configured activation.
const DevArray* unit_params(const ActConfig& cfg, const std::optional<DevArray>& unit, index_t cols,
                            const DevArray& like) {
  const int np = act_num_params(cfg.act(), cfg.hinges);
  if (np == 0) {
    FM_CHECK(!unit, "params: this activation has no learnable parameters");
    return nullptr;
  }
  FM_CHECK(unit.has_value(),
           "params: this activation has learnable parameters; expected an array of shape (", np,
           ", ", cols, ")");
  expect_shape(*unit, {index_t(np), cols});
  expect_dtype(*unit, like);
  return &*unit;
}

template <class T>
const T* ptr_or_null(const DevArray* a) {
  return a ? a->data<T>() : nullptr;
}
template <class T>
T* ptr_or_null(const std::optional<DevArray>& a) {
  return a ? a->data<T>() : nullptr;
}

std::vector<const DevArray*> present(std::initializer_list<const DevArray*> l) {
  std::vector<const DevArray*> v;
  for (const DevArray* a : l)
    if (a) v.push_back(a);
  return v;
}
const DevArray* opt(const std::optional<DevArray>& a) {
  return a ? &*a : nullptr;
}

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
using fm::Act;
using fm::ActParams;
using fm::index_t;
namespace fcu = fm::cuda;

PYBIND11_MODULE(_cuda, m) {
  m.doc() =
      "fusedmlp CUDA kernels (cuBLASLt GEMMs with fused epilogues, elementwise and row kernels)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fm::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const fm::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

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

  m.def(
      "activation_forward",
      [](py::object cfg_o, py::object z_o, py::object y_o, py::object unit_o, py::object stream_o) {
        const ActConfig cfg = read_config(cfg_o);
        const DevArray z = read_array(z_o, "z"), y = read_array(y_o, "out");
        expect_2d(z);
        expect_shape(y, z.shape);
        expect_dtype(y, z);
        expect_writable(y);
        const auto unit = read_optional(unit_o, "params");
        const index_t rows = z.dim(0), cols = z.dim(1);
        const DevArray* u = unit_params(cfg, unit, cols, z);
        const cudaStream_t s = prepare(stream_o, present({&z, &y, u}));
        dispatch(z.dtype, [&](auto tag) {
          using T = decltype(tag);
          const ActParams<T> p = cfg.params<T>(ptr_or_null<T>(u), cols);
          py::gil_scoped_release nogil;
          fcu::activation_forward<T>(cfg.act(), z.data<T>(), y.data<T>(), rows, cols, p, s);
        });
      },
      py::arg("config"), py::arg("z"), py::arg("out"), py::arg("params") = py::none(),
      py::arg("stream") = py::none(), "out = f(z) elementwise.");

  m.def(
      "activation_derivative",
      [](py::object cfg_o, py::object z_o, py::object g_o, py::object unit_o, py::object stream_o) {
        const ActConfig cfg = read_config(cfg_o);
        const DevArray z = read_array(z_o, "z"), g = read_array(g_o, "out");
        expect_2d(z);
        expect_shape(g, z.shape);
        expect_dtype(g, z);
        expect_writable(g);
        const auto unit = read_optional(unit_o, "params");
        const index_t rows = z.dim(0), cols = z.dim(1);
        const DevArray* u = unit_params(cfg, unit, cols, z);
        const cudaStream_t s = prepare(stream_o, present({&z, &g, u}));
        dispatch(z.dtype, [&](auto tag) {
          using T = decltype(tag);
          const ActParams<T> p = cfg.params<T>(ptr_or_null<T>(u), cols);
          py::gil_scoped_release nogil;
          fcu::activation_derivative<T>(cfg.act(), z.data<T>(), g.data<T>(), rows, cols, p, s);
        });
      },
      py::arg("config"), py::arg("z"), py::arg("out"), py::arg("params") = py::none(),
      py::arg("stream") = py::none(), "out = f'(z) elementwise.");

  m.def(
      "activation_backward",
      [](py::object cfg_o, py::object z_o, py::object dy_o, py::object dz_o, py::object dparams_o,
         py::object unit_o, py::object stream_o) {
        const ActConfig cfg = read_config(cfg_o);
        const DevArray z = read_array(z_o, "z"), dy = read_array(dy_o, "grad_output"),
                       dz = read_array(dz_o, "grad_z");
        expect_2d(z);
        expect_shape(dy, z.shape);
        expect_shape(dz, z.shape);
        expect_dtype(dy, z);
        expect_dtype(dz, z);
        expect_writable(dz);
        const auto unit = read_optional(unit_o, "params");
        const auto dparams = read_optional(dparams_o, "grad_params");
        const index_t rows = z.dim(0), cols = z.dim(1);
        const DevArray* u = unit_params(cfg, unit, cols, z);
        if (dparams) {
          FM_CHECK(u != nullptr, "grad_params: this activation has no learnable parameters");
          expect_shape(*dparams, u->shape);
          expect_dtype(*dparams, z);
          expect_writable(*dparams);
        }
        const cudaStream_t s = prepare(stream_o, present({&z, &dy, &dz, u, opt(dparams)}));
        dispatch(z.dtype, [&](auto tag) {
          using T = decltype(tag);
          const ActParams<T> p = cfg.params<T>(ptr_or_null<T>(u), cols);
          py::gil_scoped_release nogil;
          fcu::activation_backward<T>(cfg.act(), z.data<T>(), dy.data<T>(), dz.data<T>(),
                                      static_cast<T*>(nullptr), ptr_or_null<T>(dparams), rows, cols,
                                      p, s);
        });
      },
      py::arg("config"), py::arg("z"), py::arg("grad_output"), py::arg("grad_z"),
      py::arg("grad_params") = py::none(), py::arg("params") = py::none(),
      py::arg("stream") = py::none(),
      "grad_z = grad_output * f'(z); grad_params (when given) = the learnable parameters' "
      "gradient.");

  m.def(
      "softmax_forward",
      [](py::object z_o, py::object y_o, py::object stream_o) {
        const DevArray z = read_array(z_o, "z"), y = read_array(y_o, "out");
        expect_2d(z);
        expect_shape(y, z.shape);
        expect_dtype(y, z);
        expect_writable(y);
        const cudaStream_t s = prepare(stream_o, {&z, &y});
        dispatch(z.dtype, [&](auto tag) {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          fcu::softmax_forward<T>(z.data<T>(), y.data<T>(), z.dim(0), z.dim(1), s);
        });
      },
      py::arg("z"), py::arg("out"), py::arg("stream") = py::none(), "Row-wise softmax.");

  m.def(
      "softmax_backward",
      [](py::object y_o, py::object dy_o, py::object dz_o, py::object stream_o) {
        const DevArray y = read_array(y_o, "y"), dy = read_array(dy_o, "grad_output"),
                       dz = read_array(dz_o, "grad_z");
        expect_2d(y);
        expect_shape(dy, y.shape);
        expect_shape(dz, y.shape);
        expect_dtype(dy, y);
        expect_dtype(dz, y);
        expect_writable(dz);
        const cudaStream_t s = prepare(stream_o, {&y, &dy, &dz});
        dispatch(y.dtype, [&](auto tag) {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          fcu::softmax_backward<T>(y.data<T>(), dy.data<T>(), dz.data<T>(), y.dim(0), y.dim(1), s);
        });
      },
      py::arg("y"), py::arg("grad_output"), py::arg("grad_z"), py::arg("stream") = py::none(),
      "grad_z = y * (grad_output - sum(grad_output * y)) row-wise.");

  m.def(
      "maxout_forward",
      [](py::object z_o, py::object y_o, index_t pieces, py::object stream_o) {
        const DevArray z = read_array(z_o, "z"), y = read_array(y_o, "out");
        expect_2d(z);
        FM_CHECK(pieces >= 1, "pieces: expected >= 1, got ", pieces);
        FM_CHECK(z.dim(1) % pieces == 0, "z: the number of columns (", z.dim(1),
                 ") must be a multiple of pieces (", pieces, ")");
        const index_t rows = z.dim(0), units = z.dim(1) / pieces;
        expect_shape(y, {rows, units});
        expect_dtype(y, z);
        expect_writable(y);
        const cudaStream_t s = prepare(stream_o, {&z, &y});
        dispatch(z.dtype, [&](auto tag) {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          fcu::maxout_forward<T>(z.data<T>(), y.data<T>(), rows, units, pieces, s);
        });
      },
      py::arg("z"), py::arg("out"), py::arg("pieces"), py::arg("stream") = py::none(),
      "Maxout over contiguous groups of `pieces` columns.");

  m.def(
      "maxout_backward",
      [](py::object z_o, py::object dy_o, py::object dz_o, index_t pieces, py::object stream_o) {
        const DevArray z = read_array(z_o, "z"), dy = read_array(dy_o, "grad_output"),
                       dz = read_array(dz_o, "grad_z");
        expect_2d(z);
        FM_CHECK(pieces >= 1, "pieces: expected >= 1, got ", pieces);
        FM_CHECK(z.dim(1) % pieces == 0, "z: the number of columns (", z.dim(1),
                 ") must be a multiple of pieces (", pieces, ")");
        const index_t rows = z.dim(0), units = z.dim(1) / pieces;
        expect_shape(dy, {rows, units});
        expect_shape(dz, z.shape);
        expect_dtype(dy, z);
        expect_dtype(dz, z);
        expect_writable(dz);
        const cudaStream_t s = prepare(stream_o, {&z, &dy, &dz});
        dispatch(z.dtype, [&](auto tag) {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          fcu::maxout_backward<T>(z.data<T>(), dy.data<T>(), dz.data<T>(), rows, units, pieces, s);
        });
      },
      py::arg("z"), py::arg("grad_output"), py::arg("grad_z"), py::arg("pieces"),
      py::arg("stream") = py::none(), "Routes grad_output to the first arg-max of each group.");

  m.def(
      "dense_forward",
      [](py::object cfg_o, py::object X_o, py::object W_o, py::object b_o, py::object Z_o,
         py::object A_o, py::object unit_o, py::object stream_o) {
        const ActConfig cfg = read_config(cfg_o);
        const DevArray X = read_array(X_o, "X"), W = read_array(W_o, "W"), Z = read_array(Z_o, "Z");
        expect_2d(X);
        FM_CHECK(W.shape.size() == 2 && W.dim(0) == X.dim(1), "W: expected shape (", X.dim(1),
                 ", n_out) (n_in of X), got ", shape_str(W.shape));
        expect_2d(W);
        expect_dtype(W, X);
        const index_t batch = X.dim(0), n_in = X.dim(1), n_out = W.dim(1);
        const auto b = read_optional(b_o, "b");
        if (b) {
          expect_shape(*b, {n_out});
          expect_dtype(*b, X);
        }
        expect_shape(Z, {batch, n_out});
        expect_dtype(Z, X);
        expect_writable(Z);
        const auto A = read_optional(A_o, "A");
        if (A) {
          expect_shape(*A, {batch, n_out});
          expect_dtype(*A, X);
          expect_writable(*A);
        }
        FM_CHECK(A || cfg.act() == Act::identity,
                 "A: an output array is required for a non-identity activation");
        const auto unit = read_optional(unit_o, "params");
        const DevArray* u = unit_params(cfg, unit, n_out, X);
        const cudaStream_t s = prepare(stream_o, present({&X, &W, opt(b), &Z, opt(A), u}));
        dispatch(X.dtype, [&](auto tag) {
          using T = decltype(tag);
          const ActParams<T> p = cfg.params<T>(ptr_or_null<T>(u), n_out);
          py::gil_scoped_release nogil;
          fcu::dense_forward<T>(X.data<T>(), W.data<T>(), ptr_or_null<T>(b), Z.data<T>(),
                                ptr_or_null<T>(A), batch, n_in, n_out, cfg.act(), p, s);
        });
      },
      py::arg("config"), py::arg("X"), py::arg("W"), py::arg("b"), py::arg("Z"),
      py::arg("A") = py::none(), py::arg("params") = py::none(), py::arg("stream") = py::none(),
      "Z = X W + b and A = f(Z) (A None: identity, A is Z).");

  m.def(
      "dense_backward",
      [](py::object cfg_o, py::object X_o, py::object W_o, py::object Z_o, py::object dA_o,
         py::object dZ_o, py::object dW_o, py::object db_o, py::object dX_o, py::object dparams_o,
         py::object unit_o, py::object stream_o) {
        const ActConfig cfg = read_config(cfg_o);
        const DevArray X = read_array(X_o, "X"), W = read_array(W_o, "W"), Z = read_array(Z_o, "Z");
        const DevArray dA = read_array(dA_o, "grad_output"), dW = read_array(dW_o, "dW");
        expect_2d(X);
        FM_CHECK(W.shape.size() == 2 && W.dim(0) == X.dim(1), "W: expected shape (", X.dim(1),
                 ", n_out) (n_in of X), got ", shape_str(W.shape));
        expect_2d(W);
        expect_dtype(W, X);
        const index_t batch = X.dim(0), n_in = X.dim(1), n_out = W.dim(1);
        expect_shape(Z, {batch, n_out});
        expect_dtype(Z, X);
        expect_shape(dA, {batch, n_out});
        expect_dtype(dA, X);
        expect_shape(dW, {n_in, n_out});
        expect_dtype(dW, X);
        expect_writable(dW);
        const auto dZ = read_optional(dZ_o, "dZ"), db = read_optional(db_o, "db"),
                   dX = read_optional(dX_o, "dX");
        const auto dparams = read_optional(dparams_o, "dparams");
        if (dZ) {
          expect_shape(*dZ, {batch, n_out});
          expect_dtype(*dZ, X);
          expect_writable(*dZ);
        }
        FM_CHECK(dZ || cfg.act() == Act::identity,
                 "dZ: a work array is required for a non-identity activation");
        if (db) {
          expect_shape(*db, {n_out});
          expect_dtype(*db, X);
          expect_writable(*db);
        }
        if (dX) {
          expect_shape(*dX, {batch, n_in});
          expect_dtype(*dX, X);
          expect_writable(*dX);
        }
        const auto unit = read_optional(unit_o, "params");
        const DevArray* u = unit_params(cfg, unit, n_out, X);
        if (dparams) {
          FM_CHECK(u != nullptr, "dparams: this activation has no learnable parameters");
          expect_shape(*dparams, u->shape);
          expect_dtype(*dparams, X);
          expect_writable(*dparams);
        }
        const cudaStream_t s = prepare(
            stream_o, present({&X, &W, &Z, &dA, &dW, opt(dZ), opt(db), opt(dX), opt(dparams), u}));
        dispatch(X.dtype, [&](auto tag) {
          using T = decltype(tag);
          const ActParams<T> p = cfg.params<T>(ptr_or_null<T>(u), n_out);
          py::gil_scoped_release nogil;
          fcu::dense_backward<T>(X.data<T>(), W.data<T>(), Z.data<T>(), dA.data<T>(),
                                 ptr_or_null<T>(dZ), dW.data<T>(), ptr_or_null<T>(db),
                                 ptr_or_null<T>(dX), ptr_or_null<T>(dparams), batch, n_in, n_out,
                                 cfg.act(), p, s);
        });
      },
      py::arg("config"), py::arg("X"), py::arg("W"), py::arg("Z"), py::arg("grad_output"),
      py::arg("dZ"), py::arg("dW"), py::arg("db") = py::none(), py::arg("dX") = py::none(),
      py::arg("dparams") = py::none(), py::arg("params") = py::none(),
      py::arg("stream") = py::none(),
      "dZ = dA f'(Z) (with db, dparams), dW = X^T dZ, dX = dZ W^T (when dX is given).");
}
