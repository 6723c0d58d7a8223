// Bindings of the radial basis function kernels (csrc/cpu/rbf.cpp). Inputs are checked
// (dtype, dimensions, contiguity, matching shapes, widths > 0) and the GIL is released
// around every kernel.
#include <vector>

#include "bindings/common.h"
#include "cpu/rbf.h"

namespace fm::bindings {
namespace {

struct RbfShapes {
  index_t batch, n_in, K;
};

template <class T>
RbfShapes check_rbf(const py::array& X, const py::array& C, const py::array& sigma) {
  checked_ptr<T>(X, "X", 2);
  checked_ptr<T>(C, "centers", 2);
  checked_ptr<T>(sigma, "widths", 1);
  RbfShapes s{X.shape(0), X.shape(1), C.shape(0)};
  FM_CHECK(s.batch >= 1 && s.n_in >= 1, "X: expected a non-empty (batch, n_in) array");
  FM_CHECK(s.K >= 1, "centers: expected at least one centre");
  check_shape(C, "centers", {s.K, s.n_in});
  check_shape(sigma, "widths", {s.K});
  return s;
}

}  // namespace

FM_BINDINGS(rbf) {
  // Returns (D, Phi): squared distances and Gaussian features, both (batch, K).
  m.def("rbf_forward", [](py::array X, py::array centers, py::array widths) {
    return dtype_dispatch(X, "X", [&](auto tag) -> py::tuple {
      using T = decltype(tag);
      const RbfShapes s = check_rbf<T>(X, centers, widths);
      const T* xp = static_cast<const T*>(X.data());
      const T* cp = static_cast<const T*>(centers.data());
      const T* sp = static_cast<const T*>(widths.data());
      auto D = py::array_t<T>({s.batch, s.K}), Phi = py::array_t<T>({s.batch, s.K});
      T* dp = D.mutable_data();
      T* pp = Phi.mutable_data();
      std::vector<T> work(cpu::rbf_workspace_size(s.K));
      {
        py::gil_scoped_release nogil;
        cpu::rbf_forward(xp, cp, sp, dp, pp, work.data(), s.batch, s.n_in, s.K);
      }
      return py::make_tuple(D, Phi);
    });
  }, py::arg("X"), py::arg("centers"), py::arg("widths"));

  // Returns (dX or None, dcenters or None, dwidths or None) from grad_output = dL/dPhi.
  m.def("rbf_backward", [](py::array X, py::array centers, py::array widths, py::array D,
                           py::array Phi, py::array grad_output, bool need_dx, bool need_params) {
    return dtype_dispatch(X, "X", [&](auto tag) -> py::tuple {
      using T = decltype(tag);
      const RbfShapes s = check_rbf<T>(X, centers, widths);
      const T* dp = checked_ptr<T>(D, "D", 2);
      check_shape(D, "D", {s.batch, s.K});
      const T* pp = checked_ptr<T>(Phi, "Phi", 2);
      check_shape(Phi, "Phi", {s.batch, s.K});
      const T* gp = checked_ptr<T>(grad_output, "grad_output", 2);
      check_shape(grad_output, "grad_output", {s.batch, s.K});
      const T* xp = static_cast<const T*>(X.data());
      const T* cp = static_cast<const T*>(centers.data());
      const T* sp = static_cast<const T*>(widths.data());
      // the kernel turns dL/dPhi into dL/dD in place: work on a copy of the caller's array
      std::vector<T> G(gp, gp + s.batch * s.K);
      std::vector<T> work(cpu::rbf_workspace_size(s.K));
      py::object dX = py::none(), dC = py::none(), dS = py::none();
      T *dxp = nullptr, *dcp = nullptr, *dsp = nullptr;
      if (need_dx) {
        auto a = py::array_t<T>({s.batch, s.n_in});
        dxp = a.mutable_data();
        dX = a;
      }
      if (need_params) {
        auto c = py::array_t<T>({s.K, s.n_in});
        auto w = py::array_t<T>(s.K);
        dcp = c.mutable_data();
        dsp = w.mutable_data();
        dC = c;
        dS = w;
      }
      {
        py::gil_scoped_release nogil;
        cpu::rbf_backward(xp, cp, sp, dp, pp, G.data(), dxp, dcp, dsp, work.data(), s.batch,
                          s.n_in, s.K);
      }
      return py::make_tuple(dX, dC, dS);
    });
  }, py::arg("X"), py::arg("centers"), py::arg("widths"), py::arg("D"), py::arg("Phi"),
     py::arg("grad_output"), py::arg("need_dx"), py::arg("need_params"));
}

}  // namespace fm::bindings
