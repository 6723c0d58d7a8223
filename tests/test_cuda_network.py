"""The GPU Network (device="cuda": csrc/network/cuda_backend.cu, bound as _cuda.CudaNetwork32/64)
against the CPU Network on the same weights and batches: the fused step's loss curve and final
parameters for many layer stacks (dense with every fused-epilogue path, batch norm, dropout with
the shared Philox masks, noise, RReLU, maxout, softmax, RBF, two heads) and optimizers
(elementwise rules through the CUDA-graph replay, Adafactor eagerly), CUDA-graph replay equal to
eager launches, sync=False equal to sync=True, the non-finite-loss skip, Trainer.fit with the
data on the device, CuPy / NumPy / DLPack (PyTorch) inputs, checkpoints moving between devices,
and bad input. The GPU cases carry the "cuda" mark and are skipped without a device; the
device-independent parts run everywhere. The op kernels on the device are checked in the op
family files (tests/test_activation.py, test_dense.py, ...), the standalone optimizer on CuPy
lists in tests/test_optimizer.py, each parametrized over conftest.DEVICES."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from conftest import CUDA, DEVICES, assert_close, to_host


def _stack(kind: str):
    """(trunk layers, heads or None, loss(es)) of one architecture."""
    if kind == "relu":
        return [fm.Dense(17, activation="relu"), fm.Dense(5)], None, "cross_entropy"
    if kind == "gelu-bn-dropout":
        return (
            [
                fm.Dense(24, activation="gelu_tanh"),
                fm.BatchNorm(),
                fm.Dropout(0.3),
                fm.Dense(9, activation="tanh"),
                fm.Dense(3),
            ],
            None,
            "mse",
        )
    if kind == "rrelu-noise-maxout":
        return (
            [
                fm.GaussianNoise(0.1),
                fm.Dense(20, activation="rrelu"),
                fm.Dense(12),
                fm.Activation("maxout", pieces=3),
                fm.Dense(2),
            ],
            None,
            "binary_cross_entropy",
        )
    if kind == "prelu-softmax":
        layers = [fm.Dense(11, activation="prelu"), fm.Dense(4), fm.Activation("softmax")]
        return layers, None, "mse"
    if kind == "rbf":
        return [fm.RBF(7), fm.Dense(3)], None, "mse"
    if kind == "two-heads":
        return (
            [fm.Dense(16, activation="elu")],
            [[fm.Dense(4)], [fm.Dense(8, activation="sigmoid"), fm.Dense(2)]],
            ["cross_entropy", "mse"],
        )
    raise AssertionError(kind)


KINDS = ["relu", "gelu-bn-dropout", "rrelu-noise-maxout", "prelu-softmax", "rbf", "two-heads"]
OPTIMIZERS = {
    "sgd-nesterov": lambda: fm.optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: fm.optim.Adam(lr=1e-2),
    "adamw": lambda: fm.optim.AdamW(lr=1e-2, weight_decay=0.1),
    "rmsprop-centered": lambda: fm.optim.RMSProp(lr=1e-3, momentum=0.5, centered=True),
    "adafactor": lambda: fm.optim.Adafactor(lr=1e-2),
}


def _targets(kind, losses, n, rng):
    if kind == "two-heads":
        return [rng.integers(0, 4, n).astype(np.int32), rng.normal(size=(n, 2))]
    if losses == "cross_entropy":
        return rng.integers(0, 5, n).astype(np.int32)
    k = {"gelu-bn-dropout": 3, "rrelu-noise-maxout": 2, "prelu-softmax": 4, "rbf": 3}[kind]
    if losses == "binary_cross_entropy":
        return (rng.random((n, k)) < 0.5).astype(np.float64)
    return rng.normal(size=(n, k))


def _pair(kind, opt, dtype, clip=None):
    """A CPU and a CUDA trainer with the same architecture, weights and optimizer."""
    trainers = []
    for device in ("cpu", "cuda"):
        layers, heads, losses = _stack(kind)
        model = fm.Sequential(layers, n_in=6, heads=heads, device=device, seed=3, dtype=dtype)
        optimizer = OPTIMIZERS[opt]()
        if clip is not None:
            optimizer.hyper.clip_norm = clip
        trainers.append(fm.Trainer(model, loss=losses, optimizer=optimizer, metrics=()))
    cpu, gpu = trainers
    if kind == "rbf":  # centres on data (deck 003's first step), then copied
        cpu.model.init_rbf(np.random.default_rng(5).normal(size=(50, 6)))
    gpu.model.set_weights(cpu.model.get_weights())
    return cpu, gpu


def _tol(dtype):
    # float32: the GPU's reductions run in another order than the CPU's; over ten steps of a
    # small network the drift stays within ~1e-4 of the values' scale.
    return 1e-9 if dtype == np.float64 else 2e-4


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("kind", KINDS)
def test_gpu_step_tracks_cpu(kind, opt, dtype, device, rng):
    cpu, gpu = _pair(kind, opt, dtype, clip=1.0 if opt == "adam" else None)
    _, _, losses = _stack(kind)
    n = 37  # odd batch: partial vector groups, uneven row blocks
    X = rng.normal(size=(12 * n, 6)).astype(dtype)
    y = _targets(kind, losses, 12 * n, rng)
    for s in range(12):
        xb = X[s * n : (s + 1) * n]
        yb = [t[s * n : (s + 1) * n] for t in y] if isinstance(y, list) else y[s * n : (s + 1) * n]
        l_cpu = cpu.train_step(xb, yb)
        l_gpu = gpu.train_step(xb, yb)
        assert abs(l_gpu - l_cpu) <= _tol(dtype) * max(1.0, abs(l_cpu)), (s, l_cpu, l_gpu)
    for w_gpu, w_cpu in zip(gpu.model.get_weights(), cpu.model.get_weights(), strict=True):
        assert isinstance(w_gpu, np.ndarray)  # weights leave the model on the host
        assert_close(w_gpu, w_cpu, dtype, tol=_tol(dtype), what=f"{kind}/{opt}")
    assert gpu.model._net.opt_step == cpu.model._net.opt_step == 12
    if opt != "adafactor":
        assert gpu.model._net.n_graphs >= 1  # the elementwise rules ran as replayed graphs


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("kind", ["gelu-bn-dropout", "rrelu-noise-maxout", "two-heads"])
def test_graph_replay_equals_eager(kind, device, rng):
    _, a = _pair(kind, "adam", np.float64)
    _, b = _pair(kind, "adam", np.float64)
    b.model._net.use_graphs = False
    _, _, losses = _stack(kind)
    X = rng.normal(size=(64, 6))
    y = _targets(kind, losses, 64, rng)
    for _ in range(6):
        assert a.train_step(X, y) == pytest.approx(b.train_step(X, y), rel=1e-13, abs=1e-13)
    assert b.model._net.n_graphs == 0 and a.model._net.n_graphs == 1
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights(), strict=True):
        assert_close(wa, wb, np.float64, tol=1e-13)


@pytest.mark.parametrize("device", CUDA)
def test_async_step_equals_sync(device, rng):
    _, a = _pair("gelu-bn-dropout", "sgd-nesterov", np.float32)
    _, b = _pair("gelu-bn-dropout", "sgd-nesterov", np.float32)
    import cupy as cp

    X = cp.asarray(rng.normal(size=(50, 6)).astype(np.float32))
    y = cp.asarray(rng.normal(size=(50, 3)).astype(np.float32))
    for _ in range(5):
        want = a.model._net.train_step(X, [y], None, 0.05, True)
        got = b.model._net.train_step(X, [y], None, 0.05, False)
        assert np.isnan(got)
        slot = cp.asarray(b.model._net.loss_slot())  # a device view of the loss slot
        assert slot.shape == (1,) and slot.dtype == np.float64
        assert float(slot[0]) == pytest.approx(want, rel=1e-6)
    assert_close(b.model.parameters, to_host(a.model.parameters), np.float32, tol=1e-6)


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("graphs", [True, False])
@pytest.mark.parametrize("opt", ["adam", "adafactor"])  # graph replay / eager host-read loss
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_loss_skips_update(value, opt, graphs, device, rng):
    # A NaN in X is swallowed by ReLU (the loss stays finite) but not by dW = X^T dZ: the skip
    # rule looks at the gradient too, on every path of the device step.
    _, t = _pair("relu", opt, np.float32)
    t.model._net.use_graphs = graphs
    X = rng.normal(size=(20, 6)).astype(np.float32)
    y = rng.integers(0, 5, 20).astype(np.int32)
    t.train_step(X, y)
    t.train_step(X, y)  # the graph of this shape is captured (elementwise rules)
    before = to_host(t.model.parameters).copy()
    step = t.model._net.opt_step
    bad = X.copy()
    bad[3, 2] = value
    loss = t.model._engine.step(bad, [y], None, 1e-2)  # the engine's step: no input check
    assert not np.isfinite(loss)
    np.testing.assert_array_equal(to_host(t.model.parameters), before)
    assert t.model._net.opt_step == step


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_on_gpu_tracks_cpu(shuffle, device):
    X, y = fm.datasets.load_digits()
    curves = []
    for dev in ("cpu", "cuda"):
        model = fm.MLP(n_in=64, hidden=[32, 32], n_out=10, dropout=0.1, device=dev, seed=1)
        tr = fm.Trainer(model, loss="cross_entropy", optimizer=fm.optim.Adam(lr=3e-3))
        hist = tr.fit(
            X, y, epochs=3, batch_size=64, shuffle=shuffle, validation_split=0.1, verbose=0
        )
        curves.append((hist.history["loss"], hist.history["val_loss"], hist.history["accuracy"]))
    (lc, vc, ac), (lg, vg, ag) = curves
    np.testing.assert_allclose(lg, lc, rtol=1e-3)
    np.testing.assert_allclose(vg, vc, rtol=1e-3)
    np.testing.assert_allclose(ag, ac, atol=0.01)


@pytest.mark.parametrize("device", CUDA)
def test_inputs_cupy_numpy_dlpack(device, rng):
    import cupy as cp

    model = fm.MLP(n_in=6, hidden=[8], n_out=3, device="cuda", seed=0)
    X = rng.normal(size=(10, 6)).astype(np.float32)
    host = model.predict(X)
    assert isinstance(host, np.ndarray)  # host in, host out
    dev = model.predict(cp.asarray(X))
    assert isinstance(dev, cp.ndarray)  # device in, device out
    np.testing.assert_array_equal(cp.asnumpy(dev), host)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    out = model.predict(torch.from_numpy(X).cuda())
    np.testing.assert_array_equal(cp.asnumpy(out), host)
    cpu = model.to("cpu")
    assert_close(cpu.predict(X), host, np.float32)


@pytest.mark.parametrize("device", CUDA)
def test_bad_input_on_gpu(device, rng):
    import cupy as cp

    t = fm.Trainer(fm.MLP(n_in=6, hidden=[8], n_out=3, device="cuda"), loss="cross_entropy")
    y = np.zeros(5, np.int32)
    with pytest.raises(ValueError, match="X: expected 6 features"):
        t.train_step(cp.zeros((5, 7), cp.float32), y)
    with pytest.raises(ValueError, match="NaN or Inf"):
        t.train_step(cp.full((5, 6), cp.nan, cp.float32), y)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        t.train_step(cp.zeros((5, 6), cp.float32), np.full(5, 3))
    with pytest.raises(TypeError, match="float64"):
        t.model._net.train_step(cp.zeros((5, 6), cp.float64), [cp.zeros(5, cp.int32)], None, 0.1)
    with pytest.raises(ValueError, match="y: expected shape"):
        t.model._net.train_step(cp.zeros((5, 6), cp.float32), [cp.zeros(4, cp.int32)], None, 0.1)
    # the raw Network: device arrays only, outputs preallocated (bindings/network_common.h)
    net, X = t.model._net, cp.zeros((5, 6), cp.float32)
    with pytest.raises(TypeError, match="X: expected a GPU array"):
        net.forward(np.zeros((5, 6), np.float32), [cp.empty((5, 3), cp.float32)])
    with pytest.raises(TypeError, match="out: expected a GPU array"):
        net.forward(X, [np.empty((5, 3), np.float32)])
    with pytest.raises(ValueError, match=r"out: expected shape \(5, 3\)"):
        net.predict(X, [cp.empty((5, 2), cp.float32)], 2)
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        net.predict(X, [cp.empty((5, 3), cp.float64)], 2)
    out = [cp.full((5, 3), np.nan, cp.float32)]
    net.predict(X, out, 2)
    np.testing.assert_array_equal(to_host(out[0]), t.model.predict(np.zeros((5, 6), np.float32)))


@pytest.mark.parametrize("device", CUDA)
def test_checkpoint_moves_between_devices(device, tmp_path, rng):
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    t = fm.Trainer(fm.MLP(n_in=6, hidden=[8], n_out=3, device="cuda"), loss="cross_entropy")
    t.fit(X, y, epochs=2, batch_size=8, verbose=0)
    t.save(tmp_path / "run.npz")
    on_cpu = fm.Trainer.load(tmp_path / "run.npz", device="cpu")
    on_gpu = fm.Trainer.load(tmp_path / "run.npz")
    assert on_gpu.model.device == "cuda" and on_cpu.model.device == "cpu"
    assert_close(on_cpu.predict(X), t.predict(X), np.float32)
    # both continue the same trajectory
    assert on_gpu.train_step(X, y) == pytest.approx(on_cpu.train_step(X, y), rel=1e-4)


# ------------------------------------------------------------ device-independent behaviour


class _FakeDLPack:
    """A tensor that says (through DLPack) it lives on a CUDA device."""

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):  # pragma: no cover - never exported on the CPU
        raise AssertionError("a CPU entry point must not import a GPU tensor")


def test_dlpack_gpu_tensors_are_device_arrays():
    from fusedmlp import _validate as v

    assert v.is_device_array(_FakeDLPack())
    assert not v.is_device_array(np.zeros(3))
    with pytest.raises(TypeError, match="X: got a GPU array"):
        fm.MLP(n_in=3, hidden=[2], n_out=1).predict(_FakeDLPack())


def test_standalone_optimizer_rejects_mixed_devices():
    with pytest.raises((TypeError, RuntimeError), match="CuPy|CUDA"):
        fm.optim.SGD(lr=0.1).step([np.zeros(3), _FakeDLPack()], [np.zeros(3), np.zeros(3)])


def test_model_to_cpu_copies_everything(rng):
    m = fm.Sequential([fm.Dense(5, activation="tanh"), fm.BatchNorm(), fm.Dense(2)], n_in=3)
    m._net.rng_step = 7
    m.set_trainable(0, False)
    t = fm.Trainer(m, loss="mse")
    t.train_step(rng.normal(size=(9, 3)), rng.normal(size=(9, 2)))  # BN statistics move
    c = m.to("cpu")
    assert c is not m and c.device == "cpu"
    for a, b in zip(c.get_weights(), m.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert c._net.rng_step == m._net.rng_step and c._net.bn_updates == m._net.bn_updates
    assert not c.is_trainable(0) and c.is_trainable(2)
    c.parameters[:] = 0  # a copy, not a view
    assert np.any(m.parameters != 0)


def test_checkpoint_device_override(tmp_path, rng):
    t = fm.Trainer(fm.MLP(n_in=3, hidden=[4], n_out=1), loss="mse")
    t.fit(rng.normal(size=(16, 3)), rng.normal(size=16), epochs=1, batch_size=4, verbose=0)
    t.save(tmp_path / "c.npz")
    assert fm.Trainer.load(tmp_path / "c.npz", device="cpu").model.device == "cpu"
    cfg = t.model.config()
    assert cfg["device"] == "cpu"
    del cfg["device"]  # checkpoints written before the key existed load on the CPU
    assert fm.Sequential.from_config(cfg).device == "cpu"
    if not fm.cuda_available():
        with pytest.raises(ValueError, match="device: 'cuda' is not usable"):
            fm.Trainer.load(tmp_path / "c.npz", device="cuda")


def test_diagnostics_need_a_cpu_model():
    m = fm.MLP(n_in=3, hidden=[4], n_out=1)
    m.device = "cuda"  # as a CUDA model reports itself (no GPU needed for the check)
    with pytest.raises(ValueError, match=r"model.to\('cpu'\)"):
        fm.diagnostics.activation_table(m, np.zeros((2, 3)))


@pytest.mark.parametrize("device", CUDA)
def test_trainer_fast_path_on_device(device, rng):
    import cupy as cp

    X = rng.normal(size=(30, 6)).astype(np.float32)
    y = rng.integers(0, 3, 30).astype(np.int32)
    a = fm.Trainer(fm.MLP(n_in=6, hidden=[8], n_out=3, device="cuda"), loss="cross_entropy")
    b = fm.Trainer(fm.MLP(n_in=6, hidden=[8], n_out=3, device="cuda"), loss="cross_entropy")
    Xd, yd = cp.asarray(X), cp.asarray(y)
    for _ in range(4):  # the checked path (NumPy) and the fast path (CuPy) agree
        want = a.train_step(X, y)
        got = b.train_step(Xd, yd, sync=False)
        assert isinstance(got, cp.ndarray) and got.shape == ()
        assert float(got) == pytest.approx(want, rel=1e-6)
    before = cp.asnumpy(b.model.parameters).copy()
    counters = (b.model._net.rng_step, b.model._net.opt_step, b.step_count)
    bad = Xd.copy()
    bad[0, 0] = cp.nan
    with pytest.raises(ValueError, match="X: contains NaN or Inf"):
        b.train_step(bad, yd)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        b.train_step(Xd, cp.full(30, 7, cp.int32))
    np.testing.assert_array_equal(cp.asnumpy(b.model.parameters), before)
    assert (b.model._net.rng_step, b.model._net.opt_step, b.step_count) == counters


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_tracks_float32(precision, device, rng):
    """Half-width GEMM operands (fp32 master weights and accumulation): the losses follow the
    float32 run to the operands' rounding (bf16: 8 bits of mantissa, fp16: 11) and fall."""
    X = rng.normal(size=(256, 20)).astype(np.float32)
    y = rng.integers(0, 4, 256).astype(np.int32)
    runs = {}
    for prec in ("float32", precision):
        m = fm.MLP(n_in=20, hidden=[64, 64], n_out=4, device="cuda", seed=2, precision=prec)
        t = fm.Trainer(m, loss="cross_entropy", optimizer=fm.optim.Adam(lr=3e-3))
        runs[prec] = [t.train_step(X, y) for _ in range(40)]
    full, half = np.array(runs["float32"]), np.array(runs[precision])
    tol = 0.03 if precision == "bfloat16" else 0.005
    np.testing.assert_allclose(half[:5], full[:5], rtol=tol)
    assert half[-1] < 0.7 * half[0]
    assert (
        fm.MLP(n_in=3, hidden=[4], n_out=1, device="cuda", precision="bf16").to("cpu").precision
        == "float32"
    )


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision: expected one of"):
        fm.MLP(n_in=3, hidden=[4], n_out=1, precision="int8")
    with pytest.raises(ValueError, match="runs on the GPU"):
        fm.MLP(n_in=3, hidden=[4], n_out=1, precision="bfloat16")
    m = fm.MLP(n_in=3, hidden=[4], n_out=1, precision="fp32")
    assert m.precision == "float32" and m.config()["precision"] == "float32"


def test_tf32_switch():
    from fusedmlp._loader import _cuda

    if _cuda is not None:  # a flag of the module: no device needed
        fm.set_allow_tf32(True)
        assert _cuda.get_allow_tf32()
        fm.set_allow_tf32(False)
        assert not _cuda.get_allow_tf32()
    else:
        with pytest.raises(RuntimeError, match="CUDA backend is not available"):
            fm.set_allow_tf32(True)
    with pytest.raises(TypeError, match="on: expected a bool"):
        fm.set_allow_tf32(1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("graphs", [True, False])
def test_skipped_step_keeps_batchnorm_statistics(graphs, device, rng):
    """The skip rule is one rule on both devices (csrc/network/backend.h): a step whose loss is
    not finite leaves the parameters, the BatchNorm running statistics, opt_step and
    bn_updates as they were (the GPU decides on the device, also inside a CUDA graph)."""
    from fusedmlp import _backend

    layers = [fm.Dense(8, activation="relu"), fm.BatchNorm(), fm.Dense(3)]
    model = fm.Sequential(layers, n_in=6, device=device, seed=3)
    t = fm.Trainer(model, loss="cross_entropy", optimizer=fm.optim.Adam(lr=1e-2), metrics=())
    if device == "cuda":
        model._net.use_graphs = graphs
    be = _backend.get(device)
    X = rng.normal(size=(20, 6)).astype(np.float32)
    y = rng.integers(0, 3, 20).astype(np.int32)
    for _ in range(3):  # BatchNorm's first batch, the eager warm-up, the captured graph
        t.train_step(X, y)
    net = model._net
    params = to_host(model.parameters).copy()
    buffers = be.to_host(net.buffers()).copy()
    counters = (net.opt_step, net.bn_updates, net.rng_step)
    bad = X.copy()
    bad[3, 2] = np.inf
    loss = t._engine.step(be.to_device(bad), [be.to_device(y)], None, 1e-2)
    assert not np.isfinite(loss)
    np.testing.assert_array_equal(to_host(model.parameters), params)
    np.testing.assert_array_equal(be.to_host(net.buffers()), buffers)
    assert (net.opt_step, net.bn_updates, net.rng_step) == (*counters[:2], counters[2] + 1)
