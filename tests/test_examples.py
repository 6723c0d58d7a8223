"""The decks' experiments (examples/): each script runs with a fixed seed and the test asserts
the deck's qualitative outcome on the numbers it returns.

Where a script's ``quick`` mode is used, the test says why the claim still holds there. The
plots are written to a temporary folder when matplotlib is installed; the numbers are
asserted either way. The kernels run on one thread here (several threads on a busy shared
machine are slower, not different).
"""

from __future__ import annotations

import importlib
import math
import os
import sys

import fusedmlp as fm
import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _load(name: str):
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    return importlib.import_module(name)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = fm.get_num_threads()
    fm.set_num_threads(1)
    yield
    fm.set_num_threads(before)


@pytest.fixture
def plotting(tmp_path):
    """(plot, out): plot when matplotlib is installed, into a temporary folder."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False, str(tmp_path)
    return True, str(tmp_path)


def _check_plot(plot: bool, out: str, name: str) -> None:
    if plot:
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 1000, f"{name} was not written"


def test_init_activation_stats(plotting):
    # quick: 250 input rows instead of 1000; each std is still over 125,000 values and the
    # spread between runs comes from the weights, not the rows.
    plot, out = plotting
    res = _load("init_activation_stats").run(quick=True, seed=0, out=out, plot=plot)
    _check_plot(plot, out, "init_activation_stats.png")
    small, big = res["N(0,0.01^2)+tanh"]["std"], res["N(0,1)+tanh"]["std"]
    gt, gr, he = res["Glorot+tanh"]["std"], res["Glorot+ReLU"]["std"], res["He+ReLU"]["std"]
    # N(0, 0.01^2): each layer multiplies the std by ~0.01 sqrt(500) = 0.224 (tanh is linear there)
    ratios = np.array(small[1:]) / np.array(small[:-1])
    assert np.all((ratios > 0.18) & (ratios < 0.27)), ratios
    assert small[-1] < 1e-5
    # N(0, 1): saturated, |tanh| ~ 1 everywhere
    assert min(big) > 0.95
    # Glorot + tanh: a slow, monotone decay that stays in a band (deck: 0.63 -> 0.23)
    assert np.all(np.diff(gt) < 0) and 0.15 < gt[-1] < gt[0] < 0.75
    # Glorot + ReLU: the variance halves each layer; He + ReLU keeps it
    gr_ratios = np.array(gr[1:]) / np.array(gr[:-1])
    assert np.all((gr_ratios > 0.6) & (gr_ratios < 0.8)) and gr[-1] < 0.05
    assert 0.6 < min(he) and max(he) < 1.1
    # the deck's printed values, where they have 3 significant digits or more
    mod = _load("init_activation_stats")
    for label, deck in mod.DECK_STD.items():
        for ours, theirs in zip(res[label]["std"], deck, strict=True):
            if theirs >= 1e-3:
                assert abs(ours - theirs) <= 0.15 * theirs, (label, ours, theirs)


def test_matrix_chains(plotting):
    # quick: 40 products instead of 100; the deck prints at most 28 rows of each chain.
    plot, out = plotting
    res = _load("matrix_chains").run(quick=True, seed=0, out=out, plot=plot)
    _check_plot(plot, out, "matrix_chains.png")
    normal = res["N(0,1)"]
    # std x sqrt(512) per product overflows float32 (3.4e38) after ~28.5 products (deck: nan at 28)
    assert normal["nonfinite_at"] is not None and 25 <= normal["nonfinite_at"] <= 32
    assert abs(normal["std"][0] - math.sqrt(512)) < 0.1 * math.sqrt(512)
    small = res["N(0,1)*0.01"]["std"]
    assert small[9] < 1e-5 and small[-1] < 1e-20 and res["N(0,1)*0.01"]["nonfinite_at"] is None
    uni = res["U(-1,1)"]
    growth = (uni["std"][19] / uni["std"][0]) ** (1 / 19)  # sqrt(512 / 3) = 13.1
    assert 10 < growth < 16 and uni["std"][18] > 1e18 and uni["nonfinite_at"] is not None
    for label in ("Xavier normal", "Xavier uniform"):
        s = res[label]["std"]
        assert res[label]["nonfinite_at"] is None and 0.4 < min(s) and max(s) < 2.5, (label, s)
    decay = res["Xavier normal+ReLU"]["std"]
    assert decay[19] < 1e-2 and decay[-1] < 1e-5  # deck: 0.000838 after 20
    for label in ("Kaiming uniform+ReLU", "Kaiming normal+ReLU"):
        s = res[label]["std"]
        assert res[label]["nonfinite_at"] is None and 0.2 < min(s) and max(s) < 5, (label, s)


def test_xor_init(plotting):
    # quick: exactly the deck's 20 runs per initializer (the full run adds 80 seeds).
    plot, out = plotting
    res = _load("xor_init").run(quick=True, seed=0, out=out, plot=plot)
    _check_plot(plot, out, "xor_init.png")
    assert len(res["U(-10,10)"]["runs"]) == 20
    assert res["U(-10,10)"]["failures"] >= 2  # deck: 6/20
    assert res["N(0,1/sqrt(fan_in))"]["failures"] <= 1  # deck: 0/20
    for run in res["N(0,1/sqrt(fan_in))"]["runs"]:
        if not run["failed"]:
            assert run["final_loss"] < 0.05


def test_linreg_momentum(plotting):
    plot, out = plotting
    mod = _load("linreg_momentum")
    res = mod.run(seed=0, out=out, plot=plot)
    _check_plot(plot, out, "linreg_momentum.png")
    for label, *_ in mod.CASES:
        b, w = res[label]["theta"]
        assert abs(b - 2) < 0.05 and abs(w - 3) < 0.05, (label, b, w)  # deck: within 0.03
        assert len(res[label]["path"]) == 1001 and res[label]["path"][0] == (10.0, 5.0)
    # momentum accelerates: iterations until the loss is within 5% of the least-squares loss
    b, w = res["lstsq"]
    x, y = mod.make_data(0)
    floor = float(np.mean((b + w * x - y) ** 2))

    def reach(label):
        below = np.flatnonzero(np.asarray(res[label]["loss"]) < 1.05 * floor)
        return int(below[0]) if below.size else None

    assert 0 < reach("Nesterov 0.8") < reach("momentum 0.6") < reach("SGD") < 1000


def test_sin_optimizers(plotting):
    # quick: 150 epochs instead of 300; plain SGD is already more than twice as far from the
    # noise floor as each of the other three.
    plot, out = plotting
    res = _load("sin_optimizers").run(quick=True, seed=0, out=out, plot=plot)
    _check_plot(plot, out, "sin_optimizers.png")
    sgd = res["SGD"]["final_loss"]
    for name in ("SGD+momentum", "RMSProp", "Adam"):
        assert res[name]["final_loss"] < 0.5 * sgd, (name, res[name]["final_loss"], sgd)
        assert res[name]["fit_mse"] < res["SGD"]["fit_mse"]
    assert res["Adam"]["final_loss"] < 0.05  # the noise floor is 0.01
    assert all(r["loss"][-1] < r["loss"][0] for r in res.values())


def test_backprop_example(plotting):
    plot, out = plotting
    res = _load("backprop_example").run(out=out, plot=plot)
    _check_plot(plot, out, "backprop_example.png")
    exact = res["exact"]
    for way in ("network", "kernels"):
        for key in ("z1", "y_hat", "L", "dL/dw1", "dL/dw2"):
            assert abs(res[way][key] - exact[key]) < 1e-12, (way, key)
    net = res["network"]
    assert (
        abs(net["step dL/dw1"] - exact["dL/dw1"]) < 1e-12
        and abs(net["step dL/dw2"] - exact["dL/dw2"]) < 1e-12
    )
    # the deck's 3-digit values (it rounds z1 = 0.622 before squaring: L = 1.315 vs 1.3162)
    assert abs(net["L"] - 1.315) < 2e-3
    assert abs(net["dL/dw2"] - (-1.009)) < 1e-3 and abs(net["dL/dw1"] - 0.381) < 1e-3


def test_regularization(plotting):
    # quick: 100 epochs instead of 300; without regularization the validation MSE has its
    # minimum within the first ~10 epochs and is well past it by 100.
    plot, out = plotting
    res = _load("regularization").run(quick=True, seed=0, out=out, plot=plot)
    _check_plot(plot, out, "regularization.png")
    none = res["none"]
    # overfitting: train MSE near 0, validation MSE up from its minimum
    assert none["final_train_loss"] < 0.05
    assert none["final_val_loss"] > none["min_val_loss"] + 0.1
    gap = none["final_val_loss"] - none["final_train_loss"]
    for case in ("L2", "dropout"):
        r = res[case]
        assert r["final_val_loss"] < none["final_val_loss"] - 0.03, case
        assert r["final_val_loss"] - r["final_train_loss"] < gap, case
    # early stopping (Algorithm 7.1): stops p epochs after the best one and restores it
    es = res["early stopping"]
    mod = _load("regularization")
    assert es["epochs_run"] == es["best_epoch"] + mod.PATIENCE < 100
    assert es["final_val_loss"] == pytest.approx(es["min_val_loss"], rel=1e-5)
    assert es["final_val_loss"] < none["final_val_loss"]


def test_command_line(tmp_path, capsys):
    res = _load("backprop_example").main(["--no-plot", "--out", str(tmp_path), "--threads", "1"])
    assert "dL/dw1" in capsys.readouterr().out and res["network"]["L"] > 0
    assert not os.listdir(tmp_path)


def test_optuna_search():
    pytest.importorskip("optuna")
    res = _load("optuna_search").run(quick=True, seed=0)
    assert res["complete"] + res["pruned"] == 6 and res["complete"] >= 3
    assert set(res["best_params"]) == {"width", "depth", "lr", "dropout", "optimizer"}
    assert res["best_test_accuracy"] > 0.8  # the best of 6 random trials on the digits
