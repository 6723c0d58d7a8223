"""Fused losses against the naive float64 formulas (tests/reference/loss.py) where those are
stable, finite and exact values where they are not (logits +-1e4), the gradients against
central differences, label smoothing in both conventions, sample weights, the output
activations, determinism, and bad input. The kernel checks run on every device
(conftest.DEVICES)."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from conftest import CUDA, DEVICES, assert_close, kernels, to_device, to_host
from reference import loss as ref
from reference.finite_differences import central_difference_grad
from reference.loss_cases import LOSS_SMOOTHING, LOSSES, SMOOTHING, case

DTYPES = [np.float64, np.float32]
# (1, 1) one sample, one output; 300 x 130 crosses the OpenMP threshold; 5 x 1500 takes the
# GPU's block-per-row kernel, 3000 x 3 many blocks of partial sums.
SHAPES = [(1, 1), (1, 5), (7, 1), (17, 10), (300, 130), (5, 1500), (3000, 3)]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name,eps,conv", LOSS_SMOOTHING)
def test_reference_gradient_matches_central_differences(name, eps, conv, weighted, rng):
    z, t, w = case(name, (4, 5), rng, weighted)
    kw = dict(eps=eps, convention=conv)
    fd = central_difference_grad(lambda a: ref.loss(name, a, t, w, **kw), z)
    np.testing.assert_allclose(ref.grad(name, z, t, w, **kw), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "name,half",
    [("mse", False), ("mse", True), ("binary_cross_entropy", False), ("cross_entropy", False)],
)
def test_kernel_gradient_matches_central_differences(name, half, rng):
    z, t, w = case(name, (3, 4), rng, True)
    eps = 0.0 if name == "mse" else 0.1
    kw = dict(label_smoothing=eps, half=half)
    fd = central_difference_grad(lambda a: fm.ops.loss(name, a, t, w, **kw)[0], z)
    np.testing.assert_allclose(fm.ops.loss(name, z, t, w, **kw)[1], fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name,eps,conv", LOSS_SMOOTHING)
@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
def test_loss_and_gradient_match_reference(weighted, name, eps, conv, shape, dtype, device, rng):
    if name == "cross_entropy" and shape[1] < 2:
        # one class: the deck's eps/(k-1) is undefined (rejected, see TestBadInput)
        conv = "uniform"
    z, t, w = case(name, shape, rng, weighted)
    z, t = z.astype(dtype), t.astype(dtype)
    w = None if w is None else w.astype(dtype)
    zd, td = to_device(z, device), to_device(t, device)
    wd = None if w is None else to_device(w, device)
    L, d = fm.ops.loss(name, zd, td, wd, label_smoothing=eps, smoothing=conv)
    assert isinstance(L, float) and type(d) is type(zd) and d.dtype == dtype
    z64, t64 = z.astype(np.float64), t.astype(np.float64)
    w64 = None if w is None else w.astype(np.float64)
    kw = dict(eps=eps, convention=conv)
    want = ref.loss(name, z64, t64, w64, **kw)
    assert_close(np.array(L), np.array(want), dtype, what="loss")
    assert_close(d, ref.grad(name, z64, t64, w64, **kw), dtype, what="dlogits")
    L_only, none = fm.ops.loss(name, zd, td, wd, grad=False, label_smoothing=eps, smoothing=conv)
    assert none is None and L_only == L


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps,conv", SMOOTHING, ids=["plain", "deck", "uniform"])
@pytest.mark.parametrize("cols", [2, 6, 1500])
def test_integer_labels_equal_one_hot_targets(cols, eps, conv, dtype, device, rng):
    z = to_device(rng.normal(scale=2.0, size=(37, cols)).astype(dtype), device)
    labels = rng.integers(0, cols, size=37)
    for w in (None, to_device(rng.uniform(0.0, 2.0, size=37).astype(dtype), device)):
        kw = dict(label_smoothing=eps, smoothing=conv)
        a = fm.ops.loss("cross_entropy", z, to_device(labels, device), w, **kw)
        onehot = to_device(ref.one_hot(labels, cols).astype(dtype), device)
        b = fm.ops.loss("cross_entropy", z, onehot, w, **kw)
        c = fm.ops.loss("cross_entropy", z, to_device(labels.astype(dtype), device), w, **kw)
        assert_close(np.array(a[0]), np.array(b[0]), dtype)
        assert_close(a[1], b[1], dtype)
        np.testing.assert_array_equal(to_host(a[1]), to_host(c[1]))


def test_label_smoothing_targets_of_both_conventions():
    # zero logits: p = 1/k, so dlogits * N = 1/k - t'
    k, eps = 4, 0.3
    z = np.zeros((1, k))
    _, d = fm.ops.loss("ce", z, np.array([2]), label_smoothing=eps, smoothing="deck")
    np.testing.assert_allclose(0.25 - d[0], [0.1, 0.1, 0.7, 0.1])  # eps/(k-1), 1-eps (deck 002)
    _, d = fm.ops.loss("ce", z, np.array([2]), label_smoothing=eps, smoothing="uniform")
    np.testing.assert_allclose(0.25 - d[0], [0.075, 0.075, 0.775, 0.075])  # eps/k, 1-eps+eps/k
    # BCE, k = 2 per output: deck eps and 1-eps; uniform eps/2 and 1-eps/2 (Keras)
    _, d = fm.ops.loss("bce", np.zeros((1, 2)), np.array([[0.0, 1.0]]), label_smoothing=eps)
    np.testing.assert_allclose(0.5 - d[0], [0.3, 0.7])
    _, d = fm.ops.loss(
        "bce", np.zeros((1, 2)), np.array([[0.0, 1.0]]), label_smoothing=eps, smoothing="uniform"
    )
    np.testing.assert_allclose(0.5 - d[0], [0.15, 0.85])


def test_mse_conventions_and_deck004_example():
    # deck 004 backprop example: prediction -0.622, target 1, L = 1/2 (y_hat - y)^2 ~ 1.315
    L, d = fm.ops.loss("mse", np.array([[-0.622]]), np.array([[1.0]]), half=True)
    assert abs(L - 1.315442) < 1e-6 and abs(d[0, 0] + 1.622) < 1e-12
    z = np.array([[1.0, 2.0], [0.0, -1.0]])
    t = np.array([[0.0, 0.0], [1.0, 1.0]])
    L, d = fm.ops.loss("mse", z, t)  # deck 004: 1/N sum_i sum_o
    assert L == pytest.approx((1 + 4 + 1 + 4) / 2)
    np.testing.assert_allclose(d, (z - t))  # 2 (z - t) / N with N = 2
    assert fm.ops.loss("mse", z, t, half=True)[0] == pytest.approx(L / 2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits_are_finite_and_exact(dtype, device):
    big = 1e4
    z = np.array([[big, -big], [-big, big]], dtype=dtype)
    t = np.array([[1.0, 1.0], [1.0, 0.0]], dtype=dtype)
    L, d = fm.ops.loss("bce", to_device(z, device), to_device(t, device))
    d = to_host(d)
    # softplus(z) - t z: rows (0 + 1e4) and (1e4 + 1e4); mean over 2 samples
    assert np.isfinite(L) and np.isfinite(d).all()
    assert L == pytest.approx((big + 2 * big) / 2, rel=1e-6)
    np.testing.assert_allclose(d, np.array([[0.0, -1.0], [-1.0, 1.0]]) / 2, atol=1e-7)
    zc = np.array([[big, -big, 0.0], [-big, -big, -big]], dtype=dtype)
    L, d = fm.ops.loss("ce", to_device(zc, device), to_device(np.array([1, 0]), device))
    d = to_host(d)
    # row 0: lse = 1e4, l = 2e4; row 1: lse = -1e4 + log 3, l = log 3
    assert np.isfinite(L) and np.isfinite(d).all()
    assert L == pytest.approx((2 * big + np.log(3)) / 2, rel=1e-6)
    np.testing.assert_allclose(d[0], [0.5, -0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(d[1], [(1 / 3 - 1) / 2, 1 / 6, 1 / 6], rtol=1e-5)
    onehot = to_device(ref.one_hot(np.array([1, 0]), 3).astype(dtype), device)
    assert np.isfinite(fm.ops.loss("ce", to_device(zc, device), onehot, label_smoothing=0.1)[0])
    # the naive formula overflows / takes log(0) here; ours agrees with it where it is finite
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        naive = ref.loss("binary_cross_entropy", z.astype(np.float64), t.astype(np.float64))
    assert not np.isfinite(naive)


def test_sample_weights(rng):
    z = rng.normal(size=(6, 3))
    y = rng.integers(0, 3, size=6)
    w = np.array([1.0, 0.0, 2.0, 1.0, 0.5, 3.0])
    L, d = fm.ops.loss("ce", z, y, w)
    Ls, ds = zip(*(fm.ops.loss("ce", z[i : i + 1], y[i : i + 1]) for i in range(6)), strict=True)
    # L = (1/N) sum_i w_i l_i: "sum over batch size", not divided by sum(w)
    assert L == pytest.approx(np.dot(w, Ls) / 6)
    np.testing.assert_allclose(d[1], 0.0)
    np.testing.assert_allclose(d, np.concatenate(ds) * (w / 6)[:, None])
    L1, _ = fm.ops.loss("ce", z, y, np.ones(6))
    assert L1 == fm.ops.loss("ce", z, y)[0]


@pytest.mark.parametrize("name", LOSSES)
def test_grad_false_returns_only_the_loss(name, rng):
    z, t, _ = case(name, (5, 3), rng, False)
    L, d = fm.ops.loss(name, z, t, grad=False)
    assert d is None and L == fm.ops.loss(name, z, t)[0]


def test_single_output_accepts_vector_targets(rng):
    z = rng.normal(size=(9, 1))
    y = rng.integers(0, 2, size=9)
    for name in ("mse", "bce"):
        a = fm.ops.loss(name, z, y)
        b = fm.ops.loss(name, z, y.reshape(-1, 1).astype(float))
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_is_deterministic_run_to_run(dtype, device, rng):
    z = to_device(rng.normal(scale=3.0, size=(4000, 7)).astype(dtype), device)
    t = to_device(rng.integers(0, 7, size=4000), device)
    first = fm.ops.loss("ce", z, t)
    for _ in range(3):  # fixed-order reductions: the same bits every run
        again = fm.ops.loss("ce", z, t)
        assert again[0] == first[0]
        np.testing.assert_array_equal(to_host(again[1]), to_host(first[1]))


def test_loss_is_deterministic_across_thread_counts(rng):
    z = rng.normal(size=(1000, 40)).astype(np.float32)
    y = rng.integers(0, 40, size=1000)
    n = fm.get_num_threads()
    try:
        fm.set_num_threads(1)
        a = fm.ops.loss("ce", z, y)
        fm.set_num_threads(2)
        b = fm.ops.loss("ce", z, y)
    finally:
        fm.set_num_threads(n)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(7, 5), (4000, 7)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_output_activation(name, dtype, shape, device, rng):
    z = rng.normal(scale=3.0, size=shape).astype(dtype)
    out = fm.ops.loss_output(name, to_device(z, device))
    assert_close(out, ref.output(name, z.astype(np.float64)), dtype)
    big = np.array([[1e4, -1e4, 0.0]], dtype=dtype)
    out = to_host(fm.ops.loss_output(name, to_device(big, device)))
    assert np.isfinite(out).all()
    if name != "mse":
        assert out[0, 0] == 1.0 and out[0, 1] == 0.0


def test_names_and_aliases(rng):
    assert fm.ops.loss_names() == LOSSES
    z = rng.normal(size=(4, 3))
    y = rng.integers(0, 3, size=4)
    t = rng.random((4, 3))
    for alias in ("ce", "CE", "categorical_crossentropy", "sparse_categorical_crossentropy"):
        assert fm.ops.loss(alias, z, y)[0] == fm.ops.loss("cross_entropy", z, y)[0]
    for alias in ("bce", "binary_crossentropy", "log-loss"):
        assert fm.ops.loss(alias, z, t)[0] == fm.ops.loss("binary_cross_entropy", z, t)[0]
    for alias in ("mean_squared_error", "l2"):
        assert fm.ops.loss(alias, z, t)[0] == fm.ops.loss("mse", z, t)[0]


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_on_each_device(device):
    z = to_device(np.zeros((2, 3)), device)
    with pytest.raises(ValueError, match=r"target: label 3 of sample 1 is out of range \[0, 3\)"):
        fm.ops.loss("ce", z, to_device(np.array([0, 3]), device))
    with pytest.raises(ValueError, match="target: binary_cross_entropy expects"):
        fm.ops.loss("bce", z, to_device(np.full((2, 3), 1.5), device))
    with pytest.raises(ValueError, match="half: the 1/2 convention"):
        fm.ops.loss("ce", z, to_device(np.array([0, 1]), device), half=True)
    with pytest.raises(ValueError, match="logits: contains NaN or Inf"):
        fm.ops.loss("mse", to_device(np.full((2, 3), np.inf), device), z)
    with pytest.raises(ValueError, match="cross_entropy only"):  # the C++ check
        kernels(device).loss_forward_backward(
            1,
            z,
            to_device(np.zeros(2, np.int32), device),
            None,
            None,
            None,
            0.0,
            False,
            False,
        )


@pytest.mark.parametrize("device", CUDA)
def test_mixed_devices_are_refused(device):
    z = to_device(np.zeros((2, 3)), device)
    with pytest.raises(TypeError, match="target: expected a GPU array"):
        fm.ops.loss("ce", z, np.array([0, 1]))
    with pytest.raises(TypeError, match="sample_weight: expected a GPU array"):
        fm.ops.loss("ce", z, to_device(np.array([0, 1]), device), np.ones(2))


class TestBadInput:
    def test_unknown_name(self):
        with pytest.raises(ValueError, match="name: unknown loss 'hinge'"):
            fm.ops.loss("hinge", np.zeros((2, 2)), np.zeros((2, 2)))
        with pytest.raises(TypeError, match="name: expected a loss name"):
            fm.ops.loss_output(3, np.zeros((2, 2)))

    @pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [0, 7]])
    def test_labels_out_of_range(self, labels):
        msg = r"target: label -?\d+ of sample \d is out of range \[0, 3\)"
        with pytest.raises(ValueError, match=msg):
            fm.ops.loss("ce", np.zeros((2, 3)), np.array(labels))

    def test_labels_out_of_range_checked_in_cpp(self):
        msg = r"target: label 3 of sample 1 is out of range \[0, 3\)"
        with pytest.raises(ValueError, match=msg):
            labels = np.array([0, 3], dtype=np.int32)
            fm._core.loss_forward_backward(
                2, np.zeros((2, 3)), labels, None, np.empty((2, 3)), None, 0.0, False, False
            )
        with pytest.raises(ValueError, match="cross_entropy only"):
            labels = np.array([0, 1], dtype=np.int32)
            fm._core.loss_forward_backward(
                1, np.zeros((2, 1)), labels, None, np.empty((2, 1)), None, 0.0, False, False
            )

    def test_non_integer_labels(self):
        with pytest.raises(ValueError, match="target: 1-d cross_entropy targets are class labels"):
            fm.ops.loss("ce", np.zeros((2, 3)), np.array([0.5, 1.0]))

    @pytest.mark.parametrize(
        "name,target",
        [
            ("mse", np.zeros((2, 2))),
            ("bce", np.zeros(3)),
            ("ce", np.zeros((2, 2))),
            ("ce", np.zeros(2, dtype=int)),
            ("mse", np.zeros((3, 3, 1))),
        ],
    )
    def test_wrong_target_shape(self, name, target):
        with pytest.raises(ValueError, match="target: expected"):
            fm.ops.loss(name, np.zeros((3, 3)), target)

    @pytest.mark.parametrize("name", LOSSES)
    def test_nan_targets_and_logits(self, name):
        t = np.full((2, 2), 0.5)
        t[1, 0] = np.nan
        with pytest.raises(ValueError, match="target: contains NaN or Inf"):
            fm.ops.loss(name, np.zeros((2, 2)), t)
        with pytest.raises(ValueError, match="logits: contains NaN or Inf"):
            fm.ops.loss(name, np.array([[0.0, np.inf], [0.0, 0.0]]), np.full((2, 2), 0.5))

    def test_probabilities_out_of_range(self):
        msg = "target: binary_cross_entropy expects 0/1 labels or probabilities"
        with pytest.raises(ValueError, match=msg):
            fm.ops.loss("bce", np.zeros((2, 2)), np.array([[0.0, 1.5], [0.0, 1.0]]))
        msg = "target: cross_entropy expects one-hot or probability rows"
        with pytest.raises(ValueError, match=msg):
            fm.ops.loss("ce", np.zeros((2, 2)), np.array([[0.5, 0.2], [0.0, 1.0]]))

    def test_non_numeric_target(self):
        with pytest.raises(TypeError, match="target: expected a numeric array"):
            fm.ops.loss("mse", np.zeros((2, 1)), np.array(["a", "b"]))

    def test_sample_weight(self):
        z, t = np.zeros((3, 2)), np.zeros((3, 2))
        with pytest.raises(ValueError, match=r"sample_weight: expected shape \(3,\)"):
            fm.ops.loss("mse", z, t, np.ones(2))
        with pytest.raises(ValueError, match="sample_weight: expected values >= 0"):
            fm.ops.loss("mse", z, t, np.array([1.0, -1.0, 1.0]))
        with pytest.raises(ValueError, match="sample_weight: contains NaN or Inf"):
            fm.ops.loss("mse", z, t, np.array([1.0, np.nan, 1.0]))

    def test_hyper_parameters(self):
        z, t = np.zeros((2, 3)), np.array([0, 1])
        for eps in (-0.1, 1.0):
            with pytest.raises(ValueError, match="label_smoothing: expected"):
                fm.ops.loss("ce", z, t, label_smoothing=eps)
        with pytest.raises(ValueError, match="label_smoothing: only the classification losses"):
            fm.ops.loss("mse", z, np.zeros((2, 3)), label_smoothing=0.1)
        with pytest.raises(ValueError, match="smoothing: expected one of deck, uniform"):
            fm.ops.loss("ce", z, t, label_smoothing=0.1, smoothing="keras")
        with pytest.raises(ValueError, match="half: the 1/2 convention applies to mse only"):
            fm.ops.loss("ce", z, t, half=True)
        msg = r"label_smoothing: the deck's eps/\(k-1\) rule needs"
        with pytest.raises(ValueError, match=msg):
            fm.ops.loss("ce", np.zeros((2, 1)), np.array([0, 0]), label_smoothing=0.1)

    def test_logits_shape_and_dtype(self):
        with pytest.raises(ValueError, match="logits: expected a 2-d array"):
            fm.ops.loss("mse", np.zeros(3), np.zeros(3))
        with pytest.raises(TypeError, match="logits: expected dtype float32 or float64"):
            fm.ops.loss("mse", np.zeros((2, 2), dtype=np.int32), np.zeros((2, 2)))
        with pytest.raises(ValueError, match="logits: expected a non-empty array"):
            fm.ops.loss_output("ce", np.zeros((2, 0)))
