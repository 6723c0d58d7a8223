// Bindings of the GPU Network (csrc/cuda/network.h): CudaNetwork32 / CudaNetwork64 in _cuda.
// Inputs are device arrays (__cuda_array_interface__: CuPy, or PyTorch/JAX through
// fusedmlp's DLPack conversion), checked for shape, dtype and device; every call runs on the
// `stream` argument, else the inputs' stream, else the legacy default stream. Arena views and
// layer outputs are returned as (pointer, length) / (pointer, rows, cols) for the Python layer
// (fusedmlp._cuda_network) to wrap as CuPy arrays owned by the Network object. Every launch
// sequence runs with the GIL released and the Network's mutex held, the stream set under that
// mutex (bindings/network_common.h: locked).
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "bindings/common.h"
#include "bindings/cuda_arrays.h"
#include "bindings/network_common.h"
#include "cuda/network.h"

namespace fm::bindings {
namespace {

// Everything one data-carrying call reads: X, per-head targets, sample weights, the stream.
template <class T>
struct Batch {
  DevArray X;
  std::vector<DevArray> ys;
  std::optional<DevArray> sw;
  std::vector<const T*> dense;
  std::vector<const std::int32_t*> labels;
  index_t batch = 0;
  cudaStream_t stream = nullptr;
};

template <class T>
DevArray read_x(cuda::CudaNetwork<T>& net, const py::object& X_o) {
  DevArray X = read_array(X_o, "X");
  expect_2d(X);
  expect_type<T>(X);
  FM_CHECK(X.dim(1) == net.n_in(), "X: expected ", net.n_in(), " features, got ", X.dim(1));
  return X;
}

template <class T>
void check_device(const cuda::CudaNetwork<T>& net) {
  int dev = 0;
  FM_CUDA_CHECK(cudaGetDevice(&dev));
  FM_CHECK(dev == net.device(), "device: the network lives on CUDA device ", net.device(),
           " but the current device is ", dev, "; mixing devices is an error");
}

template <class T>
Batch<T> read_batch(cuda::CudaNetwork<T>& net, const py::object& X_o, const py::list& ys,
                    const py::object& sw_o, const py::object& stream_o,
                    std::vector<const DevArray*> extra = {}) {
  check_device(net);
  Batch<T> b;
  b.X = read_x(net, X_o);
  b.batch = b.X.dim(0);
  FM_CHECK(static_cast<int>(ys.size()) == net.n_heads(), "y: expected ", net.n_heads(),
           " target array(s), got ", ys.size());
  b.ys.reserve(ys.size());
  for (int h = 0; h < net.n_heads(); ++h) {
    const py::handle y = ys[h];
    const py::dict cai = y.attr("__cuda_array_interface__");
    const std::string ts = cai["typestr"].cast<std::string>();
    const bool labels = ts == "<i4" || ts == "=i4";
    b.ys.push_back(read_array(y, "y", labels));
    const DevArray& a = b.ys.back();
    if (labels) {
      expect_shape(a, {b.batch});
      b.labels.push_back(a.data<std::int32_t>());
      b.dense.push_back(nullptr);
    } else {
      expect_type<T>(a);
      expect_shape(a, {b.batch, net.n_outputs(h)});
      b.dense.push_back(a.data<T>());
      b.labels.push_back(nullptr);
    }
  }
  b.sw = read_optional(sw_o, "sample_weight");
  if (b.sw) {
    expect_type<T>(*b.sw);
    expect_shape(*b.sw, {b.batch});
  }
  std::vector<const DevArray*> all{&b.X};
  for (const DevArray& a : b.ys) all.push_back(&a);
  if (b.sw) all.push_back(&*b.sw);
  for (const DevArray* a : extra) all.push_back(a);
  b.stream = prepare(stream_o, all);  // set on the Network under its mutex (locked)
  return b;
}

template <class T>
const T* sw_ptr(const Batch<T>& b) {
  return b.sw ? b.sw->template data<T>() : nullptr;
}

std::uintptr_t addr(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p);
}

template <class T>
void bind_cuda_network(py::module_& m, const char* name) {
  using Net = cuda::CudaNetwork<T>;
  py::class_<Net> cls(m, name);
  cls.def(py::init<index_t, std::vector<LayerSpec>, std::vector<HeadSpec>, std::uint64_t>(),
          py::arg("n_in"), py::arg("trunk"), py::arg("heads"), py::arg("seed"));
  bind_network_plan<Net>(cls);
  cls.def_property_readonly("device", &Net::device)
      .def_property(
          "use_graphs", [](const Net& n) { return locked(n, [&] { return n.use_graphs(); }); },
          [](Net& n, bool on) { locked(n, [&] { n.set_use_graphs(on); }); })
      .def_property_readonly("n_graphs",
                             [](const Net& n) { return locked(n, [&] { return n.n_graphs(); }); })
      .def_property(
          "precision", [](const Net& n) { return locked(n, [&] { return n.precision(); }); },
          [](Net& n, int p) { locked(n, [&] { n.set_precision(p); }); })
      .def("params", [](Net& n) { return py::make_tuple(addr(n.params()), n.n_params()); })
      .def("grads", [](Net& n) { return py::make_tuple(addr(n.grads()), n.n_params()); })
      .def("buffers", [](Net& n) { return py::make_tuple(addr(n.buffers()), n.n_buffers()); })
      .def("opt_state",
           [](Net& n) {
             // set_optimizer reallocates the state: its address is read under the mutex
             std::uintptr_t p = 0;
             index_t size = 0;
             locked(n, [&] {
               p = addr(n.opt_state());
               size = n.n_opt_state();
             });
             return py::make_tuple(p, size);
           })
      .def("loss_slot", [](Net& n) { return addr(n.loss_slot()); })
      .def(
          "forward",
          [](Net& n, py::object X_o, py::list outs, bool training, py::object stream_o) {
            check_device(n);
            const DevArray X = read_x(n, X_o);
            FM_CHECK(static_cast<int>(outs.size()) == n.n_heads(), "out: expected ", n.n_heads(),
                     " output array(s)");
            std::vector<DevArray> o;
            std::vector<const DevArray*> all{&X};
            std::vector<T*> ptrs;
            o.reserve(outs.size());
            for (int h = 0; h < n.n_heads(); ++h) {
              o.push_back(read_array(outs[h], "out"));
              expect_type<T>(o.back());
              expect_shape(o.back(), {X.dim(0), n.n_outputs(h)});
              expect_writable(o.back());
              all.push_back(&o.back());
              ptrs.push_back(o.back().template data<T>());
            }
            const cudaStream_t stream = prepare(stream_o, all);
            locked(n, [&] {
              n.set_stream(stream);
              n.forward(X.data<T>(), X.dim(0), ptrs, training);
            });
          },
          py::arg("X"), py::arg("out"), py::arg("training") = false, py::arg("stream") = py::none())
      .def(
          "train_step",
          [](Net& n, py::object X_o, py::list ys, py::object sw_o, double lr, bool sync,
             py::object stream_o) {
            Batch<T> b = read_batch(n, X_o, ys, sw_o, stream_o);
            return locked(n, [&] {
              n.set_stream(b.stream);
              return n.train_step(b.X.template data<T>(), b.batch, b.dense, b.labels, sw_ptr(b), lr,
                                  sync);
            });
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("lr"),
          py::arg("sync") = true, py::arg("stream") = py::none())
      .def(
          "compute_gradients",
          [](Net& n, py::object X_o, py::list ys, py::object sw_o, py::object dx_o,
             py::object stream_o) {
            std::optional<DevArray> dx = read_optional(dx_o, "dX");
            std::vector<const DevArray*> extra;
            if (dx) extra.push_back(&*dx);
            Batch<T> b = read_batch(n, X_o, ys, sw_o, stream_o, extra);
            if (dx) {
              expect_type<T>(*dx);
              expect_shape(*dx, {b.batch, n.n_in()});
              expect_writable(*dx);
            }
            std::vector<double> per_head;
            const double loss = locked(n, [&] {
              n.set_stream(b.stream);
              return n.compute_gradients(b.X.template data<T>(), b.batch, b.dense, b.labels,
                                         sw_ptr(b), dx ? dx->template data<T>() : nullptr,
                                         &per_head);
            });
            return py::make_tuple(loss, per_head);
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight") = py::none(),
          py::arg("dX") = py::none(), py::arg("stream") = py::none())
      .def(
          "apply_gradients",
          [](Net& n, double lr, py::object stream_o) {
            check_device(n);
            const cudaStream_t stream = prepare(stream_o, {});
            locked(n, [&] {
              n.set_stream(stream);
              n.train_step_update_only(lr);
            });
          },
          py::arg("lr"), py::arg("stream") = py::none())
      .def(
          "evaluate",
          [](Net& n, py::object X_o, py::list ys, py::object sw_o, py::object stream_o) {
            Batch<T> b = read_batch(n, X_o, ys, sw_o, stream_o);
            std::vector<double> per_head;
            const double loss = locked(n, [&] {
              n.set_stream(b.stream);
              return n.evaluate(b.X.template data<T>(), b.batch, b.dense, b.labels, sw_ptr(b),
                                &per_head);
            });
            return py::make_tuple(loss, per_head);
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight") = py::none(),
          py::arg("stream") = py::none())
      .def("layer_output",
           [](Net& n, int layer) {
             std::uintptr_t p = 0;
             index_t rows = 0;
             locked(n, [&] {
               p = addr(n.layer_output(layer));
               rows = n.last_batch();
             });
             return py::make_tuple(p, rows, n.layer_width(layer));
           })
      .def("layer_grad", [](Net& n, int layer) {
        std::uintptr_t p = 0;
        index_t rows = 0;
        locked(n, [&] {
          p = addr(n.layer_grad(layer));
          rows = n.grad_batch();
        });
        return py::make_tuple(p, rows, n.layer_width(layer));
      });
}

}  // namespace

FM_BINDINGS(cuda_network) {
  // LayerSpec / HeadSpec are fusedmlp._core's classes (imported first by fusedmlp).
  py::module_::import("fusedmlp._core");
  bind_cuda_network<float>(m, "CudaNetwork32");
  bind_cuda_network<double>(m, "CudaNetwork64");
}

}  // namespace fm::bindings
