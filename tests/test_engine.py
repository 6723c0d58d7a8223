"""The engine (issue 17, item 2): the training fronts drive the Network only through
``model._engine``; the RBF schemes and FGSM are callbacks, the Trainer arguments aliases."""

from __future__ import annotations

import re
from pathlib import Path

import fusedmlp as fm
import numpy as np
import pytest
from conftest import DEVICES

PKG_DIR = Path(fm.__file__).resolve().parent


@pytest.mark.parametrize("module", ["trainer", "sklearn", "callbacks", "diagnostics", "rbf"])
def test_training_fronts_never_touch_the_network(module):
    text = (PKG_DIR / f"{module}.py").read_text()
    assert not re.search(r"\._net\b|_network\(\)", text), f"{module}.py drives the Network itself"


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def _weights_equal(a, b):
    for x, y in zip(a.model.get_weights(), b.model.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_adversarial_callback_is_the_argument():
    X, y = _data()
    runs = [
        fm.Trainer(fm.MLP(n_in=6, hidden=[8], n_out=2, seed=1), adversarial_eps=0.05),
        fm.Trainer(
            fm.MLP(n_in=6, hidden=[8], n_out=2, seed=1),
            callbacks=[fm.callbacks.Adversarial(0.05)],
        ),
    ]
    hists = [t.fit(X, y, epochs=3, batch_size=32, verbose=0).history for t in runs]
    assert hists[0] == hists[1]
    _weights_equal(*runs)
    assert runs[1].adversarial_eps == 0.05 and runs[1].callbacks[0].eps == 0.05
    with pytest.raises(ValueError, match="adversarial_eps: expected"):
        fm.callbacks.Adversarial(0.0)


@pytest.mark.parametrize(
    "kw",
    [
        dict(scheme="3-step", output_epochs=2),
        dict(scheme="3-step", solve="lstsq"),
        dict(scheme="2-step", solve="lstsq"),
    ],
)
def test_rbf_scheme_callback_is_the_argument(kw, tmp_path):
    X = np.linspace(-3, 3, 100)[:, None]
    y = np.sin(X)

    def model():
        return fm.Sequential([fm.RBF(8), fm.Dense(1)], n_in=1, seed=0, dtype="float64")

    alias = {"rbf_" + k: val for k, val in kw.items()}
    a = fm.Trainer(model(), loss="mse", metrics=(), **alias)
    b = fm.Trainer(model(), loss="mse", metrics=(), callbacks=[fm.callbacks.RBFScheme(**kw)])
    ha = a.fit(X, y, epochs=4, batch_size=25, verbose=0).history
    hb = b.fit(X, y, epochs=4, batch_size=25, verbose=0).history
    assert ha == hb
    _weights_equal(a, b)
    b.save(tmp_path / "ck.npz")  # the callback's state is saved as the alias's is
    assert fm.Trainer.load(tmp_path / "ck.npz")._rbf.state_dict() == b._rbf.state_dict()
    with pytest.raises(ValueError, match="already hold an fm.callbacks.RBFScheme"):
        fm.Trainer(model(), loss="mse", callbacks=[fm.callbacks.RBFScheme()], rbf_scheme="2-step")


def test_engine_snapshot_and_configure_keep_state():
    X, y = _data()
    t = fm.Trainer(fm.MLP(n_in=6, hidden=[8], n_out=2, seed=0, dtype="float64"))
    t.fit(X, y, epochs=1, batch_size=30, verbose=0)
    engine = t.model._engine
    snap = engine.snapshot()
    assert set(snap) == {
        "params",
        "grads",
        "buffers",
        "opt_state",
        "opt_step",
        "rng_step",
        "bn_updates",
    }
    with engine.preserved("params", "opt_state", "opt_step", "rng_step"):
        t.train_step(X[:30], y[:30])
        assert engine.counters()["opt_step"] == snap["opt_step"] + 1
    np.testing.assert_array_equal(engine.params(), snap["params"])
    assert engine.counters() == {k: snap[k] for k in ("opt_step", "rng_step", "bn_updates")}
    engine.configure(t.optimizer, keep_state=True)  # a change of settings keeps the moments
    np.testing.assert_array_equal(engine.opt_state(), snap["opt_state"])
    assert engine.counters()["opt_step"] == snap["opt_step"]
    engine.configure(t.optimizer)  # afresh
    assert engine.counters()["opt_step"] == 0 and not engine.opt_state().any()
    with pytest.raises(ValueError, match="parts: expected some of"):
        engine.snapshot("weights")
    with pytest.raises(ValueError, match="counters: expected some of"):
        engine.set_counters(steps=1)


@pytest.mark.parametrize("device", DEVICES)
def test_apply_gradients_keeps_the_skip_rule(device, rng):
    """The update alone (FGSM, the data-parallel all-reduce) skips a non-finite gradient as
    the fused step does: parameters, optimizer state and opt_step unchanged, the RNG step
    advanced, and it says so."""
    from fusedmlp import _backend

    be = _backend.get(device)
    model = fm.MLP(n_in=5, hidden=[7], n_out=3, device=device, seed=2)
    t = fm.Trainer(model, loss="cross_entropy", optimizer=fm.optim.Adam(lr=1e-2), metrics=())
    X = rng.normal(size=(16, 5)).astype(np.float32)
    y = rng.integers(0, 3, 16).astype(np.int32)
    t.train_step(X, y)
    e = model._engine
    e.compute_gradients(be.to_device(X), [be.to_device(y)])
    assert e.apply_gradients(1e-2) is True
    params = be.to_host(model.parameters).copy()
    state = be.to_host(e.opt_state()).copy()
    counters = e.counters()
    e.compute_gradients(be.to_device(X), [be.to_device(y)])
    e.grads()[4] = np.nan
    assert e.apply_gradients(1e-2) is False
    np.testing.assert_array_equal(be.to_host(model.parameters), params)
    np.testing.assert_array_equal(be.to_host(e.opt_state()), state)
    after = e.counters()
    assert after["opt_step"] == counters["opt_step"]
    assert after["rng_step"] == counters["rng_step"] + 1
