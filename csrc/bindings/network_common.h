// The one binding body of the Network classes: _core.Network32/64 (core_network.cpp, host
// memory) and _cuda.CudaNetwork32/64 (cuda_network.cpp, device memory) are bind_network<Net, Mem>
// with the memory policy of bindings/arrays.h (HostMem) or bindings/cuda_arrays.h (DevMem), so
// both classes have the same methods with the same arguments:
//   - every array argument is read by Mem::read into an Arr record and checked here (errors name
//     the argument: "X: ...", "y: ...", "out: ...");
//   - outputs are preallocated by the caller (fusedmlp._backend: be.empty) and passed in;
//   - arenas, the loss slot, layer outputs and kept outputs come back as views (Mem::view) that
//     keep the Network's Python object alive, never as copies;
//   - every data-carrying call takes stream=None last (Mem::prepare; the host ignores it).
// What differs per class is a small trait, NetTraits<Net>, specialized next to each module:
// device(), check_device(), set_stream(), train_step(sync) and the GPU-only settings
// use_graphs / n_graphs / precision (constants on the CPU).
//
// Threads: every call that reads or writes the arenas, the workspaces or the counters runs
// through locked(), which releases the GIL and then takes the Network's mutex. Two Python
// threads using one Network are serialized there (never share a workspace). The order matters:
// a thread waiting for the mutex never holds the GIL, so the thread holding the mutex can
// always take the GIL back afterwards (no GIL/mutex deadlock). Python objects are created
// and read only outside locked(), with the GIL held.
#pragma once

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "bindings/arrays.h"
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

// Specialized per Network class (core_network.cpp, cuda_network.cpp):
//   static int device(const Net&)                      -1 on the CPU
//   static void check_device(const Net&)               the current device is the network's
//   static void set_stream(Net&, typename Mem::Stream) (called under the mutex)
//   static double train_step(Net&, X, batch, dense, labels, weight, lr, sync)
//   static bool use_graphs(const Net&); static void set_use_graphs(Net&, bool)
//   static int n_graphs(const Net&)
//   static int precision(const Net&); static void set_precision(Net&, int)
template <class Net>
struct NetTraits;

// The element type of a Network<T, B> (or of a class derived from one).
template <class T, class B>
T scalar_of(const Network<T, B>*);
template <class Net>
using scalar_t = decltype(scalar_of(static_cast<const Net*>(nullptr)));

// The arrays of one data-carrying call, read and checked with the GIL held. `keep` holds the
// Python objects whose memory the pointers reference until the call returns (the caller's list
// of targets may change while the GIL is released).
template <class T>
struct Call {
  Arr X;
  std::vector<Arr> ys, outs;
  std::optional<Arr> sw, dx, idx;
  std::vector<const T*> dense;
  std::vector<const std::int32_t*> labels;
  std::vector<T*> out;
  std::vector<py::object> keep;

  index_t rows() const { return X.dim(0); }
  const T* x() const { return X.template data<T>(); }
  const T* weight() const { return sw ? sw->template data<T>() : nullptr; }
  std::vector<const Arr*> all() const {
    std::vector<const Arr*> a;
    if (!X.shape.empty()) a.push_back(&X);  // calls without data (apply_gradients) read no X
    for (const Arr& y : ys) a.push_back(&y);
    for (const Arr& o : outs) a.push_back(&o);
    for (const auto* o : {&sw, &dx, &idx})
      if (*o) a.push_back(&**o);
    return a;
  }
};

// Memory of the Network: where, and its shape.
template <class U>
struct Located {
  const U* ptr;
  std::vector<index_t> shape;
};

// A list (or tuple) of one array per head.
inline py::list as_list(const py::object& obj, const char* name, int n_heads, const char* what) {
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
    throw TypeError(detail::concat(
        name, ": expected a list of ", n_heads, " ", what, " array(s) (one per head), got ",
        std::string(py::str(py::type::handle_of(obj).attr("__name__")))));
  py::list l(obj);
  FM_CHECK(static_cast<int>(l.size()) == n_heads, name, ": expected a list of ", n_heads, " ", what,
           " array(s) (one per head), got ", l.size());
  return l;
}

template <class Net, class Mem>
struct NetworkCall {
  using T = scalar_t<Net>;

  static void read_x(Call<T>& c, const Net& n, const py::object& X) {
    c.X = Mem::read(X, "X");
    expect_2d(c.X);
    expect_type<T>(c.X);
    FM_CHECK(c.X.dim(1) == n.n_in(), "X: expected ", n.n_in(), " features, got ", c.X.dim(1));
  }

  // One entry of a per-head list, read into `into` and kept alive; may_be_labels: int32 class
  // labels are read as such.
  static const Arr& read_entry(Call<T>& c, std::vector<Arr>& into, const py::object& obj,
                               const char* name, bool may_be_labels) {
    c.keep.push_back(obj);
    into.push_back(Mem::read(obj, name, may_be_labels && Mem::is_labels(obj)));
    return into.back();
  }

  // Head h's targets: int32 class labels (rows,) or dense targets (rows, n_outputs(h)).
  static void read_targets(Call<T>& c, const Net& n, const py::object& y_list) {
    const py::list ys = as_list(y_list, "y", n.n_heads(), "target");
    c.ys.reserve(ys.size());
    for (int h = 0; h < n.n_heads(); ++h) {
      const Arr& a = read_entry(c, c.ys, ys[h], "y", true);
      if (a.int32) {
        expect_shape(a, {c.rows()});
        c.labels.push_back(a.data<std::int32_t>());
        c.dense.push_back(nullptr);
      } else {
        expect_type<T>(a);
        expect_shape(a, {c.rows(), n.n_outputs(h)});
        c.dense.push_back(a.data<T>());
        c.labels.push_back(nullptr);
      }
    }
  }

  static void read_weight(Call<T>& c, const py::object& sw) {
    if (sw.is_none()) return;
    c.sw = Mem::read(sw, "sample_weight");
    expect_type<T>(*c.sw);
    expect_shape(*c.sw, {c.rows()});
  }

  // X with its targets and sample weights.
  static Call<T> batch(const Net& n, const py::object& X, const py::object& ys,
                       const py::object& sw) {
    Call<T> c;
    read_x(c, n, X);
    read_targets(c, n, ys);
    read_weight(c, sw);
    return c;
  }

  // One writeable (rows, n_outputs(h)) array per head.
  static void read_outs(Call<T>& c, const Net& n, const py::object& out_list) {
    const py::list outs = as_list(out_list, "out", n.n_heads(), "output");
    c.outs.reserve(outs.size());
    for (int h = 0; h < n.n_heads(); ++h) {
      const Arr& a = read_entry(c, c.outs, outs[h], "out", false);
      expect_type<T>(a);
      expect_shape(a, {c.rows(), n.n_outputs(h)});
      expect_writable(a);
      c.out.push_back(a.template data<T>());
    }
  }

  // fn() with the GIL released, the mutex held and the call's stream set (the network on the
  // current device, the arrays checked by Mem::prepare).
  template <class F>
  static decltype(auto) run(Net& n, const Call<T>& c, const py::object& stream, F&& fn) {
    NetTraits<Net>::check_device(n);
    const auto s = Mem::prepare(stream, c.all());
    return locked(n, [&] {
      NetTraits<Net>::set_stream(n, s);
      return fn();
    });
  }

  // A view of memory the Network owns: locate(n) -> Located, read under the mutex
  // (set_optimizer reallocates the optimizer state; the workspaces move with the batch size).
  template <class U, class F>
  static py::object owned_view(const py::object& self, F&& locate) {
    Net& n = self.cast<Net&>();
    const Located<U> at = locked(n, [&] { return locate(n); });
    return Mem::template view<U>(const_cast<U*>(at.ptr), at.shape, self);
  }

  // An arena: (n.*ptr)() of length (n.*size)().
  template <class P, class S>
  static py::object arena(const py::object& self, P ptr, S size) {
    return owned_view<T>(self, [&](Net& n) { return Located<T>{(n.*ptr)(), {(n.*size)()}}; });
  }

  // Layer `layer`'s (rows, width) matrix of the workspace: locate(n) -> (pointer, rows).
  template <class F>
  static py::object workspace_view(const py::object& self, int layer, F&& locate) {
    return owned_view<T>(self, [&](Net& n) {
      const auto [p, rows] = locate(n);
      return Located<T>{p, {rows, n.layer_width(layer)}};
    });
  }

  // Inference-mode forward (or loss, with targets) over X in chunks of `chunk` rows: the loss
  // is the row-weighted mean of the chunks' losses; outputs (when given) written at their rows.
  static std::pair<double, std::vector<double>> chunked(Net& n, const Call<T>& c, index_t chunk,
                                                        bool with_loss) {
    const int nh = n.n_heads();
    const index_t rows = c.rows();
    double total = 0.0;
    std::vector<double> per_head(nh, 0.0), part;
    for (index_t s = 0; s < rows; s += chunk) {
      const index_t b = std::min(chunk, rows - s);
      std::vector<const T*> dense(nh, nullptr);
      std::vector<const std::int32_t*> labels(nh, nullptr);
      std::vector<T*> out(nh, nullptr);
      for (int h = 0; h < nh; ++h) {
        const index_t k = n.n_outputs(h);
        if (!c.out.empty()) out[h] = c.out[h] + s * k;
        if (with_loss && c.dense[h]) dense[h] = c.dense[h] + s * k;
        if (with_loss && c.labels[h]) labels[h] = c.labels[h] + s;
      }
      const T* x = c.x() + s * n.n_in();
      if (!with_loss) {
        n.forward(x, b, out, false);
        continue;
      }
      const T* w = c.weight() ? c.weight() + s : nullptr;
      total += n.evaluate(x, b, dense, labels, w, &part, &out) * static_cast<double>(b);
      for (int h = 0; h < nh; ++h) per_head[h] += part[h] * static_cast<double>(b);
    }
    total /= static_cast<double>(rows);
    for (auto& p : per_head) p /= static_cast<double>(rows);
    return {total, per_head};
  }
};

template <class Net, class Mem>
void bind_network(py::module_& m, const char* name) {
  using T = scalar_t<Net>;
  using Tr = NetTraits<Net>;
  using C = NetworkCall<Net, Mem>;
  const auto none = py::none();
  py::class_<Net> cls(m, name);
  cls.def(py::init<index_t, std::vector<LayerSpec>, std::vector<HeadSpec>, std::uint64_t>(),
          py::arg("n_in"), py::arg("trunk"), py::arg("heads"), py::arg("seed"));
  bind_network_plan<Net>(cls);
  cls.def_property_readonly("device", [](const Net& n) { return Tr::device(n); })
      .def_property(
          "use_graphs", [](const Net& n) { return locked(n, [&] { return Tr::use_graphs(n); }); },
          [](Net& n, bool on) { locked(n, [&] { Tr::set_use_graphs(n, on); }); })
      .def_property_readonly(
          "n_graphs", [](const Net& n) { return locked(n, [&] { return Tr::n_graphs(n); }); })
      .def_property(
          "precision", [](const Net& n) { return locked(n, [&] { return Tr::precision(n); }); },
          [](Net& n, int p) { locked(n, [&] { Tr::set_precision(n, p); }); });

  // The arenas (1-d views) and the last step's total loss (float64, overwritten by the next step).
  cls.def("params", [](py::object self) { return C::arena(self, &Net::params, &Net::n_params); })
      .def("grads", [](py::object self) { return C::arena(self, &Net::grads, &Net::n_params); })
      .def("buffers",
           [](py::object self) { return C::arena(self, &Net::buffers, &Net::n_buffers); })
      .def("opt_state",
           [](py::object self) { return C::arena(self, &Net::opt_state, &Net::n_opt_state); })
      .def("loss_slot", [](py::object self) {
        return C::template owned_view<double>(
            self, [](Net& n) { return Located<double>{n.loss_slot(), {1}}; });
      });

  cls.def(
         "forward",
         [](Net& n, const py::object& X, const py::object& outs, bool training,
            const py::object& stream) {
           Call<T> c;
           C::read_x(c, n, X);
           C::read_outs(c, n, outs);
           C::run(n, c, stream, [&] { n.forward(c.x(), c.rows(), c.out, training); });
         },
         py::arg("X"), py::arg("out"), py::arg("training") = false, py::arg("stream") = none)
      .def(
          "predict",
          [](Net& n, const py::object& X, const py::object& outs, index_t chunk,
             const py::object& stream) {
            // The inference-mode outputs of every head over X, in chunks, in one call.
            FM_CHECK(chunk >= 1, "batch_size: expected >= 1, got ", chunk);
            Call<T> c;
            C::read_x(c, n, X);
            C::read_outs(c, n, outs);
            C::run(n, c, stream, [&] { C::chunked(n, c, chunk, false); });
          },
          py::arg("X"), py::arg("out"), py::arg("batch_size"), py::arg("stream") = none)
      .def(
          "train_step",
          [](Net& n, const py::object& X, const py::object& ys, const py::object& sw, double lr,
             bool sync, const py::object& stream) {
            const Call<T> c = C::batch(n, X, ys, sw);
            return C::run(n, c, stream, [&] {
              return Tr::train_step(n, c.x(), c.rows(), c.dense, c.labels, c.weight(), lr, sync);
            });
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("lr"),
          py::arg("sync") = true, py::arg("stream") = none)
      .def(
          "train_step_indexed",
          [](Net& n, const py::object& X, const py::object& ys, const py::object& sw,
             const py::object& idx, double lr, const py::object& stream) {
            // Trainer.fit's step: X, ys and sw are the whole training set, idx the batch's rows
            Call<T> c = C::batch(n, X, ys, sw);
            c.idx = Mem::read_index(idx, "idx");
            FM_CHECK(c.idx->shape.size() == 1 && c.idx->size() >= 1, "idx: expected a non-empty",
                     " 1-d int64 array of row indices, got shape ", shape_str(c.idx->shape));
            return C::run(n, c, stream, [&] {
              return n.train_step_indexed(c.x(), c.rows(), c.idx->template data<std::int64_t>(),
                                          c.idx->size(), c.dense, c.labels, c.weight(), lr);
            });
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("idx"), py::arg("lr"),
          py::arg("stream") = none)
      .def(
          "reset_step_stats",
          [](Net& n, index_t n_rows, const std::vector<int>& mode,
             const std::vector<double>& threshold, const std::vector<bool>& keep_outputs,
             const py::object& stream) {
            C::run(n, Call<T>{}, stream,
                   [&] { n.reset_step_stats(n_rows, mode, threshold, keep_outputs); });
          },
          py::arg("n_rows"), py::arg("mode"), py::arg("threshold"), py::arg("keep_outputs"),
          py::arg("stream") = none)
      .def(
          "step_stats",
          [](py::object self, const py::object& stream) {
            // (loss_sum, rows, correct per head, kept outputs per head: (n_rows, k) views or None)
            Net& n = self.cast<Net&>();
            typename Net::StepStats stats;
            std::vector<std::int64_t> correct;
            std::vector<const T*> kept;
            C::run(n, Call<T>{}, stream, [&] {
              stats = n.step_stats();
              correct = n.step_correct();
              for (int h = 0; h < static_cast<int>(correct.size()); ++h)
                kept.push_back(n.step_outputs(h));
            });
            py::list outs;
            for (size_t h = 0; h < kept.size(); ++h)
              outs.append(kept[h] ? Mem::template view<T>(
                                        const_cast<T*>(kept[h]),
                                        {stats.n_rows, n.n_outputs(static_cast<int>(h))}, self)
                                  : py::none());
            return py::make_tuple(stats.loss_sum, stats.rows, correct, outs);
          },
          py::arg("stream") = none)
      .def(
          "evaluate",
          [](Net& n, const py::object& X, const py::object& ys, const py::object& sw,
             const py::object& stream) {
            const Call<T> c = C::batch(n, X, ys, sw);
            std::vector<double> per_head;
            const double loss = C::run(n, c, stream, [&] {
              return n.evaluate(c.x(), c.rows(), c.dense, c.labels, c.weight(), &per_head);
            });
            return py::make_tuple(loss, per_head);
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight") = none, py::arg("stream") = none)
      .def(
          "evaluate_chunked",
          [](Net& n, const py::object& X, const py::object& ys, const py::object& sw, index_t chunk,
             const py::object& outs, const py::object& stream) {
            // Loss (and outputs, when `out` is a list) over X in chunks of `chunk` rows.
            FM_CHECK(chunk >= 1, "chunk: expected >= 1, got ", chunk);
            Call<T> c = C::batch(n, X, ys, sw);
            if (!outs.is_none()) C::read_outs(c, n, outs);
            const auto [loss, per_head] =
                C::run(n, c, stream, [&] { return C::chunked(n, c, chunk, true); });
            return py::make_tuple(loss, per_head);
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight"), py::arg("chunk"),
          py::arg("out") = none, py::arg("stream") = none)
      .def(
          "compute_gradients",
          [](Net& n, const py::object& X, const py::object& ys, const py::object& sw,
             const py::object& dX, const py::object& stream) {
            Call<T> c = C::batch(n, X, ys, sw);
            if (!dX.is_none()) {
              c.dx = Mem::read(dX, "dX");
              expect_type<T>(*c.dx);
              expect_shape(*c.dx, {c.rows(), n.n_in()});
              expect_writable(*c.dx);
            }
            std::vector<double> per_head;
            const double loss = C::run(n, c, stream, [&] {
              return n.compute_gradients(c.x(), c.rows(), c.dense, c.labels, c.weight(),
                                         c.dx ? c.dx->template data<T>() : nullptr, &per_head);
            });
            return py::make_tuple(loss, per_head);
          },
          py::arg("X"), py::arg("y"), py::arg("sample_weight") = none, py::arg("dX") = none,
          py::arg("stream") = none)
      .def(
          "apply_gradients",
          [](Net& n, double lr, const py::object& stream) {
            // whether the update ran (the skip rule: a non-finite gradient leaves everything)
            return C::run(n, Call<T>{}, stream, [&] { return n.train_step_update_only(lr); });
          },
          py::arg("lr"), py::arg("stream") = none);

  // Layer l's output of the last forward pass / its recorded gradient (dL/d(output), from the
  // last compute_gradients with record_layer_grads on): (rows, width) views, valid until the
  // next call that runs the network. A pass-through layer's output is its input (the caller
  // keeps that array alive while it reads the view).
  cls.def(
         "layer_output",
         [](py::object self, int layer) {
           return C::workspace_view(self, layer, [&](const Net& n) {
             return std::make_pair(n.layer_output(layer), n.last_batch());
           });
         },
         py::arg("layer"))
      .def(
          "layer_grad",
          [](py::object self, int layer) {
            return C::workspace_view(self, layer, [&](const Net& n) {
              return std::make_pair(n.layer_grad(layer), n.grad_batch());
            });
          },
          py::arg("layer"));
}

}  // namespace fm::bindings
