"""The device="cuda" code paths of the Python layer, run over the CPU's kernels.

Since the binding modules share one calling convention (issue 17), the CUDA backend differs
from the CPU's only in its array namespace and module (``fusedmlp._backend``). Here a stand-in
CUDA backend serves NumPy arrays and ``_core`` (whose ``Network32/64`` take the place of
``CudaNetwork32/64``), so every ``device == "cuda"`` branch of the model, the engine, the
Trainer, the estimators and checkpoints runs on any machine, and must give bit for bit what
the CPU path gives (same kernels, same order). This catches a Python-side break of the GPU
path without a GPU; the GPU kernels themselves are tested on a GPU (the ``cuda`` mark)."""

from __future__ import annotations

import types

import fusedmlp as fm
import numpy as np
import pytest
from fusedmlp import _backend
from fusedmlp._backend import cpu
from fusedmlp._loader import _core


class _HostAsCuda:
    """``_core`` under the names of ``_cuda``."""

    def __getattr__(self, name: str):
        if name.startswith("CudaNetwork"):
            return getattr(_core, "Network" + name[len("CudaNetwork") :])
        return getattr(_core, name)


@pytest.fixture
def host_cuda(monkeypatch):
    """device="cuda" served by the CPU kernels (see the module docstring)."""
    keys = ("asarray", "in_place", "empty", "zeros", "stream", "to_device", "to_host", "wrap", "xp")
    fake = types.SimpleNamespace(**{k: getattr(cpu, k) for k in keys})
    fake.name, fake.mod = "cuda", _HostAsCuda()
    monkeypatch.setattr(_backend, "_cuda", lambda: fake)
    monkeypatch.setattr(fm, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(fm, "cuda_available", lambda: True)
    return fake


def _pair(make):
    """The same object built for "cpu" and for "cuda"."""
    return make("cpu"), make("cuda")


def _digits():
    X, y = fm.datasets.load_digits()
    return X.astype(np.float32), y.astype(np.int32)


@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_predict_evaluate_match_the_cpu(host_cuda, shuffle):
    X, y = _digits()

    def run(device):
        model = fm.MLP(n_in=64, hidden=[32, 32], n_out=10, dropout=0.1, device=device, seed=1)
        t = fm.Trainer(model, loss="cross_entropy", optimizer=fm.optim.Adam(lr=3e-3))
        h = t.fit(X, y, epochs=2, batch_size=64, shuffle=shuffle, validation_split=0.1, verbose=0)
        return model, t, h.history

    (mc, tc, hc), (mg, tg, hg) = _pair(run)
    assert mg.device == "cuda" and mc.device == "cpu"
    assert hg == hc  # running loss and accuracy from the steps, validation from one pass
    np.testing.assert_array_equal(mg.parameters, mc.parameters)
    np.testing.assert_array_equal(mg.predict(X), mc.predict(X))
    assert tg.evaluate(X, y) == tc.evaluate(X, y)
    assert tg.train_step(X[:32], y[:32]) == tc.train_step(X[:32], y[:32])


def test_batchnorm_two_heads_and_the_skip_rule(host_cuda, rng):
    X = rng.normal(size=(40, 6)).astype(np.float32)
    y0 = rng.integers(0, 4, 40).astype(np.int32)
    y1 = rng.normal(size=(40, 2)).astype(np.float32)

    def run(device):
        layers = [fm.Dense(16, activation="elu"), fm.BatchNorm()]
        heads = [[fm.Dense(4)], [fm.Dense(8, activation="sigmoid"), fm.Dense(2)]]
        model = fm.Sequential(layers, n_in=6, heads=heads, device=device, seed=3)
        t = fm.Trainer(model, loss=["cross_entropy", "mse"], optimizer=fm.optim.SGD(lr=0.05))
        t.fit(X, [y0, y1], epochs=2, batch_size=16, verbose=0)
        bad = X[:8].copy()
        bad[0, 0] = np.inf
        loss = t._engine.step(bad, [y0[:8], y1[:8]], None, 0.05)
        return model, loss

    (mc, lc), (mg, lg) = _pair(run)
    assert not np.isfinite(lc) and not np.isfinite(lg)
    np.testing.assert_array_equal(mg.parameters, mc.parameters)
    np.testing.assert_array_equal(mg._engine.buffers(), mc._engine.buffers())
    assert mg._engine.counters() == mc._engine.counters()


def test_checkpoints_and_moving_between_devices(host_cuda, tmp_path):
    X, y = _digits()
    model = fm.MLP(n_in=64, hidden=[16], n_out=10, device="cuda", seed=2)
    t = fm.Trainer(model, loss="cross_entropy", optimizer=fm.optim.AdamW(lr=1e-2))
    t.fit(X, y, epochs=1, batch_size=128, verbose=0)
    t.save(tmp_path / "ckpt.fm")
    back = fm.Trainer.load(tmp_path / "ckpt.fm", device="cpu")
    assert back.model.device == "cpu"
    np.testing.assert_array_equal(back.model.parameters, model.parameters)
    again = fm.Trainer.load(tmp_path / "ckpt.fm")
    assert again.model.device == "cuda"
    t.fit(X, y, epochs=1, batch_size=128, verbose=0)
    again.fit(X, y, epochs=1, batch_size=128, verbose=0)
    np.testing.assert_array_equal(again.model.parameters, model.parameters)
    moved = model.to("cpu")
    np.testing.assert_array_equal(moved.predict(X), model.predict(X))


@pytest.mark.filterwarnings("ignore:.*(converge|Maximum iterations)")  # max_iter=5 on purpose
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_estimators_on_the_cuda_path(host_cuda, solver):
    pytest.importorskip("sklearn")
    X, y = _digits()

    def run(device):
        clf = fm.sklearn.MLPClassifier(
            hidden_layer_sizes=(16,), solver=solver, max_iter=5, random_state=0, device=device
        )
        return clf.fit(X, y)

    cc, cg = _pair(run)
    np.testing.assert_array_equal(cg.predict_proba(X), cc.predict_proba(X))
    assert cg.loss_curve_ == cc.loss_curve_
