// Bindings of the Network (csrc/network): one class per dtype (Network32, Network64).
// Parameter, gradient, buffer and optimizer-state arenas are exposed as NumPy views that
// keep the Network alive (no copies). Every call that touches the arenas or workspaces runs with
// the GIL released and the Network's mutex held (bindings/network_common.h: locked).
#include "bindings/common.h"
#include "bindings/network_common.h"
#include "network/cpu_backend.h"

namespace fm::bindings {
namespace {

template <class T>
py::array view(Network<T, CpuBackend>& net, T* ptr, index_t n, py::handle owner) {
  return py::array_t<T>({n}, {static_cast<py::ssize_t>(sizeof(T))}, ptr, owner);
}

// Targets for each head: a float array (dense targets) or an int32 array (class labels).
template <class T>
struct Targets {
  std::vector<const T*> dense;
  std::vector<const std::int32_t*> labels;
  std::vector<py::array> keep;  // holds references while the GIL is released
};

template <class T>
Targets<T> parse_targets(Network<T, CpuBackend>& net, const py::list& ys, index_t batch) {
  FM_CHECK(static_cast<int>(ys.size()) == net.n_heads(), "y: expected ", net.n_heads(),
           " target array(s), got ", ys.size());
  Targets<T> t;
  for (int h = 0; h < net.n_heads(); ++h) {
    py::array a = py::cast<py::array>(ys[h]);
    t.keep.push_back(a);
    if (a.dtype().equal(py::dtype::of<std::int32_t>())) {
      const std::int32_t* p = checked_ptr<std::int32_t>(a, "y", 1);
      check_shape(a, "y", {batch});
      t.dense.push_back(nullptr);
      t.labels.push_back(p);
    } else {
      const T* p = checked_ptr<T>(a, "y", 2);
      check_shape(a, "y", {batch, net.n_outputs(h)});
      t.dense.push_back(p);
      t.labels.push_back(nullptr);
    }
  }
  return t;
}

template <class T>
const T* parse_x(Network<T, CpuBackend>& net, const py::array& X) {
  const T* p = checked_ptr<T>(X, "X", 2);
  FM_CHECK(X.shape(1) == net.n_in(), "X: expected ", net.n_in(), " features, got ", X.shape(1));
  FM_CHECK(X.shape(0) >= 1, "X: expected at least one row");
  return p;
}

template <class T>
const T* parse_weight(const py::object& sw, index_t batch) {
  const T* p = checked_ptr_or_null<T>(sw, "sample_weight", 1);
  if (p) check_shape(py::cast<py::array>(sw), "sample_weight", {batch});
  return p;
}

// A copy of a (batch, width) matrix the Network wrote (layer outputs and gradients), taken
// under the Network's mutex and handed to NumPy afterwards with the GIL held.
template <class T, class F>
py::array_t<T> copied_matrix(const Network<T, CpuBackend>& n, F&& locate) {
  std::vector<T> copy;
  index_t rows = 0, cols = 0;
  locked(n, [&] {
    const T* src = locate(rows, cols);
    copy.assign(src, src + rows * cols);
  });
  py::array_t<T> out({rows, cols});
  std::copy(copy.begin(), copy.end(), out.mutable_data());
  return out;
}

template <class T>
void bind_network(py::module_& m, const char* name) {
  using Net = Network<T, CpuBackend>;
  py::class_<Net> cls(m, name);
  cls.def(py::init<index_t, std::vector<LayerSpec>, std::vector<HeadSpec>, std::uint64_t>(),
          py::arg("n_in"), py::arg("trunk"), py::arg("heads"), py::arg("seed"));
  bind_network_plan<Net>(cls);
  // The params, grads and buffers arenas are allocated once by the constructor; the optimizer
  // state is reallocated by set_optimizer, so its address is read under the mutex.
  cls.def("params",
          [](py::object self) {
            Net& n = self.cast<Net&>();
            return view(n, n.params(), n.n_params(), self);
          })
      .def("grads",
           [](py::object self) {
             Net& n = self.cast<Net&>();
             return view(n, n.grads(), n.n_params(), self);
           })
      .def("buffers",
           [](py::object self) {
             Net& n = self.cast<Net&>();
             return view(n, n.buffers(), n.n_buffers(), self);
           })
      .def("opt_state",
           [](py::object self) {
             Net& n = self.cast<Net&>();
             T* p = nullptr;
             index_t size = 0;
             locked(n, [&] {
               p = n.opt_state();
               size = n.n_opt_state();
             });
             return view(n, p, size, self);
           })
      .def(
          "forward",
          [](Net& n, py::array X, bool training) {
            const T* xp = parse_x(n, X);
            const index_t batch = X.shape(0);
            py::list outs;
            std::vector<T*> ptrs;
            for (int h = 0; h < n.n_heads(); ++h) {
              py::array_t<T> o({batch, n.n_outputs(h)});
              ptrs.push_back(o.mutable_data());
              outs.append(o);
            }
            locked(n, [&] { n.forward(xp, batch, ptrs, training); });
            return outs;
          },
          py::arg("X"), py::arg("training") = false)
      .def(
          "train_step",
          [](Net& n, py::array X, py::list ys, py::object sw, double lr) {
            const T* xp = parse_x(n, X);
            const index_t batch = X.shape(0);
            Targets<T> t = parse_targets(n, ys, batch);
            const T* wp = parse_weight<T>(sw, batch);
            return locked(n, [&] { return n.train_step(xp, batch, t.dense, t.labels, wp, lr); });
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("lr"))
      .def(
          "train_step_indexed",
          [](Net& n, py::array X, py::list ys, py::object sw, py::array idx, double lr) {
            // Trainer.fit's step: X, ys and sw are the whole training set, idx the batch's rows
            const T* xp = parse_x(n, X);
            const index_t n_rows = X.shape(0);
            Targets<T> t = parse_targets(n, ys, n_rows);
            const T* wp = parse_weight<T>(sw, n_rows);
            FM_CHECK(idx.dtype().equal(py::dtype::of<std::int64_t>()),
                     "idx: expected an int64 array of row indices");
            const std::int64_t* ip = checked_ptr<std::int64_t>(idx, "idx", 1);
            const index_t batch = idx.shape(0);
            return locked(n, [&] {
              return n.train_step_indexed(xp, n_rows, ip, batch, t.dense, t.labels, wp, lr);
            });
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("idx"), py::arg("lr"))
      .def(
          "reset_step_stats",
          [](Net& n, index_t n_rows, std::vector<int> mode, std::vector<double> threshold,
             std::vector<bool> keep_outputs) {
            locked(n, [&] { n.reset_step_stats(n_rows, mode, threshold, keep_outputs); });
          },
          py::arg("n_rows"), py::arg("mode"), py::arg("threshold"), py::arg("keep_outputs"))
      .def("step_stats",
           [](py::object self) {
             // (loss_sum, rows, correct per head, kept outputs per head: (n_rows, k) views or None)
             Net& n = self.cast<Net&>();
             typename Net::StepStats stats;
             std::vector<std::int64_t> correct;
             std::vector<const T*> kept;
             locked(n, [&] {
               stats = n.step_stats();
               correct = n.step_correct();
               for (int h = 0; h < static_cast<int>(correct.size()); ++h)
                 kept.push_back(n.step_outputs(h));
             });
             py::list outs;
             for (size_t h = 0; h < kept.size(); ++h) {
               if (!kept[h]) {
                 outs.append(py::none());
                 continue;
               }
               const index_t k = n.n_outputs(static_cast<int>(h));
               outs.append(py::array_t<T>({stats.n_rows, k},
                                          {static_cast<py::ssize_t>(k * sizeof(T)),
                                           static_cast<py::ssize_t>(sizeof(T))},
                                          kept[h], self));
             }
             return py::make_tuple(stats.loss_sum, stats.rows, correct, outs);
           })
      .def(
          "evaluate_chunked",
          [](Net& n, py::array X, py::list ys, py::object sw, index_t chunk, bool want_outputs) {
            // Loss (and outputs) over X in chunks of `chunk` rows, in one call: the loss is the
            // row-weighted mean of the chunks' losses.
            FM_CHECK(chunk >= 1, "chunk: expected >= 1, got ", chunk);
            const T* xp = parse_x(n, X);
            const index_t rows = X.shape(0);
            Targets<T> t = parse_targets(n, ys, rows);
            const T* wp = parse_weight<T>(sw, rows);
            const int nh = n.n_heads();
            py::list outs;
            std::vector<T*> optr(nh, nullptr);
            if (want_outputs)
              for (int h = 0; h < nh; ++h) {
                py::array_t<T> a({rows, n.n_outputs(h)});
                optr[h] = a.mutable_data();
                outs.append(a);
              }
            std::vector<double> per_head(nh, 0.0);
            const double total = locked(n, [&] {
              double sum = 0.0;
              std::vector<double> part;
              for (index_t s = 0; s < rows; s += chunk) {
                const index_t b = std::min(chunk, rows - s);
                std::vector<const T*> dense(nh, nullptr);
                std::vector<const std::int32_t*> labels(nh, nullptr);
                std::vector<T*> out(nh, nullptr);
                for (int h = 0; h < nh; ++h) {
                  const index_t k = n.n_outputs(h);
                  if (t.dense[h]) dense[h] = t.dense[h] + s * k;
                  if (t.labels[h]) labels[h] = t.labels[h] + s;
                  if (optr[h]) out[h] = optr[h] + s * k;
                }
                sum += n.evaluate(xp + s * n.n_in(), b, dense, labels, wp ? wp + s : nullptr, &part,
                                  &out) *
                       static_cast<double>(b);
                for (int h = 0; h < nh; ++h) per_head[h] += part[h] * static_cast<double>(b);
              }
              return sum / static_cast<double>(rows);
            });
            for (auto& p : per_head) p /= static_cast<double>(rows);
            return py::make_tuple(total, per_head, want_outputs ? py::object(outs) : py::none());
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("chunk"),
          py::arg("want_outputs"))
      .def(
          "predict",
          [](Net& n, py::array X, index_t chunk) {
            // The inference-mode outputs of every head over X, in chunks, in one call.
            FM_CHECK(chunk >= 1, "batch_size: expected >= 1, got ", chunk);
            const T* xp = parse_x(n, X);
            const index_t rows = X.shape(0);
            const int nh = n.n_heads();
            py::list outs;
            std::vector<T*> optr(nh);
            for (int h = 0; h < nh; ++h) {
              py::array_t<T> a({rows, n.n_outputs(h)});
              optr[h] = a.mutable_data();
              outs.append(a);
            }
            locked(n, [&] {
              std::vector<T*> out(nh);
              for (index_t s = 0; s < rows; s += chunk) {
                for (int h = 0; h < nh; ++h) out[h] = optr[h] + s * n.n_outputs(h);
                n.forward(xp + s * n.n_in(), std::min(chunk, rows - s), out, false);
              }
            });
            return outs;
          },
          py::arg("X"), py::arg("batch_size"))
      .def(
          "compute_gradients",
          [](Net& n, py::array X, py::list ys, py::object sw, bool want_dx) {
            const T* xp = parse_x(n, X);
            const index_t batch = X.shape(0);
            Targets<T> t = parse_targets(n, ys, batch);
            const T* wp = parse_weight<T>(sw, batch);
            py::object dx = py::none();
            T* dxp = nullptr;
            if (want_dx) {
              py::array_t<T> a({batch, n.n_in()});
              dxp = a.mutable_data();
              dx = a;
            }
            std::vector<double> per_head;
            const double loss = locked(n, [&] {
              return n.compute_gradients(xp, batch, t.dense, t.labels, wp, dxp, &per_head);
            });
            return py::make_tuple(loss, dx, per_head);
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight") = py::none(),
          py::arg("want_dx") = false)
      .def("apply_gradients",
           [](Net& n, double lr) { locked(n, [&] { n.train_step_update_only(lr); }); })
      .def(
          "evaluate",
          [](Net& n, py::array X, py::list ys, py::object sw) {
            const T* xp = parse_x(n, X);
            const index_t batch = X.shape(0);
            Targets<T> t = parse_targets(n, ys, batch);
            const T* wp = parse_weight<T>(sw, batch);
            std::vector<double> per_head;
            const double loss =
                locked(n, [&] { return n.evaluate(xp, batch, t.dense, t.labels, wp, &per_head); });
            return py::make_tuple(loss, per_head);
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight") = py::none())
      .def("layer_output",
           [](Net& n, int layer) {
             return copied_matrix(n, [&](index_t& rows, index_t& cols) {
               const T* src = n.layer_output(layer);
               rows = n.last_batch();
               cols = n.layer_width(layer);
               return src;
             });
           })
      .def("layer_grad", [](Net& n, int layer) {
        // dL/d(output of layer) from the last compute_gradients run with record_layer_grads on
        return copied_matrix(n, [&](index_t& rows, index_t& cols) {
          const T* src = n.layer_grad(layer);
          rows = n.grad_batch();
          cols = n.layer_width(layer);
          return src;
        });
      });
}

}  // namespace

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
  bind_network<float>(m, "Network32");
  bind_network<double>(m, "Network64");
}

}  // namespace fm::bindings
