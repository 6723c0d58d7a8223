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
#include "bindings/cuda_arrays.h"
#include "cuda/activation.h"
#include "cuda/batchnorm.h"
#include "cuda/common.cuh"
#include "cuda/dense.h"
#include "cuda/dropout.h"
#include "cuda/gemm.h"
#include "cuda/loss.h"
#include "cuda/optimizer.h"

namespace fm::bindings {
namespace {

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

// --------------------------------------------------------------- batch norm, losses, optimizers

// A vector of n elements of `like`'s dtype (per feature, per sample), writeable when asked.
void expect_vector(const DevArray& a, index_t n, const DevArray& like, bool writeable = false) {
  expect_shape(a, {n});
  expect_dtype(a, like);
  if (writeable) expect_writable(a);
}

// A device float64 scalar the kernels write (the loss, a norm, a clipping factor).
void expect_f64_scalar(const DevArray& a) {
  FM_CHECK(!a.int32 && a.dtype == DType::f64 && a.size() == 1, a.name,
           ": expected a float64 GPU array with one element, got shape ", shape_str(a.shape));
  expect_writable(a);
}

void expect_disjoint(const DevArray& a, const DevArray& b) {
  const std::uintptr_t an = static_cast<std::uintptr_t>(a.size() * a.itemsize());
  const std::uintptr_t bn = static_cast<std::uintptr_t>(b.size() * b.itemsize());
  const bool overlap = an > 0 && bn > 0 && a.ptr < b.ptr + bn && b.ptr < a.ptr + an;
  FM_CHECK(!overlap, a.name, " and ", b.name, ": expected separate arrays, they share memory");
}

Loss loss_of(int code) {
  FM_CHECK(code >= 0 && code <= static_cast<int>(Loss::cross_entropy), "loss: unknown loss code ",
           code);
  return static_cast<Loss>(code);
}

// The optimizer configuration from any object with OptConfig's attributes
// (fusedmlp._core.OptConfig as built by fusedmlp.optim.Optimizer.config()).
OptConfig read_opt_config(const py::handle& o) {
  OptConfig c;
#define FM_OPT_FIELD(f) c.f = o.attr(#f).cast<decltype(c.f)>();
  FM_OPT_CONFIG_FIELDS(FM_OPT_FIELD)
#undef FM_OPT_FIELD
  check_opt_config(c);
  return c;
}

// A list of objects with Segment's attributes (fusedmlp._core.Segment), or None: no segments.
std::vector<Segment> read_segments(const py::object& o) {
  std::vector<Segment> segs;
  if (o.is_none()) return segs;
  for (const py::handle& h : o) {
    Segment g;
    g.offset = h.attr("offset").cast<index_t>();
    g.rows = h.attr("rows").cast<index_t>();
    g.cols = h.attr("cols").cast<index_t>();
    g.decay = h.attr("decay").cast<bool>();
    g.max_norm = h.attr("max_norm").cast<bool>();
    segs.push_back(g);
  }
  return segs;
}

// out = kernel(in) elementwise under a Philox key (dropout, noise): arrays of any shape.
template <class Kernel>
void run_keyed(const py::object& in_o, const char* in_name, const py::object& out_o, double value,
               std::uint64_t seed, std::uint64_t step, std::uint32_t layer,
               const py::object& stream_o, Kernel&& kernel) {
  const DevArray in = read_array(in_o, in_name), out = read_array(out_o, "out");
  expect_shape(out, in.shape);
  expect_dtype(out, in);
  expect_writable(out);
  const cudaStream_t s = prepare(stream_o, {&in, &out});
  const PhiloxKey key{seed, step, layer};
  dispatch(in.dtype, [&](auto tag) {
    using T = decltype(tag);
    py::gil_scoped_release nogil;
    kernel(in.data<T>(), out.data<T>(), in.size(), T(value), key, s);
  });
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
using fm::Loss;
using fm::LossParams;
using fm::OptConfig;
using fm::Segment;
namespace fcu = fm::cuda;

PYBIND11_MODULE(_cuda, m) {
  m.doc() =
      "fusedmlp CUDA kernels (cuBLASLt GEMMs with fused epilogues, elementwise and row kernels)";
  // Module-local: each module translates the exceptions of its own functions, with its own
  // C++ runtime (a toolchain may link libstdc++ into each module; see CMakeLists.txt).
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fm::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const fm::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
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

  // ------------------------------------------------------------------ batch normalization

  m.def(
      "batchnorm_forward_train",
      [](py::object x_o, py::object y_o, py::object gamma_o, py::object beta_o, py::object mean_o,
         py::object invstd_o, py::object rm_o, py::object rv_o, double momentum, double eps,
         bool init_from_batch, py::object stream_o) {
        const DevArray x = read_array(x_o, "x"), y = read_array(y_o, "out");
        const DevArray mean = read_array(mean_o, "batch_mean"),
                       invstd = read_array(invstd_o, "batch_invstd");
        expect_2d(x);
        expect_shape(y, x.shape);
        expect_dtype(y, x);
        expect_writable(y);
        const index_t rows = x.dim(0), cols = x.dim(1);
        expect_vector(mean, cols, x, true);
        expect_vector(invstd, cols, x, true);
        const auto gamma = read_optional(gamma_o, "gamma"), beta = read_optional(beta_o, "beta");
        const auto rm = read_optional(rm_o, "running_mean"),
                   rv = read_optional(rv_o, "running_var");
        if (gamma) expect_vector(*gamma, cols, x);
        if (beta) expect_vector(*beta, cols, x);
        if (rm) expect_vector(*rm, cols, x, true);
        if (rv) expect_vector(*rv, cols, x, true);
        const cudaStream_t s = prepare(
            stream_o, present({&x, &y, &mean, &invstd, opt(gamma), opt(beta), opt(rm), opt(rv)}));
        dispatch(x.dtype, [&](auto tag) {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          fcu::batchnorm_forward_train<T>(x.data<T>(), y.data<T>(), ptr_or_null<T>(gamma),
                                          ptr_or_null<T>(beta), mean.data<T>(), invstd.data<T>(),
                                          ptr_or_null<T>(rm), ptr_or_null<T>(rv), rows, cols,
                                          T(momentum), T(eps), init_from_batch, s);
        });
      },
      py::arg("x"), py::arg("out"), py::arg("gamma"), py::arg("beta"), py::arg("batch_mean"),
      py::arg("batch_invstd"), py::arg("running_mean"), py::arg("running_var"), py::arg("momentum"),
      py::arg("eps"), py::arg("init_from_batch"), py::arg("stream") = py::none(),
      "Training batch norm: out, the batch statistics, and the running statistics in place.");

  m.def(
      "batchnorm_forward_infer",
      [](py::object x_o, py::object y_o, py::object gamma_o, py::object beta_o, py::object rm_o,
         py::object rv_o, double eps, py::object stream_o) {
        const DevArray x = read_array(x_o, "x"), y = read_array(y_o, "out");
        const DevArray rm = read_array(rm_o, "running_mean"), rv = read_array(rv_o, "running_var");
        expect_2d(x);
        expect_shape(y, x.shape);
        expect_dtype(y, x);
        expect_writable(y);
        const index_t rows = x.dim(0), cols = x.dim(1);
        expect_vector(rm, cols, x);
        expect_vector(rv, cols, x);
        const auto gamma = read_optional(gamma_o, "gamma"), beta = read_optional(beta_o, "beta");
        if (gamma) expect_vector(*gamma, cols, x);
        if (beta) expect_vector(*beta, cols, x);
        const cudaStream_t s =
            prepare(stream_o, present({&x, &y, &rm, &rv, opt(gamma), opt(beta)}));
        dispatch(x.dtype, [&](auto tag) {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          fcu::batchnorm_forward_infer<T>(x.data<T>(), y.data<T>(), ptr_or_null<T>(gamma),
                                          ptr_or_null<T>(beta), rm.data<T>(), rv.data<T>(), rows,
                                          cols, T(eps), s);
        });
      },
      py::arg("x"), py::arg("out"), py::arg("gamma"), py::arg("beta"), py::arg("running_mean"),
      py::arg("running_var"), py::arg("eps"), py::arg("stream") = py::none(),
      "Inference batch norm with the running statistics.");

  m.def(
      "batchnorm_backward",
      [](py::object x_o, py::object dy_o, py::object gamma_o, py::object mean_o,
         py::object invstd_o, py::object dx_o, py::object dgamma_o, py::object dbeta_o,
         py::object stream_o) {
        const DevArray x = read_array(x_o, "x"), dy = read_array(dy_o, "grad_output"),
                       dx = read_array(dx_o, "grad_x");
        const DevArray mean = read_array(mean_o, "batch_mean"),
                       invstd = read_array(invstd_o, "batch_invstd");
        expect_2d(x);
        expect_shape(dy, x.shape);
        expect_dtype(dy, x);
        expect_shape(dx, x.shape);
        expect_dtype(dx, x);
        expect_writable(dx);
        const index_t rows = x.dim(0), cols = x.dim(1);
        expect_vector(mean, cols, x);
        expect_vector(invstd, cols, x);
        const auto gamma = read_optional(gamma_o, "gamma");
        const auto dgamma = read_optional(dgamma_o, "grad_gamma"),
                   dbeta = read_optional(dbeta_o, "grad_beta");
        if (gamma) expect_vector(*gamma, cols, x);
        if (dgamma) expect_vector(*dgamma, cols, x, true);
        if (dbeta) expect_vector(*dbeta, cols, x, true);
        const cudaStream_t s = prepare(
            stream_o, present({&x, &dy, &dx, &mean, &invstd, opt(gamma), opt(dgamma), opt(dbeta)}));
        dispatch(x.dtype, [&](auto tag) {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          fcu::batchnorm_backward<T>(x.data<T>(), dy.data<T>(), ptr_or_null<T>(gamma),
                                     mean.data<T>(), invstd.data<T>(), dx.data<T>(),
                                     ptr_or_null<T>(dgamma), ptr_or_null<T>(dbeta), rows, cols, s);
        });
      },
      py::arg("x"), py::arg("grad_output"), py::arg("gamma"), py::arg("batch_mean"),
      py::arg("batch_invstd"), py::arg("grad_x"), py::arg("grad_gamma") = py::none(),
      py::arg("grad_beta") = py::none(), py::arg("stream") = py::none(),
      "Batch norm backward: grad_x, and grad_gamma / grad_beta when given.");

  // ------------------------------------------------------------------ dropout, noise

  m.def(
      "dropout_forward",
      [](py::object x_o, py::object y_o, double rate, std::uint64_t seed, std::uint64_t step,
         std::uint32_t layer, py::object stream_o) {
        run_keyed(x_o, "x", y_o, rate, seed, step, layer, stream_o,
                  [](auto... a) { fcu::dropout_forward(a...); });
      },
      py::arg("x"), py::arg("out"), py::arg("rate"), py::arg("seed"), py::arg("step"),
      py::arg("layer"), py::arg("stream") = py::none(),
      "Inverted dropout with the Philox mask of (seed, step, layer): the CPU's, bit for bit.");

  m.def(
      "dropout_backward",
      [](py::object dy_o, py::object dx_o, double rate, std::uint64_t seed, std::uint64_t step,
         std::uint32_t layer, py::object stream_o) {
        run_keyed(dy_o, "grad_output", dx_o, rate, seed, step, layer, stream_o,
                  [](auto... a) { fcu::dropout_backward(a...); });
      },
      py::arg("grad_output"), py::arg("out"), py::arg("rate"), py::arg("seed"), py::arg("step"),
      py::arg("layer"), py::arg("stream") = py::none(), "The dropout mask applied to grad_output.");

  m.def(
      "gaussian_noise_forward",
      [](py::object x_o, py::object y_o, double stddev, std::uint64_t seed, std::uint64_t step,
         std::uint32_t layer, py::object stream_o) {
        run_keyed(x_o, "x", y_o, stddev, seed, step, layer, stream_o,
                  [](auto... a) { fcu::gaussian_noise_forward(a...); });
      },
      py::arg("x"), py::arg("out"), py::arg("stddev"), py::arg("seed"), py::arg("step"),
      py::arg("layer"), py::arg("stream") = py::none(), "out = x + stddev * N(0, 1) (Philox).");

  // ------------------------------------------------------------------ losses

  m.def(
      "loss_forward_backward",
      [](int code, py::object z_o, py::object t_o, py::object w_o, py::object d_o,
         py::object loss_o, double label_smoothing, bool smoothing_uniform_k, bool half,
         py::object stream_o) {
        const Loss loss = loss_of(code);
        const DevArray z = read_array(z_o, "logits");
        expect_2d(z);
        const index_t rows = z.dim(0), cols = z.dim(1);
        const bool labels =
            py::hasattr(t_o, "__cuda_array_interface__") &&
            t_o.attr("__cuda_array_interface__")["typestr"].cast<std::string>().substr(1) == "i4";
        const DevArray t = read_array(t_o, "target", labels);
        if (labels)
          expect_shape(t, {rows});
        else {
          expect_shape(t, z.shape);
          expect_dtype(t, z);
        }
        const auto w = read_optional(w_o, "sample_weight");
        if (w) expect_vector(*w, rows, z);
        const auto d = read_optional(d_o, "grad_logits");
        if (d) {
          expect_shape(*d, z.shape);
          expect_dtype(*d, z);
          expect_writable(*d);
        }
        const auto out = read_optional(loss_o, "loss");
        if (out) expect_f64_scalar(*out);
        const cudaStream_t s = prepare(stream_o, present({&z, &t, opt(w), opt(d), opt(out)}));
        dispatch(z.dtype, [&](auto tag) {
          using T = decltype(tag);
          LossParams<T> p;
          p.label_smoothing = T(label_smoothing);
          p.smoothing_uniform_k = smoothing_uniform_k;
          p.half = half;
          py::gil_scoped_release nogil;
          fcu::loss_forward_backward<T>(loss, z.data<T>(), labels ? nullptr : t.data<T>(),
                                        labels ? t.data<std::int32_t>() : nullptr,
                                        ptr_or_null<T>(w), ptr_or_null<T>(d), rows, cols, p,
                                        out ? out->data<double>() : nullptr, s);
        });
      },
      py::arg("code"), py::arg("logits"), py::arg("target"), py::arg("sample_weight"),
      py::arg("grad_logits"), py::arg("loss"), py::arg("label_smoothing"),
      py::arg("smoothing_uniform_k"), py::arg("half"), py::arg("stream") = py::none(),
      "Fused loss: loss (a one-element float64 GPU array) = (1/N) sum_i w_i l_i and "
      "grad_logits; target is (rows, cols) floats or (rows,) int32 labels.");

  m.def(
      "loss_output",
      [](int code, py::object z_o, py::object y_o, py::object stream_o) {
        const Loss loss = loss_of(code);
        const DevArray z = read_array(z_o, "logits"), y = read_array(y_o, "out");
        expect_2d(z);
        expect_shape(y, z.shape);
        expect_dtype(y, z);
        expect_writable(y);
        const cudaStream_t s = prepare(stream_o, {&z, &y});
        dispatch(z.dtype, [&](auto tag) {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          fcu::loss_output<T>(loss, z.data<T>(), y.data<T>(), z.dim(0), z.dim(1), s);
        });
      },
      py::arg("code"), py::arg("logits"), py::arg("out"), py::arg("stream") = py::none(),
      "The loss's output activation: identity, sigmoid or row softmax.");

  // ------------------------------------------------------------------ optimizers

  m.def(
      "optimizer_state_size",
      [](py::object cfg_o, index_t n, py::object segments) {
        const OptConfig cfg = read_opt_config(cfg_o);
        const std::vector<Segment> segs = read_segments(segments);
        return fm::opt_state_size(cfg, segs.data(), static_cast<int>(segs.size()), n);
      },
      py::arg("config"), py::arg("n"), py::arg("segments") = py::none(),
      "Elements of optimizer state for an arena of n elements (the CPU's layout).");

  m.def(
      "optimizer_step",
      [](py::object cfg_o, py::object p_o, py::object g_o, py::object st_o, py::object segments,
         std::int64_t step, double lr, double grad_scale, py::object dev_scale_o,
         py::object stream_o) {
        const OptConfig cfg = read_opt_config(cfg_o);
        const std::vector<Segment> segs = read_segments(segments);
        const DevArray p = read_array(p_o, "params"), g = read_array(g_o, "grads"),
                       st = read_array(st_o, "state");
        FM_CHECK(p.shape.size() == 1, "params: expected a 1-d arena, got shape ",
                 shape_str(p.shape));
        expect_writable(p);
        expect_shape(g, p.shape);
        expect_dtype(g, p);
        const index_t n = p.size();
        const index_t want = fm::opt_state_size(cfg, segs.data(), static_cast<int>(segs.size()), n);
        FM_CHECK(st.size() == want, "state: expected ", want, " elements for ",
                 fm::opt_name(fm::Opt(cfg.opt)), ", got ", st.size());
        expect_dtype(st, p);
        expect_writable(st);
        expect_disjoint(p, g);
        expect_disjoint(p, st);
        expect_disjoint(g, st);
        const auto dev_scale = read_optional(dev_scale_o, "grad_scale_device");
        if (dev_scale) expect_f64_scalar(*dev_scale);
        const cudaStream_t s = prepare(stream_o, present({&p, &g, &st, opt(dev_scale)}));
        dispatch(p.dtype, [&](auto tag) {
          using T = decltype(tag);
          fm::check_opt_config_for<T>(cfg);  // eps must not round to 0 in T
          py::gil_scoped_release nogil;
          fcu::optimizer_step<T>(cfg, p.data<T>(), g.data<T>(), want ? st.data<T>() : nullptr,
                                 segs.data(), static_cast<int>(segs.size()), n, step, lr,
                                 grad_scale, dev_scale ? dev_scale->data<double>() : nullptr, s);
        });
      },
      py::arg("config"), py::arg("params"), py::arg("grads"), py::arg("state"), py::arg("segments"),
      py::arg("step"), py::arg("lr"), py::arg("grad_scale") = 1.0,
      py::arg("grad_scale_device") = py::none(), py::arg("stream") = py::none(),
      "In-place optimizer step over a flat device arena split into segments (list of Segment, "
      "or None: one segment); grad_scale_device: a one-element float64 GPU array multiplying "
      "the gradients (the clip-by-norm factor of grad_sq_norm).");

  m.def(
      "grad_sq_norm",
      [](py::object g_o, py::object sq_o, py::object scale_o, double max_norm,
         py::object stream_o) {
        const DevArray g = read_array(g_o, "grads");
        const auto sq = read_optional(sq_o, "sq_norm"),
                   scale = read_optional(scale_o, "clip_scale");
        if (sq) expect_f64_scalar(*sq);
        if (scale) expect_f64_scalar(*scale);
        const cudaStream_t s = prepare(stream_o, present({&g, opt(sq), opt(scale)}));
        dispatch(g.dtype, [&](auto tag) {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          fcu::grad_sq_norm<T>(g.data<T>(), g.size(), sq ? sq->data<double>() : nullptr,
                               scale ? scale->data<double>() : nullptr, max_norm, s);
        });
      },
      py::arg("grads"), py::arg("sq_norm"), py::arg("clip_scale") = py::none(),
      py::arg("max_norm") = 0.0, py::arg("stream") = py::none(),
      "sq_norm = sum(grads^2) and clip_scale = min(1, max_norm / (sqrt(sq_norm) + 1e-6)), "
      "written to one-element float64 GPU arrays without a host synchronization.");

  for (auto& [name, bind] : fm::bindings::registry()) bind(m);  // cuda_*.cpp: the GPU Network
}
