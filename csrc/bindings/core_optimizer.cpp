// Bindings of the optimizer step (csrc/cpu/optimizer.cpp): OptConfig and Segment as Python
// classes, the step on one (param, grad, state) triple or on a flat arena with segments, the
// state size, and the deterministic squared gradient norm. Arrays are checked (dtype,
// contiguity, sizes, no aliasing) and the GIL is released around every kernel.
#include <cstdint>

#include "bindings/common.h"
#include "cpu/optimizer.h"

namespace fm::bindings {
namespace {

// rows x cols of a parameter: (rows, cols) for a matrix, (1, n) for a vector.
std::pair<index_t, index_t> param_rows_cols(const py::array& a, const char* name) {
  FM_CHECK(a.ndim() == 1 || a.ndim() == 2, name, ": expected a 1-d or 2-d array, got ", a.ndim(),
           "-d");
  if (a.ndim() == 1) return {1, a.shape(0)};
  return {a.shape(0), a.shape(1)};
}

void check_disjoint(const py::array& a, const char* na, const py::array& b, const char* nb) {
  const auto* a0 = static_cast<const char*>(a.data());
  const auto* b0 = static_cast<const char*>(b.data());
  const bool overlap =
      a.nbytes() > 0 && b.nbytes() > 0 && a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
  FM_CHECK(!overlap, na, " and ", nb, ": expected separate arrays, they share memory");
}

py::object flag_name(OptFlag f) {
  switch (f) {
    case OptFlag::momentum:
      return py::str("momentum");
    case OptFlag::centered:
      return py::str("centered");
    case OptFlag::amsgrad:
      return py::str("amsgrad");
    default:
      return py::none();
  }
}

py::object momentum_name(OptMomentum f) {
  switch (f) {
    case OptMomentum::momentum:
      return py::str("momentum");
    case OptMomentum::beta1:
      return py::str("beta1");
    default:
      return py::none();
  }
}

std::vector<Segment> segment_vector(const py::object& segments) {
  if (segments.is_none()) return {};
  return py::cast<std::vector<Segment>>(segments);
}

template <class T>
void run_step(const OptConfig& cfg, py::array param, py::array grad, py::array state,
              const std::vector<Segment>& segs, index_t n, std::int64_t step, double lr,
              double grad_scale) {
  check_opt_config_for<T>(cfg);
  T* pp = checked_ptr<T>(param, "param", -1, true);
  const T* gp = checked_ptr<T>(grad, "grad", -1);
  T* sp = checked_ptr<T>(state, "state", 1, true);
  FM_CHECK(grad.size() == n, "grad: expected ", n, " elements (the size of param), got ",
           grad.size());
  const index_t want = cpu::optimizer_state_size(cfg, segs.data(), int(segs.size()), n);
  FM_CHECK(state.size() == want, "state: expected ", want, " elements for ", opt_name(Opt(cfg.opt)),
           ", got ", state.size());
  check_disjoint(param, "param", grad, "grad");
  check_disjoint(param, "param", state, "state");
  check_disjoint(grad, "grad", state, "state");
  py::gil_scoped_release nogil;
  cpu::optimizer_step(cfg, pp, gp, sp, segs.data(), int(segs.size()), n, step, lr, grad_scale);
}

}  // namespace

FM_BINDINGS(optimizer) {
  py::class_<OptConfig> config(
      m, "OptConfig",
      "Optimizer code and hyper-parameters (built by fusedmlp.optim; fields as in "
      "csrc/common/optimizer.h)");
  config.def(py::init<>());
#define FM_OPT_FIELD(f) config.def_readwrite(#f, &OptConfig::f);
  FM_OPT_CONFIG_FIELDS(FM_OPT_FIELD)
#undef FM_OPT_FIELD
  config
      .def(
          "validate", [](const OptConfig& c) { check_opt_config(c); },
          "Raise ValueError naming the first hyper-parameter out of range.")
      .def("__repr__", [](const OptConfig& c) {
        return detail::concat("OptConfig(opt=", opt_name(Opt(c.opt)), ", lr=", c.lr, ")");
      });

  py::class_<Segment>(m, "Segment", "A rows x cols parameter tensor at `offset` in a flat arena")
      .def(py::init([](index_t offset, index_t rows, index_t cols, bool decay, bool max_norm) {
             return Segment{offset, rows, cols, decay, max_norm};
           }),
           py::arg("offset"), py::arg("rows"), py::arg("cols"), py::arg("decay") = true,
           py::arg("max_norm") = false)
      .def_readwrite("offset", &Segment::offset)
      .def_readwrite("rows", &Segment::rows)
      .def_readwrite("cols", &Segment::cols)
      .def_readwrite("decay", &Segment::decay)
      .def_readwrite("max_norm", &Segment::max_norm);

  m.def("optimizer_names", []() {
    std::vector<std::string> names;
#define FM_OPT_NAME(n) names.push_back(#n);
    FM_OPT_LIST(FM_OPT_NAME)
#undef FM_OPT_NAME
    return names;
  });

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
      [](const OptConfig& cfg, index_t n, py::object segments) {
        const std::vector<Segment> segs = segment_vector(segments);
        return cpu::optimizer_state_size(cfg, segs.data(), int(segs.size()), n);
      },
      py::arg("config"), py::arg("n"), py::arg("segments") = py::none(),
      "Elements of optimizer state for an arena of n elements (segments: list of Segment).");

  m.def(
      "optimizer_param_state_size",
      [](const OptConfig& cfg, index_t rows, index_t cols) {
        const Segment s{0, rows, cols, true, false};
        FM_CHECK(rows >= 1 && cols >= 1, "shape: expected rows >= 1 and cols >= 1, got (", rows,
                 ", ", cols, ")");
        return cpu::optimizer_state_size(cfg, &s, 1, rows * cols);
      },
      py::arg("config"), py::arg("rows"), py::arg("cols"),
      "Elements of optimizer state for one (rows, cols) parameter (vectors: rows = 1).");

  // One parameter: a single segment covering the whole array.
  m.def(
      "optimizer_step",
      [](const OptConfig& cfg, py::array param, py::array grad, py::array state, std::int64_t step,
         double lr, double grad_scale, bool decay, bool max_norm) {
        const auto [rows, cols] = param_rows_cols(param, "param");
        FM_CHECK(rows >= 1 && cols >= 1, "param: expected a non-empty array");
        FM_CHECK(grad.ndim() == param.ndim() && grad.shape(0) == param.shape(0) &&
                     (param.ndim() == 1 || grad.shape(1) == param.shape(1)),
                 "grad: expected the shape of param");
        const std::vector<Segment> segs{Segment{0, rows, cols, decay, max_norm}};
        dtype_dispatch(param, "param", [&](auto tag) {
          run_step<decltype(tag)>(cfg, param, grad, state, segs, rows * cols, step, lr, grad_scale);
        });
      },
      py::arg("config"), py::arg("param"), py::arg("grad"), py::arg("state"), py::arg("step"),
      py::arg("lr"), py::arg("grad_scale") = 1.0, py::arg("decay") = true,
      py::arg("max_norm") = false,
      "In-place step on one parameter array (1-d or 2-d) with its gradient and flat state.");

  // A flat arena with segments (what the Network does with its parameter buffer).
  m.def(
      "optimizer_step_arena",
      [](const OptConfig& cfg, py::array params, py::array grads, py::array state,
         py::object segments, std::int64_t step, double lr, double grad_scale) {
        FM_CHECK(params.ndim() == 1, "params: expected a 1-d arena, got ", params.ndim(), "-d");
        FM_CHECK(grads.ndim() == 1, "grads: expected a 1-d arena, got ", grads.ndim(), "-d");
        const std::vector<Segment> segs = segment_vector(segments);
        dtype_dispatch(params, "params", [&](auto tag) {
          run_step<decltype(tag)>(cfg, params, grads, state, segs, params.shape(0), step, lr,
                                  grad_scale);
        });
      },
      py::arg("config"), py::arg("params"), py::arg("grads"), py::arg("state"), py::arg("segments"),
      py::arg("step"), py::arg("lr"), py::arg("grad_scale") = 1.0,
      "In-place step over a flat arena split into segments (list of Segment, or None: one "
      "segment).");

  m.def(
      "grad_sq_norm",
      [](py::array grad) {
        return dtype_dispatch(grad, "grad", [&](auto tag) -> double {
          using T = decltype(tag);
          const T* gp = checked_ptr<T>(grad, "grad", -1);
          const index_t n = grad.size();
          py::gil_scoped_release nogil;
          return cpu::grad_sq_norm(gp, n);
        });
      },
      py::arg("grad"), "Sum of squares in double, fixed-order blocked sums (deterministic).");

  m.def(
      "grad_norm",
      [](py::array grad) {
        return dtype_dispatch(grad, "grad", [&](auto tag) -> double {
          using T = decltype(tag);
          const T* gp = checked_ptr<T>(grad, "grad", -1);
          const index_t n = grad.size();
          py::gil_scoped_release nogil;
          return cpu::grad_norm(gp, n);
        });
      },
      py::arg("grad"),
      "L2 norm without overflow or underflow (Blue's scaled sums), fixed-order blocked sums.");

  m.def("clip_norm_scale", &clip_norm_scale, py::arg("grad_norm"), py::arg("max_norm"),
        "Global-norm clipping factor min(1, max_norm / (grad_norm + 1e-6)) (torch's).");
  m.attr("CLIP_NORM_EPS") = kClipNormEps;
}

}  // namespace fm::bindings
