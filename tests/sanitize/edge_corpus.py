"""Edge-input corpus for the native kernels: every ``fusedmlp.ops`` function, and one step
of every optimizer, called with extreme values and sizes.

Values: +-1e30, +-100, +-1e-30, +-0, the least and largest subnormal, the largest finite
value of the dtype, the exp cut-offs (float32 e^x underflows below -103.97 and overflows
above 88.72), NaN and +-Inf. Shapes: empty (0 rows), 1 x 1, odd (3 x 7), and one above the
OpenMP threshold (257 x 129 elements > 2^15) so the threaded loops and every SIMD clone's
remainder run too. Each value is tried as a constant array and in a mix with all the others.

A call must either return arrays of the promised shape and dtype, or raise ValueError,
TypeError or MemoryError (bad input is refused, e.g. NaN logits). Any other exception is a
finding; a crash ends the process. Under tests/sanitize/run.sh the extension is built with
ASan+UBSan and halts on the first report, so "clean" means no native error on any call.

Run: ``python tests/sanitize/edge_corpus.py [-v] [group ...]`` (exit status 0 = clean; -v
prints each call before making it, so the last line names the call a sanitizer stopped in).
"""

from __future__ import annotations

import sys
import traceback

import fusedmlp as fm
import numpy as np

DTYPES = (np.float32, np.float64)
SHAPES = ((0, 4), (1, 1), (3, 7), (257, 129))
REFUSALS = (ValueError, TypeError, MemoryError)


def values(dtype) -> list[float]:
    fi = np.finfo(dtype)
    tiny_sub = float(np.nextafter(dtype(0), dtype(1)))  # least subnormal
    big_sub = float(fi.tiny) - tiny_sub  # largest subnormal (about)
    return [
        1e30, -1e30, 100.0, -100.0, 1e-30, -1e-30, 0.0, -0.0,
        tiny_sub, -tiny_sub, big_sub, -big_sub,
        float(fi.max), -float(fi.max),
        -103.972077, -104.0, 88.7228, 89.0, -87.3, 709.8, -745.2,
        float("nan"), float("inf"), float("-inf"),
    ]  # fmt: skip


def arrays(dtype, shape):
    """(label, array) for each constant value and the cyclic mix of all of them."""
    vals = values(dtype)
    for x in vals:
        yield f"{x!r}", np.full(shape, x, dtype=dtype)
    n = int(np.prod(shape))
    mix = np.resize(np.array(vals, dtype=dtype), n).reshape(shape)
    yield "mix", mix
    # The mix without NaN/Inf: what a finite-only op must accept.
    fin = [x for x in vals if np.isfinite(x)]
    yield "mix-finite", np.resize(np.array(fin, dtype=dtype), n).reshape(shape)


class Corpus:
    def __init__(self, verbose: bool = False):
        self.calls = 0
        self.refused = 0
        self.findings: list[str] = []
        self.verbose = verbose

    def call(self, what: str, check, fn, *args, **kwargs):
        """fn(*args, **kwargs), counted; check(result) when it returns (None: no check)."""
        self.calls += 1
        if self.verbose:  # the last line printed names the call a sanitizer report belongs to
            print(what, file=sys.stderr, flush=True)
        try:
            out = fn(*args, **kwargs)
        except REFUSALS:
            self.refused += 1
            return None
        except Exception:  # anything else is a finding, reported with its traceback
            self.findings.append(f"{what}: {traceback.format_exc(limit=3)}")
            return None
        if check is not None:
            try:
                check(out)
            except AssertionError as exc:
                self.findings.append(f"{what}: {exc}")
        return out


def shape_dtype(shape, dtype):
    """Check that the (first) returned array has this shape and dtype."""

    def check(out):
        a = out[0] if isinstance(out, tuple) else out
        assert isinstance(a, np.ndarray), f"returned {type(a).__name__}"
        assert a.shape == tuple(shape), f"shape {a.shape} != {shape}"
        assert a.dtype == dtype, f"dtype {a.dtype} != {np.dtype(dtype)}"

    return check


def loss_check(shape, dtype):
    def check(out):
        val, g = out
        assert isinstance(val, float), f"loss value is {type(val).__name__}"
        shape_dtype(shape, dtype)(g)

    return check


def unit_params(name: str, cols: int, dtype, fill: float | None = None):
    """Learnable per-unit parameters of ``name`` (None when it has none)."""
    rows = {"prelu": 1, "soft_exponential": 1, "srelu": 4, "apl": 4}.get(name)
    if rows is None:
        return None
    if fill is not None:
        return np.full((rows, cols), fill, dtype=dtype)
    base = {
        "prelu": [0.25],
        "soft_exponential": [0.5],
        "srelu": [0.0, 0.01, 1.0, 1.0],
        "apl": [0.5, -0.5, 0.1, 1.0],
    }[name]
    return np.repeat(np.array(base, dtype=dtype)[:, None], cols, axis=1)


EXTREME_PARAMS = (1e30, -1e30, 100.0, -100.0, 0.0, 1e-30, float("nan"), float("inf"))
EXTREME_HYPER = (
    ("leaky_relu", "alpha"),
    ("elu", "alpha"),
    ("isru", "alpha"),
    ("isrlu", "alpha"),
    ("soft_clipping", "alpha"),
    ("soboleva_tanh", "a"),
    ("soboleva_tanh", "c"),
    ("rrelu", "upper"),
)


def run_activations(c: Corpus):
    ops = fm.ops
    names = [n for n in ops.activation_names() if n not in ("softmax", "maxout")]
    for dtype in DTYPES:
        for shape in SHAPES:
            chk = shape_dtype(shape, dtype)
            for label, z in arrays(dtype, shape):
                g = np.ones_like(z)
                for name in names:
                    p = unit_params(name, shape[1], dtype)
                    kw = {"training": True, "seed": 3} if name == "rrelu" else {}
                    tag = f"activation {name} {np.dtype(dtype)} {shape} {label}"
                    c.call(tag, chk, ops.activation, name, z, p, **kw)
                    c.call(tag + " grad", chk, ops.activation_grad, name, z, p, **kw)
                    c.call(tag + " backward", chk, ops.activation_backward, name, z, g, p, **kw)
                c.call(f"softmax {label}", chk, ops.softmax, z)
                c.call(f"softmax backward {label}", chk, ops.activation_backward, "softmax", z, g)
                k = 7 if shape[1] % 7 == 0 else 1
                out = (shape[0], shape[1] // k)
                c.call(f"maxout {label}", shape_dtype(out, dtype), ops.maxout, z, k)
                c.call(
                    f"maxout backward {label}",
                    chk,
                    ops.activation_backward,
                    "maxout",
                    z,
                    np.ones(out, dtype),
                    pieces=k,
                )
            # Extreme learnable parameters and hyper-parameters on the finite mix.
            z = dict(arrays(dtype, shape))["mix-finite"]
            g = np.ones_like(z)
            for fill in EXTREME_PARAMS:
                for name in ("prelu", "soft_exponential", "srelu", "apl"):
                    p = unit_params(name, shape[1], dtype, fill)
                    tag = f"activation {name} params={fill} {np.dtype(dtype)} {shape}"
                    c.call(tag, chk, ops.activation_backward, name, z, g, p)
                for name, key in EXTREME_HYPER:
                    tag = f"activation {name} {key}={fill} {np.dtype(dtype)} {shape}"
                    c.call(tag, chk, ops.activation_backward, name, z, g, **{key: fill})


def _fill_like(src: np.ndarray, shape, dtype) -> np.ndarray:
    """An array of ``shape`` cycling through src's values (0.5 when src is empty)."""
    if src.size == 0:
        return np.full(shape, 0.5, dtype)
    return np.resize(src.ravel()[::-1], int(np.prod(shape))).reshape(shape).astype(dtype)


DENSE_ACTS = ("identity", "sigmoid", "tanh", "softplus", "elu", "silu", "gelu")
RBF_WIDTHS = (1e-30, 1e-3, 1.0, 1e30, float("inf"), float("nan"), 0.0, -1.0)


def run_dense_rbf(c: Corpus):
    ops = fm.ops
    for dtype in DTYPES:
        for n, n_in, n_out in ((0, 3, 2), (1, 1, 1), (3, 7, 5), (257, 33, 129)):
            for label, X in arrays(dtype, (n, n_in)):
                W = _fill_like(X, (n_in, n_out), dtype)
                b = W[0].copy()
                for act in DENSE_ACTS:
                    tag = f"dense {act} {np.dtype(dtype)} ({n},{n_in},{n_out}) {label}"
                    out = c.call(
                        tag, shape_dtype((n, n_out), dtype), ops.dense_forward, X, W, b, act
                    )
                    if out is not None:
                        Z = out[0]
                        g = np.ones_like(Z)
                        c.call(tag + " backward", None, ops.dense_backward, X, W, Z, g, act)
                centers = _fill_like(X[::-1], (n_out, n_in), dtype)
                for width in RBF_WIDTHS:
                    widths = np.full(n_out, width, dtype)
                    tag = f"rbf width={width} {np.dtype(dtype)} ({n},{n_in},{n_out}) {label}"
                    out = c.call(tag, shape_dtype((n, n_out), dtype), ops.rbf, X, centers, widths)
                    if out is not None:
                        D, Phi = out
                        g = np.ones_like(Phi)
                        c.call(
                            tag + " backward", None, ops.rbf_backward, X, centers, widths, D, Phi, g
                        )


def run_batchnorm(c: Corpus):
    ops = fm.ops
    for dtype in DTYPES:
        for shape in SHAPES:
            f = shape[1]
            chk = shape_dtype(shape, dtype)
            for label, x in arrays(dtype, shape):
                g = np.ones_like(x)
                for eps in (1e-5, 1e-30, 0.0, 1e30):
                    for momentum in (0.1, 0.0, 1.0):
                        for init in (False, True):
                            gamma, beta = np.ones(f, dtype), np.zeros(f, dtype)
                            rm, rv = np.zeros(f, dtype), np.ones(f, dtype)
                            tag = (
                                f"batchnorm {np.dtype(dtype)} {shape} {label} eps={eps} "
                                f"momentum={momentum} init={init}"
                            )
                            out = c.call(
                                tag, chk, ops.batchnorm_forward,
                                x, gamma, beta, rm, rv, True, momentum, eps, init,
                            )  # fmt: skip
                            if out is not None:
                                c.call(
                                    tag + " backward", chk, ops.batchnorm_backward,
                                    x, g, gamma, out[1],
                                )  # fmt: skip
                    # Inference with running statistics taken from the extreme values.
                    rm = _fill_like(x, (f,), dtype)
                    rv = np.abs(_fill_like(x[::-1], (f,), dtype))
                    tag = f"batchnorm inference {np.dtype(dtype)} {shape} {label} eps={eps}"
                    c.call(tag, chk, ops.batchnorm_forward, x, None, None, rm, rv, False, 0.1, eps)


DROPOUT_RATES = (0.0, 1e-30, 0.5, 1.0 - 1e-7, 1.0, -0.1, float("nan"))
DROPOUT_KEYS = ((0, 0), (2**64 - 1, 2**64 - 1), (-1, 0), (2**64, 0))
NOISE_STDS = (0.0, 1e-30, 1.0, 1e30, float("inf"), float("nan"), -1.0)


def run_dropout_noise(c: Corpus):
    ops = fm.ops
    for dtype in DTYPES:
        for shape in SHAPES:
            chk = shape_dtype(shape, dtype)
            for label, x in arrays(dtype, shape):
                for rate in DROPOUT_RATES:
                    for seed, step in DROPOUT_KEYS:
                        tag = f"dropout rate={rate} seed={seed} {np.dtype(dtype)} {shape} {label}"
                        c.call(tag, chk, ops.dropout, x, rate, seed, step, 1)
                        c.call(tag + " backward", chk, ops.dropout_backward, x, rate, seed, step, 1)
                for std in NOISE_STDS:
                    tag = f"gaussian_noise std={std} {np.dtype(dtype)} {shape} {label}"
                    c.call(tag, chk, ops.gaussian_noise, x, std, 5, 7, 2)


def loss_targets(name: str, z: np.ndarray) -> list[np.ndarray]:
    rows, cols = z.shape
    if name == "mse":
        return [np.zeros_like(z), z[::-1].copy()]
    if name == "binary_cross_entropy":
        return [np.zeros_like(z), np.ones_like(z)]
    labels = np.arange(rows) % cols
    return [labels, np.eye(cols, dtype=z.dtype)[labels]]


def run_losses(c: Corpus):
    ops = fm.ops
    for dtype in DTYPES:
        for shape in SHAPES:
            rows = shape[0]
            chk = loss_check(shape, dtype)
            weights = (None, np.full(rows, 1e30, dtype), np.zeros(rows, dtype))
            for label, z in arrays(dtype, shape):
                for name in ops.loss_names():
                    for t in loss_targets(name, z):
                        for sw in weights:
                            for ls in (0.0, 0.1, 1.0):
                                for smoothing in ("deck", "uniform"):
                                    tag = (
                                        f"loss {name} {np.dtype(dtype)} {shape} {label} ls={ls} "
                                        f"{smoothing} sw={None if sw is None else sw[:1]}"
                                    )
                                    c.call(tag, chk, ops.loss, name, z, t, sw, ls, smoothing)
                    tag = f"loss_output {name} {np.dtype(dtype)} {shape} {label}"
                    c.call(tag, shape_dtype(shape, dtype), ops.loss_output, name, z)


OPTIM_OPTIONS = (
    {},
    {"weight_decay": 1e30},
    {"clip_norm": 1.0},
    {"clip_value": 1e-30},
    {"max_norm": 1.0},
)


def optimizer_steps(name: str, kw: dict, w: np.ndarray, g: np.ndarray) -> np.ndarray:
    opt = fm.optim.get(name, **kw)
    opt.step([w], [g])
    opt.step([w], [g])
    return w


def run_optimizers(c: Corpus):
    for name in fm.optim.names():
        for dtype in DTYPES:
            for shape in ((0, 3), (1, 1), (3, 7), (257, 129), (5,)):
                for label, g in arrays(dtype, shape):
                    for kw in OPTIM_OPTIONS:
                        w = _fill_like(g, shape, dtype)
                        tag = f"optim {name} {kw} {np.dtype(dtype)} {shape} {label}"
                        c.call(tag, shape_dtype(shape, dtype), optimizer_steps, name, kw, w, g)


GROUPS = {
    "activations": run_activations,
    "dense_rbf": run_dense_rbf,
    "batchnorm": run_batchnorm,
    "dropout_noise": run_dropout_noise,
    "losses": run_losses,
    "optimizers": run_optimizers,
}


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    c = Corpus(verbose)
    groups = [a for a in argv if a != "-v"] or list(GROUPS)
    for g in groups:
        before = c.calls
        GROUPS[g](c)
        print(f"{g}: {c.calls - before} calls", flush=True)
    print(f"edge corpus: {c.calls} calls, {c.refused} refused (ValueError/TypeError/MemoryError), "
          f"{len(c.findings)} findings")  # fmt: skip
    for f in c.findings[:50]:
        print("FINDING", f)
    return 1 if c.findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
