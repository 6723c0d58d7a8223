"""The Trainer end to end: learning on real data, callbacks, checkpoints (atomic, exact
resume), schedules, regularizers, FGSM, preprocessing and bad input."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from fusedmlp.datasets import load_digits


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    X = X / 16.0
    idx = np.random.default_rng(0).permutation(len(X))
    return X[idx].astype(np.float32), y[idx]


def test_digits_reaches_95_percent(digits):
    X, y = digits
    model = fm.MLP(n_in=64, hidden=[64], n_out=10, activation="relu", seed=0)
    tr = fm.Trainer(model, loss="cross_entropy", optimizer=fm.optim.Adam(lr=3e-3))
    hist = tr.fit(
        X[:1400],
        y[:1400],
        epochs=25,
        batch_size=32,
        verbose=0,
        validation_data=(X[1400:], y[1400:]),
    )
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert tr.evaluate(X[1400:], y[1400:])["accuracy"] >= 0.95
    P = tr.predict(X[:5])
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-5)


def test_regression_mse_and_schedule(rng):
    X, y = fm.datasets.make_sin(512, seed=1)
    model = fm.MLP(n_in=1, hidden=[64, 64], n_out=1, activation="tanh", seed=1)
    sched = fm.schedules.Cosine(lr=1e-2, T=40, per="epoch")
    tr = fm.Trainer(
        model, loss="mse", optimizer=fm.optim.Adam(lr=1e-2), schedule=sched, metrics=("mse",)
    )
    hist = tr.fit(X, y, epochs=40, batch_size=64, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    # cosine: lr_e = 1/2 lr_0 (1 + cos(e pi / T)) (deck 000); the log holds the lr used in epoch e
    np.testing.assert_allclose(
        hist.history["lr"][9], 0.5 * 1e-2 * (1 + np.cos(9 * np.pi / 40)), rtol=1e-6
    )
    # the mse metric of deck 004 equals the loss evaluated in inference mode
    assert tr.evaluate(X, y)["loss"] == pytest.approx(tr.evaluate(X, y)["mse"], rel=1e-4)


def test_checkpoint_resume_is_bit_exact(tmp_path, digits):
    X, y = digits
    X, y = X[:256], y[:256]

    def make():
        m = fm.MLP(n_in=64, hidden=[32], n_out=10, dropout=0.2, batchnorm=True, seed=3)
        return fm.Trainer(
            m, optimizer=fm.optim.Adam(lr=1e-3), regularizers=[fm.regularizers.L2(1e-4)]
        )

    a = make()
    a.fit(X, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    path = tmp_path / "ckpt.npz"
    a.save(path)
    a.fit(X, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    b = fm.Trainer.load(path)
    b.fit(X, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    np.testing.assert_array_equal(a.model.parameters, b.model.parameters)
    np.testing.assert_array_equal(a.model._net.buffers(), b.model._net.buffers())
    assert a.history.history["loss"] == b.history.history["loss"]


def test_checkpoint_errors_and_atomicity(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable fusedmlp checkpoint"):
        fm.Trainer.load(bad)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, header=np.frombuffer(b'{"format": "other"}', dtype=np.uint8))
    with pytest.raises(ValueError, match="not a fusedmlp checkpoint"):
        fm.Trainer.load(foreign)
    t = fm.Trainer(fm.MLP(n_in=2, hidden=[3], n_out=2))
    good = tmp_path / "good.npz"
    t.save(good)
    before = good.read_bytes()
    t.model.parameters[:] = 0.0
    t.save(good)
    assert good.read_bytes() != before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_early_stopping_restores_best_and_records_best_step(digits):
    X, y = digits
    model = fm.MLP(n_in=64, hidden=[128], n_out=10, seed=0)
    es = fm.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    tr = fm.Trainer(model, optimizer=fm.optim.Adam(lr=3e-2), callbacks=[es])
    hist = tr.fit(
        X[:300],
        y[:300],
        epochs=60,
        batch_size=16,
        verbose=0,
        validation_data=(X[1000:1300], y[1000:1300]),
    )
    assert es.stopped_epoch is not None and len(hist.epoch) < 60
    assert es.best_step is not None and es.best_step <= tr.step_count
    assert abs(tr.evaluate(X[1000:1300], y[1000:1300])["loss"] - es.best) < 1e-5


def test_terminate_on_nan_keeps_last_good_weights():
    X = np.ones((8, 2), np.float32)
    y = np.ones((8, 1), np.float32)
    model = fm.MLP(n_in=2, hidden=[4], n_out=1, seed=0)
    t = fm.Trainer(
        model,
        loss="mse",
        optimizer=fm.optim.SGD(lr=1e30),
        metrics=(),
        callbacks=[fm.callbacks.TerminateOnNaN()],
    )
    with pytest.warns(RuntimeWarning, match="diverged at epoch"):
        t.fit(X, y, epochs=50, batch_size=8, verbose=0)
    assert np.isfinite(model.parameters).all()
    assert t.callbacks[0].message is not None and "step" in t.callbacks[0].message
    assert t.diverged is not None and t.diverged.what == "loss"


def test_reduce_lr_on_plateau_halves():
    X = np.zeros((16, 2), np.float32)
    y = np.zeros(16, np.int64)
    t = fm.Trainer(
        fm.MLP(n_in=2, hidden=[2], n_out=2),
        optimizer=fm.optim.SGD(lr=0.1),
        callbacks=[
            fm.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)
        ],
    )
    hist = t.fit(X, y, epochs=4, batch_size=16, verbose=0)
    assert hist.history["lr"][0] == pytest.approx(0.1) and hist.history["lr"][-1] < 0.1


def test_fgsm_training_runs_and_learns(digits):
    X, y = digits
    t = fm.Trainer(
        fm.MLP(n_in=64, hidden=[32], n_out=10, seed=0),
        optimizer=fm.optim.Adam(lr=3e-3),
        adversarial_eps=0.05,
    )
    hist = t.fit(X[:500], y[:500], epochs=5, batch_size=50, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_full_batch_and_single_sample_modes(digits):
    X, y = digits
    for bs in (None, 1):
        t = fm.Trainer(
            fm.MLP(n_in=64, hidden=[16], n_out=10, seed=0), optimizer=fm.optim.SGD(lr=0.05)
        )
        h = t.fit(X[:64], y[:64], epochs=3, batch_size=bs, verbose=0)
        assert t.step_count == (3 if bs is None else 192)
        assert h.history["loss"][-1] < h.history["loss"][0]


def test_history_plot(tmp_path, digits):
    X, y = digits
    t = fm.Trainer(fm.MLP(n_in=64, hidden=[8], n_out=10))
    h = t.fit(X[:100], y[:100], epochs=2, verbose=0, validation_split=0.2)
    assert "val_loss" in h.history
    h.plot(path=str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_roc_metrics():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    fpr, tpr, thr = fm.metrics.roc_curve(y, s)
    assert fpr[0] == 0 and tpr[-1] == 1
    assert fm.metrics.roc_auc(y, s[:, None]) == pytest.approx(0.75)


def test_preprocessing_against_numpy(rng):
    X = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 4)) + 3
    Z = fm.preprocessing.StandardScaler(eps=0).fit_transform(X)
    np.testing.assert_allclose(Z, (X - X.mean(0)) / X.std(0), rtol=1e-12)
    M = fm.preprocessing.MinMaxScaler().fit(X)
    np.testing.assert_allclose(M.transform(X), (X - X.min(0)) / (X.max(0) - X.min(0)), rtol=1e-12)
    np.testing.assert_allclose(M.inverse_transform(M.transform(X)), X, rtol=1e-12)
    W = fm.preprocessing.ZCAWhitening(eps=1e-10).fit(X)
    np.testing.assert_allclose(np.cov(W.transform(X), rowvar=False), np.eye(4), atol=1e-6)
    np.testing.assert_allclose(W.inverse_transform(W.transform(X)), X, rtol=1e-8)


class TestBadInput:
    def setup_method(self):
        self.t = fm.Trainer(fm.MLP(n_in=3, hidden=[4], n_out=2))

    def test_labels_out_of_range(self):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
            self.t.fit(np.zeros((4, 3), np.float32), np.array([0, 1, 2, 0]), verbose=0)

    def test_nan_in_X_and_y(self):
        X = np.zeros((4, 3), np.float32)
        X[1, 1] = np.nan
        with pytest.raises(ValueError, match="X: contains NaN"):
            self.t.train_step(X, np.zeros(4, np.int64))
        with pytest.raises(ValueError, match="y: contains NaN"):
            fm.Trainer(fm.MLP(n_in=3, hidden=[4], n_out=1), loss="mse").fit(
                np.zeros((2, 3)), np.array([1.0, np.nan]), verbose=0
            )

    def test_bad_hyper_parameters(self):
        X, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
        with pytest.raises(ValueError, match="batch_size"):
            self.t.fit(X, y, batch_size=0, verbose=0)
        with pytest.raises(ValueError, match="validation_split"):
            self.t.fit(X, y, validation_split=1.0, verbose=0)
        with pytest.raises(ValueError, match="X: expected a non-empty"):
            self.t.fit(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), verbose=0)
        with pytest.raises(ValueError, match="y: expected 4 rows"):
            self.t.fit(X, np.zeros(3, np.int64), verbose=0)
        with pytest.raises(ValueError, match="loss: unknown loss"):
            fm.Trainer(fm.MLP(n_in=3, hidden=[4], n_out=2), loss="hinge")


def test_fast_path_targets_still_rejects_bad_labels_and_nan():
    """int32 labels and model-dtype targets skip the Python conversion; the checks still hold."""
    m = fm.MLP(n_in=3, hidden=[4], n_out=3, seed=0)
    tr = fm.Trainer(m, loss="cross_entropy")
    X = np.ones((2, 3), np.float32)
    before = m.get_weights()
    with pytest.raises(ValueError, match="label 3 of sample 1"):
        tr.train_step(X, np.array([0, 3], np.int32))
    for a, b in zip(before, m.get_weights(), strict=False):
        np.testing.assert_array_equal(a, b)
    r = fm.Trainer(fm.MLP(n_in=3, hidden=[4], n_out=2, seed=0), loss="mse")
    with pytest.raises(ValueError, match="NaN or Inf"):
        r.train_step(X, np.array([[0.0, np.nan], [1.0, 2.0]], np.float32))


def _replayed_running_metrics(model_args, loss, X, y, batch_size, metrics):
    """The running metrics of one shuffled epoch, replayed by hand: each batch's predictions
    by model.predict before its own train_step (no dropout/BN: the training-mode forward of
    the step computes the same outputs), gathered at their rows, then fusedmlp.metrics."""
    model = fm.MLP(**model_args)
    t = fm.Trainer(model, loss=loss, optimizer=fm.optim.Adam(lr=1e-2), metrics=())
    order = np.random.default_rng([model.seed, 0]).permutation(len(X))
    preds, losses = [None] * len(X), []
    for s in range(0, len(X), batch_size):
        idx = order[s : s + batch_size]
        p = t.predict(X[idx])
        for i, r in enumerate(idx):
            preds[r] = p[i]
        losses.append(t.train_step(X[idx], y[idx]) * len(idx))
    P = np.array(preds)
    out = {name: fm.metrics.get(name)(y, P) for name in metrics}
    out["loss"] = sum(losses) / len(X)
    return out, model.parameters.copy()


@pytest.mark.parametrize(
    "loss, n_out, kind, metrics",
    [
        ("cross_entropy", 3, "labels", ("accuracy",)),  # arg-max counted in the C++ step
        ("cross_entropy", 3, "onehot", ("accuracy", "mse")),  # from the step's outputs
        ("binary_cross_entropy", 1, "binary", ("accuracy", "roc_auc")),  # threshold counted
        ("mse", 1, "binary", ("accuracy", "mae")),
    ],
)
def test_training_metrics_are_running_values_of_the_steps(loss, n_out, kind, metrics):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 5)).astype(np.float32)
    labels = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    if kind == "labels":
        y = labels
    elif kind == "onehot":
        y = np.eye(n_out, dtype=np.float32)[labels]
    else:
        y = (labels > 0).astype(np.float32)[:, None]
    args = dict(n_in=5, hidden=[8], n_out=n_out, seed=4)
    want, want_params = _replayed_running_metrics(args, loss, X, y, 16, metrics)
    model = fm.MLP(**args)
    t = fm.Trainer(model, loss=loss, optimizer=fm.optim.Adam(lr=1e-2), metrics=metrics)
    hist = t.fit(X, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.parameters, want_params)  # the same trajectory
    assert hist.history["loss"] == [pytest.approx(want["loss"], rel=1e-12)]
    for name in metrics:
        assert hist.history[name] == [pytest.approx(want[name], rel=1e-6)], name


def test_running_metrics_cover_the_rows_seen_when_training_stops_mid_epoch():
    class StopAfter(fm.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 1:
                self.trainer.stop_training = True

    X = np.random.default_rng(5).normal(size=(64, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = fm.MLP(n_in=3, hidden=[4], n_out=2, seed=1)
    t = fm.Trainer(model, metrics=("accuracy", "mse"), callbacks=[StopAfter()])
    # the replay of the two batches the fit runs: predictions before each step
    ref = fm.Trainer(fm.MLP(n_in=3, hidden=[4], n_out=2, seed=1), metrics=())
    order = np.random.default_rng([1, 0]).permutation(64)
    rows, P = [], []
    for s in (0, 16):
        idx = order[s : s + 16]
        P.append(ref.predict(X[idx]))
        rows.append(idx)
        ref.train_step(X[idx], y[idx])
    rows, P = np.concatenate(rows), np.concatenate(P)
    hist = t.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert hist.history["accuracy"] == [fm.metrics.accuracy(y[rows], P)]
    assert hist.history["mse"] == [pytest.approx(fm.metrics.mse(y[rows], P), rel=1e-6)]


def test_train_step_indexed_rejects_bad_rows():
    model = fm.MLP(n_in=3, hidden=[4], n_out=2, seed=1)
    fm.Trainer(model)
    net = model._net
    X = np.zeros((4, 3), np.float32)
    y = np.zeros(4, np.int32)
    net.reset_step_stats(4, [1], [0.0], [False])
    with pytest.raises(ValueError, match=r"idx: a row index is out of range \[0, 4\)"):
        net.train_step_indexed(X, [y], None, np.array([0, 4]), 1e-3)
    with pytest.raises(TypeError, match="idx: expected an int64"):
        net.train_step_indexed(X, [y], None, np.array([0, 1], np.int32), 1e-3)
    with pytest.raises(ValueError, match="rows reset_step_stats was given"):
        net.train_step_indexed(X[:3], [y[:3]], None, np.array([0]), 1e-3)
