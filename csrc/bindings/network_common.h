// Bindings shared by the CPU and GPU Network classes (core_network.cpp, cuda_network.cpp): the
// plan, the optimizer and loss configuration, freezing, and the step counters. The arena views
// and the data-carrying calls differ per backend and stay in each file.
#pragma once

#include <vector>

#include "bindings/common.h"
#include "network/network.h"

namespace fm::bindings {

template <class Net, class Cls>
void bind_network_plan(Cls& cls) {
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
      .def("set_optimizer", &Net::set_optimizer)
      .def("set_head_loss", &Net::set_head_loss, py::arg("head"), py::arg("loss"),
           py::arg("weight"), py::arg("label_smoothing"), py::arg("smoothing_uniform_k"),
           py::arg("half"))
      .def("set_clip_norm", &Net::set_clip_norm)
      .def("set_layer_trainable", &Net::set_layer_trainable, py::arg("layer"), py::arg("trainable"))
      .def("layer_trainable", &Net::layer_trainable, py::arg("layer"))
      .def("set_momentum", &Net::set_momentum, py::arg("momentum"))
      .def("set_decay_scope", &Net::set_decay_scope, py::arg("scope"))
      .def_property("opt_step", &Net::opt_step, &Net::set_opt_step)
      .def_property("rng_step", &Net::rng_step, &Net::set_rng_step)
      .def_property("bn_updates", &Net::bn_updates, &Net::set_bn_updates)
      .def_property_readonly("seed", &Net::seed);
}

}  // namespace fm::bindings
