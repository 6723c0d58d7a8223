// Bindings of the GPU Network (csrc/network/cuda_backend.h): CudaNetwork32 / CudaNetwork64 in
// _cuda, the one binding body of bindings/network_common.h over device memory (DevMem): inputs are
// device arrays (__cuda_array_interface__: CuPy, or PyTorch/JAX through fusedmlp._backend's DLPack
// conversion) checked for shape, dtype and device; every call runs on the `stream` argument, else
// the inputs' stream, else the legacy default stream, set on the Network under its mutex. Arenas
// and layer outputs come back as DeviceView objects (fusedmlp._backend.cuda.wrap: CuPy views).
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "bindings/common.h"
#include "bindings/cuda_arrays.h"
#include "bindings/network_common.h"
#include "network/cuda_backend.h"

namespace fm::bindings {

template <class T>
struct NetTraits<cuda::CudaNetwork<T>> {
  using Net = cuda::CudaNetwork<T>;
  static int device(const Net& n) { return n.device(); }
  static void check_device(const Net& n) {
    int dev = 0;
    FM_CUDA_CHECK(cudaGetDevice(&dev));
    FM_CHECK(dev == n.device(), "device: the network lives on CUDA device ", n.device(),
             " but the current device is ", dev, "; mixing devices is an error");
  }
  static void set_stream(Net& n, DevMem::Stream s) { n.set_stream(s); }
  static double train_step(Net& n, const T* X, index_t batch, const std::vector<const T*>& target,
                           const std::vector<const std::int32_t*>& labels, const T* w, double lr,
                           bool sync) {
    return n.train_step(X, batch, target, labels, w, lr, sync);
  }
  static bool use_graphs(const Net& n) { return n.use_graphs(); }
  static void set_use_graphs(Net& n, bool on) { n.set_use_graphs(on); }
  static int n_graphs(const Net& n) { return n.n_graphs(); }
  static int precision(const Net& n) { return n.precision(); }
  static void set_precision(Net& n, int p) { n.set_precision(p); }
};

FM_BINDINGS(cuda_network) {
  // LayerSpec / HeadSpec are fusedmlp._core's classes (imported first by fusedmlp).
  py::module_::import("fusedmlp._core");
  bind_network<cuda::CudaNetwork<float>, DevMem>(m, "CudaNetwork32");
  bind_network<cuda::CudaNetwork<double>, DevMem>(m, "CudaNetwork64");
}

}  // namespace fm::bindings
