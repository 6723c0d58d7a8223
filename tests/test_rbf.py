"""RBF layer (deck 003): the kernels against the float64 reference (tests/reference/rbf.py),
the reference and the kernels against central differences, a network with an RBF layer
against finite differences end to end, the data-driven placement of centres and widths,
freezing in the fused optimizer step, the 2-step / 3-step / end-to-end learning schemes,
checkpoints, and bad input. The kernel checks run on every device (conftest.DEVICES)."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from conftest import DEVICES, assert_close, to_device, to_host
from reference import rbf as ref
from reference.finite_differences import (
    central_difference_entries,
    central_difference_grad,
    central_difference_grads,
)

DTYPES = [np.float64, np.float32]
# (batch, n_in, K): single row/feature/centre, odd sizes, K beyond one 64-column reduction
# block, and a batch crossing the OpenMP threshold (rows * cols >= 2^15).
SHAPES = [(1, 1, 1), (7, 3, 5), (7, 5, 3), (33, 17, 65), (1, 4, 70), (300, 9, 130), (300, 40, 129)]


def gpu_tol(dtype, device):
    """float32 on the GPU: its reductions are ordered differently from the CPU's, and were held
    to 1e-4 of the CPU's results; everything else at the dtype's tolerance."""
    return 1e-4 if dtype == np.float32 and device == "cuda" else None


def make_inputs(shape, rng):
    batch, n_in, K = shape
    X = rng.normal(size=(batch, n_in))
    C = rng.normal(size=(K, n_in))
    # widths of the order of the typical distance, so the features are neither all 0 nor all 1
    widths = rng.uniform(0.5, 1.5, size=K) * np.sqrt(n_in)
    return X, C, widths


# --------------------------------------------------------------------------- reference


def test_reference_backward_matches_central_differences(rng):
    X, C, s = make_inputs((5, 3, 4), rng)
    G = rng.normal(size=(5, 4))
    f = lambda x_, c_, s_: float(np.sum(G * ref.forward(x_, c_, s_)[1]))  # noqa: E731
    fd = central_difference_grads(f, [X, C, s])
    for got, want in zip(ref.backward(X, C, s, G), fd, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference(shape, dtype, device, rng):
    X, C, s = make_inputs(shape, rng)
    Xd = to_device(X.astype(dtype), device)
    D, Phi = fm.ops.rbf(Xd, to_device(C.astype(dtype), device), to_device(s.astype(dtype), device))
    assert type(D) is type(Xd) and type(Phi) is type(Xd)
    assert D.dtype == dtype and Phi.dtype == dtype
    D_ref, Phi_ref = ref.forward(X.astype(dtype), C.astype(dtype), s.astype(dtype))
    tol = gpu_tol(dtype, device)
    assert_close(D, D_ref, dtype, tol=tol, what="D")
    assert_close(Phi, Phi_ref, dtype, tol=tol, what="Phi")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_backward_matches_reference(shape, dtype, device, rng):
    X, C, s = make_inputs(shape, rng)
    X, C, s = X.astype(dtype), C.astype(dtype), s.astype(dtype)
    G = rng.normal(size=(shape[0], shape[2])).astype(dtype)
    Xd, Cd, sd, Gd = (to_device(a, device) for a in (X, C, s, G))
    D, Phi = fm.ops.rbf(Xd, Cd, sd)
    got = fm.ops.rbf_backward(Xd, Cd, sd, D, Phi, Gd)
    np.testing.assert_array_equal(to_host(Gd), G)  # the caller's gradient is not overwritten
    dX, dC, ds = ref.backward(X, C, s, G)
    tol = gpu_tol(dtype, device)
    assert_close(got["dX"], dX, dtype, tol=tol, what="dX")
    assert_close(got["dcenters"], dC, dtype, tol=tol, what="dcenters")
    assert_close(got["dwidths"], ds, dtype, tol=tol, what="dwidths")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("need_dx, need_params", [(False, True), (True, False)])
def test_backward_optional_outputs(need_dx, need_params, device, rng):
    X, C, s = make_inputs((9, 4, 6), rng)
    G = rng.normal(size=(9, 6))
    Xd, Cd, sd = (to_device(a, device) for a in (X, C, s))
    D, Phi = fm.ops.rbf(Xd, Cd, sd)
    got = fm.ops.rbf_backward(
        Xd, Cd, sd, D, Phi, to_device(G, device), need_dx=need_dx, need_params=need_params
    )
    dX, dC, ds = ref.backward(X, C, s, G)
    if need_dx:
        assert_close(got["dX"], dX, np.float64)
    else:
        assert got["dX"] is None
    if need_params:
        assert_close(got["dcenters"], dC, np.float64)
        assert_close(got["dwidths"], ds, np.float64)
    else:
        assert got["dcenters"] is None and got["dwidths"] is None


def test_kernel_backward_matches_central_differences(rng):
    X, C, s = make_inputs((6, 3, 5), rng)
    G = rng.normal(size=(6, 5))
    f = lambda x_, c_, s_: float(np.sum(G * fm.ops.rbf(x_, c_, s_)[1]))  # noqa: E731
    fd = central_difference_grads(f, [X, C, s])
    D, Phi = fm.ops.rbf(X, C, s)
    got = fm.ops.rbf_backward(X, C, s, D, Phi, G)
    for name, want in zip(("dX", "dcenters", "dwidths"), fd, strict=True):
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_distance_clamped_at_zero(dtype, rng):
    # points on the centres, far from the origin: the expansion cancels to rounding noise,
    # which may be negative; D must be >= 0 and Phi <= 1
    C = (rng.normal(size=(8, 5)) * 100).astype(dtype)
    X = np.concatenate([C, C + dtype(1e-3)])
    D, Phi = fm.ops.rbf(X, C, np.ones(8, dtype))
    assert (D >= 0).all() and (Phi <= 1).all() and np.isfinite(Phi).all()
    if dtype == np.float64:
        np.testing.assert_allclose(np.diag(D[:8]), 0.0, atol=1e-9)


def test_bad_input():
    X, C, s = np.zeros((3, 2)), np.zeros((4, 2)), np.ones(4)
    with pytest.raises(ValueError, match="widths: expected values > 0"):
        fm.ops.rbf(X, C, np.array([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="widths: expected shape"):
        fm.ops.rbf(X, C, np.ones(3))
    with pytest.raises(ValueError, match="centers: expected 2 columns"):
        fm.ops.rbf(X, np.zeros((4, 3)), s)
    with pytest.raises(TypeError, match="centers: expected dtype float64"):
        fm.ops.rbf(X, C.astype(np.float32), s)
    with pytest.raises(ValueError, match="X: contains NaN"):
        fm.ops.rbf(np.full((3, 2), np.nan), C, s)
    D, Phi = fm.ops.rbf(X, C, s)
    with pytest.raises(ValueError, match="grad_output: expected shape"):
        fm.ops.rbf_backward(X, C, s, D, Phi, np.ones((3, 5)))
    with pytest.raises(ValueError, match="Phi: expected shape"):
        fm.ops.rbf_backward(X, C, s, D, Phi[:2], np.ones((3, 4)))
    # the C++ entry point checks too
    D, Phi = np.empty((3, 4)), np.empty((3, 4))
    with pytest.raises(ValueError, match="widths"):
        fm._core.rbf_forward(X, C, -s, D, Phi)
    with pytest.raises(ValueError, match="centers: expected shape"):
        fm._core.rbf_forward(X, np.zeros((4, 3)), s, D, Phi)


# --------------------------------------------------------------------------- network


def rbf_model(n_in, K, n_out=1, seed=0, dtype="float64", **kw):
    return fm.Sequential([fm.RBF(K, **kw), fm.Dense(n_out)], n_in=n_in, seed=seed, dtype=dtype)


def randomize(model, rng):
    """Random centres, log widths and output weights (not at any optimum)."""
    C, logs, W, b = model.get_weights()
    model.set_weights(
        [
            rng.normal(size=C.shape),
            rng.uniform(-0.3, 0.5, size=logs.shape),
            rng.normal(size=W.shape),
            rng.normal(size=b.shape),
        ]
    )


def test_weights_layout_and_forward(rng):
    model = rbf_model(3, 20, n_out=2)
    C, logs, W, b = model.get_weights()
    assert C.shape == (20, 3) and logs.shape == (20,) and W.shape == (20, 2) and b.shape == (2,)
    randomize(model, rng)
    C, logs, W, b = model.get_weights()
    X = rng.normal(size=(11, 3))
    assert_close(model.predict(X), ref.network_forward(X, C, logs, W, b), np.float64)
    model32 = rbf_model(3, 20, n_out=2, dtype="float32")
    model32.set_weights(model.get_weights())
    assert_close(
        model32.predict(X.astype(np.float32)), ref.network_forward(X, C, logs, W, b), np.float32
    )


def network_fd_check(model, X, y, rng, h=1e-6):
    """compute_gradients of a float64 Network against central differences of its loss over
    every parameter and over the inputs."""
    net = model._network()
    loss, dX, _ = model._engine.compute_gradients(X, [y], None, True)
    grads = net.grads().copy()
    params = net.params()
    fd = np.array(
        central_difference_entries(
            lambda: model._engine.compute_gradients(X, [y], None, False)[0],
            params,
            range(len(params)),
            h,
        ),
        dtype=grads.dtype,
    )
    np.testing.assert_allclose(grads, fd, rtol=1e-5, atol=1e-8)
    fdx = central_difference_grad(
        lambda Xv: model._engine.compute_gradients(Xv, [y], None, False)[0], X, h
    )
    np.testing.assert_allclose(dX, fdx, rtol=1e-5, atol=1e-8)
    return float(np.max(np.abs(grads - fd)))


def test_network_gradients_match_finite_differences(rng):
    model = rbf_model(3, 20)
    fm.Trainer(model, loss="mse", metrics=())
    randomize(model, rng)
    X = rng.normal(size=(9, 3))
    y = rng.normal(size=(9, 1))
    network_fd_check(model, X, y, rng)


def test_network_gradients_rbf_between_layers(rng):
    # Dense -> RBF -> Dense with cross-entropy: the RBF input gradient flows into a Dense
    model = fm.Sequential(
        [fm.Dense(5, activation="tanh"), fm.RBF(7), fm.Dense(3)], n_in=4, dtype="float64", seed=3
    )
    fm.Trainer(model, loss="cross_entropy", metrics=())
    ws = model.get_weights()
    ws[2] = rng.normal(size=ws[2].shape)
    ws[3] = rng.uniform(-0.2, 0.4, size=ws[3].shape)
    model.set_weights(ws)
    X = rng.normal(size=(6, 4))
    y = np.eye(3)[rng.integers(0, 3, size=6)]
    network_fd_check(model, X, y, rng)


# --------------------------------------------------------------------------- placement


def blobs(rng, n_per=50):
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    X = np.concatenate([m + 0.3 * rng.normal(size=(n_per, 2)) for m in means])
    return X, means


def test_kmeans_centres_and_spacing_widths(rng):
    X, means = blobs(rng)
    C, s = fm.RBF(4).fit_centers(X, seed=0)
    # each blob gets one centre, at its mean
    key = lambda a: np.argsort(np.round(a[:, 0]) * 100 + np.round(a[:, 1]))  # noqa: E731
    np.testing.assert_allclose(C[key(C)], means[key(means)], atol=0.2)
    # Moody-Darken p = 2: the mean distance to the two nearest other centres (10 and 10)
    np.testing.assert_allclose(s, 10.0, atol=0.3)
    # deterministic for a seed
    C2, _ = fm.RBF(4).fit_centers(X, seed=0)
    np.testing.assert_array_equal(C, C2)


def test_width_rules(rng):
    X = rng.normal(size=(60, 3))
    layer = fm.RBF(6, init="random_samples", width="spacing", neighbors=3)
    C, s = layer.fit_centers(X, seed=1)
    # every centre is a training row
    assert all(np.any(np.all(X == c, axis=1)) for c in C)
    dist = np.linalg.norm(C[:, None] - C[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    np.testing.assert_allclose(s, np.sort(dist, axis=1)[:, :3].mean(axis=1))
    _, s = fm.RBF(6, init="random_samples", width="dmax").fit_centers(X, seed=1)
    np.fill_diagonal(dist, 0.0)
    np.testing.assert_allclose(s, dist.max() / np.sqrt(12.0))
    _, s = fm.RBF(6, init="uniform", width=0.7).fit_centers(X, seed=1)
    np.testing.assert_array_equal(s, 0.7)
    C, _ = fm.RBF(50, init="uniform").fit_centers(X, seed=1)
    assert (C >= X.min(axis=0)).all() and (C <= X.max(axis=0)).all()
    # one centre: the RMS distance of the data to it
    C, s = fm.RBF(1).fit_centers(X, seed=0)
    np.testing.assert_allclose(s, np.sqrt(np.mean(np.sum((X - C[0]) ** 2, axis=1))))
    # duplicated data: k-means finds fewer distinct points than centres; widths stay > 0
    _, s = fm.RBF(4, init="random_samples").fit_centers(np.repeat(X[:2], 5, axis=0), seed=0)
    assert (s > 0).all()


def test_init_rbf_on_model(rng):
    X, _ = blobs(rng)
    model = rbf_model(2, 4)
    assert not model.rbf_initialized
    model.init_rbf(X)
    assert model.rbf_initialized
    C, logs, _, _ = model.get_weights()
    want_C, want_s = fm.RBF(4).fit_centers(
        X, seed=int(np.random.default_rng([0, 1]).integers(2**31 - 1))
    )
    np.testing.assert_allclose(C, want_C)
    np.testing.assert_allclose(np.exp(logs), want_s)
    # an RBF layer after a Dense layer is placed on that layer's outputs
    m2 = fm.Sequential(
        [fm.Dense(3, activation="tanh"), fm.RBF(5), fm.Dense(1)], n_in=2, dtype="float64"
    )
    m2.init_rbf(X)
    H = np.tanh(X @ m2.get_weights()[0] + m2.get_weights()[1])
    C2 = m2.get_weights()[2]
    assert C2.shape == (5, 3)
    assert (C2.min(axis=0) >= H.min(axis=0) - 1e-9).all() and (
        C2.max(axis=0) <= H.max(axis=0) + 1e-9
    ).all()


def test_placement_bad_input(rng):
    with pytest.raises(ValueError, match="n_centers"):
        fm.RBF(0)
    with pytest.raises(ValueError, match="init: expected one of"):
        fm.RBF(3, init="gng")
    with pytest.raises(ValueError, match="width: expected one of"):
        fm.RBF(3, width="median")
    with pytest.raises(ValueError, match="width: expected > 0"):
        fm.RBF(3, width=-1.0)
    with pytest.raises(ValueError, match="needs at least n_centers=5 rows"):
        fm.RBF(5).fit_centers(np.zeros((3, 2)))


# --------------------------------------------------------------------------- freezing


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda: fm.optim.Adam(lr=1e-2),
        lambda: fm.optim.SGD(lr=0.05, momentum=0.9),
        lambda: fm.optim.Adafactor(),
    ],
    ids=["adam", "sgd-momentum", "adafactor"],
)
def test_frozen_layer_is_skipped_by_the_optimizer(make_opt, rng):
    """A frozen RBF layer keeps its values and the rest follows the same trajectory as an
    unfrozen copy whose RBF parameters are put back after every step."""
    X = rng.normal(size=(16, 2))
    y = rng.normal(size=(16, 1))
    a, b = rbf_model(2, 6), rbf_model(2, 6)
    randomize(a, rng)
    b.set_weights(a.get_weights())
    a.set_trainable(0, False)
    assert not a.is_trainable(0) and a.is_trainable(1)
    ta = fm.Trainer(a, loss="mse", optimizer=make_opt(), metrics=())
    tb = fm.Trainer(b, loss="mse", optimizer=make_opt(), metrics=())
    start = a.get_weights()
    for _ in range(5):
        ta.train_step(X, y)
        tb.train_step(X, y)
        wb = b.get_weights()
        b.set_weights(start[:2] + wb[2:])
    wa = a.get_weights()
    np.testing.assert_array_equal(wa[0], start[0])
    np.testing.assert_array_equal(wa[1], start[1])
    assert not np.array_equal(wa[2], start[2])
    for got, want in zip(wa[2:], b.get_weights()[2:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # the frozen layer's gradient segment is held at zero
    net = a._network()
    a._engine.compute_gradients(X, [y], None, False)
    info = {(li, n): (off, r * c) for li, n, off, r, c, _ in net.param_info()}
    off, size = info[(0, "centers")]
    assert not net.grads()[off : off + size].any()
    a.set_trainable(0, True)
    ta.train_step(X, y)
    assert not np.array_equal(a.get_weights()[0], start[0])


def test_set_trainable_bad_input():
    model = rbf_model(2, 3)
    with pytest.raises(ValueError, match="layer: expected <= 1"):
        model.set_trainable(2, False)
    with pytest.raises(TypeError, match="trainable: expected a bool"):
        model.set_trainable(0, 0)
    frozen = fm.Sequential([fm.RBF(3, trainable=False), fm.Dense(1)], n_in=2)
    assert not frozen.is_trainable(0)


# --------------------------------------------------------------------------- learning schemes


def sine_data(n=200, dtype=np.float32):
    X = np.linspace(-3, 3, n)[:, None].astype(dtype)
    return X, np.sin(X)


def test_rbf_network_learns_sine():
    """An RBF network (20 k-means++ centres, spacing widths) learns sin on [-3, 3] end to end
    by Adam to a training MSE below 1e-4 (measured ~4e-6); the mean is of the squared error."""
    X, y = sine_data()
    model = rbf_model(1, 20, dtype="float32")
    t = fm.Trainer(model, loss="mse", optimizer=fm.optim.Adam(lr=1e-2), metrics=())
    hist = t.fit(X, y, epochs=200, batch_size=32, verbose=0)
    mse = float(np.mean((model.predict(X) - y) ** 2))
    assert mse < 1e-4
    assert hist.history["loss"][-1] < hist.history["loss"][0] / 100


def test_two_step_leaves_centres_unchanged():
    X, y = sine_data()
    model = rbf_model(1, 20, dtype="float32")
    placed = rbf_model(1, 20, dtype="float32")
    placed.init_rbf(X)
    t = fm.Trainer(
        model, loss="mse", optimizer=fm.optim.Adam(lr=1e-2), metrics=(), rbf_scheme="2-step"
    )
    hist = t.fit(X, y, epochs=100, batch_size=32, verbose=0)
    w, p = model.get_weights(), placed.get_weights()
    np.testing.assert_array_equal(w[0], p[0])  # centres: exactly the step-1 placement
    np.testing.assert_array_equal(w[1], p[1])  # widths too
    assert not model.is_trainable(0)
    assert float(np.mean((model.predict(X) - y) ** 2)) < 1e-3
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_two_step_least_squares():
    X, y = sine_data(dtype=np.float64)
    model = rbf_model(1, 15, dtype="float64")
    t = fm.Trainer(model, loss="mse", metrics=("mse",), rbf_scheme="2-step", rbf_solve="lstsq")
    hist = t.fit(X, y, epochs=50, verbose=0)
    assert len(hist.history["loss"]) == 1 and t.epoch == 1  # the solve is the training
    C, logs, W, b = model.get_weights()
    _, Phi = ref.forward(X, C, np.exp(logs))
    H = np.hstack([Phi, np.ones((len(X), 1))])
    sol = np.linalg.lstsq(H, y, rcond=None)[0]
    # the normal equations hold: the residual is orthogonal to the features
    resid = H @ np.concatenate([W, b[None]]) - y
    assert np.max(np.abs(H.T @ resid)) < 1e-8
    assert float(np.mean(resid**2)) <= float(np.mean((H @ sol - y) ** 2)) * (1 + 1e-6)
    assert hist.history["loss"][0] < 1e-4
    # sample weights: the weighted least-squares solution
    sw = np.linspace(0.1, 2.0, len(X))
    m2 = rbf_model(1, 15, dtype="float64")
    fm.Trainer(m2, loss="mse", metrics=(), rbf_scheme="2-step", rbf_solve="lstsq").fit(
        X, y, sample_weight=sw, verbose=0
    )
    C, logs, W, b = m2.get_weights()
    H = np.hstack([ref.forward(X, C, np.exp(logs))[1], np.ones((len(X), 1))])
    resid = H @ np.concatenate([W, b[None]]) - y
    assert np.max(np.abs(H.T @ (sw[:, None] * resid))) < 1e-8


def test_three_step_schedule():
    X, y = sine_data()
    model = rbf_model(1, 12, dtype="float32")
    t = fm.Trainer(
        model,
        loss="mse",
        optimizer=fm.optim.Adam(lr=5e-3),
        metrics=(),
        rbf_scheme="3-step",
        rbf_output_epochs=30,
    )
    t.fit(X, y, epochs=30, batch_size=32, verbose=0)
    centres_step2 = model.get_weights()[0].copy()
    placed = rbf_model(1, 12, dtype="float32")
    placed.init_rbf(X)
    np.testing.assert_array_equal(centres_step2, placed.get_weights()[0])  # step 2: frozen
    loss_step2 = t.evaluate(X, y)["loss"]
    t.fit(X, y, epochs=60, batch_size=32, verbose=0)  # step 3 begins at epoch 30
    assert model.is_trainable(0)
    assert not np.array_equal(model.get_weights()[0], centres_step2)
    assert t.evaluate(X, y)["loss"] < loss_step2


def test_three_step_least_squares_then_gradient():
    X, y = sine_data(dtype=np.float64)
    model = rbf_model(1, 10, dtype="float64")
    t = fm.Trainer(
        model,
        loss="mse",
        optimizer=fm.optim.Adam(lr=1e-3),
        metrics=(),
        rbf_scheme="3-step",
        rbf_solve="lstsq",
    )
    probe = rbf_model(1, 10, dtype="float64")
    pt = fm.Trainer(probe, loss="mse", metrics=(), rbf_scheme="2-step", rbf_solve="lstsq")
    loss_lstsq = pt.fit(X, y, verbose=0).history["loss"][0]
    hist = t.fit(X, y, epochs=100, batch_size=None, verbose=0)
    assert len(hist.history["loss"]) == 100 and model.is_trainable(0)
    assert t.evaluate(X, y)["loss"] < loss_lstsq


def test_checkpoint_resumes_three_step(tmp_path):
    X, y = sine_data()

    def trainer():
        return fm.Trainer(
            rbf_model(1, 8, dtype="float32"),
            loss="mse",
            optimizer=fm.optim.Adam(lr=1e-2),
            metrics=(),
            rbf_scheme="3-step",
            rbf_output_epochs=4,
        )

    full = trainer()  # the same fit calls without the save/load round trip
    full.fit(X, y, epochs=2, batch_size=50, verbose=0)
    full.fit(X, y, epochs=8, batch_size=50, verbose=0)
    part = trainer()
    part.fit(X, y, epochs=2, batch_size=50, verbose=0)
    part.save(tmp_path / "ck.npz")
    resumed = fm.Trainer.load(tmp_path / "ck.npz")
    assert not resumed.model.is_trainable(0) and resumed.model.rbf_initialized
    resumed.fit(X, y, epochs=8, batch_size=50, verbose=0)
    assert resumed.model.is_trainable(0) and full.model.is_trainable(0)  # step 3 began at epoch 4
    for got, want in zip(resumed.model.get_weights(), full.model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_scheme_bad_input():
    X, y = sine_data()
    with pytest.raises(ValueError, match="rbf_scheme: the model has no fm.RBF layer"):
        fm.Trainer(fm.MLP(n_in=1, hidden=[4], n_out=1), loss="mse", rbf_scheme="2-step")
    with pytest.raises(ValueError, match="rbf_scheme: expected one of"):
        fm.Trainer(rbf_model(1, 4), loss="mse", rbf_scheme="two-step")
    with pytest.raises(ValueError, match="rbf_solve: expected one of"):
        fm.Trainer(rbf_model(1, 4), loss="mse", rbf_scheme="2-step", rbf_solve="pinv")
    with pytest.raises(ValueError, match="mse loss"):
        fm.Trainer(
            rbf_model(1, 4, n_out=2), loss="cross_entropy", rbf_scheme="2-step", rbf_solve="lstsq"
        )
    with pytest.raises(ValueError, match="followed by a linear"):
        fm.Trainer(
            fm.Sequential([fm.RBF(4), fm.Dense(1, activation="tanh")], n_in=1),
            loss="mse",
            rbf_scheme="2-step",
            rbf_solve="lstsq",
        )
    with pytest.raises(ValueError, match="'2-step'/'3-step'"):
        fm.Trainer(rbf_model(1, 4), loss="mse", rbf_solve="lstsq")
    with pytest.raises(ValueError, match="regularizers"):
        fm.Trainer(
            rbf_model(1, 4),
            loss="mse",
            rbf_scheme="2-step",
            rbf_solve="lstsq",
            regularizers=[fm.regularizers.L2(1e-3)],
        )
    with pytest.raises(ValueError, match="rbf_output_epochs"):
        fm.Trainer(rbf_model(1, 4), loss="mse", rbf_scheme="2-step", rbf_output_epochs=3)
    t = fm.Trainer(rbf_model(1, 4, dtype="float32"), loss="mse", metrics=())
    with pytest.raises(ValueError, match="model.init_rbf"):
        t.train_step(X, y)
    t.model.init_rbf(X)
    assert np.isfinite(t.train_step(X, y))
