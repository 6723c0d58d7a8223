// The CPU Network: the generic plan and step (network/network_impl.h) over the CPU backend.
#include "network/cpu_backend.h"
#include "network/network_impl.h"

namespace fm {

template class Network<float, CpuBackend>;
template class Network<double, CpuBackend>;

}  // namespace fm
