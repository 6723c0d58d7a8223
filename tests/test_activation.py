"""Every activation kernel against its float64 reference (tests/reference/activation.py),
the references against central differences, learnable-parameter gradients, RReLU's
Philox draws, softmax and maxout, and bad input. The kernel checks run on every device
(conftest.DEVICES: NumPy in -> the CPU kernels, CuPy in -> the CUDA kernels); the GPU is also
held to the CPU's results where those are pinned tighter than the references (RReLU's training
draws, float64 parameter gradients)."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from conftest import CUDA, DEVICES, assert_close, to_device, to_host
from reference import activation as ref
from reference.activation_cases import HYPER, make_inputs, make_params
from scipy import special

ELEMENTWISE = [n for n in fm.ops.activation_names() if n not in ("softmax", "maxout")]
# (1000, 40): many row chunks of the GPU kernels
SHAPES = [(1, 1), (1, 7), (5, 1), (7, 13), (17, 33), (3, 1001), (1000, 40)]
DTYPES = [np.float64, np.float32]

KINKS = {"sqnl": (-2.0, 0.0, 2.0)}


def kink_mask(name, x, P):
    """Points at least 1e-3 away from every kink (where the derivative jumps)."""
    pts = list(KINKS.get(name, (0.0,)))
    dist = np.min([np.abs(x - p) for p in pts], axis=0)
    if name in ("srelu", "apl"):
        rows = (0, 2) if name == "srelu" else range(P.shape[0] // 2, P.shape[0])
        for r in rows:
            dist = np.minimum(dist, np.abs(x - P[r][None, :]))
    return dist > 1e-3


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_reference_derivative_matches_central_differences(name, rng):
    x = make_inputs(name, (6, 40), rng)
    P = make_params(name, 40, rng)
    hp = HYPER.get(name, {})
    fd = ref.central_difference(lambda t: ref.forward(name, t, P, **hp), x)
    an = ref.derivative(name, x, P, **hp)
    m = kink_mask(name, x, P)
    np.testing.assert_allclose(an[m], fd[m], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_forward_and_derivative_match_reference(name, shape, dtype, device, rng):
    x = make_inputs(name, shape, rng).astype(dtype)
    P = make_params(name, shape[1], rng)
    hp = HYPER.get(name, {})
    Pd = None if P is None else P.astype(dtype)
    xd, Pdd = to_device(x, device), None if P is None else to_device(Pd, device)
    y = fm.ops.activation(name, xd, Pdd, **hp)
    assert type(y) is type(xd) and y.dtype == dtype and y.shape == shape
    xr = x.astype(np.float64)
    Pr = None if P is None else Pd.astype(np.float64)
    assert_close(y, ref.forward(name, xr, Pr, **hp), dtype, what=f"{name} forward")
    g = to_host(fm.ops.activation_grad(name, xd, Pdd, **hp))
    m = kink_mask(name, xr, Pr)
    want = ref.derivative(name, xr, Pr, **hp)
    tol = 1e-8 if name == "gelu_tanh" and dtype == np.float64 else None  # reference by FD
    assert_close(g[m], want[m], dtype, tol=tol, what=f"{name} derivative")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(9, 31), (1000, 40)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_backward_is_upstream_times_derivative(name, dtype, shape, device, rng):
    x = make_inputs(name, shape, rng).astype(dtype)
    P = make_params(name, shape[1], rng)
    Pd = None if P is None else to_device(P.astype(dtype), device)
    hp = HYPER.get(name, {})
    up = rng.normal(size=x.shape).astype(dtype)
    xd = to_device(x, device)
    dz, dp = fm.ops.activation_backward(name, xd, to_device(up, device), Pd, **hp)
    f1 = to_host(fm.ops.activation_grad(name, xd, Pd, **hp))
    want = up.astype(np.float64) * f1.astype(np.float64)
    assert_close(dz, want, dtype, what=f"{name} backward")
    assert (dp is None) == (P is None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(11, 13), (1000, 40)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ["prelu", "srelu", "apl", "soft_exponential"])
def test_learnable_parameter_gradients_match_finite_differences(name, shape, device, rng):
    x = make_inputs(name, shape, rng)
    P = make_params(name, shape[1], rng)
    up = rng.normal(size=x.shape)
    _, dp = fm.ops.activation_backward(name, *(to_device(a, device) for a in (x, up, P)))
    want = ref.param_grad(name, x, up, P)
    np.testing.assert_allclose(to_host(dp), want, rtol=1e-6, atol=1e-6)
    x32, up32, P32 = (to_device(a.astype(np.float32), device) for a in (x, up, P))
    _, dp32 = fm.ops.activation_backward(name, x32, up32, P32)
    # a sum over the batch: float32 rounding grows with the number of terms
    assert_close(dp32, want, np.float32, tol=1e-4, what=f"{name} dparams float32")


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(1, 1), (7, 13), (3, 1001), (1000, 40)], ids=lambda s: "x".join(map(str, s))
)
@pytest.mark.parametrize("name", ["rrelu", "prelu", "srelu", "apl", "soft_exponential"])
def test_device_equals_the_cpu(name, shape, dtype, device, rng):
    """What the references pin more loosely than the CPU does: RReLU's training draws (the
    same Philox slopes on both devices) and the parameter gradients to float64 rounding (the
    reference is a central difference)."""
    z = make_inputs(name, shape, rng).astype(dtype)
    P = make_params(name, shape[1], rng)
    P = None if P is None else P.astype(dtype)
    G = rng.normal(size=shape).astype(dtype)
    hyper = HYPER.get(name, {})
    kw = dict(training=True, seed=11, step=3, layer=2) if name == "rrelu" else {}
    zd, Pd, Gd = (None if a is None else to_device(a, device) for a in (z, P, G))
    assert_close(
        fm.ops.activation(name, zd, Pd, **kw, **hyper),
        fm.ops.activation(name, z, P, **kw, **hyper),
        dtype,
        what="f",
    )
    assert_close(
        fm.ops.activation_grad(name, zd, Pd, **kw, **hyper),
        fm.ops.activation_grad(name, z, P, **kw, **hyper),
        dtype,
        what="f'",
    )
    dz, dp = fm.ops.activation_backward(name, zd, Gd, Pd, **kw, **hyper)
    dz_ref, dp_ref = fm.ops.activation_backward(name, z, G, P, **kw, **hyper)
    assert_close(dz, dz_ref, dtype, what="dz")
    if dp_ref is None:
        assert dp is None
    else:  # a sum over the batch: float32 rounding grows with the number of terms
        assert_close(dp, dp_ref, dtype, tol=None if dtype == np.float64 else 1e-4, what="dparams")


@pytest.mark.parametrize("device", DEVICES)
def test_parameter_gradient_reduction_is_deterministic(device, rng):
    z = rng.normal(size=(4099, 37)).astype(np.float32)
    P = make_params("srelu", 37, rng).astype(np.float32)
    G = rng.normal(size=z.shape).astype(np.float32)
    zd, Pd, Gd = (to_device(a, device) for a in (z, P, G))
    first = to_host(fm.ops.activation_backward("srelu", zd, Gd, Pd)[1])
    for _ in range(3):
        again = fm.ops.activation_backward("srelu", zd, Gd, Pd)[1]
        np.testing.assert_array_equal(to_host(again), first)


def test_soft_exponential_alpha_zero_is_identity_with_limit_gradient(rng):
    x = rng.normal(size=(4, 5))
    P = np.zeros((1, 5))
    np.testing.assert_array_equal(fm.ops.activation("soft_exponential", x, P), x)
    _, dp = fm.ops.activation_backward("soft_exponential", x, np.ones_like(x), P)
    np.testing.assert_allclose(dp[0], (1 + x**2 / 2).sum(axis=0), rtol=1e-12)


def test_selu_uses_the_published_lambda():
    y = fm.ops.activation("selu", np.array([[1.0]]))
    assert abs(y[0, 0] - 1.0507009873554805) < 1e-12  # deck 000's 1.6507 is a misprint


def test_kink_conventions():
    z = np.zeros((1, 4))
    for name in ("relu", "leaky_relu", "prelu", "rrelu", "brelu", "binary_step"):
        P = np.full((1, 4), 0.25) if name == "prelu" else None
        g = fm.ops.activation_grad(name, z, P)
        want = {"leaky_relu": 0.01, "prelu": 0.25, "rrelu": (0.125 + 1 / 3) / 2}.get(name, 0.0)
        if name == "brelu":
            want = 0.0
        np.testing.assert_allclose(g, want, err_msg=name)
    assert fm.ops.activation("binary_step", z)[0, 0] == 1.0
    np.testing.assert_array_equal(fm.ops.activation("sinc", z), 1.0)
    np.testing.assert_array_equal(fm.ops.activation_grad("sinc", z), 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_inputs_do_not_overflow(dtype):
    x = np.array([[-1e4, -500.0, -80.0, 0.0, 80.0, 500.0, 1e4]], dtype=dtype)
    for name in (
        "sigmoid",
        "softplus",
        "elu",
        "selu",
        "silu",
        "soft_clipping",
        "gelu",
        "gelu_tanh",
        "tanh",
        "lecun_tanh",
        "soboleva_tanh",
        "gaussian",
    ):
        y = fm.ops.activation(name, x)
        g = fm.ops.activation_grad(name, x)
        assert np.isfinite(y).all() and np.isfinite(g).all(), name
    assert (
        fm.ops.activation("sigmoid", x)[0, 0] == 0.0
        and fm.ops.activation("sigmoid", x)[0, -1] == 1.0
    )
    np.testing.assert_allclose(fm.ops.activation("softplus", x)[0, -1], 1e4, rtol=1e-6)
    np.testing.assert_allclose(
        fm.ops.activation("soft_clipping", x)[0, [0, -1]], [0.0, 1.0], atol=1e-6
    )


class TestRReLU:
    def test_training_slopes_are_uniform_in_range_and_reproducible(self):
        x = -np.ones((64, 257))
        kw = dict(training=True, seed=123, step=7, layer=2, lower=0.1, upper=0.4)
        y1 = fm.ops.activation("rrelu", x, **kw)
        y2 = fm.ops.activation("rrelu", x, **kw)
        np.testing.assert_array_equal(y1, y2)
        slopes = -y1.ravel()
        assert slopes.min() >= 0.1 and slopes.max() <= 0.4
        # mean of U(0.1, 0.4) is 0.25 with sd 0.0866 / sqrt(n); 6 sigma bound
        assert abs(slopes.mean() - 0.25) < 6 * 0.0866 / np.sqrt(slopes.size)
        # the derivative sees the same draws
        g = fm.ops.activation_grad("rrelu", x, **kw)
        np.testing.assert_array_equal(g, -y1)

    def test_keys_change_the_draws(self):
        x = -np.ones((8, 16))
        base = dict(training=True, seed=1, step=0, layer=0)
        y = fm.ops.activation("rrelu", x, **base)
        for change in ({"seed": 2}, {"step": 1}, {"layer": 1}):
            other = fm.ops.activation("rrelu", x, **{**base, **change})
            assert not np.array_equal(y, other), change

    def test_float32_and_float64_draw_the_same_slopes(self):
        x = -np.ones((4, 9))
        kw = dict(training=True, seed=5, step=3, layer=1)
        y64 = fm.ops.activation("rrelu", x, **kw)
        y32 = fm.ops.activation("rrelu", x.astype(np.float32), **kw)
        np.testing.assert_allclose(y32, y64, rtol=1e-6)

    def test_thread_count_does_not_change_the_draws(self):
        x = -np.ones((300, 300))
        kw = dict(training=True, seed=9, step=4, layer=3)
        n = fm.get_num_threads()
        try:
            fm.set_num_threads(1)
            y1 = fm.ops.activation("rrelu", x, **kw)
            fm.set_num_threads(2)
            y2 = fm.ops.activation("rrelu", x, **kw)
        finally:
            fm.set_num_threads(n)
        np.testing.assert_array_equal(y1, y2)


# (33, 1025) rows wider than one GPU block; (300, 10) many rows
ROW_SHAPES = [(1, 1), (1, 10), (5, 3), (7, 3), (5, 1003), (33, 1025), (300, 10)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_softmax_matches_reference(shape, dtype, device, rng):
    z = (rng.normal(size=shape) * 5).astype(dtype)
    zd = to_device(z, device)
    y = fm.ops.softmax(zd)
    assert type(y) is type(zd)
    assert_close(y, ref.softmax(z.astype(np.float64)), dtype, what="softmax")
    g = rng.normal(size=shape).astype(dtype)
    dz, _ = fm.ops.activation_backward("softmax", zd, to_device(g, device))
    assert_close(dz, ref.softmax_backward(z.astype(np.float64), g.astype(np.float64)), dtype)


def test_softmax_is_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4]], dtype=np.float32)
    y = fm.ops.softmax(z)
    assert np.isfinite(y).all() and y[0, 0] == 1.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_maxout_matches_reference_and_routes_gradient_to_argmax(shape, dtype, device, rng):
    rows, units = shape
    z = rng.normal(size=(rows, 3 * units)).astype(dtype)
    zd = to_device(z, device)
    y = fm.ops.maxout(zd, pieces=3)
    assert_close(y, ref.maxout(z.astype(np.float64), 3), dtype)
    g = rng.normal(size=(rows, units)).astype(dtype)
    dz, _ = fm.ops.activation_backward("maxout", zd, to_device(g, device), pieces=3)
    # the upstream gradient goes to the first maximum of each group of 3
    k = np.argmax(z.astype(np.float64).reshape(rows, units, 3), axis=2)
    want = np.zeros((rows, units, 3))
    np.put_along_axis(want, k[..., None], g.astype(np.float64)[..., None], axis=2)
    assert_close(dz, want.reshape(rows, 3 * units), dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_input_on_each_device(device):
    def dev(a):
        return to_device(a, device)

    z = dev(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="z: expected dtype float32 or float64"):
        fm.ops.activation("relu", dev(np.zeros((2, 3), dtype=np.int32)))
    with pytest.raises(ValueError, match="z: expected a non-empty array"):
        fm.ops.activation("relu", dev(np.zeros((0, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match="z: contains NaN or Inf"):
        fm.ops.activation("relu", dev(np.full((2, 3), np.nan, dtype=np.float32)))
    with pytest.raises(ValueError, match="W: expected 3 rows"):
        fm.ops.dense_forward(z, dev(np.zeros((4, 2), dtype=np.float32)))
    with pytest.raises(TypeError, match="W: expected dtype float32"):
        fm.ops.dense_forward(z, dev(np.zeros((3, 2), dtype=np.float64)))
    with pytest.raises(ValueError, match="params"):
        fm.ops.activation("prelu", z)


@pytest.mark.parametrize("device", CUDA)
def test_mixed_devices_are_refused(device):
    z = to_device(np.zeros((2, 3)), device)
    with pytest.raises(TypeError, match="params: expected a GPU array"):
        fm.ops.activation("prelu", z, np.full((1, 3), 0.25))
    with pytest.raises(TypeError, match="grad_output: expected a GPU array"):
        fm.ops.activation_backward("tanh", z, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="W: expected a GPU array"):
        fm.ops.dense_forward(z, np.zeros((3, 2)))


class TestBadInput:
    def test_unknown_name(self):
        with pytest.raises(ValueError, match="name: unknown activation 'nope'"):
            fm.ops.activation("nope", np.zeros((2, 2)))

    def test_wrong_dtype(self):
        with pytest.raises(TypeError, match="z: expected dtype float32 or float64"):
            fm.ops.activation("relu", np.zeros((2, 2), dtype=np.int64))

    def test_wrong_ndim(self):
        with pytest.raises(ValueError, match="z: expected a 2-d array"):
            fm.ops.activation("relu", np.zeros(3))

    def test_nan(self):
        with pytest.raises(ValueError, match="z: contains NaN or Inf"):
            fm.ops.activation("relu", np.array([[np.nan]]))

    def test_empty(self):
        with pytest.raises(ValueError, match="z: expected a non-empty array"):
            fm.ops.activation("relu", np.zeros((0, 3)))

    @pytest.mark.parametrize(
        "name,kw,arg",
        [
            ("isru", {"alpha": 0.0}, "alpha"),
            ("isrlu", {"alpha": -1.0}, "alpha"),
            ("soft_clipping", {"alpha": 0.0}, "alpha"),
            ("elu", {"alpha": -0.5}, "alpha"),
            ("rrelu", {"lower": 0.5, "upper": 0.2}, "lower"),
            ("soboleva_tanh", {"c": -1.0, "d": 0.5}, "c, d"),
            ("relu", {"alpha": 1.0}, "alpha"),
        ],
    )
    def test_hyper_parameter_out_of_range(self, name, kw, arg):
        with pytest.raises(ValueError, match=arg):
            fm.ops.activation(name, np.zeros((2, 2)), **kw)

    def test_missing_or_misshaped_params(self):
        with pytest.raises(ValueError, match="params"):
            fm.ops.activation("prelu", np.zeros((2, 3)))
        with pytest.raises(ValueError, match="params: expected shape"):
            fm.ops.activation("srelu", np.zeros((2, 3)), np.zeros((3, 3)))
        with pytest.raises(ValueError, match="params: APL expects"):
            fm.ops.activation("apl", np.zeros((2, 3)), np.zeros((3, 3)))
        with pytest.raises(ValueError, match="params: activation 'relu' has no"):
            fm.ops.activation("relu", np.zeros((2, 3)), np.zeros((1, 3)))

    def test_maxout_pieces(self):
        with pytest.raises(ValueError, match="pieces"):
            fm.ops.maxout(np.zeros((2, 5)), pieces=2)
        with pytest.raises(ValueError, match="pieces"):
            fm.ops.activation("maxout", np.zeros((2, 4)))

    def test_grad_of_row_op(self):
        with pytest.raises(ValueError, match="activation_backward"):
            fm.ops.activation_grad("softmax", np.zeros((2, 2)))

    def test_grad_shape_mismatch(self):
        with pytest.raises(ValueError, match="grad_output: expected shape"):
            fm.ops.activation_backward("tanh", np.zeros((2, 2)), np.zeros((2, 3)))

    def test_non_contiguous_input_is_accepted(self, rng):
        z = rng.normal(size=(6, 8))
        np.testing.assert_array_equal(
            fm.ops.activation("tanh", z.T), fm.ops.activation("tanh", z.T.copy())
        )

    def test_aliases(self):
        z = np.array([[0.5]])
        np.testing.assert_array_equal(
            fm.ops.activation("logistic", z), fm.ops.activation("sigmoid", z)
        )
        np.testing.assert_array_equal(fm.ops.activation("swish", z), fm.ops.activation("silu", z))


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus", "elu", "silu", "selu"])
def test_float32_transcendentals_are_accurate_everywhere(name):
    """The vectorized float32 exp/expm1/tanh/log1p (csrc/common/fastmath.h) on a dense grid over
    [-100, 100] plus edge values: relative error within 4 float ulps of the float64 formula, and
    the saturated limits exact."""
    x = np.concatenate(
        [
            np.linspace(-100.0, 100.0, 400_001),
            [0.0, -0.0, 1e-30, -1e-30, 1e-8, 88.7, -88.7, -103.9, -87.0, 0.62, -0.63],
        ]
    )
    x32 = x.astype(np.float32)
    xd = x32.astype(np.float64)
    params = {"alpha": 1.0} if name == "elu" else {}
    got = fm.ops.activation(name, x32.reshape(1, -1), **params).ravel().astype(np.float64)
    # float64 formulas without cancellation in the tails (the shared reference uses the
    # tanh form of the logistic, exact in absolute but not in relative terms far left)
    lam, alpha = ref.SELU_LAMBDA, ref.SELU_ALPHA
    want = {
        "tanh": lambda t: np.tanh(t),
        "sigmoid": lambda t: special.expit(t),
        "softplus": lambda t: np.logaddexp(0.0, t),
        "elu": lambda t: np.where(t > 0, t, np.expm1(t)),
        "silu": lambda t: t * special.expit(t),
        "selu": lambda t: lam * np.where(t > 0, t, alpha * np.expm1(t)),
    }[name](xd)
    # outputs below 1e-30 are formed from denormal intermediates (x sigma(x) far left): absolute
    err = np.abs(got - want) / np.maximum(np.abs(want), 1e-30)
    # float32 rounding of the inputs' images contributes up to 1 ulp: 4 ulps total
    assert err.max() <= 4 * np.finfo(np.float32).eps, (
        f"{name}: worst relative error {err.max():.3e}"
    )


@pytest.mark.parametrize("name", ["sigmoid", "softplus"])
def test_float32_exp_underflow_is_within_one_ulp_of_the_rounded_exact_value(name):
    """Far left, sigmoid(x) and softplus(x) are e^x in float32 (1 / (1 + e^x) and
    log1p(e^x) / e^x round to 1), so they show the vectorized exp itself where its result is
    subnormal or underflows: within one float32 spacing of float64 e^x rounded to float32
    (the spacing of the subnormals is 2^-149), and exactly 0 below the cut-off, where e^x is
    under half the least subnormal."""
    x = np.concatenate(
        [np.linspace(-110.0, -80.0, 300_001), [-87.33655, -103.27893, -103.97207, -103.97208]]
    ).astype(np.float32)
    got = fm.ops.activation(name, x.reshape(1, -1)).ravel().astype(np.float64)
    want = np.exp(x.astype(np.float64)).astype(np.float32)
    spacing = np.spacing(want).astype(np.float64)  # 2^-149 for the subnormals and zero
    worst = float(np.max(np.abs(got - want.astype(np.float64)) / spacing))
    assert worst <= 1.0, f"{name}: worst error {worst} float32 spacings"
    assert (got[x < np.float32(-103.972077083992)] == 0.0).all()


@pytest.mark.parametrize(
    "name",
    [
        "sigmoid",
        "tanh",
        "softplus",
        "elu",
        "selu",
        "silu",
        "gelu_tanh",
        "lecun_tanh",
        "soboleva_tanh",
    ],
)
def test_nan_propagates_through_the_float32_transcendentals(name):
    """NaN is refused at the API, but inside a network it can arise (inf - inf in a
    diverging GEMM): the exp/tanh paths of csrc/common/fastmath.h must return NaN for it, not
    a finite value (tanh gave +-1), and must not build 2^n from a NaN's bits (a negative shift,
    which UBSan reports). Called below the validation, on the kernel itself."""
    from fusedmlp import _activations as acts
    from fusedmlp._loader import _core

    nan = np.float32("nan")
    z = np.array([[nan, -nan, 0.5]], dtype=np.float32)
    cfg = acts.make_spec(name).config(training=False, seed=0, step=0, layer=0)
    y, d = np.empty_like(z), np.empty_like(z)
    _core.activation_forward(cfg, z, y)
    _core.activation_derivative(cfg, z, d)
    assert np.isnan(y[0, :2]).all() and np.isnan(d[0, :2]).all(), (y, d)
    assert np.isfinite(y[0, 2]) and np.isfinite(d[0, 2])
