"""fusedmlp.diagnostics: per-layer statistics of the fused passes against a float64 NumPy
reference written by hand from get_weights(), dead units on constructed cases, the
vanishing/exploding warning, update ratios, the callback, and gradient_check (passes on
correct networks of every layer kind, fails on deliberately wrong gradients)."""

from __future__ import annotations

import math
import warnings

import fusedmlp as fm
import numpy as np
import pytest
from fusedmlp import _core
from fusedmlp import diagnostics as D
from fusedmlp import layers as L
from fusedmlp.model import Sequential
from reference import batchnorm as ref_bn
from reference import loss as ref_loss

# -- a hand-written float64 reference of one small network --------------------------------
#   dense_0: tanh(X W0 + b0) -> dense_1: relu(. W1 + b1) -> batchnorm_2 -> dense_3: . W3 + b3
#   cross-entropy on the logits (decks 003/004 backprop; BN from the paper's chain rule).


def _ref_net(n_in=5):
    layers = [L.Dense(7, "tanh"), L.Dense(6, "relu"), L.BatchNorm(), L.Dense(3)]
    return layers


def _reference(weights, X, labels, eps=1e-5):
    """Returns (outputs per layer, dL/d(output) per layer, dL/dW per dense layer, loss)."""
    W0, b0, W1, b1, gamma, beta, _, _, W3, b3 = weights
    Z0 = X @ W0 + b0
    A0 = np.tanh(Z0)
    Z1 = A0 @ W1 + b1
    A1 = np.maximum(Z1, 0.0)
    A2, _, _ = ref_bn.forward_train(A1, gamma, beta, eps)
    A3 = A2 @ W3 + b3
    T = ref_loss.one_hot(labels, 3)
    loss = ref_loss.loss("cross_entropy", A3, T)
    g3 = ref_loss.grad("cross_entropy", A3, T)
    g2 = g3 @ W3.T
    g1, _, _ = ref_bn.backward(A1, g2, gamma, eps)
    dZ1 = g1 * (Z1 > 0)
    g0 = dZ1 @ W1.T
    dZ0 = g0 * (1 - np.tanh(Z0) ** 2)
    dW = {0: X.T @ dZ0, 1: A0.T @ dZ1, 3: A2.T @ g3}
    return [A0, A1, A2, A3], [g0, g1, g2, g3], dW, loss


def _perturbed_bn(model, rng):
    """Non-trivial gamma/beta so the BN backward is exercised."""
    w = model.get_weights()
    w[4] = rng.uniform(0.5, 1.5, size=w[4].shape)
    w[5] = rng.normal(size=w[5].shape) * 0.3
    model.set_weights(w)
    return model.get_weights()


def _state(model):
    net = model._network()
    return (
        net.params().copy(),
        net.buffers().copy(),
        net.grads().copy(),
        net.opt_state().copy(),
        net.bn_updates,
        net.rng_step,
        net.opt_step,
    )


def _assert_state_equal(a, b):
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-11), ("float32", 2e-5)])
def test_layer_stats_match_numpy_reference(dtype, tol, rng):
    X = rng.normal(size=(13, 5))
    labels = rng.integers(0, 3, 13)
    model = Sequential(_ref_net(), n_in=5, seed=4, dtype=dtype)
    w = [x.astype(np.float64) for x in _perturbed_bn(model, rng)]
    X_in = X.astype(dtype)
    outs, gouts, dW, loss = _reference(w, X_in.astype(np.float64), labels)
    before = _state(model)
    rep = D.diagnose(model, X_in, labels, loss="cross_entropy")
    _assert_state_equal(before, _state(model))  # a bare model is never modified
    assert [r.name for r in rep.layers] == ["dense_0", "dense_1", "batchnorm_2", "dense_3"]
    assert abs(rep.loss - loss) <= tol * max(1, loss)
    assert abs(rep.input_mean - X_in.astype(np.float64).mean()) <= tol
    for row, A, G in zip(rep.layers, outs, gouts, strict=True):
        assert row.width == A.shape[1]
        assert abs(row.act_mean - A.mean()) <= tol * max(1, np.abs(A).max()), row.name
        assert abs(row.act_std - A.std()) <= tol * max(1, np.abs(A).max()), row.name
        gs = np.abs(G).max()  # gradients are O(1/batch): compare relative to their scale
        assert abs(row.grad_mean - G.mean()) <= tol * gs, row.name
        assert abs(row.grad_std - G.std()) <= tol * gs, row.name
        assert abs(row.grad_rms - np.sqrt(np.mean(G**2))) <= tol * gs, row.name
    last_rms = np.sqrt(np.mean(gouts[-1] ** 2))
    for row, G in zip(rep.layers, gouts, strict=True):
        want = np.sqrt(np.mean(G**2)) / last_rms
        assert abs(row.grad_ratio_last - want) <= 1e3 * tol * want, row.name
    assert rep.layers[-1].grad_ratio_next is None
    want = np.sqrt(np.mean(gouts[0] ** 2)) / np.sqrt(np.mean(gouts[1] ** 2))
    assert abs(rep.layers[0].grad_ratio_next - want) <= 1e3 * tol * want
    for li, wi in ((0, 0), (1, 2), (3, 8)):
        row = rep.layers[li]
        assert abs(row.weight_norm - np.linalg.norm(w[wi])) <= tol * np.linalg.norm(w[wi])
        assert abs(row.weight_grad_norm - np.linalg.norm(dW[li])) <= tol * 10 * np.linalg.norm(
            dW[li]
        )
    # batchnorm: its weights are gamma and beta together; no dead units
    bn = rep.layers[2]
    assert bn.weight_norm == pytest.approx(np.linalg.norm(np.concatenate([w[4], w[5]])), rel=tol)
    assert bn.dead_units is None
    assert rep.layers[1].update_ratio is None  # no optimizer without a Trainer
    logs = rep.to_logs()
    assert logs["act_std/dense_1"] == rep.layers[1].act_std
    assert "dead_fraction/batchnorm_2" not in logs and "update_ratio/dense_0" not in logs
    text = str(rep)
    assert "dense_0 (tanh)" in text and "dense_1 (relu)" in text and "batchnorm_2" in text


def test_dead_units_on_constructed_relu_layer(rng):
    model = Sequential([L.Dense(6, "relu"), L.Dense(2)], n_in=4, seed=0, dtype="float64")
    w = model.get_weights()
    w[1][:] = 0.1
    w[1][[1, 4]] = -100.0  # never active for inputs of unit scale: dead
    w[0][:, 2] = 0.0
    w[1][2] = 1e-9  # constant output 1e-9: alive at threshold 0, dead at threshold 1e-6
    model.set_weights(w)
    X = rng.normal(size=(50, 4))
    y = rng.integers(0, 2, 50)
    rep = D.diagnose(model, X, y)
    Z = X @ w[0] + w[1]
    want = int(np.sum(np.all(Z <= 0, axis=0)))
    assert want == 2
    assert rep["dense_0"].dead_units == 2 and rep["dense_0"].dead_fraction == pytest.approx(2 / 6)
    assert D.diagnose(model, X, y, dead_threshold=1e-6)["dense_0"].dead_units == 3
    assert rep["dense_1"].dead_units == 0  # identity output: no exact zeros
    # a dead unit passes no gradient: its column of dL/dW is exactly zero
    fm.Trainer(model, loss="cross_entropy")
    model._engine.compute_gradients(X, [y.astype(np.int32)], None, False)
    off, rows, cols, _ = model._index[(0, "W")]
    dW = model.gradients[off : off + rows * cols].reshape(rows, cols)
    assert np.all(dW[:, [1, 4]] == 0) and np.all(np.any(dW[:, [0, 3, 5]] != 0, axis=0))


def test_inference_mode_statistics_and_activation_table(rng):
    layers = [L.Dense(9, "tanh"), L.Dropout(0.5), L.BatchNorm(), L.Dense(4, "sigmoid"), L.Dense(2)]
    model = Sequential(layers, n_in=3, seed=2, dtype="float64")
    w = model.get_weights()
    w[4] = rng.normal(size=9)  # running mean
    w[5] = rng.uniform(0.5, 2.0, size=9)  # running var
    model.set_weights(w)
    X = rng.normal(size=(11, 3))
    A0 = np.tanh(X @ w[0] + w[1])
    A2 = ref_bn.forward_infer(A0, w[2], w[3], w[4], w[5], 1e-5)
    A3 = 1 / (1 + np.exp(-(A2 @ w[6] + w[7])))
    A4 = A3 @ w[8] + w[9]
    before = _state(model)
    table = D.activation_table(model, X)
    _assert_state_equal(before, _state(model))
    assert [r[0] for r in table] == [
        "input",
        "dense_0 (tanh)",
        "dropout_1",
        "batchnorm_2",
        "dense_3 (sigmoid)",
        "dense_4",
    ]
    for (_, mean, std), A in zip(table.rows, [X, A0, A0, A2, A3, A4], strict=True):
        assert abs(mean - A.mean()) < 1e-12 and abs(std - A.std()) < 1e-12
    assert "input layer had mean" in table.deck_text().splitlines()[0]
    assert table.deck_text().splitlines()[2].startswith("hidden layer 2 had mean")
    assert str(table).splitlines()[0].split() == ["layer", "mean", "std"]
    # training mode: dropout is applied (kept units scaled by 2), BN uses batch statistics;
    # running statistics are restored afterwards
    tt = D.activation_table(model, X, training=True)
    _assert_state_equal(before, _state(model))
    assert tt[2][2] != pytest.approx(table[2][2])
    rep = D.diagnose(model, X, training=False)
    assert rep["batchnorm_2"].act_mean == pytest.approx(A2.mean(), abs=1e-12)
    assert rep["dense_0"].grad_mean is None and rep.loss is None


def test_deck000_small_init_tanh_net_activation_std_shrinks(rng):
    # deck 000: 10 tanh layers, N(0, 0.01^2) weights: std shrinks layer after layer
    n = 100
    model = Sequential(
        [L.Dense(n, "tanh", init="normal") for _ in range(10)], n_in=n, seed=0, dtype="float64"
    )
    X = rng.normal(size=(200, n))
    table = D.activation_table(model, X)
    A = X
    for k, (W, b) in enumerate(
        zip(model.get_weights()[0::2], model.get_weights()[1::2], strict=True)
    ):
        A = np.tanh(A @ W + b)
        assert table[k + 1][2] == pytest.approx(A.std(), rel=1e-10)
    stds = [r[2] for r in table.rows]
    assert all(b < 0.2 * a for a, b in zip(stds, stds[1:], strict=False))


def test_vanishing_gradient_warning_names_the_layer(rng):
    # 10 sigmoid layers with small init: dL/d(output) shrinks by ~0.25 * 0.01 * sqrt(32) per layer
    layers = [L.Dense(32, "sigmoid", init="normal") for _ in range(10)] + [L.Dense(3)]
    model = Sequential(layers, n_in=8, seed=1)
    X = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        rep = D.diagnose(model, X, y)
    assert len(rec) == 1 and rec[0].category is D.DiagnosticsWarning  # one per pass
    text = str(rec[0].message)
    assert text.startswith("vanishing gradient at layer 'dense_0'")
    assert rep["dense_0"].grad_ratio_last < 1e-10
    flagged = {r.name for r in rep.layers if r.grad_ratio_last < 1e-3}
    assert len(flagged) == len(rep.warnings) == len(text.splitlines()) >= 8
    assert all(f"layer '{name}'" in text for name in flagged)
    assert all("vanishing_threshold 0.001" in m for m in rep.warnings)
    # thresholds are configurable, and warn=False keeps the messages in the report only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = D.diagnose(model, X, y, vanishing_threshold=1e-30)
        assert quiet.warnings == []
        assert len(D.diagnose(model, X, y, warn=False).warnings) == len(flagged)


def test_exploding_gradient_warning_and_healthy_net_is_silent(rng):
    width = 16
    layers = [L.Dense(width, "identity") for _ in range(8)] + [L.Dense(2)]
    model = Sequential(layers, n_in=width, seed=3, dtype="float64")
    w = model.get_weights()
    for i in range(0, 16, 2):  # gain 4 per layer: the backward signal grows 4x per layer
        w[i] = 4 * np.linalg.qr(rng.normal(size=(width, width)))[0]
    model.set_weights(w)
    X = rng.normal(size=(32, width)) * 1e-4
    y = rng.integers(0, 2, 32)
    with pytest.warns(D.DiagnosticsWarning, match=r"exploding gradient at layer 'dense_0'"):
        rep = D.diagnose(model, X, y)
    # dL/dA_k = dL/dA_{k+1} W_{k+1}^T with W = 4 Q (Q orthogonal): the norm grows exactly 4x
    for k in range(7):
        assert rep[f"dense_{k}"].grad_ratio_next == pytest.approx(4.0, rel=1e-9)
    assert rep["dense_0"].grad_rms / rep["dense_7"].grad_rms == pytest.approx(4.0**7, rel=1e-9)
    assert rep["dense_0"].grad_ratio_last > 1e3
    healthy = fm.MLP(n_in=20, hidden=[64] * 6, n_out=5, activation="relu", seed=0)
    Xh = rng.normal(size=(128, 20)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = D.diagnose(healthy, Xh, rng.integers(0, 5, 128))
    assert all(0.1 < r.grad_ratio_last < 10 for r in rep.layers)


def test_update_ratio_is_one_sgd_step_and_is_undone(rng):
    model = Sequential(_ref_net(), n_in=5, seed=4, dtype="float64")
    w = _perturbed_bn(model, rng)
    X = rng.normal(size=(13, 5))
    labels = rng.integers(0, 3, 13)
    lr = 0.05
    trainer = fm.Trainer(model, optimizer=fm.optim.SGD(lr=lr), metrics=())
    trainer.train_step(X, labels)  # a non-trivial state: step counters, BN running stats
    w = model.get_weights()
    _, _, dW, _ = _reference(w, X, labels)
    before = _state(model)
    rep = D.diagnose(trainer, X, labels)
    _assert_state_equal(before, _state(model))
    for li, wi in ((0, 0), (1, 2), (3, 8)):
        want = lr * np.linalg.norm(dW[li]) / np.linalg.norm(w[wi])
        assert rep.layers[li].update_ratio == pytest.approx(want, rel=1e-10)
    # the trajectory is unchanged: the next step equals one without the diagnostics
    other = Sequential(_ref_net(), n_in=5, seed=4, dtype="float64")
    other._network().params()[:] = before[0]
    other._network().buffers()[:] = before[1]
    t2 = fm.Trainer(other, optimizer=fm.optim.SGD(lr=lr), metrics=())
    t2.step_count, other._network().rng_step = trainer.step_count, model._network().rng_step
    other._network().bn_updates = model._network().bn_updates
    trainer.train_step(X, labels)
    t2.train_step(X, labels)
    np.testing.assert_array_equal(model.parameters, other.parameters)


def test_update_ratio_with_adam_is_about_lr_over_weight_scale(rng):
    # Adam's first step moves every entry by ~lr: ||dW|| / ||W|| ~ lr / rms(W)
    model = fm.MLP(n_in=30, hidden=[40], n_out=4, seed=0)
    trainer = fm.Trainer(model, optimizer=fm.optim.Adam(lr=1e-3), metrics=())
    X = rng.normal(size=(64, 30)).astype(np.float32)
    rep = D.diagnose(trainer, X, rng.integers(0, 4, 64))
    W = model.get_weights()[0].astype(np.float64)
    want = 1e-3 / np.sqrt(np.mean(W**2))
    assert 0.5 * want < rep["dense_0"].update_ratio <= 1.0001 * want


def test_callback_records_every_epoch_and_keeps_the_trajectory(rng):
    X = rng.normal(size=(96, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    Xp, yp = X[:32], y[:32]

    def run(callbacks):
        m = fm.MLP(n_in=6, hidden=[12, 8], n_out=2, batchnorm=True, dropout=0.2, seed=5)
        t = fm.Trainer(m, optimizer=fm.optim.Adam(lr=1e-2), callbacks=callbacks)
        return t, t.fit(X, y, epochs=4, batch_size=16, verbose=0)

    cb = fm.callbacks.DiagnosticsCallback(Xp, yp)
    t1, h1 = run([cb])
    t0, h0 = run([])
    np.testing.assert_array_equal(t1.model.parameters, t0.model.parameters)
    np.testing.assert_array_equal(t1.model._network().buffers(), t0.model._network().buffers())
    assert h1.history["loss"] == h0.history["loss"]
    names = [r.name for r in cb.reports[0].layers]
    assert names[0] == "dense_0" and "batchnorm_1" in names and "dropout_2" in names
    for key in ("act_mean", "act_std", "grad_mean", "grad_std", "grad_ratio"):
        for name in names:
            assert len(h1.history[f"{key}/{name}"]) == 4
    assert (
        len(h1.history["update_ratio/dense_0"]) == len(h1.history["update_ratio/batchnorm_1"]) == 4
    )
    assert "update_ratio/dropout_2" not in h1.history  # no parameters
    assert len(h1.history["dead_fraction/dense_0"]) == 4
    assert [r.epoch for r in cb.reports] == [0, 1, 2, 3]
    # the last record is what diagnose() reports on the final model
    final = D.diagnose(t1, Xp, yp)
    for k, val in final.to_logs().items():
        assert h1.history[k][-1] == pytest.approx(val, rel=1e-6, abs=1e-12), k
    assert all(math.isfinite(x) for x in h1.history["update_ratio/dense_0"])


def test_callback_every_pads_with_nan_and_warns_with_epoch(rng):
    layers = [L.Dense(16, "sigmoid", init="normal") for _ in range(8)] + [L.Dense(2)]
    model = Sequential(layers, n_in=4, seed=0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    cb = D.DiagnosticsCallback(X[:20], y[:20], every=2)
    t = fm.Trainer(model, optimizer=fm.optim.SGD(lr=1e-3), callbacks=[cb])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        h = t.fit(X, y, epochs=5, batch_size=20, verbose=0)
    msgs = [str(w.message) for w in rec if w.category is D.DiagnosticsWarning]
    assert len(msgs) == 2  # one per recorded epoch
    assert msgs[0].startswith("epoch 2: vanishing gradient at layer 'dense_0'")
    assert msgs[1].startswith("epoch 4: vanishing gradient at layer 'dense_0'")
    assert all(w.filename == __file__ for w in rec)  # points at the fit() call
    vals = h.history["act_std/dense_0"]
    assert len(vals) == 5 and len(h.epoch) == 5
    assert [math.isnan(x) for x in vals] == [True, False, True, False, True]
    assert [r.epoch for r in cb.reports] == [1, 3]
    # activation-only probes need no targets
    cb2 = D.DiagnosticsCallback(X[:20])
    t2 = fm.Trainer(fm.MLP(n_in=4, hidden=[5], n_out=2, seed=0), callbacks=[cb2])
    h2 = t2.fit(X, y, epochs=2, batch_size=20, verbose=0)
    assert len(h2.history["act_std/dense_0"]) == 2 and "grad_std/dense_0" not in h2.history


# -- gradient_check -------------------------------------------------------------------------

ARCHS = {
    "tanh-mlp": lambda: [L.Dense(7, "tanh"), L.Dense(5, "tanh"), L.Dense(3)],
    "relu-batchnorm": lambda: [
        L.Dense(8, "relu", bias_init=0.1),
        L.BatchNorm(),
        L.Dense(6, "relu"),
        L.Dense(3),
    ],
    "bn-pre-activation": lambda: [
        L.Dense(6, "identity"),
        L.BatchNorm(),
        L.Activation("gelu"),
        L.Dense(3),
    ],
    "dropout-noise-prelu-rrelu": lambda: [
        L.Dropout(0.2),
        L.Dense(6, "prelu"),
        L.GaussianNoise(0.3),
        L.Dense(5, "rrelu"),
        L.Dropout(0.4),
        L.Dense(3),
    ],
    "maxout-softmax-layer": lambda: [
        L.Dense(8, "identity"),
        L.Activation("maxout", pieces=2),
        L.Dense(6, "elu"),
        L.Activation("softmax"),
        L.Dense(3),
    ],
    "learnable-activations": lambda: [
        L.Dense(6, "apl", activation_params={"hinges": 2}),
        L.Activation("soft_exponential"),
        L.Dense(5, "srelu"),
        L.BatchNorm(affine=True),
        L.Dense(3, "sigmoid"),
        L.Dense(3),
    ],
    "smooth-zoo": lambda: [
        L.Dense(6, "selu"),
        L.Dense(6, "softsign"),
        L.Dense(6, "silu"),
        L.Dense(6, "soboleva_tanh"),
        L.Dense(3),
    ],
}


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradient_check_passes_on_correct_networks(arch, dtype, rng):
    model = Sequential(ARCHS[arch](), n_in=4, seed=7, dtype=dtype)
    model._network().rng_step = 3
    X = rng.normal(size=(9, 4)).astype(dtype)
    y = rng.integers(0, 3, 9)
    before = _state(model)
    rep = D.gradient_check(model, X, y, max_entries=None)
    _assert_state_equal(before, _state(model))
    assert rep.passed, str(rep)
    assert rep.rng_step == 3
    info = [(li, name) for li, name, *_, tr in model._network().param_info() if tr]
    assert len(rep.tensors) == len(info) + 1 and rep.tensors[-1].name == "input"
    assert all(t.n_checked == int(np.prod(t.shape)) for t in rep.tensors)
    assert rep.max_rel_error < 1e-6


@pytest.mark.parametrize(
    "loss,smoothing,half",
    [("mse", 0.0, True), ("binary_cross_entropy", 0.1, False), ("cross_entropy", 0.2, False)],
)
def test_gradient_check_uses_the_trainer_loss_configuration(loss, smoothing, half, rng):
    model = fm.MLP(n_in=5, hidden=[6], n_out=3, activation="tanh", seed=1)
    trainer = fm.Trainer(model, loss=loss, label_smoothing=smoothing, half_mse=half, metrics=())
    X = rng.normal(size=(7, 5)).astype(np.float32)
    y = (
        rng.integers(0, 3, 7)
        if loss == "cross_entropy"
        else (rng.random((7, 3)) > 0.5).astype(float)
    )
    sw = rng.uniform(0.5, 2, 7)
    rep = D.gradient_check(trainer, X, y, sample_weight=sw)
    assert rep.passed, str(rep)
    # the loss checked is the trainer's configuration, evaluated in float64
    W0, b0, W1, b1 = (w.astype(np.float64) for w in model.get_weights())
    Z = np.tanh(X.astype(np.float64) @ W0 + b0) @ W1 + b1
    T = ref_loss.one_hot(y, 3) if loss == "cross_entropy" else y
    want = ref_loss.loss(loss, Z, T, w=sw, eps=smoothing, half=half)
    assert rep.loss == pytest.approx(want, rel=1e-12)


def test_gradient_check_multi_head_and_rng_step(rng):
    trunk = [L.Dense(6, "tanh"), L.Dropout(0.3)]
    heads = [[L.Dense(3)], [L.Dense(4, "relu", bias_init=0.5), L.Dense(2)]]
    model = Sequential(trunk, n_in=4, heads=heads, seed=2)
    trainer = fm.Trainer(model, loss=["cross_entropy", "mse"], loss_weights=[1.0, 0.5], metrics=())
    X = rng.normal(size=(8, 4)).astype(np.float32)
    y = [rng.integers(0, 3, 8), rng.normal(size=(8, 2))]
    rep = D.gradient_check(trainer, X, y, rng_step=17)
    assert rep.passed, str(rep)
    assert rep.rng_step == 17 and model._network().rng_step == 0
    assert [t.name for t in rep.tensors][:2] == ["dense_0.W", "dense_0.b"]


def test_multi_head_trunk_gradient_is_the_weighted_sum_of_the_heads(rng):
    model = Sequential(
        [L.Dense(5, "tanh")], n_in=4, heads=[[L.Dense(3)], [L.Dense(2)]], seed=6, dtype="float64"
    )
    trainer = fm.Trainer(model, loss=["cross_entropy", "mse"], loss_weights=[1.0, 0.5], metrics=())
    X = rng.normal(size=(10, 4))
    labels, T = rng.integers(0, 3, 10), rng.normal(size=(10, 2))
    W0, b0, W1, b1, W2, b2 = model.get_weights()
    A0 = np.tanh(X @ W0 + b0)
    g1 = ref_loss.grad("cross_entropy", A0 @ W1 + b1, ref_loss.one_hot(labels, 3))
    g2 = 0.5 * ref_loss.grad("mse", A0 @ W2 + b2, T)
    g0 = g1 @ W1.T + g2 @ W2.T
    rep = D.diagnose(trainer, X, [labels, T])
    assert [r.name for r in rep.layers] == ["dense_0", "dense_1", "dense_2"]
    for row, G in zip(rep.layers, [g0, g1, g2], strict=True):
        assert row.grad_mean == pytest.approx(G.mean(), abs=1e-13)
        assert row.grad_std == pytest.approx(G.std(), rel=1e-11)
    # ratios are taken to the network's last layer: the last head's output
    assert rep["dense_0"].grad_ratio_last == pytest.approx(
        np.sqrt(np.mean(g0**2) / np.mean(g2**2)), rel=1e-11
    )


def _wrong_gradients(monkeypatch, tamper):
    """Make Network64.compute_gradients return tampered analytic gradients (the loss value,
    which the central differences use, is unchanged)."""
    orig = _core.Network64.compute_gradients

    def wrong(self, X, y, sample_weight=None, dX=None, stream=None):
        loss, per_head = orig(self, X, y, sample_weight, dX, stream)
        tampered = tamper(self, dX)
        if dX is not None:  # the input gradient is written into the caller's array
            dX[...] = tampered
        return loss, per_head

    monkeypatch.setattr(_core.Network64, "compute_gradients", wrong)


def test_gradient_check_fails_on_a_wrong_tensor_gradient(monkeypatch, rng):
    model = Sequential(
        [L.Dense(7, "tanh"), L.BatchNorm(), L.Dense(5, "elu"), L.Dense(3)], n_in=4, seed=1
    )
    X = rng.normal(size=(9, 4)).astype(np.float32)
    y = rng.integers(0, 3, 9)
    assert D.gradient_check(model, X, y).passed
    off, rows, cols, _ = model._index[(2, "W")]

    def scale_w(net, dX):
        net.grads()[off : off + rows * cols] *= 1.001  # a 0.1% error in dense_2.W only
        return dX

    _wrong_gradients(monkeypatch, scale_w)
    rep = D.gradient_check(model, X, y)
    assert not rep.passed
    assert rep.failed == ["dense_2.W"]
    assert rep["dense_2.W"].max_rel_error == pytest.approx(1e-3 / 1.001, rel=1e-3)
    assert rep["dense_0.W"].max_rel_error < 1e-6
    assert "FAILED" in str(rep) and "dense_2.W" in repr(rep)


def test_gradient_check_finds_one_wrong_entry_and_a_wrong_input_gradient(monkeypatch, rng):
    model = Sequential([L.Dense(6, "softplus"), L.Dense(3)], n_in=5, seed=3)
    X = rng.normal(size=(6, 5)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    off, _, _, _ = model._index[(0, "b")]

    def tamper(net, dX):
        net.grads()[off + 4] += 1e-5  # one bias entry off by 1e-5
        return None if dX is None else dX * -1.0  # and the input gradient's sign flipped

    _wrong_gradients(monkeypatch, tamper)
    rep = D.gradient_check(model, X, y, max_entries=None)
    assert set(rep.failed) == {"dense_0.b", "input"}
    assert rep["dense_0.b"].worst_index == (4,)
    assert rep["dense_0.b"].max_abs_error == pytest.approx(1e-5, rel=1e-3)
    assert rep["input"].max_rel_error > 1.0


def test_gradient_check_at_a_relu_kink(rng):
    # one unit's pre-activation sits 5e-7 above the kink for sample 0: the step 1e-6 in its
    # bias crosses it; the retry at eps/10 does not and agrees with the fused gradient
    model = Sequential([L.Dense(3, "relu"), L.Dense(2)], n_in=2, seed=0, dtype="float64")
    X = rng.normal(size=(4, 2))
    w = model.get_weights()
    w[1][0] = 5e-7 - X[0] @ w[0][:, 0]
    model.set_weights(w)
    y = rng.integers(0, 2, 4)
    rep = D.gradient_check(model, X, y, max_entries=None)
    assert rep.passed and rep["dense_0.b"].n_nonsmooth >= 1
    strict = D.gradient_check(model, X, y, max_entries=None, retry_kinks=False)
    assert "dense_0.b" in strict.failed


def test_rbf_and_frozen_layers(rng):
    X = rng.normal(size=(12, 3))
    y = rng.integers(0, 2, 12)
    model = fm.Sequential([fm.RBF(5), fm.Dense(6, "tanh"), fm.Dense(2)], n_in=3, seed=1)
    model.init_rbf(X)
    model.set_trainable(0, False)
    rep = D.gradient_check(model, X, y, max_entries=None)
    # the frozen RBF layer's gradient is computed on the copy (not held at 0) and checked
    assert rep.passed, str(rep)
    assert rep["rbf_0.centers"].shape == (5, 3) and rep["rbf_0.log_widths"].shape == (5,)
    assert rep["rbf_0.centers"].n_checked == 15
    assert not model.is_trainable(0)
    trainer = fm.Trainer(model, optimizer=fm.optim.SGD(lr=0.1), metrics=())
    diag = D.diagnose(trainer, X, y)
    assert diag["rbf_0"].update_ratio == 0.0 and diag["rbf_0"].weight_grad_norm == 0.0
    assert diag["rbf_0"].grad_rms > 0 and diag["dense_1"].update_ratio > 0
    assert diag["rbf_0"].dead_units is None


def test_gradient_check_samples_entries_of_large_tensors(rng):
    model = fm.MLP(n_in=30, hidden=[20], n_out=3, seed=0)
    X = rng.normal(size=(5, 30)).astype(np.float32)
    rep = D.gradient_check(model, X, rng.integers(0, 3, 5), max_entries=25, check_input=False)
    assert rep.passed
    assert [t.n_checked for t in rep.tensors] == [25, 20, 25, 3]
    assert [t.name for t in rep.tensors] == ["dense_0.W", "dense_0.b", "dense_1.W", "dense_1.b"]


# -- bad input ------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors(rng):
    model = fm.MLP(n_in=4, hidden=[5], n_out=2, seed=0)
    X = rng.normal(size=(6, 4)).astype(np.float32)
    y = rng.integers(0, 2, 6)
    with pytest.raises(TypeError, match="model: expected a fusedmlp model"):
        D.diagnose("net", X, y)
    with pytest.raises(ValueError, match="X: expected 4 features"):
        D.diagnose(model, X[:, :3], y)
    with pytest.raises(ValueError, match="dead_threshold"):
        D.diagnose(model, X, y, dead_threshold=-1.0)
    with pytest.raises(ValueError, match="vanishing_threshold"):
        D.diagnose(model, X, y, vanishing_threshold=10.0, exploding_threshold=5.0)
    with pytest.raises(ValueError, match="training"):
        D.diagnose(model, X, y, training=False)
    with pytest.raises(ValueError, match="y: labels must be in"):
        D.diagnose(model, X, y + 5)
    with pytest.raises(ValueError, match="sample_weight"):
        D.diagnose(model, X, sample_weight=np.ones(6))
    with pytest.raises(ValueError, match="eps"):
        D.gradient_check(model, X, y, eps=0.0)
    with pytest.raises(ValueError, match="max_entries"):
        D.gradient_check(model, X, y, max_entries=0)
    with pytest.raises(ValueError, match="rtol"):
        D.gradient_check(model, X, y, rtol=-1e-6)
    with pytest.raises(ValueError, match="not finite"):
        D.gradient_check(model, X, np.full((6, 2), 1e200), loss="mse")
    with pytest.raises(ValueError, match="every"):
        D.DiagnosticsCallback(X, y, every=0)
    with pytest.raises(ValueError, match="X_probe: contains NaN"):
        D.DiagnosticsCallback(np.full((2, 4), np.nan))
    t = fm.Trainer(model, callbacks=[D.DiagnosticsCallback(X[:, :3], y)])
    with pytest.raises(ValueError, match="X_probe: expected 4 features"):
        t.fit(X, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="layer_grad: no recorded gradients"):
        fm.MLP(n_in=2, hidden=[2], n_out=2)._network().layer_grad(0)
    with pytest.raises(KeyError, match="no layer named"):
        D.diagnose(model, X, y)["dense_9"]
