// Bindings of the CPU Network (csrc/network): Network32 / Network64 in _core, the one binding
// body of bindings/network_common.h over host memory (HostMem): NumPy arrays in, preallocated
// NumPy outputs, arenas as NumPy views that keep the Network alive (no copies).
#include "bindings/arrays.h"
#include "bindings/common.h"
#include "bindings/network_common.h"
#include "network/cpu_backend.h"

namespace fm::bindings {

// The host runs every call synchronously: no stream, no graphs, float32 GEMM operands only.
template <class T>
struct NetTraits<Network<T, CpuBackend>> {
  using Net = Network<T, CpuBackend>;
  static int device(const Net&) { return -1; }
  static void check_device(const Net&) {}
  static void set_stream(Net&, HostMem::Stream) {}
  static double train_step(Net& n, const T* X, index_t batch, const std::vector<const T*>& target,
                           const std::vector<const std::int32_t*>& labels, const T* w, double lr,
                           bool /*sync: the host step always returns its loss*/) {
    return n.train_step(X, batch, target, labels, w, lr);
  }
  static bool use_graphs(const Net&) { return false; }
  static void set_use_graphs(Net&, bool on) {
    FM_CHECK(!on, "use_graphs: expected False (the CPU Network runs no CUDA graphs)");
  }
  static int n_graphs(const Net&) { return 0; }
  static int precision(const Net&) { return 0; }
  static void set_precision(Net&, int p) {
    FM_CHECK(p == 0, "precision: expected 0 (float32: mixed precision runs on the GPU), got ", p);
  }
};

FM_BINDINGS(network) {
  py::class_<LayerSpec>(m, "LayerSpec")
      .def(py::init<>())
      .def_readwrite("kind", &LayerSpec::kind)
      .def_readwrite("units", &LayerSpec::units)
      .def_readwrite("use_bias", &LayerSpec::use_bias)
      .def_readwrite("act", &LayerSpec::act)
      .def_readwrite("alpha", &LayerSpec::alpha)
      .def_readwrite("a", &LayerSpec::a)
      .def_readwrite("b", &LayerSpec::b)
      .def_readwrite("c", &LayerSpec::c)
      .def_readwrite("d", &LayerSpec::d)
      .def_readwrite("lower", &LayerSpec::lower)
      .def_readwrite("upper", &LayerSpec::upper)
      .def_readwrite("hinges", &LayerSpec::hinges)
      .def_readwrite("rate", &LayerSpec::rate)
      .def_readwrite("momentum", &LayerSpec::momentum)
      .def_readwrite("eps", &LayerSpec::eps)
      .def_readwrite("affine", &LayerSpec::affine)
      .def_readwrite("init_from_batch", &LayerSpec::init_from_batch)
      .def_readwrite("max_norm", &LayerSpec::max_norm)
      .def_readwrite("decay_bias", &LayerSpec::decay_bias);
  py::class_<HeadSpec>(m, "HeadSpec")
      .def(py::init<>())
      .def_readwrite("layers", &HeadSpec::layers)
      .def_readwrite("loss", &HeadSpec::loss)
      .def_readwrite("weight", &HeadSpec::weight)
      .def_readwrite("label_smoothing", &HeadSpec::label_smoothing)
      .def_readwrite("smoothing_uniform_k", &HeadSpec::smoothing_uniform_k)
      .def_readwrite("half", &HeadSpec::half);
  bind_network<Network<float, CpuBackend>, HostMem>(m, "Network32");
  bind_network<Network<double, CpuBackend>, HostMem>(m, "Network64");
}

}  // namespace fm::bindings
