// The op bindings of _core (bindings/ops.h over host memory), the configuration classes the
// Python layer builds for both modules (ActConfig, OptConfig, Segment), and the host-only
// gradient norm of fusedmlp.regularizers.
#include "bindings/common.h"
#include "bindings/host_kernels.h"
#include "bindings/ops.h"
#include "cpu/optimizer.h"

namespace fm::bindings {

FM_BINDINGS(ops) {
  py::class_<ActConfig>(m, "ActConfig",
                        "Activation code and hyper-parameters (built by fusedmlp.ops)")
      .def(py::init<>())
      .def_readwrite("code", &ActConfig::code)
      .def_readwrite("alpha", &ActConfig::alpha)
      .def_readwrite("a", &ActConfig::a)
      .def_readwrite("b", &ActConfig::b)
      .def_readwrite("c", &ActConfig::c)
      .def_readwrite("d", &ActConfig::d)
      .def_readwrite("lower", &ActConfig::lower)
      .def_readwrite("upper", &ActConfig::upper)
      .def_readwrite("hinges", &ActConfig::hinges)
      .def_readwrite("seed", &ActConfig::seed)
      .def_readwrite("step", &ActConfig::step)
      .def_readwrite("layer", &ActConfig::layer)
      .def_readwrite("training", &ActConfig::training);

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

  bind_ops<HostMem>(m);

  m.def(
      "grad_norm",
      [](py::object g_o) {
        const Arr g = HostMem::read(g_o, "grad");
        return dispatch(g.dtype, [&](auto tag) -> double {
          using T = decltype(tag);
          py::gil_scoped_release nogil;
          return cpu::grad_norm(g.data<T>(), g.size());
        });
      },
      py::arg("grad"),
      "L2 norm without overflow or underflow (Blue's scaled sums), fixed-order blocked sums.");
}

}  // namespace fm::bindings
