// Bindings shared by the CPU and GPU Network classes (core_network.cpp, cuda_network.cpp): the
// plan, the optimizer and loss configuration, freezing, and the step counters. The arena views
// and the data-carrying calls differ per backend and stay in each file.
//
// Threads: every call that reads or writes the arenas, the workspaces or the counters runs
// through locked(), which releases the GIL and then takes the Network's mutex. Two Python
// threads using one Network are serialized there (never share a workspace). The order matters:
// a thread waiting for the mutex never holds the GIL, so the thread holding the mutex can
// always take the GIL back afterwards (no GIL/mutex deadlock). Python objects are created
// and read only outside locked(), with the GIL held.
#pragma once

#include <mutex>
#include <utility>
#include <vector>

#include "bindings/common.h"
#include "network/network.h"

namespace fm::bindings {

// fn() with the GIL released and net's mutex held; fn must not touch Python objects.
template <class Net, class F>
decltype(auto) locked(const Net& net, F&& fn) {
  py::gil_scoped_release nogil;
  std::lock_guard<std::mutex> hold(net.mutex());
  return std::forward<F>(fn)();
}

template <class Net, class Cls>
void bind_network_plan(Cls& cls) {
  // n_in, n_heads, n_layers, n_outputs, param_info and seed are fixed at construction: no lock.
  cls.def_property_readonly("n_in", &Net::n_in)
      .def_property_readonly("n_heads", &Net::n_heads)
      .def_property_readonly("n_layers", &Net::n_layers)
      .def("n_outputs", &Net::n_outputs)
      .def("param_info",
           [](const Net& n) {
             py::list out;
             for (const auto& p : n.param_info())
               out.append(py::make_tuple(p.layer, p.name, p.offset, p.rows, p.cols, p.trainable));
             return out;
           })
      .def("set_optimizer",
           [](Net& n, const OptConfig& cfg) { locked(n, [&] { n.set_optimizer(cfg); }); })
      .def(
          "set_head_loss",
          [](Net& n, int head, int loss, double weight, double smoothing, bool uniform_k,
             bool half) {
            locked(n, [&] { n.set_head_loss(head, loss, weight, smoothing, uniform_k, half); });
          },
          py::arg("head"), py::arg("loss"), py::arg("weight"), py::arg("label_smoothing"),
          py::arg("smoothing_uniform_k"), py::arg("half"))
      .def("set_clip_norm", [](Net& n, double c) { locked(n, [&] { n.set_clip_norm(c); }); })
      .def(
          "set_layer_trainable",
          [](Net& n, int layer, bool trainable) {
            locked(n, [&] { n.set_layer_trainable(layer, trainable); });
          },
          py::arg("layer"), py::arg("trainable"))
      .def(
          "layer_trainable",
          [](const Net& n, int layer) {
            return locked(n, [&] { return n.layer_trainable(layer); });
          },
          py::arg("layer"))
      .def(
          "set_momentum", [](Net& n, double m) { locked(n, [&] { n.set_momentum(m); }); },
          py::arg("momentum"))
      .def(
          "set_decay_scope",
          [](Net& n, int scope) { locked(n, [&] { n.set_decay_scope(scope); }); }, py::arg("scope"))
      .def_property(
          "opt_step", [](const Net& n) { return locked(n, [&] { return n.opt_step(); }); },
          [](Net& n, std::int64_t s) { locked(n, [&] { n.set_opt_step(s); }); })
      .def_property(
          "rng_step", [](const Net& n) { return locked(n, [&] { return n.rng_step(); }); },
          [](Net& n, std::uint64_t s) { locked(n, [&] { n.set_rng_step(s); }); })
      .def_property(
          "bn_updates", [](const Net& n) { return locked(n, [&] { return n.bn_updates(); }); },
          [](Net& n, std::int64_t s) { locked(n, [&] { n.set_bn_updates(s); }); })
      .def_property(
          "record_layer_grads",
          [](const Net& n) { return locked(n, [&] { return n.record_layer_grads(); }); },
          [](Net& n, bool on) { locked(n, [&] { n.set_record_layer_grads(on); }); })
      .def_property_readonly("seed", &Net::seed);
}

}  // namespace fm::bindings
