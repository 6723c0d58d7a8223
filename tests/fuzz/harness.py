"""Hypothesis fuzz of the public API (issue 14, item 5 "Fuzzing").

Every case is a target (a public function, constructor or method) with keyword arguments
drawn as *specs*: plain picklable data that a worker process turns into the real objects
(``Arr`` -> a NumPy array, a view, a list, a raw buffer, ...). Each argument is drawn either
from its valid values or, for exactly one argument of a case, from its invalid ones, so the
oracle knows what must happen:

* all arguments valid -> the call returns (``ok``) and its output holds no NaN;
* argument ``a`` invalid -> ``ValueError``/``TypeError`` whose message names ``a``.

The calls run in a long-lived worker process (``multiprocessing`` spawn), restarted when it
dies or hangs, so a crash is counted instead of ending the run.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import multiprocessing as mp
import traceback
from typing import Any

from hypothesis import strategies as st

# --------------------------------------------------------------------------- value specs


@dataclasses.dataclass(frozen=True)
class Arr:
    """An array to build in the worker: ``fill`` the values, ``form`` how it is passed."""

    shape: tuple
    dtype: str = "float64"
    fill: str = "normal"  # normal, huge, large, tiny, nan, inf, zeros, ones, onehot, labels, prob
    form: str = "array"  # array, noncontig, readonly, fortran, list, bytes, memoryview, str
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Obj:
    """A library object to build in the worker (an optimizer, a schedule, a layer list)."""

    kind: str
    arg: Any = None


def _fill(a: Arr, np):
    rng = np.random.default_rng(a.seed)
    shape = a.shape
    if a.fill == "onehot":
        out = np.zeros(shape)
        if out.size:
            out[np.arange(shape[0]), rng.integers(0, shape[1], shape[0])] = 1.0
        return out
    if a.fill == "labels":
        return rng.integers(0, 2, shape).astype(float)
    base = rng.standard_normal(shape)
    if a.fill == "huge":
        big = 1e30 if a.dtype in ("float32", "float16") else 1e300
        return base * big
    if a.fill == "large":  # huge, but its squares (and their sums) stay finite
        return base * (1e18 if a.dtype in ("float32", "float16") else 1e150)
    if a.fill == "tiny":
        return base * (1e-40 if a.dtype == "float32" else 1e-310)
    if a.fill == "nan":
        base.flat[0] = np.nan if base.size else 0
        return base
    if a.fill == "inf":
        base.flat[-1] = np.inf if base.size else 0
        return base
    if a.fill == "zeros":
        return np.zeros(shape)
    if a.fill == "ones":
        return np.ones(shape)
    if a.fill == "prob":
        return rng.uniform(0, 1, shape)
    if a.fill == "pos":
        return np.abs(base) + 0.5
    if a.fill == "neg":
        return -np.abs(base) - 0.5
    return base


def build(x: Any, np, fm) -> Any:
    """Turn a spec into the object passed to the call."""
    if isinstance(x, Arr):
        vals = _fill(x, np)
        if x.dtype == "object":
            arr = vals.astype(object)
        elif x.dtype == "complex128":
            arr = vals.astype(np.complex128) + 1j
        elif x.dtype in ("int64", "uint8", "int32"):
            arr = np.abs(vals).astype(x.dtype)
        elif x.dtype == "bool":
            arr = vals > 0
        else:
            with np.errstate(over="ignore"):
                arr = vals.astype(x.dtype)
        if x.form == "noncontig":
            wide = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), arr.dtype) if arr.ndim else arr
            if arr.ndim:
                wide[..., ::2] = arr
                return wide[..., ::2]
            return arr
        if x.form == "readonly":
            arr.setflags(write=False)
        elif x.form == "fortran":
            return np.asfortranarray(arr)
        elif x.form == "list":
            return arr.tolist()
        elif x.form == "bytes":
            return bytearray(arr.tobytes())
        elif x.form == "memoryview":
            return memoryview(arr)
        elif x.form == "str":
            return str(arr.tolist())
        return arr
    if isinstance(x, Obj):
        if x.kind == "bn_saved":  # built from the case's x by call()
            return x
        return OBJECTS[x.kind](x.arg, np, fm)
    if isinstance(x, tuple):
        return tuple(build(e, np, fm) for e in x)
    if isinstance(x, list):
        return [build(e, np, fm) for e in x]
    if isinstance(x, dict):
        return {k: build(e, np, fm) for k, e in x.items()}
    return x


OBJECTS = {
    "mlp": lambda a, np, fm: fm.MLP(a[0], [4], a[1], dtype=a[2], seed=0),
    "adam": lambda a, np, fm: fm.optim.Adam(lr=1e-2),
    "sgd": lambda a, np, fm: fm.optim.SGD(lr=1e-2, momentum=0.9),
    "layers": lambda a, np, fm: [fm.Dense(4, activation="relu"), fm.Dense(a)],
    "object": lambda a, np, fm: object(),
}

# --------------------------------------------------------------------------- bad values

NAN, INF = float("nan"), float("inf")
BAD_REAL = [NAN, INF, -INF, "0.1", None, True, 1 + 0j, [0.1], object()]
BAD_INT = [1.5, "3", None, True, NAN, -(2**63) - 1, [1], 3.0]
BAD_BOOL = [None, "yes", 2, 1.0, NAN, [True]]
BAD_SEED = [-1, 2**64, 2**70, 1.5, "0", None, True, NAN, -(2**63)]
BAD_NAME = [None, 3, "no_such_name", b"relu", ["relu"], ""]


def bad_array_specs(shape, dtype="float64") -> list:
    """Invalid forms of an array argument of ``shape`` (float) whose values are checked."""
    return [
        Arr(shape, "int64"),
        Arr(shape, "uint8"),
        Arr(shape, "bool"),
        Arr(shape, "complex128"),
        Arr(shape, "object"),
        Arr(shape, "float16"),
        Arr(shape, dtype, "nan"),
        Arr(shape, dtype, "inf"),
        Arr(shape, dtype, form="bytes"),
        Arr(shape, dtype, form="memoryview"),
        Arr(shape, dtype, form="str"),
        Arr((0,) + tuple(shape[1:]), dtype),
        Arr(tuple(shape) + (1,), dtype),
        Arr(shape[:1], dtype) if len(shape) > 1 else Arr(tuple(shape) + (2,), dtype),
        None,
        "array",
        3.0,
    ]


def good_array_specs(shape, dtype="float64", fills=("normal", "huge", "tiny", "zeros")) -> list:
    """Valid forms: any fill, C/Fortran/non-contiguous/read-only views."""
    out = []
    for fill in fills:
        for form in ("array", "noncontig", "readonly", "fortran"):
            out.append(Arr(shape, dtype, fill, form))
    return out


# --------------------------------------------------------------------------- targets


# --------------------------------------------------------------------------- the calls (worker)

OPS = (
    "activation",
    "activation_grad",
    "activation_backward",
    "softmax",
    "maxout",
    "dense_forward",
    "dense_backward",
    "batchnorm_forward",
    "rbf",
    "dropout",
    "dropout_backward",
    "gaussian_noise",
    "loss",
    "loss_output",
)


def _bn_saved(kw, np, fm):
    x = kw["x"]
    n = x.shape[1]
    one = np.ones(n, x.dtype)
    return fm.ops.batchnorm_forward(x, one, 0 * one, 0 * one, one, training=True)[1]


def _split(kw, names):
    return {k: kw.pop(k) for k in names if k in kw}


def call(target: str, kw: dict, np, fm) -> Any:
    """Run one case; returns what the call returned (checked for NaN by the caller)."""
    if target in OPS:
        return getattr(fm.ops, target)(**kw)
    if target == "batchnorm_backward":
        if isinstance(kw["saved"], Obj):
            kw["saved"] = _bn_saved(kw, np, fm)
        return fm.ops.batchnorm_backward(**kw)
    if target == "rbf_backward":
        d, phi = fm.ops.rbf(kw["X"], kw["centers"], kw["widths"])
        return fm.ops.rbf_backward(D=d, Phi=phi, **kw)
    if target == "MLP":
        use = _split(kw, ("X", "batch_size"))
        return fm.MLP(**kw).predict(use["X"], batch_size=use["batch_size"])
    if target.startswith("layer_"):
        n_in = kw.pop("n_in")
        cls = getattr(fm, target[6:])
        layer = cls(**kw)
        model = fm.Sequential([layer, fm.Dense(1)], n_in=n_in)
        X = np.linspace(-1, 1, 4 * model_n_in(n_in)).reshape(4, -1)
        if target == "layer_RBF":
            model.init_rbf(X)
        return model.predict(X)
    if target.startswith("Trainer_"):
        data = _split(kw, ("X", "y", "sample_weight"))
        fit = _split(
            kw, ("epochs", "batch_size", "validation_split", "shuffle", "verbose", "initial_epoch")
        )
        tr = fm.Trainer(**kw)
        method = target[8:]
        if method == "predict":
            return tr.predict(data["X"])
        if method == "fit":
            # A diverged epoch is logged as NaN by design (fit's docstring): the weights are
            # what must stay defined.
            tr.fit(data["X"], data["y"], sample_weight=data["sample_weight"], **fit)
            return None
        if method == "evaluate":
            return list(tr.evaluate(data["X"], data["y"], data["sample_weight"]).values())
        return tr.train_step(data["X"], data["y"], data["sample_weight"])
    if target == "optimizer":
        cls = getattr(fm.optim, kw.pop("cls"))
        use = _split(kw, ("params", "grads", "step_lr"))
        opt = cls(**kw)
        params = use["params"]
        opt.step([params], [use["grads"]], lr=use["step_lr"])
        return params
    if target == "schedule":
        cls = getattr(fm.schedules, kw.pop("cls"))
        use = _split(kw, ("at_step", "at_epoch"))
        return cls(**kw).lr_at(use["at_step"], use["at_epoch"])
    raise KeyError(target)


def model_n_in(n_in):
    return n_in if isinstance(n_in, int) and 0 < n_in < 100 else 1


def has_nan(out, np) -> bool:
    if isinstance(out, (list, tuple)):
        return any(has_nan(o, np) for o in out)
    if isinstance(out, dict):
        return any(has_nan(o, np) for o in out.values())
    if isinstance(out, float):
        return math.isnan(out)
    if isinstance(out, np.ndarray) and out.dtype.kind == "f":
        return bool(np.isnan(out).any())
    if hasattr(out, "_asdict"):
        return has_nan(tuple(out), np)
    return False


def run_case(case) -> tuple[str, str]:
    """Classify one case (in the worker): (outcome, detail)."""
    import warnings

    import fusedmlp as fm
    import numpy as np

    target, kw, bad, name = case
    try:
        kw = build(kw, np, fm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                out = call(target, kw, np, fm)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if bad is None:
            return "rejected_valid", f"{type(exc).__name__}: {msg}"
        if name in msg:
            return "rejected_named", ""
        return "rejected_unnamed", f"{type(exc).__name__}: {msg}"
    except MemoryError as exc:
        return ("rejected_named" if bad else "memory_error"), str(exc)
    except Exception as exc:  # the defect class: any other exception
        tb = traceback.format_exc(limit=-3)
        return "other_exception", f"{type(exc).__name__}: {exc}\n{tb}"
    if bad is not None:
        return "accepted_invalid", ""
    if has_nan(out, np):
        return "nan_output", ""
    return "ok", ""


def _worker(conn) -> None:
    import resource

    # A runaway allocation is a MemoryError here, not the machine's swap.
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    while True:
        case = conn.recv()
        if case is None:
            return
        conn.send(run_case(case))


class Pool:
    """One worker process; a call that kills it is a crash, one over ``timeout`` a hang."""

    def __init__(self, timeout: float = 30.0):
        self.ctx = mp.get_context("spawn")
        self.timeout = timeout
        self.proc = None
        self.restarts = 0

    def _start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def run(self, case) -> tuple[str, str]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send(case)
        if not self.conn.poll(self.timeout):
            self.proc.kill()
            self.proc.join()
            self.proc = None
            self.restarts += 1
            return "hang", f"no answer in {self.timeout} s"
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join()
            code = self.proc.exitcode
            self.proc = None
            self.restarts += 1
            return "crash", f"worker died, exit code {code}"

    def close(self):
        if self.proc is not None and self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(5)


DEFECTS = (
    "rejected_unnamed",
    "other_exception",
    "crash",
    "hang",
    "accepted_invalid",
    "nan_output",
    "rejected_valid",
    "memory_error",
)


@st.composite
def cases(draw, targets=None):
    """A case: (target, kwargs specs, invalid argument or None, name its error must carry)."""
    from .targets import TARGETS

    names = sorted(TARGETS) if targets is None else targets
    tname = draw(st.sampled_from(names))
    params = TARGETS[tname](draw)
    can_be_bad = [k for k, p in params.items() if p.bad]
    bad = draw(st.one_of(st.none(), st.sampled_from(can_be_bad))) if can_be_bad else None
    kw = {}
    for k, p in params.items():
        kw[k] = draw(st.sampled_from(p.bad if k == bad else p.good))
    expect = None if bad is None else (params[bad].name or bad)
    return (tname, kw, bad, expect)


class Tally:
    def __init__(self):
        self.counts = collections.Counter()
        self.by_target = collections.defaultdict(collections.Counter)
        self.examples = collections.defaultdict(list)

    def add(self, case, outcome, detail):
        self.counts[outcome] += 1
        self.by_target[case[0]][outcome] += 1
        if outcome in DEFECTS and len(self.examples[outcome]) < 400:
            self.examples[outcome].append((case, detail))

    @property
    def defects(self) -> int:
        return sum(self.counts[d] for d in DEFECTS)

    def table(self) -> str:
        cols = ["ok", "rejected_named", *DEFECTS]
        w = max(len(t) for t in self.by_target) if self.by_target else 6
        head = f"{'target':<{w}} " + " ".join(f"{c[:12]:>12}" for c in cols)
        lines = [head, "-" * len(head)]
        for t in sorted(self.by_target):
            c = self.by_target[t]
            lines.append(f"{t:<{w}} " + " ".join(f"{c[k]:>12}" for k in cols))
        lines.append("-" * len(head))
        lines.append(f"{'total':<{w}} " + " ".join(f"{self.counts[k]:>12}" for k in cols))
        lines.append(f"calls {sum(self.counts.values())}, defects {self.defects}")
        return "\n".join(lines)


def fuzz(calls: int, seed: int = 0, targets=None, timeout: float = 30.0, progress=None) -> Tally:
    """Draw ``calls`` cases with Hypothesis (reproducible from ``seed``), run each in the
    worker, and count the outcomes."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    tally = Tally()
    pool = Pool(timeout)

    @hseed(seed)
    @settings(
        max_examples=calls,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases(targets))
    def one(case):
        outcome, detail = pool.run(case)
        tally.add(case, outcome, detail)
        if progress and sum(tally.counts.values()) % progress == 0:
            print(f"{sum(tally.counts.values())} calls, {tally.defects} defects", flush=True)

    try:
        one()
    finally:
        pool.close()
    return tally
