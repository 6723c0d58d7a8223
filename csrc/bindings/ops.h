// The op bindings of both extension modules, written once: `bind_ops<HostMem>` fills _core
// (NumPy arrays, csrc/cpu kernels), `bind_ops<DevMem>` fills _cuda (__cuda_array_interface__
// arrays, csrc/cuda kernels). Every op takes its outputs preallocated by the caller
// (fusedmlp._backend: be.empty) and `stream=None` last; arrays are read into `Arr` records by
// the memory policy (bindings/arrays.h), checked here with errors that name the argument, and
// the kernels run through the Network backend of the policy (network/backend.h) with the GIL
// released. The host ignores `stream`; the device queues every launch of a call on it.
//
// A policy Mem brings a kernel trait `OpKernels<Mem>` (HostMem: bindings/host_kernels.h,
// DevMem: bindings/cuda_arrays.h): `make(stream)` returns the backend (CpuBackend /
// CudaBackend with .stream set) extended by the few ops the Network does not use
// (activation_derivative, loss_output, grad_sq_norm, gemm) and by `take_device_scale` /
// `loss_value`, which hand a caller's scalars to the backend's optimizer and loss.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/common.h"
#include "common/loss.h"
#include "common/optimizer.h"

namespace fm::bindings {

template <class Mem>
struct OpKernels;

namespace ops {

// ------------------------------------------------------------------ arguments

// The activation configuration from any object with ActConfig's attributes
// (fusedmlp._core.ActConfig as built by fusedmlp._activations.ActivationSpec.config()).
inline ActConfig read_config(const py::handle& o) {
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

// The optimizer configuration from any object with OptConfig's attributes
// (fusedmlp._core.OptConfig as built by fusedmlp.optim.Optimizer.config()).
inline OptConfig read_opt_config(const py::handle& o) {
  OptConfig c;
#define FM_OPT_FIELD(f) c.f = o.attr(#f).cast<decltype(c.f)>();
  FM_OPT_CONFIG_FIELDS(FM_OPT_FIELD)
#undef FM_OPT_FIELD
  check_opt_config(c);
  return c;
}

// A list of objects with Segment's attributes (fusedmlp._core.Segment), or None: no segments.
inline std::vector<Segment> read_segments(const py::object& o) {
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

inline Loss loss_of(int code) {
  FM_CHECK(code >= 0 && code <= static_cast<int>(Loss::cross_entropy), "loss: unknown loss code ",
           code);
  return static_cast<Loss>(code);
}

template <class Mem>
std::optional<Arr> read_optional(const py::object& obj, const char* name) {
  if (obj.is_none()) return std::nullopt;
  return Mem::read(obj, name);
}

inline const Arr* opt(const std::optional<Arr>& a) {
  return a ? &*a : nullptr;
}

// The arrays of a call that are present (optional ones may be null).
inline std::vector<const Arr*> present(std::initializer_list<const Arr*> l) {
  std::vector<const Arr*> v;
  for (const Arr* a : l)
    if (a) v.push_back(a);
  return v;
}

template <class T>
T* ptr_or_null(const Arr* a) {
  return a ? a->data<T>() : nullptr;
}
template <class T>
T* ptr_or_null(const std::optional<Arr>& a) {
  return a ? a->data<T>() : nullptr;
}

// An output: `like`'s shape (or `shape`) and dtype, writeable.
inline void expect_output(const Arr& a, const std::vector<index_t>& shape, const Arr& like) {
  expect_shape(a, shape);
  expect_dtype(a, like);
  expect_writable(a);
}

// An input of `shape` and `like`'s dtype.
inline void expect_input(const Arr& a, const std::vector<index_t>& shape, const Arr& like) {
  expect_shape(a, shape);
  expect_dtype(a, like);
}

// A vector of n elements of `like`'s dtype (per feature, per sample), writeable when asked.
inline void expect_vector(const Arr& a, index_t n, const Arr& like, bool writeable = false) {
  expect_input(a, {n}, like);
  if (writeable) expect_writable(a);
}

// A float64 scalar the kernels write (the loss, a norm, a clipping factor).
inline void expect_f64_scalar(const Arr& a) {
  FM_CHECK(!a.int32 && a.dtype == DType::f64 && a.size() == 1, a.name,
           ": expected a float64 array with one element, got shape ", shape_str(a.shape));
  expect_writable(a);
}

inline void expect_disjoint(const Arr& a, const Arr& b) {
  const auto an = static_cast<std::uintptr_t>(a.size() * a.itemsize());
  const auto bn = static_cast<std::uintptr_t>(b.size() * b.itemsize());
  const bool overlap = an > 0 && bn > 0 && a.ptr < b.ptr + bn && b.ptr < a.ptr + an;
  FM_CHECK(!overlap, a.name, " and ", b.name, ": expected separate arrays, they share memory");
}

// The learnable per-unit parameter block (n_params, cols) of the configured activation.
inline const Arr* unit_params(const ActConfig& cfg, const std::optional<Arr>& unit, index_t cols,
                              const Arr& like) {
  const int np = act_num_params(cfg.act(), cfg.hinges);
  if (np == 0) {
    FM_CHECK(!unit, "params: this activation has no learnable parameters");
    return nullptr;
  }
  FM_CHECK(unit.has_value(),
           "params: this activation has learnable parameters; expected an array of shape (", np,
           ", ", cols, ")");
  expect_input(*unit, {index_t(np), cols}, like);
  return &*unit;
}

inline void expect_pieces(const Arr& z, index_t pieces) {
  FM_CHECK(pieces >= 1, "pieces: expected >= 1, got ", pieces);
  FM_CHECK(z.dim(1) % pieces == 0, "z: the number of columns (", z.dim(1),
           ") must be a multiple of pieces (", pieces, ")");
}

// X (batch, n_in) and W (n_in, n_out) of a dense layer.
inline void expect_dense(const Arr& X, const Arr& W) {
  expect_2d(X);
  FM_CHECK(W.shape.size() == 2 && W.dim(0) == X.dim(1), "W: expected shape (", X.dim(1),
           ", n_out) (n_in of X), got ", shape_str(W.shape));
  expect_2d(W);
  expect_dtype(W, X);
}

// X (batch, n_in), centers (K, n_in), widths (K,) of an RBF layer.
inline void expect_rbf(const Arr& X, const Arr& C, const Arr& S) {
  expect_2d(X);
  FM_CHECK(C.shape.size() == 2 && C.dim(0) >= 1,
           "centers: expected at least one centre, got shape ", shape_str(C.shape));
  expect_input(C, {C.dim(0), X.dim(1)}, X);
  expect_input(S, {C.dim(0)}, X);
}

// Runs fn(T{}, kernels) on the call's stream with the GIL released; `arrays` are the call's
// arrays (the device policy waits for their producers' streams and checks their devices).
template <class Mem, class Fn>
void launch(const py::object& stream_o, const std::vector<const Arr*>& arrays, DType dtype,
            Fn&& fn) {
  auto k = OpKernels<Mem>::make(Mem::prepare(stream_o, arrays));
  dispatch(dtype, [&](auto tag) {
    py::gil_scoped_release nogil;
    fn(tag, k);
  });
}

// out = kernel(z) elementwise for an activation (f or f'): the ops differ only in the kernel.
template <class Mem, class Kernel>
void def_elementwise(py::module_& m, const char* name, Kernel kernel, const char* doc) {
  m.def(
      name,
      [kernel](py::object cfg_o, py::object z_o, py::object y_o, py::object unit_o,
               py::object stream_o) {
        const ActConfig cfg = read_config(cfg_o);
        const Arr z = Mem::read(z_o, "z"), y = Mem::read(y_o, "out");
        expect_2d(z);
        expect_output(y, z.shape, z);
        const auto unit = read_optional<Mem>(unit_o, "params");
        const index_t rows = z.dim(0), cols = z.dim(1);
        const Arr* u = unit_params(cfg, unit, cols, z);
        launch<Mem>(stream_o, present({&z, &y, u}), z.dtype, [&](auto tag, auto& k) {
          using T = decltype(tag);
          kernel(k, cfg.act(), z.data<T>(), y.data<T>(), rows, cols,
                 cfg.params<T>(ptr_or_null<T>(u), cols));
        });
      },
      py::arg("config"), py::arg("z"), py::arg("out"), py::arg("params") = py::none(),
      py::arg("stream") = py::none(), doc);
}

// out = kernel(in) elementwise under a Philox key (dropout, noise): arrays of any shape; `in`
// and the kernel's scalar (the rate, the standard deviation) are named in_name / value_name.
template <class Mem, class Kernel>
void def_keyed(py::module_& m, const char* name, const char* in_name, const char* value_name,
               Kernel kernel, const char* doc) {
  m.def(
      name,
      [in_name, kernel](py::object in_o, py::object out_o, double value, std::uint64_t seed,
                        std::uint64_t step, std::uint32_t layer, py::object stream_o) {
        const Arr in = Mem::read(in_o, in_name), out = Mem::read(out_o, "out");
        expect_output(out, in.shape, in);
        const PhiloxKey key{seed, step, layer};
        launch<Mem>(stream_o, {&in, &out}, in.dtype, [&](auto tag, auto& k) {
          using T = decltype(tag);
          kernel(k, in.data<T>(), out.data<T>(), in.size(), T(value), key);
        });
      },
      py::arg(in_name), py::arg("out"), py::arg(value_name), py::arg("seed"), py::arg("step"),
      py::arg("layer"), py::arg("stream") = py::none(), doc);
}

// The Python name of an OptRule trait value (csrc/common/optimizer.h), None where it names
// nothing.
template <class E>
py::object trait_name(E value, std::initializer_list<std::pair<E, const char*>> names) {
  for (const auto& [e, name] : names)
    if (e == value) return py::str(name);
  return py::none();
}

inline py::object flag_name(OptFlag f) {
  return trait_name(f, {{OptFlag::momentum, "momentum"},
                        {OptFlag::centered, "centered"},
                        {OptFlag::amsgrad, "amsgrad"}});
}

inline py::object momentum_name(OptMomentum f) {
  return trait_name(f, {{OptMomentum::momentum, "momentum"}, {OptMomentum::beta1, "beta1"}});
}

// The names of an X-macro list (FM_ACT_LIST, FM_OPT_LIST) in the order of its enum.
#define FM_NAME_STRING(n) #n,

// The names and tables both modules report (no arrays involved).
inline void bind_tables(py::module_& m) {
  m.def(
      "activation_names", []() { return std::vector<std::string>{FM_ACT_LIST(FM_NAME_STRING)}; },
      "Activation names in the order of the C++ enum fm::Act (the code is the index).");
  m.def(
      "activation_num_params",
      [](int code, int hinges) {
        ActConfig c;
        c.code = code;
        return act_num_params(c.act(), hinges);
      },
      py::arg("code"), py::arg("hinges"), "Rows of an activation's learnable parameter block.");
  m.def(
      "loss_names",
      []() { return std::vector<std::string>{"mse", "binary_cross_entropy", "cross_entropy"}; },
      "Loss names in the order of the C++ enum fm::Loss (the code is the index).");
  m.def(
      "optimizer_names", []() { return std::vector<std::string>{FM_OPT_LIST(FM_NAME_STRING)}; },
      "Optimizer names in the order of the C++ enum fm::Opt (the code is the index).");
  // The traits of every rule (csrc/common/optimizer.h, OptRule), in the order of the codes.
  m.def(
      "optimizer_table",
      []() {
        py::list rows;
        for (int code = 0; code < static_cast<int>(Opt::count); ++code)
          opt_dispatch(Opt(code), [&](auto o) {
            using R = OptRule<decltype(o)::value>;
            py::dict row;
            row["name"] = opt_name(decltype(o)::value);
            row["elementwise"] = R::kElementwise;
            row["state_slots"] = R::kStateSlots;
            row["variant_a"] = flag_name(R::kVariantA);
            row["variant_b"] = flag_name(R::kVariantB);
            row["momentum"] = momentum_name(R::kMomentum);
            rows.append(row);
          });
        return rows;
      },
      "One dict per optimizer code: name, elementwise, state_slots (arrays of n elements "
      "always kept), variant_a / variant_b (the flag adding one state array each: "
      "'momentum' (momentum > 0), 'centered', 'amsgrad', or None), momentum (the "
      "hyper-parameter cyclical momentum drives: 'momentum', 'beta1' or None).");
  m.def(
      "optimizer_state_size",
      [](py::object cfg_o, index_t n, py::object segments) {
        const OptConfig cfg = read_opt_config(cfg_o);
        const std::vector<Segment> segs = read_segments(segments);
        return opt_state_size(cfg, segs.data(), static_cast<int>(segs.size()), n);
      },
      py::arg("config"), py::arg("n"), py::arg("segments") = py::none(),
      "Elements of optimizer state for an arena of n elements (segments: list of Segment).");
  m.def(
      "optimizer_param_state_size",
      [](py::object cfg_o, index_t rows, index_t cols) {
        const OptConfig cfg = read_opt_config(cfg_o);
        FM_CHECK(rows >= 1 && cols >= 1, "shape: expected rows >= 1 and cols >= 1, got (", rows,
                 ", ", cols, ")");
        const Segment s{0, rows, cols, true, false};
        return opt_state_size(cfg, &s, 1, rows * cols);
      },
      py::arg("config"), py::arg("rows"), py::arg("cols"),
      "Elements of optimizer state for one (rows, cols) parameter (vectors: rows = 1).");
  m.def("clip_norm_scale", &clip_norm_scale, py::arg("grad_norm"), py::arg("max_norm"),
        "Global-norm clipping factor min(1, max_norm / (grad_norm + 1e-6)) (torch's).");
  m.attr("CLIP_NORM_EPS") = kClipNormEps;
}

#undef FM_NAME_STRING

}  // namespace ops

template <class Mem>
void bind_ops(py::module_& m) {
  using namespace ops;
  bind_tables(m);

  // ------------------------------------------------------------------ activations

  def_elementwise<Mem>(
      m, "activation_forward", [](auto& k, auto... a) { k.activation_forward(a...); },
      "out = f(z) elementwise.");
  def_elementwise<Mem>(
      m, "activation_derivative", [](auto& k, auto... a) { k.activation_derivative(a...); },
      "out = f'(z) elementwise.");

  m.def(
      "activation_backward",
      [](py::object cfg_o, py::object z_o, py::object dy_o, py::object dz_o, py::object dparams_o,
         py::object unit_o, py::object stream_o) {
        const ActConfig cfg = read_config(cfg_o);
        const Arr z = Mem::read(z_o, "z"), dy = Mem::read(dy_o, "grad_output"),
                  dz = Mem::read(dz_o, "grad_z");
        expect_2d(z);
        expect_input(dy, z.shape, z);
        expect_output(dz, z.shape, z);
        const auto unit = read_optional<Mem>(unit_o, "params");
        const auto dparams = read_optional<Mem>(dparams_o, "grad_params");
        const index_t rows = z.dim(0), cols = z.dim(1);
        const Arr* u = unit_params(cfg, unit, cols, z);
        if (dparams) {
          FM_CHECK(u != nullptr, "grad_params: this activation has no learnable parameters");
          expect_output(*dparams, u->shape, z);
        }
        launch<Mem>(stream_o, present({&z, &dy, &dz, u, opt(dparams)}), z.dtype,
                    [&](auto tag, auto& k) {
                      using T = decltype(tag);
                      k.activation_backward(cfg.act(), z.data<T>(), dy.data<T>(), dz.data<T>(),
                                            static_cast<T*>(nullptr), ptr_or_null<T>(dparams), rows,
                                            cols, cfg.params<T>(ptr_or_null<T>(u), cols));
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
        const Arr z = Mem::read(z_o, "z"), y = Mem::read(y_o, "out");
        expect_2d(z);
        expect_output(y, z.shape, z);
        launch<Mem>(stream_o, {&z, &y}, z.dtype, [&](auto tag, auto& k) {
          using T = decltype(tag);
          k.softmax_forward(z.data<T>(), y.data<T>(), z.dim(0), z.dim(1));
        });
      },
      py::arg("z"), py::arg("out"), py::arg("stream") = py::none(), "Row-wise softmax.");

  m.def(
      "softmax_backward",
      [](py::object y_o, py::object dy_o, py::object dz_o, py::object stream_o) {
        const Arr y = Mem::read(y_o, "y"), dy = Mem::read(dy_o, "grad_output"),
                  dz = Mem::read(dz_o, "grad_z");
        expect_2d(y);
        expect_input(dy, y.shape, y);
        expect_output(dz, y.shape, y);
        launch<Mem>(stream_o, {&y, &dy, &dz}, y.dtype, [&](auto tag, auto& k) {
          using T = decltype(tag);
          k.softmax_backward(y.data<T>(), dy.data<T>(), dz.data<T>(), y.dim(0), y.dim(1));
        });
      },
      py::arg("y"), py::arg("grad_output"), py::arg("grad_z"), py::arg("stream") = py::none(),
      "grad_z = y * (grad_output - sum(grad_output * y)) row-wise.");

  m.def(
      "maxout_forward",
      [](py::object z_o, py::object y_o, index_t pieces, py::object stream_o) {
        const Arr z = Mem::read(z_o, "z"), y = Mem::read(y_o, "out");
        expect_2d(z);
        expect_pieces(z, pieces);
        const index_t rows = z.dim(0), units = z.dim(1) / pieces;
        expect_output(y, {rows, units}, z);
        launch<Mem>(stream_o, {&z, &y}, z.dtype, [&](auto tag, auto& k) {
          using T = decltype(tag);
          k.maxout_forward(z.data<T>(), y.data<T>(), rows, units, pieces);
        });
      },
      py::arg("z"), py::arg("out"), py::arg("pieces"), py::arg("stream") = py::none(),
      "Maxout over contiguous groups of `pieces` columns.");

  m.def(
      "maxout_backward",
      [](py::object z_o, py::object dy_o, py::object dz_o, index_t pieces, py::object stream_o) {
        const Arr z = Mem::read(z_o, "z"), dy = Mem::read(dy_o, "grad_output"),
                  dz = Mem::read(dz_o, "grad_z");
        expect_2d(z);
        expect_pieces(z, pieces);
        const index_t rows = z.dim(0), units = z.dim(1) / pieces;
        expect_input(dy, {rows, units}, z);
        expect_output(dz, z.shape, z);
        launch<Mem>(stream_o, {&z, &dy, &dz}, z.dtype, [&](auto tag, auto& k) {
          using T = decltype(tag);
          k.maxout_backward(z.data<T>(), dy.data<T>(), dz.data<T>(), rows, units, pieces);
        });
      },
      py::arg("z"), py::arg("grad_output"), py::arg("grad_z"), py::arg("pieces"),
      py::arg("stream") = py::none(), "Routes grad_output to the first arg-max of each group.");

  // ------------------------------------------------------------------ dense layers, GEMM

  m.def(
      "dense_forward",
      [](py::object cfg_o, py::object X_o, py::object W_o, py::object b_o, py::object Z_o,
         py::object A_o, py::object unit_o, py::object stream_o) {
        const ActConfig cfg = read_config(cfg_o);
        const Arr X = Mem::read(X_o, "X"), W = Mem::read(W_o, "W"), Z = Mem::read(Z_o, "Z");
        expect_dense(X, W);
        const index_t batch = X.dim(0), n_in = X.dim(1), n_out = W.dim(1);
        const auto b = read_optional<Mem>(b_o, "b");
        if (b) expect_input(*b, {n_out}, X);
        expect_output(Z, {batch, n_out}, X);
        const auto A = read_optional<Mem>(A_o, "A");
        if (A) expect_output(*A, {batch, n_out}, X);
        FM_CHECK(A || cfg.act() == Act::identity,
                 "A: an output array is required for a non-identity activation");
        const auto unit = read_optional<Mem>(unit_o, "params");
        const Arr* u = unit_params(cfg, unit, n_out, X);
        launch<Mem>(stream_o, present({&X, &W, opt(b), &Z, opt(A), u}), X.dtype,
                    [&](auto tag, auto& k) {
                      using T = decltype(tag);
                      k.dense_forward(X.data<T>(), W.data<T>(), ptr_or_null<T>(b), Z.data<T>(),
                                      ptr_or_null<T>(A), batch, n_in, n_out, cfg.act(),
                                      cfg.params<T>(ptr_or_null<T>(u), n_out));
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
        const Arr X = Mem::read(X_o, "X"), W = Mem::read(W_o, "W"), Z = Mem::read(Z_o, "Z");
        const Arr dA = Mem::read(dA_o, "grad_output"), dW = Mem::read(dW_o, "dW");
        expect_dense(X, W);
        const index_t batch = X.dim(0), n_in = X.dim(1), n_out = W.dim(1);
        expect_input(Z, {batch, n_out}, X);
        expect_input(dA, {batch, n_out}, X);
        expect_output(dW, {n_in, n_out}, X);
        const auto dZ = read_optional<Mem>(dZ_o, "dZ"), db = read_optional<Mem>(db_o, "db"),
                   dX = read_optional<Mem>(dX_o, "dX");
        const auto dparams = read_optional<Mem>(dparams_o, "dparams");
        if (dZ) expect_output(*dZ, {batch, n_out}, X);
        FM_CHECK(dZ || cfg.act() == Act::identity,
                 "dZ: a work array is required for a non-identity activation");
        if (db) expect_output(*db, {n_out}, X);
        if (dX) expect_output(*dX, {batch, n_in}, X);
        const auto unit = read_optional<Mem>(unit_o, "params");
        const Arr* u = unit_params(cfg, unit, n_out, X);
        if (dparams) {
          FM_CHECK(u != nullptr, "dparams: this activation has no learnable parameters");
          expect_output(*dparams, u->shape, X);
        }
        launch<Mem>(stream_o,
                    present({&X, &W, &Z, &dA, &dW, opt(dZ), opt(db), opt(dX), opt(dparams), u}),
                    X.dtype, [&](auto tag, auto& k) {
                      using T = decltype(tag);
                      k.dense_backward(X.data<T>(), W.data<T>(), Z.data<T>(), dA.data<T>(),
                                       ptr_or_null<T>(dZ), dW.data<T>(), ptr_or_null<T>(db),
                                       ptr_or_null<T>(dX), ptr_or_null<T>(dparams), batch, n_in,
                                       n_out, cfg.act(), cfg.params<T>(ptr_or_null<T>(u), n_out));
                    });
      },
      py::arg("config"), py::arg("X"), py::arg("W"), py::arg("Z"), py::arg("grad_output"),
      py::arg("dZ"), py::arg("dW"), py::arg("db") = py::none(), py::arg("dX") = py::none(),
      py::arg("dparams") = py::none(), py::arg("params") = py::none(),
      py::arg("stream") = py::none(),
      "dZ = dA f'(Z) (with db, dparams), dW = X^T dZ, dX = dZ W^T (when dX is given).");

  m.def(
      "gemm",
      [](py::object A_o, py::object B_o, py::object C_o, bool trans_a, bool trans_b,
         py::object stream_o) {
        const Arr A = Mem::read(A_o, "A"), B = Mem::read(B_o, "B"), C = Mem::read(C_o, "out");
        expect_2d(A);
        expect_2d(B);
        expect_dtype(B, A);
        const index_t m = trans_a ? A.dim(1) : A.dim(0), k = trans_a ? A.dim(0) : A.dim(1);
        const index_t kb = trans_b ? B.dim(1) : B.dim(0), n = trans_b ? B.dim(0) : B.dim(1);
        FM_CHECK(k == kb, "B: inner dimensions differ (", k, " vs ", kb, ")");
        expect_output(C, {m, n}, A);
        launch<Mem>(stream_o, {&A, &B, &C}, A.dtype, [&](auto tag, auto& kk) {
          using T = decltype(tag);
          kk.gemm(trans_a, trans_b, m, n, k, A.data<T>(), A.dim(1), B.data<T>(), B.dim(1),
                  C.data<T>());
        });
      },
      py::arg("A"), py::arg("B"), py::arg("out"), py::arg("trans_a") = false,
      py::arg("trans_b") = false, py::arg("stream") = py::none(),
      "out = op(A) op(B) through the GEMM path of the training step: the benchmarks' GEMM "
      "floor.");

  // ------------------------------------------------------------------ batch normalization

  m.def(
      "batchnorm_forward_train",
      [](py::object x_o, py::object y_o, py::object gamma_o, py::object beta_o, py::object mean_o,
         py::object invstd_o, py::object rm_o, py::object rv_o, double momentum, double eps,
         bool init_from_batch, py::object stream_o) {
        const Arr x = Mem::read(x_o, "x"), y = Mem::read(y_o, "out");
        const Arr mean = Mem::read(mean_o, "batch_mean"),
                  invstd = Mem::read(invstd_o, "batch_invstd");
        expect_2d(x);
        expect_output(y, x.shape, x);
        const index_t rows = x.dim(0), cols = x.dim(1);
        expect_vector(mean, cols, x, true);
        expect_vector(invstd, cols, x, true);
        const auto gamma = read_optional<Mem>(gamma_o, "gamma"),
                   beta = read_optional<Mem>(beta_o, "beta");
        const auto rm = read_optional<Mem>(rm_o, "running_mean"),
                   rv = read_optional<Mem>(rv_o, "running_var");
        if (gamma) expect_vector(*gamma, cols, x);
        if (beta) expect_vector(*beta, cols, x);
        if (rm) expect_vector(*rm, cols, x, true);
        if (rv) expect_vector(*rv, cols, x, true);
        launch<Mem>(stream_o,
                    present({&x, &y, &mean, &invstd, opt(gamma), opt(beta), opt(rm), opt(rv)}),
                    x.dtype, [&](auto tag, auto& k) {
                      using T = decltype(tag);
                      k.batchnorm_forward_train(
                          x.data<T>(), y.data<T>(), ptr_or_null<T>(gamma), ptr_or_null<T>(beta),
                          mean.data<T>(), invstd.data<T>(), ptr_or_null<T>(rm), ptr_or_null<T>(rv),
                          rows, cols, T(momentum), T(eps), init_from_batch);
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
        const Arr x = Mem::read(x_o, "x"), y = Mem::read(y_o, "out");
        const Arr rm = Mem::read(rm_o, "running_mean"), rv = Mem::read(rv_o, "running_var");
        expect_2d(x);
        expect_output(y, x.shape, x);
        const index_t rows = x.dim(0), cols = x.dim(1);
        expect_vector(rm, cols, x);
        expect_vector(rv, cols, x);
        const auto gamma = read_optional<Mem>(gamma_o, "gamma"),
                   beta = read_optional<Mem>(beta_o, "beta");
        if (gamma) expect_vector(*gamma, cols, x);
        if (beta) expect_vector(*beta, cols, x);
        launch<Mem>(stream_o, present({&x, &y, &rm, &rv, opt(gamma), opt(beta)}), x.dtype,
                    [&](auto tag, auto& k) {
                      using T = decltype(tag);
                      k.batchnorm_forward_infer(x.data<T>(), y.data<T>(), ptr_or_null<T>(gamma),
                                                ptr_or_null<T>(beta), rm.data<T>(), rv.data<T>(),
                                                rows, cols, T(eps));
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
        const Arr x = Mem::read(x_o, "x"), dy = Mem::read(dy_o, "grad_output"),
                  dx = Mem::read(dx_o, "grad_x");
        const Arr mean = Mem::read(mean_o, "batch_mean"),
                  invstd = Mem::read(invstd_o, "batch_invstd");
        expect_2d(x);
        expect_input(dy, x.shape, x);
        expect_output(dx, x.shape, x);
        const index_t rows = x.dim(0), cols = x.dim(1);
        expect_vector(mean, cols, x);
        expect_vector(invstd, cols, x);
        const auto gamma = read_optional<Mem>(gamma_o, "gamma");
        const auto dgamma = read_optional<Mem>(dgamma_o, "grad_gamma"),
                   dbeta = read_optional<Mem>(dbeta_o, "grad_beta");
        if (gamma) expect_vector(*gamma, cols, x);
        if (dgamma) expect_vector(*dgamma, cols, x, true);
        if (dbeta) expect_vector(*dbeta, cols, x, true);
        launch<Mem>(
            stream_o, present({&x, &dy, &dx, &mean, &invstd, opt(gamma), opt(dgamma), opt(dbeta)}),
            x.dtype, [&](auto tag, auto& k) {
              using T = decltype(tag);
              k.batchnorm_backward(x.data<T>(), dy.data<T>(), ptr_or_null<T>(gamma), mean.data<T>(),
                                   invstd.data<T>(), dx.data<T>(), ptr_or_null<T>(dgamma),
                                   ptr_or_null<T>(dbeta), rows, cols);
            });
      },
      py::arg("x"), py::arg("grad_output"), py::arg("gamma"), py::arg("batch_mean"),
      py::arg("batch_invstd"), py::arg("grad_x"), py::arg("grad_gamma") = py::none(),
      py::arg("grad_beta") = py::none(), py::arg("stream") = py::none(),
      "Batch norm backward: grad_x, and grad_gamma / grad_beta when given.");

  // ------------------------------------------------------------------ dropout, noise

  def_keyed<Mem>(
      m, "dropout_forward", "x", "rate", [](auto& k, auto... a) { k.dropout_forward(a...); },
      "Inverted dropout with the Philox mask of (seed, step, layer): the same bits on both "
      "devices.");
  def_keyed<Mem>(
      m, "dropout_backward", "grad_output", "rate",
      [](auto& k, auto... a) { k.dropout_backward(a...); },
      "The dropout mask applied to grad_output.");
  def_keyed<Mem>(
      m, "gaussian_noise_forward", "x", "stddev",
      [](auto& k, auto... a) { k.gaussian_noise_forward(a...); },
      "out = x + stddev * N(0, 1) (Philox).");

  // ------------------------------------------------------------------ RBF layers

  m.def(
      "rbf_forward",
      [](py::object X_o, py::object C_o, py::object S_o, py::object D_o, py::object Phi_o,
         py::object stream_o) {
        const Arr X = Mem::read(X_o, "X"), C = Mem::read(C_o, "centers"),
                  S = Mem::read(S_o, "widths"), D = Mem::read(D_o, "D"),
                  Phi = Mem::read(Phi_o, "Phi");
        expect_rbf(X, C, S);
        const index_t batch = X.dim(0), n_in = X.dim(1), K = C.dim(0);
        expect_output(D, {batch, K}, X);
        expect_output(Phi, {batch, K}, X);
        launch<Mem>(stream_o, {&X, &C, &S, &D, &Phi}, X.dtype, [&](auto tag, auto& k) {
          using T = decltype(tag);
          typename std::decay_t<decltype(k)>::template Vec<T> work;
          work.resize(k.rbf_workspace_size(K));
          k.rbf_forward(X.data<T>(), C.data<T>(), S.data<T>(), D.data<T>(), Phi.data<T>(),
                        work.data(), batch, n_in, K);
        });
      },
      py::arg("X"), py::arg("centers"), py::arg("widths"), py::arg("D"), py::arg("Phi"),
      py::arg("stream") = py::none(),
      "D = squared distances to the centres, Phi = exp(-D / (2 widths^2)), both (batch, K).");

  m.def(
      "rbf_backward",
      [](py::object X_o, py::object C_o, py::object S_o, py::object D_o, py::object Phi_o,
         py::object G_o, py::object dX_o, py::object dC_o, py::object dS_o, py::object stream_o) {
        const Arr X = Mem::read(X_o, "X"), C = Mem::read(C_o, "centers"),
                  S = Mem::read(S_o, "widths"), D = Mem::read(D_o, "D"),
                  Phi = Mem::read(Phi_o, "Phi"), G = Mem::read(G_o, "grad_output");
        expect_rbf(X, C, S);
        const index_t batch = X.dim(0), n_in = X.dim(1), K = C.dim(0);
        expect_input(D, {batch, K}, X);
        expect_input(Phi, {batch, K}, X);
        expect_input(G, {batch, K}, X);
        const auto dX = read_optional<Mem>(dX_o, "grad_X"),
                   dC = read_optional<Mem>(dC_o, "grad_centers"),
                   dS = read_optional<Mem>(dS_o, "grad_widths");
        if (dX) expect_output(*dX, X.shape, X);
        if (dC) expect_output(*dC, C.shape, X);
        if (dS) expect_output(*dS, S.shape, X);
        launch<Mem>(stream_o, present({&X, &C, &S, &D, &Phi, &G, opt(dX), opt(dC), opt(dS)}),
                    X.dtype, [&](auto tag, auto& k) {
                      using T = decltype(tag);
                      // The kernel turns dL/dPhi into dL/dD in place: it works on a copy of
                      // the caller's grad_output.
                      typename std::decay_t<decltype(k)>::template Vec<T> g, work;
                      g.resize(batch * K);
                      work.resize(k.rbf_workspace_size(K));
                      k.copy(g.data(), G.data<T>(), batch * K);
                      k.rbf_backward(X.data<T>(), C.data<T>(), S.data<T>(), D.data<T>(),
                                     Phi.data<T>(), g.data(), ptr_or_null<T>(dX),
                                     ptr_or_null<T>(dC), ptr_or_null<T>(dS), work.data(), batch,
                                     n_in, K);
                    });
      },
      py::arg("X"), py::arg("centers"), py::arg("widths"), py::arg("D"), py::arg("Phi"),
      py::arg("grad_output"), py::arg("grad_X") = py::none(), py::arg("grad_centers") = py::none(),
      py::arg("grad_widths") = py::none(), py::arg("stream") = py::none(),
      "From grad_output = dL/dPhi: grad_X, grad_centers, grad_widths (each when given).");

  // ------------------------------------------------------------------ losses

  m.def(
      "loss_forward_backward",
      [](int code, py::object z_o, py::object t_o, py::object w_o, py::object d_o,
         py::object loss_o, double label_smoothing, bool smoothing_uniform_k, bool half,
         py::object stream_o) {
        const Loss loss = loss_of(code);
        const Arr z = Mem::read(z_o, "logits");
        expect_2d(z);
        const index_t rows = z.dim(0), cols = z.dim(1);
        const bool labels = Mem::is_labels(t_o);
        const Arr t = Mem::read(t_o, "target", labels);
        if (labels)
          expect_shape(t, {rows});
        else
          expect_input(t, z.shape, z);
        const auto w = read_optional<Mem>(w_o, "sample_weight");
        if (w) expect_vector(*w, rows, z);
        const auto d = read_optional<Mem>(d_o, "grad_logits");
        if (d) expect_output(*d, z.shape, z);
        const auto out = read_optional<Mem>(loss_o, "loss");
        if (out) expect_f64_scalar(*out);
        launch<Mem>(stream_o, present({&z, &t, opt(w), opt(d), opt(out)}), z.dtype,
                    [&](auto tag, auto& k) {
                      using T = decltype(tag);
                      LossParams<T> p;
                      p.label_smoothing = T(label_smoothing);
                      p.smoothing_uniform_k = smoothing_uniform_k;
                      p.half = half;
                      k.loss_value(loss, z.data<T>(), labels ? nullptr : t.data<T>(),
                                   labels ? t.data<std::int32_t>() : nullptr, ptr_or_null<T>(w),
                                   ptr_or_null<T>(d), rows, cols, p, ptr_or_null<double>(out));
                    });
      },
      py::arg("code"), py::arg("logits"), py::arg("target"), py::arg("sample_weight"),
      py::arg("grad_logits"), py::arg("loss"), py::arg("label_smoothing"),
      py::arg("smoothing_uniform_k"), py::arg("half"), py::arg("stream") = py::none(),
      "Fused loss: loss (a one-element float64 array, or None) = (1/N) sum_i w_i l_i and "
      "grad_logits (or None); target is (rows, cols) floats or (rows,) int32 labels.");

  m.def(
      "loss_output",
      [](int code, py::object z_o, py::object y_o, py::object stream_o) {
        const Loss loss = loss_of(code);
        const Arr z = Mem::read(z_o, "logits"), y = Mem::read(y_o, "out");
        expect_2d(z);
        expect_output(y, z.shape, z);
        launch<Mem>(stream_o, {&z, &y}, z.dtype, [&](auto tag, auto& k) {
          using T = decltype(tag);
          k.loss_output(loss, z.data<T>(), y.data<T>(), z.dim(0), z.dim(1));
        });
      },
      py::arg("code"), py::arg("logits"), py::arg("out"), py::arg("stream") = py::none(),
      "The loss's output activation: identity, sigmoid or row softmax.");

  // ------------------------------------------------------------------ optimizers

  m.def(
      "optimizer_step",
      [](py::object cfg_o, py::object p_o, py::object g_o, py::object st_o, py::object segments,
         std::int64_t step, double lr, double grad_scale, py::object dev_scale_o,
         py::object stream_o) {
        const OptConfig cfg = read_opt_config(cfg_o);
        const std::vector<Segment> segs = read_segments(segments);
        const Arr p = Mem::read(p_o, "params"), g = Mem::read(g_o, "grads"),
                  st = Mem::read(st_o, "state");
        FM_CHECK(p.shape.size() == 1, "params: expected a 1-d arena, got shape ",
                 shape_str(p.shape));
        expect_writable(p);
        expect_input(g, p.shape, p);
        const index_t n = p.size();
        const index_t want = opt_state_size(cfg, segs.data(), static_cast<int>(segs.size()), n);
        FM_CHECK(st.shape.size() == 1 && st.size() == want, "state: expected ", want,
                 " elements (a 1-d array) for ", opt_name(Opt(cfg.opt)), ", got shape ",
                 shape_str(st.shape));
        expect_dtype(st, p);
        expect_writable(st);
        expect_disjoint(p, g);
        expect_disjoint(p, st);
        expect_disjoint(g, st);
        const auto dev_scale = read_optional<Mem>(dev_scale_o, "grad_scale_device");
        if (dev_scale) expect_f64_scalar(*dev_scale);
        dispatch(p.dtype, [&](auto tag) {
          check_opt_config_for<decltype(tag)>(cfg);  // eps must not round to 0 in T
        });
        launch<Mem>(
            stream_o, present({&p, &g, &st, opt(dev_scale)}), p.dtype, [&](auto tag, auto& k) {
              using T = decltype(tag);
              GradScale scale;
              scale.host = grad_scale;
              if (!k.take_device_scale(ptr_or_null<double>(dev_scale), scale)) return;
              k.optimizer_step(cfg, p.data<T>(), g.data<T>(), want ? st.data<T>() : nullptr,
                               segs.data(), static_cast<int>(segs.size()), n, step, lr, scale);
            });
      },
      py::arg("config"), py::arg("params"), py::arg("grads"), py::arg("state"), py::arg("segments"),
      py::arg("step"), py::arg("lr"), py::arg("grad_scale") = 1.0,
      py::arg("grad_scale_device") = py::none(), py::arg("stream") = py::none(),
      "In-place optimizer step over a flat arena split into segments (list of Segment, or "
      "None: one segment); grad_scale_device: a one-element float64 array of the arrays' "
      "device multiplying the gradients (the clip-by-norm factor of grad_sq_norm; NaN skips "
      "the step).");

  m.def(
      "grad_sq_norm",
      [](py::object g_o, py::object sq_o, py::object scale_o, double max_norm,
         py::object stream_o) {
        const Arr g = Mem::read(g_o, "grads");
        const auto sq = read_optional<Mem>(sq_o, "sq_norm"),
                   scale = read_optional<Mem>(scale_o, "clip_scale");
        if (sq) expect_f64_scalar(*sq);
        if (scale) {
          expect_f64_scalar(*scale);
          FM_CHECK(max_norm > 0.0, "max_norm: expected > 0 with clip_scale, got ", max_norm);
        }
        launch<Mem>(stream_o, present({&g, opt(sq), opt(scale)}), g.dtype, [&](auto tag, auto& k) {
          using T = decltype(tag);
          k.grad_sq_norm(g.data<T>(), g.size(), ptr_or_null<double>(sq), ptr_or_null<double>(scale),
                         max_norm);
        });
      },
      py::arg("grads"), py::arg("sq_norm"), py::arg("clip_scale") = py::none(),
      py::arg("max_norm") = 0.0, py::arg("stream") = py::none(),
      "sq_norm = sum(grads^2) (fixed-order blocked sums in double: deterministic) and "
      "clip_scale = min(1, max_norm / (||grads|| + 1e-6)), written to one-element float64 "
      "arrays (on the device without a host synchronization).");
}

}  // namespace fm::bindings
