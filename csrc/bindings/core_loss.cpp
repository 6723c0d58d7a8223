// Bindings of the fused losses (csrc/cpu/loss.cpp). Inputs are checked (dtype, dimensions,
// contiguity, matching shapes) and the GIL is released around every kernel.
#include "bindings/common.h"
#include "cpu/loss.h"

namespace fm::bindings {
namespace {

Loss loss_of(int code) {
  FM_CHECK(code >= 0 && code <= static_cast<int>(Loss::cross_entropy), "loss: unknown loss code ",
           code);
  return static_cast<Loss>(code);
}

}  // namespace

FM_BINDINGS(loss) {
  m.def("loss_names", []() {
    return std::vector<std::string>{"mse", "binary_cross_entropy", "cross_entropy"};
  }, "Loss names in the order of the C++ enum fm::Loss (the code is the index).");

  // Returns (loss, dlogits or None). `target` is a (rows, cols) float array of the logits'
  // dtype or a (rows,) int32 array of class labels.
  m.def("loss_forward_backward", [](int code, py::array logits, py::array target,
                                    py::object sample_weight, bool need_grad,
                                    double label_smoothing, bool smoothing_uniform_k, bool half) {
    const Loss loss = loss_of(code);
    FM_CHECK(logits.ndim() == 2, "logits: expected a 2-d (batch, outputs) array, got ",
             logits.ndim(), "-d");
    return dtype_dispatch(logits, "logits", [&](auto tag) -> py::tuple {
      using T = decltype(tag);
      const index_t rows = logits.shape(0), cols = logits.shape(1);
      const T* zp = checked_ptr<T>(logits, "logits", 2);
      const T* tp = nullptr;
      const std::int32_t* lp = nullptr;
      if (target.ndim() == 1) {
        lp = checked_ptr<std::int32_t>(target, "target", 1);
        check_shape(target, "target", {rows});
      } else {
        tp = checked_ptr<T>(target, "target", 2);
        check_shape(target, "target", {rows, cols});
      }
      const T* wp = checked_ptr_or_null<T>(sample_weight, "sample_weight", 1);
      if (wp) check_shape(py::cast<py::array>(sample_weight), "sample_weight", {rows});
      LossParams<T> p;
      p.label_smoothing = T(label_smoothing);
      p.smoothing_uniform_k = smoothing_uniform_k;
      p.half = half;
      py::object grad = py::none();
      T* dp = nullptr;
      if (need_grad) {
        auto d = py::array_t<T>({rows, cols});
        dp = d.mutable_data();
        grad = d;
      }
      double value;
      {
        py::gil_scoped_release nogil;
        value = cpu::loss_forward_backward(loss, zp, tp, lp, wp, dp, rows, cols, p);
      }
      return py::make_tuple(value, grad);
    });
  }, py::arg("code"), py::arg("logits"), py::arg("target"), py::arg("sample_weight"),
     py::arg("need_grad"), py::arg("label_smoothing"), py::arg("smoothing_uniform_k"),
     py::arg("half"));

  m.def("loss_output", [](int code, py::array logits) {
    const Loss loss = loss_of(code);
    FM_CHECK(logits.ndim() == 2, "logits: expected a 2-d (batch, outputs) array, got ",
             logits.ndim(), "-d");
    return dtype_dispatch(logits, "logits", [&](auto tag) -> py::array {
      using T = decltype(tag);
      const index_t rows = logits.shape(0), cols = logits.shape(1);
      FM_CHECK(cols >= 1, "logits: expected at least one output column");
      const T* zp = checked_ptr<T>(logits, "logits", 2);
      auto out = py::array_t<T>({rows, cols});
      T* op = out.mutable_data();
      {
        py::gil_scoped_release nogil;
        cpu::loss_output(loss, zp, op, rows, cols);
      }
      return out;
    });
  }, py::arg("code"), py::arg("logits"));
}

}  // namespace fm::bindings
