// Bindings of the activation and dense kernels (csrc/cpu/activation.cpp, dense.cpp).
// Inputs are checked (dtype, dimensions, contiguity, matching shapes) and the GIL is
// released around every kernel; outputs are allocated here.
#include "bindings/common.h"
#include "cpu/activation.h"
#include "cpu/blas.h"
#include "cpu/dense.h"

namespace fm::bindings {
namespace {

template <class T>
py::array_t<T> empty_like_2d(index_t rows, index_t cols) {
  return py::array_t<T>({rows, cols});
}

py::tuple rows_cols(const py::array& z, const char* name) {
  FM_CHECK(z.ndim() == 2, name, ": expected a 2-d (batch, features) array, got ", z.ndim(), "-d");
  return py::make_tuple(z.shape(0), z.shape(1));
}

}  // namespace

FM_BINDINGS(activation) {
  py::class_<ActConfig>(m, "ActConfig", "Activation code and hyper-parameters (built by fusedmlp.ops)")
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

  m.def("activation_names", []() {
    std::vector<std::string> names;
#define FM_ACT_NAME(n) names.push_back(#n);
    FM_ACT_LIST(FM_ACT_NAME)
#undef FM_ACT_NAME
    return names;
  });
  m.def("activation_num_params", [](int code, int hinges) {
    ActConfig c;
    c.code = code;
    return act_num_params(c.act(), hinges);
  });

  m.def("activation_forward", [](const ActConfig& cfg, py::array z, py::object unit) {
    rows_cols(z, "z");
    return dtype_dispatch(z, "z", [&](auto tag) -> py::array {
      using T = decltype(tag);
      const index_t rows = z.shape(0), cols = z.shape(1);
      const T* zp = checked_ptr<T>(z, "z", 2);
      const ActParams<T> p = cfg.params<T>(act_unit_params<T>(cfg, unit, cols), cols);
      auto y = empty_like_2d<T>(rows, cols);
      T* yp = y.mutable_data();
      const Act a = cfg.act();
      {
        py::gil_scoped_release nogil;
        cpu::activation_forward(a, zp, yp, rows, cols, p);
      }
      return y;
    });
  }, py::arg("config"), py::arg("z"), py::arg("params") = py::none());

  m.def("activation_derivative", [](const ActConfig& cfg, py::array z, py::object unit) {
    rows_cols(z, "z");
    return dtype_dispatch(z, "z", [&](auto tag) -> py::array {
      using T = decltype(tag);
      const index_t rows = z.shape(0), cols = z.shape(1);
      const T* zp = checked_ptr<T>(z, "z", 2);
      const ActParams<T> p = cfg.params<T>(act_unit_params<T>(cfg, unit, cols), cols);
      auto g = empty_like_2d<T>(rows, cols);
      T* gp = g.mutable_data();
      const Act a = cfg.act();
      {
        py::gil_scoped_release nogil;
        cpu::activation_derivative(a, zp, gp, rows, cols, p);
      }
      return g;
    });
  }, py::arg("config"), py::arg("z"), py::arg("params") = py::none());

  // Returns (dz, dparams or None).
  m.def("activation_backward", [](const ActConfig& cfg, py::array z, py::array dy, py::object unit) {
    rows_cols(z, "z");
    return dtype_dispatch(z, "z", [&](auto tag) -> py::tuple {
      using T = decltype(tag);
      const index_t rows = z.shape(0), cols = z.shape(1);
      const T* zp = checked_ptr<T>(z, "z", 2);
      const T* dyp = checked_ptr<T>(dy, "grad_output", 2);
      check_shape(dy, "grad_output", {rows, cols});
      const T* up = act_unit_params<T>(cfg, unit, cols);
      const ActParams<T> p = cfg.params<T>(up, cols);
      const Act a = cfg.act();
      const int np = act_num_params(a, cfg.hinges);
      auto dz = empty_like_2d<T>(rows, cols);
      T* dzp = dz.mutable_data();
      py::object dparams = py::none();
      T* dpp = nullptr;
      if (np > 0) {
        auto d = py::array_t<T>({index_t(np), cols});
        dpp = d.mutable_data();
        dparams = d;
      }
      {
        py::gil_scoped_release nogil;
        cpu::activation_backward(a, zp, dyp, dzp, static_cast<T*>(nullptr), dpp, rows, cols, p);
      }
      return py::make_tuple(dz, dparams);
    });
  }, py::arg("config"), py::arg("z"), py::arg("grad_output"), py::arg("params") = py::none());

  m.def("softmax_forward", [](py::array z) {
    rows_cols(z, "z");
    return dtype_dispatch(z, "z", [&](auto tag) -> py::array {
      using T = decltype(tag);
      const index_t rows = z.shape(0), cols = z.shape(1);
      FM_CHECK(cols >= 1, "z: softmax needs at least one column");
      const T* zp = checked_ptr<T>(z, "z", 2);
      auto y = empty_like_2d<T>(rows, cols);
      T* yp = y.mutable_data();
      {
        py::gil_scoped_release nogil;
        cpu::softmax_forward(zp, yp, rows, cols);
      }
      return y;
    });
  });
  m.def("softmax_backward", [](py::array y, py::array dy) {
    rows_cols(y, "y");
    return dtype_dispatch(y, "y", [&](auto tag) -> py::array {
      using T = decltype(tag);
      const index_t rows = y.shape(0), cols = y.shape(1);
      const T* yp = checked_ptr<T>(y, "y", 2);
      const T* dyp = checked_ptr<T>(dy, "grad_output", 2);
      check_shape(dy, "grad_output", {rows, cols});
      auto dz = empty_like_2d<T>(rows, cols);
      T* dzp = dz.mutable_data();
      {
        py::gil_scoped_release nogil;
        cpu::softmax_backward(yp, dyp, dzp, rows, cols);
      }
      return dz;
    });
  });
  m.def("maxout_forward", [](py::array z, index_t pieces) {
    rows_cols(z, "z");
    FM_CHECK(pieces >= 1, "pieces: expected >= 1, got ", pieces);
    FM_CHECK(z.shape(1) % pieces == 0, "z: the number of columns (", z.shape(1),
             ") must be a multiple of pieces (", pieces, ")");
    return dtype_dispatch(z, "z", [&](auto tag) -> py::array {
      using T = decltype(tag);
      const index_t rows = z.shape(0), units = z.shape(1) / pieces;
      const T* zp = checked_ptr<T>(z, "z", 2);
      auto y = empty_like_2d<T>(rows, units);
      T* yp = y.mutable_data();
      {
        py::gil_scoped_release nogil;
        cpu::maxout_forward(zp, yp, rows, units, pieces);
      }
      return y;
    });
  });
  m.def("maxout_backward", [](py::array z, py::array dy, index_t pieces) {
    rows_cols(z, "z");
    FM_CHECK(pieces >= 1, "pieces: expected >= 1, got ", pieces);
    FM_CHECK(z.shape(1) % pieces == 0, "z: the number of columns (", z.shape(1),
             ") must be a multiple of pieces (", pieces, ")");
    return dtype_dispatch(z, "z", [&](auto tag) -> py::array {
      using T = decltype(tag);
      const index_t rows = z.shape(0), units = z.shape(1) / pieces;
      const T* zp = checked_ptr<T>(z, "z", 2);
      const T* dyp = checked_ptr<T>(dy, "grad_output", 2);
      check_shape(dy, "grad_output", {rows, units});
      auto dz = empty_like_2d<T>(rows, units * pieces);
      T* dzp = dz.mutable_data();
      {
        py::gil_scoped_release nogil;
        cpu::maxout_backward(zp, dyp, dzp, rows, units, pieces);
      }
      return dz;
    });
  });
}

FM_BINDINGS(dense) {
  // Returns (Z, A); A is Z itself for the identity.
  m.def("dense_forward", [](const ActConfig& cfg, py::array X, py::array W, py::object b,
                            py::object unit) {
    rows_cols(X, "X");
    return dtype_dispatch(X, "X", [&](auto tag) -> py::tuple {
      using T = decltype(tag);
      const index_t batch = X.shape(0), n_in = X.shape(1);
      const T* xp = checked_ptr<T>(X, "X", 2);
      const T* wp = checked_ptr<T>(W, "W", 2);
      FM_CHECK(W.shape(0) == n_in, "W: expected ", n_in, " rows (n_in of X), got ", W.shape(0));
      const index_t n_out = W.shape(1);
      const T* bp = checked_ptr_or_null<T>(b, "b", 1);
      if (bp) check_shape(py::cast<py::array>(b), "b", {n_out});
      const ActParams<T> p = cfg.params<T>(act_unit_params<T>(cfg, unit, n_out), n_out);
      const Act a = cfg.act();
      auto Z = empty_like_2d<T>(batch, n_out);
      py::array_t<T> A = a == Act::identity ? Z : empty_like_2d<T>(batch, n_out);
      T* zp = Z.mutable_data();
      T* ap = A.mutable_data();
      {
        py::gil_scoped_release nogil;
        cpu::dense_forward(xp, wp, bp, zp, ap, batch, n_in, n_out, a, p);
      }
      return py::make_tuple(Z, A);
    });
  }, py::arg("config"), py::arg("X"), py::arg("W"), py::arg("b"), py::arg("params") = py::none());

  // Returns (dX or None, dW, db or None, dparams or None).
  m.def("dense_backward", [](const ActConfig& cfg, py::array X, py::array W, py::array Z,
                             py::array dA, bool has_bias, bool need_dx, py::object unit) {
    rows_cols(X, "X");
    return dtype_dispatch(X, "X", [&](auto tag) -> py::tuple {
      using T = decltype(tag);
      const index_t batch = X.shape(0), n_in = X.shape(1);
      const T* xp = checked_ptr<T>(X, "X", 2);
      const T* wp = checked_ptr<T>(W, "W", 2);
      FM_CHECK(W.shape(0) == n_in, "W: expected ", n_in, " rows (n_in of X), got ", W.shape(0));
      const index_t n_out = W.shape(1);
      const T* zp = checked_ptr<T>(Z, "Z", 2);
      check_shape(Z, "Z", {batch, n_out});
      const T* dap = checked_ptr<T>(dA, "grad_output", 2);
      check_shape(dA, "grad_output", {batch, n_out});
      const ActParams<T> p = cfg.params<T>(act_unit_params<T>(cfg, unit, n_out), n_out);
      const Act a = cfg.act();
      const int np = act_num_params(a, cfg.hinges);
      auto dZ = empty_like_2d<T>(batch, n_out);
      auto dW = empty_like_2d<T>(n_in, n_out);
      py::object dX = py::none(), db = py::none(), dparams = py::none();
      T *dxp = nullptr, *dbp = nullptr, *dpp = nullptr;
      if (need_dx) { auto t = empty_like_2d<T>(batch, n_in); dxp = t.mutable_data(); dX = t; }
      if (has_bias) { auto t = py::array_t<T>(n_out); dbp = t.mutable_data(); db = t; }
      if (np > 0) { auto t = empty_like_2d<T>(np, n_out); dpp = t.mutable_data(); dparams = t; }
      T* dzp = dZ.mutable_data();
      T* dwp = dW.mutable_data();
      {
        py::gil_scoped_release nogil;
        cpu::dense_backward(xp, wp, zp, dap, dzp, dwp, dbp, dxp, dpp, batch, n_in, n_out, a, p);
      }
      return py::make_tuple(dX, dW, db, dparams);
    });
  }, py::arg("config"), py::arg("X"), py::arg("W"), py::arg("Z"), py::arg("grad_output"),
     py::arg("has_bias") = true, py::arg("need_dx") = true, py::arg("params") = py::none());
}

FM_BINDINGS(gemm) {
  m.def(
      "gemm",
      [](py::array A, py::array B, bool trans_a, bool trans_b) {
        return dtype_dispatch(A, "A", [&](auto tag) -> py::array {
          using T = decltype(tag);
          const T* a = checked_ptr<T>(A, "A", 2);
          const T* b = checked_ptr<T>(B, "B", 2);
          const index_t m = trans_a ? A.shape(1) : A.shape(0), k = trans_a ? A.shape(0) : A.shape(1);
          const index_t kb = trans_b ? B.shape(1) : B.shape(0), n = trans_b ? B.shape(0) : B.shape(1);
          FM_CHECK(k == kb, "B: inner dimensions differ (", k, " vs ", kb, ")");
          py::array_t<T> C({m, n});
          T* c = C.mutable_data();
          {
            py::gil_scoped_release nogil;
            cpu::gemm(trans_a, trans_b, m, n, k, T(1), a, A.shape(1), b, B.shape(1), T(0), c, n);
          }
          return C;
        });
      },
      py::arg("A"), py::arg("B"), py::arg("trans_a") = false, py::arg("trans_b") = false,
      "C = op(A) op(B) through the GEMM path of the training step (split over the kernel "
      "threads, single-threaded OpenBLAS blocks): the benchmarks' GEMM floor.");
}

}  // namespace fm::bindings
