// Bindings of the batch normalization kernels (csrc/cpu/batchnorm.cpp). Inputs are checked
// (dtype, dimensions, contiguity, matching shapes), the running statistics are updated in
// place, and the GIL is released around every kernel.
#include "bindings/common.h"
#include "cpu/batchnorm.h"

namespace fm::bindings {
namespace {

// A per-feature vector (cols) of dtype T, or null for None.
template <class T>
T* feature_vector(const py::object& o, const char* name, index_t cols, bool writeable = false) {
  T* p = checked_ptr_or_null<T>(o, name, 1, writeable);
  if (p) check_shape(py::cast<py::array>(o), name, {cols});
  return p;
}

void check_2d(const py::array& x, const char* name) {
  FM_CHECK(x.ndim() == 2, name, ": expected a 2-d (batch, features) array, got ", x.ndim(), "-d");
}

}  // namespace

FM_BINDINGS(batchnorm) {
  // Returns (y, batch_mean, batch_invstd); running_mean/running_var are updated in place.
  m.def("batchnorm_forward_train", [](py::array x, py::object gamma, py::object beta,
                                      py::object running_mean, py::object running_var,
                                      double momentum, double eps, bool init_from_batch) {
    check_2d(x, "x");
    return dtype_dispatch(x, "x", [&](auto tag) -> py::tuple {
      using T = decltype(tag);
      const index_t rows = x.shape(0), cols = x.shape(1);
      const T* xp = checked_ptr<T>(x, "x", 2);
      const T* gp = feature_vector<T>(gamma, "gamma", cols);
      const T* bp = feature_vector<T>(beta, "beta", cols);
      T* rmp = feature_vector<T>(running_mean, "running_mean", cols, true);
      T* rvp = feature_vector<T>(running_var, "running_var", cols, true);
      auto y = py::array_t<T>({rows, cols});
      auto mean = py::array_t<T>(cols), invstd = py::array_t<T>(cols);
      T* yp = y.mutable_data();
      T* mp = mean.mutable_data();
      T* ip = invstd.mutable_data();
      {
        py::gil_scoped_release nogil;
        cpu::batchnorm_forward_train(xp, yp, gp, bp, mp, ip, rmp, rvp, rows, cols, T(momentum),
                                     T(eps), init_from_batch);
      }
      return py::make_tuple(y, mean, invstd);
    });
  }, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("running_mean"),
     py::arg("running_var"), py::arg("momentum"), py::arg("eps"), py::arg("init_from_batch"));

  m.def("batchnorm_forward_infer", [](py::array x, py::object gamma, py::object beta,
                                      py::array running_mean, py::array running_var, double eps) {
    check_2d(x, "x");
    return dtype_dispatch(x, "x", [&](auto tag) -> py::array {
      using T = decltype(tag);
      const index_t rows = x.shape(0), cols = x.shape(1);
      const T* xp = checked_ptr<T>(x, "x", 2);
      const T* gp = feature_vector<T>(gamma, "gamma", cols);
      const T* bp = feature_vector<T>(beta, "beta", cols);
      const T* rmp = feature_vector<T>(running_mean, "running_mean", cols);
      const T* rvp = feature_vector<T>(running_var, "running_var", cols);
      auto y = py::array_t<T>({rows, cols});
      T* yp = y.mutable_data();
      {
        py::gil_scoped_release nogil;
        cpu::batchnorm_forward_infer(xp, yp, gp, bp, rmp, rvp, rows, cols, T(eps));
      }
      return y;
    });
  }, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("running_mean"),
     py::arg("running_var"), py::arg("eps"));

  // Returns (dx, dgamma, dbeta); dgamma and dbeta are None for the non-affine layer.
  m.def("batchnorm_backward", [](py::array x, py::array dy, py::object gamma, py::array batch_mean,
                                 py::array batch_invstd) {
    check_2d(x, "x");
    return dtype_dispatch(x, "x", [&](auto tag) -> py::tuple {
      using T = decltype(tag);
      const index_t rows = x.shape(0), cols = x.shape(1);
      const T* xp = checked_ptr<T>(x, "x", 2);
      const T* dyp = checked_ptr<T>(dy, "grad_output", 2);
      check_shape(dy, "grad_output", {rows, cols});
      const T* gp = feature_vector<T>(gamma, "gamma", cols);
      const T* mp = feature_vector<T>(batch_mean, "batch_mean", cols);
      const T* ip = feature_vector<T>(batch_invstd, "batch_invstd", cols);
      auto dx = py::array_t<T>({rows, cols});
      T* dxp = dx.mutable_data();
      py::object dgamma = py::none(), dbeta = py::none();
      T *dgp = nullptr, *dbp = nullptr;
      if (gp) {
        auto g = py::array_t<T>(cols), b = py::array_t<T>(cols);
        dgp = g.mutable_data();
        dbp = b.mutable_data();
        dgamma = g;
        dbeta = b;
      }
      {
        py::gil_scoped_release nogil;
        cpu::batchnorm_backward(xp, dyp, gp, mp, ip, dxp, dgp, dbp, rows, cols);
      }
      return py::make_tuple(dx, dgamma, dbeta);
    });
  }, py::arg("x"), py::arg("grad_output"), py::arg("gamma"), py::arg("batch_mean"),
     py::arg("batch_invstd"));
}

}  // namespace fm::bindings
