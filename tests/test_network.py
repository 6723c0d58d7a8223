"""The Network's fused step against an independent float64 NumPy reference of the same
network, finite differences through the whole network, determinism, multi-head training,
initializer statistics and bad input."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from fusedmlp import _core
from fusedmlp import layers as L
from fusedmlp.model import MLP, Sequential
from reference.finite_differences import central_difference_entries

LOSS = {"mse": 0, "binary_cross_entropy": 1, "cross_entropy": 2}


def _sgd(lr):
    c = _core.OptConfig()
    c.opt = 0
    c.lr = lr
    return c


def reference_grads(Ws, bs, acts, X, T, loss):
    """Plain NumPy backprop of a dense network (float64), written from decks 003/004."""
    A = [X]
    Zs = []
    for W, b, act in zip(Ws, bs, acts, strict=True):
        Z = A[-1] @ W + b
        Zs.append(Z)
        A.append(np.tanh(Z) if act == "tanh" else Z)
    Zout = A[-1]
    n = len(X)
    if loss == "cross_entropy":
        P = np.exp(Zout - Zout.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        Y = np.eye(Zout.shape[1])[T]
        value = -np.sum(Y * np.log(P)) / n
        d = (P - Y) / n
    elif loss == "mse":
        value = np.sum((Zout - T) ** 2) / n
        d = 2 * (Zout - T) / n
    else:
        S = 1 / (1 + np.exp(-Zout))
        value = -np.sum(T * np.log(S) + (1 - T) * np.log(1 - S)) / n
        d = (S - T) / n
    gW, gb = [], []
    for i in reversed(range(len(Ws))):
        if acts[i] == "tanh":
            d = d * (1 - np.tanh(Zs[i]) ** 2)
        gW.insert(0, A[i].T @ d)
        gb.insert(0, d.sum(axis=0))
        d = d @ Ws[i].T
    return value, gW, gb


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "binary_cross_entropy"])
def test_fused_gradients_match_numpy_backprop(loss, rng):
    X = rng.normal(size=(9, 5))
    k = 3
    m = MLP(n_in=5, hidden=[7, 6], n_out=k, activation="tanh", seed=3, dtype="float64")
    m._net.set_head_loss(0, LOSS[loss], 1.0, 0.0, False, False)
    if loss == "cross_entropy":
        T = rng.integers(0, k, size=9)
        y = [T.astype(np.int32)]
    elif loss == "mse":
        T = rng.normal(size=(9, k))
        y = [T]
    else:
        T = (rng.random((9, k)) > 0.5).astype(float)
        y = [T]
    w = m.get_weights()
    value, gW, gb = reference_grads(w[0::2], w[1::2], ["tanh", "tanh", "identity"], X, T, loss)
    got, _, _ = m._engine.compute_gradients(X, y, None, False)
    assert abs(got - value) < 1e-12 * max(1, abs(value))
    grads = m._net.grads()
    offs = [(li, n) for li, n in m._weight_names()]
    for (li, name), want in zip(
        offs, [g for pair in zip(gW, gb, strict=True) for g in pair], strict=True
    ):
        off, rows, cols, _ = m._index[(li, name)]
        np.testing.assert_allclose(
            grads[off : off + rows * cols].reshape(want.shape), want, rtol=1e-10, atol=1e-13
        )


def test_sgd_step_is_theta_minus_lr_grad(rng):
    m = MLP(n_in=4, hidden=[5], n_out=2, activation="tanh", seed=1, dtype="float64")
    m._net.set_head_loss(0, LOSS["cross_entropy"], 1.0, 0.0, False, False)
    m._net.set_optimizer(_sgd(0.1))
    X = rng.normal(size=(6, 4))
    y = [rng.integers(0, 2, 6).astype(np.int32)]
    before = m.parameters.copy()
    m._engine.compute_gradients(X, y, None, False)
    g = m.gradients.copy()
    m._net.train_step(X, y, None, 0.1)
    np.testing.assert_allclose(m.parameters, before - 0.1 * g, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    "layers",
    [
        [
            L.Dense(6, "elu"),
            L.BatchNorm(),
            L.Dropout(0.3),
            L.Dense(5, "prelu"),
            L.GaussianNoise(0.1),
            L.Dense(3),
        ],
        [
            L.Dense(8, "identity"),
            L.Activation("maxout", pieces=2),
            L.Dense(6, "srelu"),
            L.Activation("softmax"),
            L.Dense(3),
        ],
        [
            L.Dropout(0.2),
            L.Dense(6, "apl", activation_params={"hinges": 2}),
            L.BatchNorm(init="first_batch"),
            L.Activation("soft_exponential"),
            L.Dense(3),
        ],
    ],
    ids=["bn-dropout-prelu-noise", "maxout-srelu-softmax", "apl-softexp"],
)
def test_whole_network_gradient_matches_finite_differences(layers, rng):
    m = Sequential(layers, n_in=4, seed=5, dtype="float64")
    net = m._net
    net.set_head_loss(0, LOSS["cross_entropy"], 1.0, 0.1, False, False)
    X = rng.normal(size=(7, 4))
    y = [rng.integers(0, 3, 7).astype(np.int32)]
    net.rng_step = 11
    _, dX, _ = m._engine.compute_gradients(X, y, None, True)
    g = net.grads().copy()
    p = net.params()
    h = 1e-6
    idx = rng.choice(len(p), size=min(len(p), 40), replace=False)
    fd = central_difference_entries(
        lambda: m._engine.compute_gradients(X, y, None, False)[0], p, idx, h
    )
    for i, d in zip(idx, fd, strict=True):
        assert abs(d - g[i]) < 1e-6 * max(1.0, abs(g[i])), f"param {i}"
    for r, c in [(0, 0), (3, 2), (6, 3)]:
        Xp, Xm = X.copy(), X.copy()
        Xp[r, c] += h
        Xm[r, c] -= h
        fd = (
            m._engine.compute_gradients(Xp, y, None, False)[0]
            - m._engine.compute_gradients(Xm, y, None, False)[0]
        ) / (2 * h)
        assert abs(fd - dX[r, c]) < 1e-6 * max(1.0, abs(fd))


def test_same_seed_same_trajectory_bit_for_bit(rng):
    X = rng.normal(size=(32, 10)).astype(np.float32)
    y = [rng.integers(0, 4, 32).astype(np.int32)]
    runs = []
    for _ in range(2):
        m = MLP(n_in=10, hidden=[16, 16], n_out=4, dropout=0.3, batchnorm=True, seed=7)
        m._net.set_head_loss(0, LOSS["cross_entropy"], 1.0, 0.0, False, False)
        c = _core.OptConfig()
        c.opt = 4
        m._net.set_optimizer(c)
        losses = [m._net.train_step(X, y, None, 1e-2) for _ in range(20)]
        runs.append((losses, m.parameters.copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_multi_head_loss_is_weighted_sum_and_trunk_gets_both_gradients(rng):
    trunk = [L.Dense(6, "tanh")]
    heads = [[L.Dense(3)], [L.Dense(2)]]
    m = Sequential(trunk, n_in=4, heads=heads, seed=2, dtype="float64")
    net = m._net
    net.set_head_loss(0, LOSS["cross_entropy"], 1.0, 0.0, False, False)
    net.set_head_loss(1, LOSS["mse"], 0.5, 0.0, False, False)
    X = rng.normal(size=(5, 4))
    y = [rng.integers(0, 3, 5).astype(np.int32), rng.normal(size=(5, 2))]
    total, _, per_head = m._engine.compute_gradients(X, y, None, False)
    assert abs(total - (per_head[0] + 0.5 * per_head[1])) < 1e-12
    g = net.grads().copy()
    p = net.params()
    idx = range(0, len(p), 3)
    fd = central_difference_entries(
        lambda: m._engine.compute_gradients(X, y, None, False)[0], p, idx
    )
    for i, d in zip(idx, fd, strict=True):
        assert abs(d - g[i]) < 1e-6
    outs = m.predict(X)
    assert [o.shape for o in outs] == [(5, 3), (5, 2)]


def test_nonfinite_loss_leaves_weights_unchanged():
    m = MLP(n_in=2, hidden=[3], n_out=1, seed=0, dtype="float64")
    m._net.set_head_loss(0, LOSS["mse"], 1.0, 0.0, False, False)
    m._net.set_optimizer(_sgd(0.1))
    before = m.parameters.copy()
    loss = m._net.train_step(np.ones((2, 2)), [np.full((2, 1), np.inf)], None, 0.1)
    assert not np.isfinite(loss)
    np.testing.assert_array_equal(m.parameters, before)


@pytest.mark.parametrize(
    "name,var",
    [
        ("glorot_normal", lambda i, o: 2 / (i + o)),
        ("glorot_uniform", lambda i, o: 2 / (i + o)),
        ("he_normal", lambda i, o: 2 / i),
        ("he_uniform", lambda i, o: 2 / i),
        ("lecun_normal", lambda i, o: 1 / i),
        ("normal", lambda i, o: 0.01**2),
        ("uniform", lambda i, o: 0.05**2 / 3),
    ],
)
def test_initializer_variance_within_sampling_error(name, var):
    n_in, n_out = 300, 200
    W = fm.init.initialize(name, n_in, n_out, np.random.default_rng(0))
    want = var(n_in, n_out)
    n = W.size
    # sampling sd of the variance estimate: sqrt(2/n) var (normal); uniform's is smaller
    assert abs(W.var() - want) < 5 * np.sqrt(2 / n) * want
    assert abs(W.mean()) < 5 * np.sqrt(want / n)


def test_orthogonal_and_symmetric_inits():
    W = fm.init.initialize("orthogonal", 50, 30, np.random.default_rng(1))
    np.testing.assert_allclose(W.T @ W, np.eye(30), atol=1e-12)
    assert np.all(fm.init.initialize("zeros", 3, 4, None) == 0)
    assert np.all(fm.init.initialize("constant", 3, 4, None, value=0.5) == 0.5)
    with pytest.raises(ValueError, match="init: unknown initializer"):
        fm.init.initialize("nope", 2, 2, None)


def test_model_initialization_is_deterministic_for_a_seed():
    a = MLP(n_in=8, hidden=[16], n_out=3, seed=4).get_weights()
    b = MLP(n_in=8, hidden=[16], n_out=3, seed=4).get_weights()
    c = MLP(n_in=8, hidden=[16], n_out=3, seed=5).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_weights_round_trip_and_views_share_memory():
    m = MLP(n_in=3, hidden=[4], n_out=2, batchnorm=True, seed=0)
    ws = m.get_weights()
    assert [w.shape for w in ws] == [(3, 4), (4,), (4,), (4,), (4,), (4,), (4, 2), (2,)]
    ws[0][:] = 1.5
    m.set_weights(ws)
    assert np.all(m.get_weights()[0] == 1.5)
    m.parameters[0] = -2.0
    assert m.get_weights()[0][0, 0] == -2.0
    with pytest.raises(ValueError, match="weights: expected 8 arrays"):
        m.set_weights(ws[:-1])
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        m.set_weights([np.zeros((2, 2))] + ws[1:])


class TestBadInput:
    def test_predict_feature_count(self):
        m = MLP(n_in=3, hidden=[4], n_out=2)
        with pytest.raises(ValueError, match="X: expected 3 features, got 5"):
            m.predict(np.zeros((2, 5), np.float32))

    def test_layer_specs(self):
        with pytest.raises(ValueError, match="rate"):
            L.Dropout(1.0)
        with pytest.raises(ValueError, match="units"):
            L.Dense(0)
        with pytest.raises(TypeError, match="layers\\[0\\]"):
            Sequential(["dense"], n_in=3)
        with pytest.raises(ValueError, match="maxout pieces"):
            Sequential([L.Dense(5), L.Activation("maxout", pieces=2)], n_in=3)

    def test_cuda_device_without_cuda(self):
        if fm.cuda_available():
            pytest.skip("a CUDA device is present")
        with pytest.raises(ValueError, match="device: 'cuda' is not usable"):
            MLP(n_in=3, hidden=[4], n_out=2, device="cuda")

    def test_batchnorm_batch_of_one(self):
        m = MLP(n_in=3, hidden=[4], n_out=2, batchnorm=True)
        m._net.set_head_loss(0, LOSS["cross_entropy"], 1.0, 0.0, False, False)
        with pytest.raises(ValueError, match="batch"):
            m._engine.compute_gradients(
                np.zeros((1, 3), np.float32), [np.zeros(1, np.int32)], None, False
            )

    def test_train_without_optimizer(self):
        m = MLP(n_in=3, hidden=[4], n_out=2)
        m._net.set_head_loss(0, LOSS["cross_entropy"], 1.0, 0.0, False, False)
        with pytest.raises(ValueError, match="optimizer"):
            m._net.train_step(np.zeros((2, 3), np.float32), [np.zeros(2, np.int32)], None, 0.1)


# --- the fused step (forward, loss, backward, regularization, update) vs float64 references ----
from reference import optimizer as ref_opt  # noqa: E402
from reference.optimizer_cases import CASES as OPT_CASES  # noqa: E402
from reference.optimizer_cases import eps1_for  # noqa: E402

FUSED_STEPS = 12
LOSSES = ["cross_entropy", "mse", "binary_cross_entropy"]


def _targets(loss, n, k, rng):
    if loss == "cross_entropy":
        T = rng.integers(0, k, size=n)
        return T, T.astype(np.int32)
    if loss == "mse":
        T = rng.normal(size=(n, k))
    else:
        T = (rng.random((n, k)) > 0.5).astype(float)
    return T, T


def _fused_vs_reference(opt, ref_kwargs, loss, rng, clip=None, name=""):
    """Train a 2-layer tanh network with the fused Trainer step and, in float64 NumPy, with
    reference backprop + the reference optimizer rule; compare the parameters after each step."""
    n, k = 11, 3
    m = MLP(n_in=5, hidden=[7], n_out=k, activation="tanh", seed=4, dtype="float64")
    regs = [fm.regularizers.ClipNorm(clip)] if clip else None
    tr = fm.Trainer(m, loss=loss, optimizer=opt, regularizers=regs)
    params = [w.copy() for w in m.get_weights()]
    r = ref_opt.RefOptimizer(opt.name, **ref_kwargs, **eps1_for(name, ref_kwargs, np.float64))
    decay = opt.decay_mask(params)
    moved = 0.0
    for _ in range(FUSED_STEPS):
        X = rng.normal(size=(n, 5))
        T, y = _targets(loss, n, k, rng)
        value, gW, gb = reference_grads(
            params[0::2], params[1::2], ["tanh", "identity"], X, T, loss
        )
        got_loss = tr.train_step(X, y)
        assert abs(got_loss - value) <= 1e-10 * max(1.0, abs(value)), f"{name}: loss"
        grads = [gW[0], gb[0], gW[1], gb[1]]
        scale = 1.0 if clip is None else ref_opt.clip_grad_norm_scale(grads, clip)
        before = [p.copy() for p in params]
        r.step(params, grads, opt.lr, scale, decay)
        moved = max(
            moved, max(float(np.abs(p - b).max()) for p, b in zip(params, before, strict=True))
        )
        for i, (g, w) in enumerate(zip(m.get_weights(), params, strict=True)):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11, err_msg=f"{name} param {i}")
    assert moved > 1e-4, f"{name}: the reference trajectory did not move"


@pytest.mark.parametrize("case", OPT_CASES, ids=[c[0] for c in OPT_CASES])
def test_fused_step_matches_reference_for_every_optimizer(case, rng):
    name, cls, kw, rkw = case
    loss = LOSSES[[c[0] for c in OPT_CASES].index(name) % 3]  # every loss appears with many rules
    _fused_vs_reference(cls(**kw), rkw, loss, rng, name=name)


@pytest.mark.parametrize("loss", LOSSES)
def test_fused_step_with_global_norm_clipping_matches_reference(loss, rng):
    # a small threshold so the clip is active on every step (torch's min(1, c/(||g|| + 1e-6)))
    _fused_vs_reference(
        fm.optim.Adam(lr=0.01, weight_decay=0.01),
        dict(weight_decay=0.01),
        loss,
        rng,
        clip=0.05,
        name=f"adam+clip/{loss}",
    )


def test_equal_but_distinct_dtype_objects_are_accepted(tmp_path, rng):
    """Unpickled arrays and read-only memmaps carry dtype objects equal to, but not the same
    object as, the canonical float32 dtype: the bindings compare dtypes by equality."""
    import pickle

    m = MLP(n_in=4, hidden=[5], n_out=2, activation="tanh", seed=1)
    X = rng.normal(size=(6, 4)).astype(np.float32)
    want = m.predict(X)
    Xp = pickle.loads(pickle.dumps(X))
    np.save(tmp_path / "x.npy", X)
    Xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    for arr in (Xp, Xm):
        np.testing.assert_array_equal(m._engine.forward(arr, False)[0], want)
    with pytest.raises((TypeError, ValueError), match="float32"):
        m._engine.forward(X.astype(">f4"), False)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss", LOSSES)
def test_fused_step_equals_composition_of_single_op_kernels(loss, dtype, rng):
    """One Network step == fm.ops.dense_forward -> fm.ops.loss -> fm.ops.dense_backward (x2)
    -> the standalone fm.optim.Adam on the same arrays: same kernels, same order of sums."""
    n, k = 13, 3
    m = MLP(n_in=5, hidden=[7], n_out=k, activation="tanh", seed=2, dtype=dtype)
    tr = fm.Trainer(m, loss=loss, optimizer=fm.optim.Adam(lr=0.01))
    W0, b0, W1, b1 = [w.copy() for w in m.get_weights()]
    opt = fm.optim.Adam(lr=0.01)
    for _ in range(3):
        X = rng.normal(size=(n, 5)).astype(dtype)
        _, y = _targets(loss, n, k, rng)
        y = y if loss == "cross_entropy" else y.astype(dtype)
        Z0, A0 = fm.ops.dense_forward(X, W0, b0, "tanh")
        Z1, A1 = fm.ops.dense_forward(A0, W1, b1)
        value, dlogits = fm.ops.loss(loss, A1, y)
        g1 = fm.ops.dense_backward(A0, W1, Z1, dlogits)
        g0 = fm.ops.dense_backward(X, W0, Z0, g1["dX"], "tanh", need_dx=False)
        opt.step([W0, b0, W1, b1], [g0["dW"], g0["db"], g1["dW"], g1["db"]])
        got = tr.train_step(X, y)
        tol = 1e-12 if dtype == np.float64 else 1e-5
        assert abs(got - value) <= tol * max(1.0, abs(value))
        for a, b in zip(m.get_weights(), [W0, b0, W1, b1], strict=True):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# --- the binding: one calling convention for _core.Network* and _cuda.CudaNetwork* -----------
def _public_names(cls) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def test_cpu_and_gpu_network_classes_expose_the_same_methods():
    """Both classes come from one binding body (csrc/bindings/network_common.h)."""
    names = _public_names(_core.Network32)
    assert names == _public_names(_core.Network64)
    for method in (
        "forward",
        "predict",
        "train_step",
        "train_step_indexed",
        "step_stats",
        "evaluate",
        "evaluate_chunked",
        "compute_gradients",
        "apply_gradients",
        "loss_slot",
        "layer_output",
        "layer_grad",
        "device",
        "use_graphs",
        "precision",
    ):
        assert method in names
    from fusedmlp._loader import _cuda

    if _cuda is None or not hasattr(_cuda, "CudaNetwork32"):
        pytest.skip("fusedmlp was built without the CUDA Network")
    assert _public_names(_cuda.CudaNetwork32) == names
    assert _public_names(_cuda.CudaNetwork64) == names


def test_cpu_network_views_and_device_settings():
    m = MLP(n_in=3, hidden=[4], n_out=2, seed=1)
    net = m._net
    params = net.params()
    assert params.ndim == 1 and params.base is not None  # a view of the arena, no copy
    params[0] = 0.25  # a view: writes reach the model
    assert m.parameters[0] == np.float32(0.25)
    slot = net.loss_slot()
    assert slot.shape == (1,) and slot.dtype == np.float64
    m._net.set_head_loss(0, LOSS["cross_entropy"], 1.0, 0.0, False, False)
    m._net.set_optimizer(_sgd(0.1))
    X, y = np.ones((4, 3), np.float32), np.zeros(4, np.int32)
    loss = net.train_step(X, [y], None, 0.1, sync=False)  # the CPU step always answers
    assert np.isfinite(loss) and slot[0] == pytest.approx(loss)
    assert (net.device, net.use_graphs, net.n_graphs, net.precision) == (-1, False, 0, 0)
    net.precision, net.use_graphs = 0, False  # the only valid values
    with pytest.raises(ValueError, match="precision: expected 0"):
        net.precision = 1
    with pytest.raises(ValueError, match="use_graphs: expected False"):
        net.use_graphs = True


@pytest.mark.parametrize("method", ["forward", "predict"])
def test_cpu_network_rejects_bad_out(method):
    m = MLP(n_in=3, hidden=[4], n_out=2, seed=1)
    X = np.ones((5, 3), np.float32)

    def call(out):
        if method == "forward":
            return m._net.forward(X, out)
        return m._net.predict(X, out, 2)

    with pytest.raises(ValueError, match=r"out: expected shape \(5, 2\), got \(5, 3\)"):
        call([np.empty((5, 3), np.float32)])
    with pytest.raises(TypeError, match="out: expected dtype float32.*got float64"):
        call([np.empty((5, 2))])
    read_only = np.empty((5, 2), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out: expected a writeable output array"):
        call([read_only])
    with pytest.raises(ValueError, match="out: expected a C-contiguous array"):
        call([np.empty((2, 5), np.float32).T])
    with pytest.raises(TypeError, match="out: expected a list of 1 output array"):
        call(np.empty((5, 2), np.float32))
    with pytest.raises(ValueError, match="out: expected a list of 1 output array.*got 2"):
        call([np.empty((5, 2), np.float32)] * 2)
    with pytest.raises(TypeError, match="X: expected dtype float32"):
        m._net.forward(X.astype(np.float64), [np.empty((5, 2), np.float32)])
    out = [np.full((5, 2), np.nan, np.float32)]
    assert call(out) is None  # written in place
    np.testing.assert_array_equal(out[0], m.predict(X))
