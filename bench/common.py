"""The benchmark harness (DESIGN.md, "Benchmarks"): configurations, systems, validation,
timing, FLOP counts, the GEMM floor, machine information and the JSON/Markdown writers.

Systems (all in this process, on the same batches and the same thread count):

- ``fusedmlp``: ``fm.MLP`` + ``fm.Trainer(loss, fm.optim.Adam(lr=1e-3))``; one step is
  ``trainer.train_step(X, y)``, the one fused C++ call (plus the Trainer's input checks).
- ``fusedmlp-raw``: the same Network's ``train_step`` binding without the Trainer's Python
  checks (informational: it shows what the Python layer costs).
- ``torch``: PyTorch eager, the equivalent ``nn.Sequential`` and ``torch.optim.Adam``
  (PyTorch's default implementation choice for CPU tensors, recorded), the usual
  zero_grad / forward / loss / backward / step loop.
- ``torch-compile``: the same step with the model+loss and the optimizer step compiled by
  ``torch.compile`` (mode recorded; compile time excluded, warm-up included).
- ``sklearn``: ``MLPClassifier``/``MLPRegressor.partial_fit`` on exactly one batch per call
  (solver="adam", alpha=0, the same hidden sizes, activation and learning rate).

Timing: every system is warmed up, then the systems are timed *interleaved* (one block of
``inner`` steps of each system in turn, repeated), so a change of machine load hits all of
them alike; each block starts with one untimed step. A sample is the block's time divided
by ``inner``; the summary is the median and the inter-quartile range. Batches rotate over a
pre-generated set larger than the last-level cache.

Example:
    >>> from bench import common
    >>> cfg = common.CONFIGS["mnist-mlp"]
    >>> common.training_flops(cfg) == 2 * 128 * (784 * 256 * 2 + 256 * 256 * 3 + 256 * 10 * 3)
    True
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as _dt
import gc
import importlib.metadata
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# ---------------------------------------------------------------------------------------------
# configurations (issue 8; keep these names)


@dataclasses.dataclass(frozen=True)
class Config:
    """One benchmark configuration: a dense network trained by Adam in float32.

    Attributes:
        name: the configuration's name (e.g. ``"mnist-mlp"``).
        layers: widths from input to output, e.g. ``(784, 256, 256, 10)``.
        batch: rows per training step.
        activation: hidden activation ("relu", "tanh", ...); the output layer is linear.
        loss: "mse" or "cross_entropy" (fused with softmax).
        batchnorm: BatchNorm after each hidden Dense (Dense+act, BN, Dropout order).
        dropout: drop rate after each hidden layer (0: none).
        lr: Adam's learning rate.
    """

    name: str
    layers: tuple[int, ...]
    batch: int
    activation: str
    loss: str
    batchnorm: bool = False
    dropout: float = 0.0
    lr: float = 1e-3

    @property
    def n_in(self) -> int:
        return self.layers[0]

    @property
    def n_out(self) -> int:
        return self.layers[-1]

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.layers[1:-1]

    def with_(self, **changes: Any) -> Config:
        """A copy with some fields changed (``name`` is not updated automatically)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        extra = []
        if self.batchnorm:
            extra.append("batchnorm")
        if self.dropout:
            extra.append(f"dropout {self.dropout:g}")
        arch = "-".join(str(w) for w in self.layers)
        tail = f", {' + '.join(extra)}" if extra else ""
        return f"{arch}, batch {self.batch}, {self.activation}, {self.loss}{tail}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["layers"] = list(self.layers)
        return d


CONFIGS: dict[str, Config] = {
    "tiny-sin": Config("tiny-sin", (1, 128, 128, 128, 1), 32, "tanh", "mse"),
    "mnist-mlp": Config("mnist-mlp", (784, 256, 256, 10), 128, "relu", "cross_entropy"),
    "mnist-bn-drop": Config(
        "mnist-bn-drop",
        (784, 256, 256, 10),
        128,
        "relu",
        "cross_entropy",
        batchnorm=True,
        dropout=0.2,
    ),
    "wide": Config("wide", (1024, 1024, 1024, 10), 512, "relu", "cross_entropy"),
}

#: Batch sizes of the GPU suite (2^14 .. 2^20).
GPU_BATCHES = tuple(2**k for k in range(14, 21))
#: Batch sweep 32 .. 8192 and width sweep 64 .. 4096 (powers of two).
SWEEP_BATCHES = tuple(2**k for k in range(5, 14))
SWEEP_WIDTHS = tuple(2**k for k in range(6, 13))

#: CPU targets of issue 8: (config, peer, kind, value). "ratio": peer time / ours >= value
#: (">" for value 1.0, i.e. strictly faster); "floor": ours / GEMM floor <= value.
CPU_TARGETS: list[tuple[str, str, str, float]] = [
    ("tiny-sin", "torch", "ratio", 7.0),
    ("tiny-sin", "torch-compile", "ratio", 1.0),
    ("mnist-mlp", "torch", "ratio", 2.2),
    ("mnist-bn-drop", "torch", "ratio", 2.2),
    ("wide", "torch", "ratio", 1.2),
    ("wide", "floor", "floor", 1.05),
] + [(name, "sklearn", "ratio", 1.0) for name in CONFIGS]

# ---------------------------------------------------------------------------------------------
# imports of the optional peers


def import_fm():
    """Import fusedmlp (from ``FUSEDMLP_BUILD_DIR`` when set, see ``fusedmlp._loader``)."""
    import fusedmlp as fm

    return fm


def try_import(name: str):
    """The module, or None when it is not installed (peers are optional)."""
    try:
        return __import__(name)
    except ImportError:
        return None


# ---------------------------------------------------------------------------------------------
# threads and machine information

_THREADPOOL_LIMITS = None


def set_threads(n: int) -> dict:
    """Use ``n`` threads everywhere: fusedmlp (OpenMP + its OpenBLAS), PyTorch (intra-op and
    inter-op; only if already imported, so fusedmlp-only scripts do not load it), and every
    BLAS/OpenMP library threadpoolctl finds (NumPy's OpenBLAS, which scikit-learn uses).
    Call after importing the peers.

    Returns:
        what each library reports afterwards.
    """
    global _THREADPOOL_LIMITS
    info: dict[str, Any] = {"requested": n}
    threadpoolctl = try_import("threadpoolctl")
    if threadpoolctl is not None:
        _THREADPOOL_LIMITS = threadpoolctl.threadpool_limits(limits=n)
    fm = import_fm()
    fm.set_num_threads(n)
    _THREAD_STATE[0], _THREAD_STATE[2] = (n, n), n
    info["fusedmlp"] = {"omp": fm.get_num_threads(), "blas": int(fm._core.get_blas_threads())}
    torch = sys.modules.get("torch")  # only when a peer already imported it
    if torch is not None:
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # only settable before the first inter-op work
            pass
        info["torch"] = {
            "intra_op": torch.get_num_threads(),
            "inter_op": torch.get_num_interop_threads(),
        }
    if threadpoolctl is not None:
        info["threadpoolctl"] = [
            {
                k: lib.get(k)
                for k in (
                    "user_api",
                    "internal_api",
                    "prefix",
                    "version",
                    "num_threads",
                    "threading_layer",
                    "architecture",
                    "filepath",
                )
            }
            for lib in threadpoolctl.threadpool_info()
        ]
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def _caches() -> dict[str, str]:
    out = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")) if base.exists() else []:
        try:
            level = (d / "level").read_text().strip()
            kind = (d / "type").read_text().strip()
            size = (d / "size").read_text().strip()
        except OSError:
            continue
        out[f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    return out


def machine_tag() -> str:
    """A short file-name-safe machine tag (the host name)."""
    host = socket.gethostname().split(".")[0] or "host"
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:40]


def machine_info() -> dict:
    """CPU model, cores, caches, load, library versions and relevant environment variables."""
    fm = import_fm()
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "caches": _caches(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "fusedmlp": fm.__version__,
        "fusedmlp_core": getattr(fm._core, "__file__", None),
        "env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(
                ("OMP_", "GOMP_", "OPENBLAS_", "MKL_", "KMP_", "FUSEDMLP_", "TORCHINDUCTOR_")
            )
        },
    }
    # versions from the package metadata: a fusedmlp-only script does not import the peers
    for dist, key in (
        ("torch", "torch"),
        ("scikit-learn", "sklearn"),
        ("threadpoolctl", "threadpoolctl"),
    ):
        try:
            info[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[key] = None
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_parallel"] = torch.__config__.parallel_info().strip().splitlines()[:8]
    try:
        info["scipy_openblas32"] = importlib.metadata.version("scipy-openblas32")
    except importlib.metadata.PackageNotFoundError:
        info["scipy_openblas32"] = None
    return info


# ---------------------------------------------------------------------------------------------
# data


def n_rotating_batches(cfg: Config, target_bytes: int = 32 << 20, lo: int = 4, hi: int = 64) -> int:
    """How many distinct batches to rotate so that their inputs exceed the caches."""
    per = cfg.batch * cfg.n_in * 4
    return int(min(hi, max(lo, math.ceil(target_bytes / per))))


@dataclasses.dataclass
class Batches:
    """Pre-generated batches shared by all systems (torch views share the NumPy memory).

    Attributes:
        X: inputs, float32 (batch, n_in), C-contiguous.
        y: targets as fusedmlp takes them: int32 labels (cross-entropy) or float32
            (batch, n_out) (mse).
        y_torch: the torch targets (int64 labels or float32 views), built lazily.
    """

    X: list[np.ndarray]
    y: list[np.ndarray]
    y_torch: list[Any] | None = None
    X_torch: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.X)

    def torch(self, device: str = "cpu"):
        """Torch tensors of the same data (zero-copy on the CPU)."""
        import torch

        if self.X_torch is None or self.X_torch[0].device.type != device:
            self.X_torch = [torch.from_numpy(x).to(device) for x in self.X]
            self.y_torch = [
                torch.from_numpy(y.astype(np.int64) if y.dtype.kind == "i" else y).to(device)
                for y in self.y
            ]
        return self.X_torch, self.y_torch


def make_batches(cfg: Config, n: int | None = None, seed: int = 1234) -> Batches:
    """Synthetic data of the configuration's shape.

    tiny-sin style (mse, one input): x ~ U(-pi, pi), y = sin(x). Other mse networks: x ~ N(0, 1),
    y ~ N(0, 1). MNIST-sized inputs (784): pixels ~ U(0, 1); others: N(0, 1). Cross-entropy
    labels uniform over the classes.
    """
    n = n_rotating_batches(cfg) if n is None else n
    rng = np.random.default_rng(seed)
    Xs, ys = [], []
    for _ in range(n):
        if cfg.loss == "mse" and cfg.n_in == 1:
            X = rng.uniform(-np.pi, np.pi, (cfg.batch, 1)).astype(np.float32)
            y = np.sin(X).astype(np.float32).reshape(cfg.batch, 1)
            if cfg.n_out != 1:
                y = np.repeat(y, cfg.n_out, axis=1)
        else:
            if cfg.n_in == 784:
                X = rng.random((cfg.batch, cfg.n_in), dtype=np.float32)
            else:
                X = rng.standard_normal((cfg.batch, cfg.n_in), dtype=np.float32)
            if cfg.loss == "cross_entropy":
                y = rng.integers(0, cfg.n_out, cfg.batch).astype(np.int32)
            else:
                y = rng.standard_normal((cfg.batch, cfg.n_out), dtype=np.float32)
        Xs.append(np.ascontiguousarray(X))
        ys.append(np.ascontiguousarray(y))
    return Batches(Xs, ys)


# ---------------------------------------------------------------------------------------------
# FLOPs


def dense_shapes(cfg: Config) -> list[tuple[int, int]]:
    """(n_in, n_out) of each Dense layer."""
    return list(zip(cfg.layers[:-1], cfg.layers[1:], strict=True))


def training_flops(cfg: Config, batch: int | None = None) -> int:
    """Training FLOPs of one step counted on the GEMMs: per Dense layer 2 B in out times 3
    (forward, dW, dX), or times 2 for the first layer, which needs no dX. Elementwise work
    (bias, activation, loss, BN, dropout, the optimizer) is not counted."""
    b = cfg.batch if batch is None else batch
    return sum(2 * b * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(dense_shapes(cfg)))


def gemm_list(cfg: Config, batch: int | None = None) -> list[dict]:
    """Every GEMM of one training step, as the CPU Network performs it (row-major
    ``C(m, n) = op(A) op(B)``; csrc/cpu/dense.cpp): forward X W (B, in) x (in, out); dW = X^T dZ
    (ta, (in, B) x (B, out)); dX = dZ W^T (tb, (B, out) x (out, in)), none for the first layer."""
    b = cfg.batch if batch is None else batch
    out = []
    for k, (i, o) in enumerate(dense_shapes(cfg)):
        out.append(
            {"layer": k, "what": "forward X@W", "ta": False, "tb": False, "m": b, "n": o, "k": i}
        )
        out.append(
            {"layer": k, "what": "dW = X^T@dZ", "ta": True, "tb": False, "m": i, "n": o, "k": b}
        )
        if k > 0:
            out.append(
                {"layer": k, "what": "dX = dZ@W^T", "ta": False, "tb": True, "m": b, "n": i, "k": o}
            )
    return out


# ---------------------------------------------------------------------------------------------
# the GEMM floor: the training step's own GEMM path (fm._core.gemm)


class Sgemm:
    """The GEMM the training step runs (``fm._core.gemm``: large products split over the
    kernel threads, one single-threaded OpenBLAS call per block), so the floor is measured
    through exactly the code and threads the step uses."""

    def __init__(self):
        import scipy_openblas32

        self.path = os.path.join(
            scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so"
        )
        # the OpenBLAS instance _core links (bench_profile's thread matrix sets its threads)
        self.lib = lib = ctypes.CDLL(self.path, mode=ctypes.RTLD_GLOBAL)
        cfg = getattr(lib, "scipy_openblas_get_config", None)
        if cfg is not None:
            cfg.restype = ctypes.c_char_p
            self.config = cfg().decode()
        else:
            self.config = None

    def prepare(
        self, ta: bool, tb: bool, m: int, n: int, k: int, seed: int = 0
    ) -> Callable[[], None]:
        """A zero-argument callable computing one ``C = op(A) op(B)`` of that shape."""
        import fusedmlp as fm

        rng = np.random.default_rng(seed)
        A = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        B = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        C = np.empty((m, n), dtype=np.float32)  # preallocated, as the step's own buffers
        gemm = fm._core.gemm

        def call(A=A, B=B, C=C, ta=bool(ta), tb=bool(tb)):
            gemm(A, B, C, ta, tb)

        return call


def _time_callable(
    f: Callable[[], Any], min_block_s: float = 0.01, repeats: int = 15, warmup: int = 3
) -> dict:
    for _ in range(warmup):
        f()
    t0 = time.perf_counter()
    f()
    est = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, math.ceil(min_block_s / est))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            f()
        samples.append((time.perf_counter() - t0) / inner)
    return summarize(samples, inner)


def gemm_floor(
    cfg: Config, batch: int | None = None, repeats: int = 15, sgemm: Sgemm | None = None
) -> dict:
    """Time each GEMM of one training step alone (same BLAS, same threads) and sum: the floor
    a training step cannot beat while it runs those GEMMs.

    The call overhead (measured with a 1 x 1 x 1 call: the binding refuses empty arrays) is
    subtracted, so
    the floor is the BLAS time alone (at most half of a GEMM's time is taken off, so a noisy
    overhead measurement cannot make a tiny GEMM free).

    Returns:
        dict with ``time_s`` (the floor), ``gflops`` (training FLOPs / floor), per-GEMM rows
        and the subtracted ``call_overhead_s``.
    """
    sg = sgemm or Sgemm()
    _use_threads(requested_threads(), requested_threads())
    smallest = sg.prepare(False, False, 1, 1, 1)
    overhead = _time_callable(smallest, repeats=repeats)["median_s"]
    rows, cache = [], {}
    for g in gemm_list(cfg, batch):
        key = (g["ta"], g["tb"], g["m"], g["n"], g["k"])
        if key not in cache:
            cache[key] = _time_callable(sg.prepare(*key), repeats=repeats)
        t = max(cache[key]["median_s"] - overhead, 0.5 * cache[key]["median_s"])
        flops = 2 * g["m"] * g["n"] * g["k"]
        rows.append({**g, "time_s": t, "gflops": flops / t / 1e9, "min_s": cache[key]["min_s"]})
    total = sum(r["time_s"] for r in rows)
    flops = training_flops(cfg, batch)
    return {
        "time_s": total,
        "gflops": flops / total / 1e9,
        "gemms": rows,
        "call_overhead_s": overhead,
        "method": "fm._core.gemm (the step's GEMM path and threads), beta=0, "
        "median of repeats, call overhead subtracted",
        "openblas_config": sg.config,
    }


# ---------------------------------------------------------------------------------------------
# timing


def summarize(samples: list[float], inner: int = 1) -> dict:
    """Median, quartiles, min of per-step samples (seconds)."""
    s = sorted(samples)
    q = statistics.quantiles(s, n=4, method="inclusive") if len(s) >= 2 else [s[0]] * 3
    return {
        "median_s": statistics.median(s),
        "q1_s": q[0],
        "q3_s": q[2],
        "min_s": s[0],
        "n_samples": len(s),
        "inner": inner,
    }


class PerfClock:
    """Host wall clock (``time.perf_counter``): ``start()``, then ``stop()`` returns seconds."""

    name = "time.perf_counter"

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        return time.perf_counter() - self._t0


def time_interleaved(
    steps: dict[str, Callable[[int], Any]],
    n_batches: int,
    *,
    repeats: int = 30,
    min_block_s: float = 0.02,
    warmup_s: float = 0.25,
    max_s_per_system: float = 25.0,
    min_repeats: int = 7,
    settle_s: float = 0.15,
    clock: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Time several step functions side by side.

    Args:
        steps: name -> ``step(i)`` running one training step on batch ``i``.
        n_batches: the batches rotate modulo this.
        repeats: samples per system (fewer for slow systems, see ``max_s_per_system``).
        min_block_s: each sample times ``inner`` consecutive steps, at least this long.
        warmup_s: untimed warm-up per system (at least 3 steps).
        max_s_per_system: caps repeats so a slow peer does not take all the time.
        min_repeats: but never fewer samples than this.
        settle_s: pause before each block when several systems are timed, so the previous
            system's idle worker threads stop spinning (OpenBLAS workers spin for up to ~0.1 s,
            OpenMP workers for a while too; on a machine with few cores they would otherwise
            steal the next system's cores).
        clock: an object with ``start()`` and ``stop() -> seconds`` (default
            :class:`PerfClock`; the GPU suite passes one built on CUDA events).

    Returns:
        name -> summary (median_s, q1_s, q3_s, min_s, n_samples, inner).
    """
    clock = clock or PerfClock()
    est, idx = {}, dict.fromkeys(steps, 0)
    for name, f in steps.items():
        t0, n = time.perf_counter(), 0
        while n < 3 or time.perf_counter() - t0 < warmup_s:
            f(n % n_batches)
            n += 1
        clock.start()
        for j in range(3):
            f((n + j) % n_batches)
        est[name] = max(clock.stop() / 3, 1e-7)
        idx[name] = n + 3
        if log:
            log(f"  warm-up {name}: {n + 3} steps, ~{est[name] * 1e3:.3f} ms/step")
    inner = {k: max(1, math.ceil(min_block_s / e)) for k, e in est.items()}
    reps = {
        k: int(min(repeats, max(min_repeats, max_s_per_system // (inner[k] * est[k] + est[k]))))
        for k in steps
    }
    samples: dict[str, list[float]] = {k: [] for k in steps}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(max(reps.values(), default=0)):
            for name, f in steps.items():
                if r >= reps[name]:
                    continue
                if settle_s > 0 and len(steps) > 1:
                    time.sleep(settle_s)
                i = idx[name]
                f(i % n_batches)  # re-warm after the other systems ran
                i += 1
                k = inner[name]
                clock.start()
                for j in range(k):
                    f((i + j) % n_batches)
                samples[name].append(clock.stop() / k)
                idx[name] = i + k
    finally:
        if gc_was:
            gc.enable()
    return {k: summarize(v, inner[k]) for k, v in samples.items()}


# ---------------------------------------------------------------------------------------------
# systems


@dataclasses.dataclass
class System:
    """A peer ready to time: ``step(i)`` trains on batch i. ``info`` is recorded in the JSON."""

    name: str
    step: Callable[[int], Any]
    info: dict = dataclasses.field(default_factory=dict)
    setup_s: float = 0.0


def build_fm_model(cfg: Config, seed: int = 0, dropout: float | None = None):
    """``fm.MLP`` of the configuration (BN after the hidden Dense+activation, then dropout)."""
    fm = import_fm()
    return fm.MLP(
        n_in=cfg.n_in,
        hidden=list(cfg.hidden),
        n_out=cfg.n_out,
        activation=cfg.activation,
        batchnorm=cfg.batchnorm,
        dropout=cfg.dropout if dropout is None else dropout,
        seed=seed,
    )


def build_fm_trainer(cfg: Config, model):
    fm = import_fm()
    return fm.Trainer(model, loss=cfg.loss, optimizer=fm.optim.Adam(lr=cfg.lr), metrics=())


def fm_system(cfg: Config, batches: Batches, seed: int = 0) -> System:
    t0 = time.perf_counter()
    model = build_fm_model(cfg, seed)
    trainer = build_fm_trainer(cfg, model)
    X, y = batches.X, batches.y
    step = trainer.train_step
    threads = requested_threads()

    def run(i: int):
        _use_threads(threads, threads)
        return step(X[i], y[i])

    return System(
        "fusedmlp",
        run,
        {"api": "fm.Trainer.train_step (one fused C++ call)", "optimizer": "fm.optim.Adam"},
        time.perf_counter() - t0,
    )


def fm_raw_system(cfg: Config, batches: Batches, seed: int = 0) -> System:
    model = build_fm_model(cfg, seed)
    trainer = build_fm_trainer(cfg, model)
    net, lr = model._net, cfg.lr
    X = batches.X
    ys = [[y] for y in batches.y]
    threads = requested_threads()

    def run(i: int):
        _use_threads(threads, threads)
        return net.train_step(X[i], ys[i], None, lr)

    run.trainer = trainer  # keep the Trainer (and its optimizer wiring) alive
    return System(
        "fusedmlp-raw", run, {"api": "Network.train_step binding, no Trainer input checks"}
    )


_THREAD_STATE: list = [None, None, None]  # (omp, blas) last set, the Sgemm handle, requested


def requested_threads() -> int:
    """The thread count :func:`set_threads` was given (fusedmlp's current count before)."""
    return _THREAD_STATE[2] or import_fm().get_num_threads()


def _use_threads(omp: int, blas: int) -> None:
    """Set fusedmlp's thread count. fusedmlp has one pool (OpenMP): its OpenBLAS stays
    single-threaded and large GEMMs are split over the OpenMP threads, so ``blas`` is
    recorded by callers for the peers only."""
    if _THREAD_STATE[0] != (omp, blas):
        import_fm().set_num_threads(omp)
        _THREAD_STATE[0] = (omp, blas)


_TORCH_ACT = {
    "relu": "ReLU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "logistic": "Sigmoid",
    "gelu": "GELU",
    "silu": "SiLU",
    "elu": "ELU",
    "identity": "Identity",
}
_SKLEARN_ACT = {
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "logistic",
    "logistic": "logistic",
    "identity": "identity",
}


def torch_model(
    cfg: Config,
    weights: list[np.ndarray] | None = None,
    dropout: str = "module",
    device: str = "cpu",
):
    """The equivalent ``nn.Sequential``: Linear, activation, [BatchNorm1d], [Dropout] per
    hidden layer, then Linear. ``weights`` (fusedmlp's ``get_weights()`` order) are copied in
    (our W is (in, out), torch's Linear.weight is (out, in)).

    Args:
        dropout: "module" (``nn.Dropout``) or "mask" (a layer multiplying by ``.mask``, set
            from fusedmlp's Philox masks for validation).
    """
    import torch
    from torch import nn

    class MaskMul(nn.Module):
        def __init__(self):
            super().__init__()
            self.mask = None

        def forward(self, x):
            return x * self.mask

    mods: list[nn.Module] = []
    for k, (i, o) in enumerate(dense_shapes(cfg)):
        mods.append(nn.Linear(i, o))
        if k < len(cfg.layers) - 2:
            mods.append(getattr(nn, _TORCH_ACT[cfg.activation])())
            if cfg.batchnorm:
                mods.append(nn.BatchNorm1d(o, momentum=0.1, eps=1e-5))
            if cfg.dropout > 0:
                mods.append(MaskMul() if dropout == "mask" else nn.Dropout(cfg.dropout))
    model = nn.Sequential(*mods)
    if weights is not None:
        ws = list(weights)
        with torch.no_grad():
            for m in model:
                if isinstance(m, nn.Linear):
                    m.weight.copy_(torch.from_numpy(np.ascontiguousarray(ws.pop(0).T)))
                    m.bias.copy_(torch.from_numpy(ws.pop(0)))
                elif isinstance(m, nn.BatchNorm1d):
                    m.weight.copy_(torch.from_numpy(ws.pop(0)))
                    m.bias.copy_(torch.from_numpy(ws.pop(0)))
                    m.running_mean.copy_(torch.from_numpy(ws.pop(0)))
                    m.running_var.copy_(torch.from_numpy(ws.pop(0)))
        if ws:
            raise ValueError(f"weights: {len(ws)} arrays left over after filling the torch model")
    return model.to(device).train()


def torch_loss_fn(cfg: Config):
    """fusedmlp's loss convention in torch: cross-entropy averaged over the batch; mse summed
    over the outputs and averaged over the batch (deck 004), which is torch's MSELoss for one
    output."""
    import torch.nn.functional as F

    if cfg.loss == "cross_entropy":
        return F.cross_entropy
    if cfg.n_out == 1:
        return F.mse_loss

    def mse(out, y):
        return F.mse_loss(out, y, reduction="sum") / out.shape[0]

    return mse


def torch_adam_choice(params) -> str:
    """Which torch.optim.Adam implementation PyTorch picks by default for these tensors."""
    from torch.optim.optimizer import _default_to_fused_or_foreach

    fused, foreach = _default_to_fused_or_foreach(list(params), False, False)
    return "fused" if fused else "foreach" if foreach else "for-loop (single-tensor)"


def torch_system(
    cfg: Config, batches: Batches, weights: list[np.ndarray], device: str = "cpu"
) -> System:
    import torch

    t0 = time.perf_counter()
    model = torch_model(cfg, weights, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = torch_loss_fn(cfg)
    X, y = batches.torch(device)

    def run(i: int):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(X[i]), y[i])
        loss.backward()
        opt.step()
        return loss

    info = {
        "optimizer": f"torch.optim.Adam(lr={cfg.lr}), default implementation: "
        f"{torch_adam_choice(model.parameters())}",
        "loop": "zero_grad(set_to_none=True), forward, loss, backward, step; loss not .item()'d",
    }
    return System("torch", run, info, time.perf_counter() - t0)


def torch_compile_system(
    cfg: Config,
    batches: Batches,
    weights: list[np.ndarray],
    mode: str = "default",
    device: str = "cpu",
    compile_optimizer: bool = True,
) -> System:
    """The torch step with ``torch.compile``: model + loss compiled as one function (AOTAutograd
    compiles its backward too) and, with ``compile_optimizer``, ``optimizer.step`` compiled as
    well (PyTorch's compiled-optimizer recipe). The first calls (compilation) are timed
    separately and excluded."""
    import torch

    model = torch_model(cfg, weights, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = torch_loss_fn(cfg)
    X, y = batches.torch(device)
    kw = {} if mode == "default" else {"mode": mode}

    @torch.compile(dynamic=False, **kw)
    def fwd_loss(x, t):
        return loss_fn(model(x), t)

    if compile_optimizer:

        @torch.compile(fullgraph=False, **kw)
        def opt_step():
            opt.step()
    else:
        opt_step = opt.step

    def run(i: int):
        opt.zero_grad(set_to_none=True)
        loss = fwd_loss(X[i], y[i])
        loss.backward()
        opt_step()
        return loss

    t0 = time.perf_counter()
    for j in range(3):  # compile (the first two optimizer steps may both recompile)
        run(j % len(batches))
    if device == "cuda":
        torch.cuda.synchronize()
    setup = time.perf_counter() - t0
    info = {
        "mode": mode,
        "scope": "model+loss (forward and AOT backward)"
        + (" and optimizer.step" if compile_optimizer else ""),
        "dynamic": False,
        "compile_s": setup,
        "optimizer": f"torch.optim.Adam(lr={cfg.lr})",
    }
    return System("torch-compile", run, info, setup)


def sklearn_system(cfg: Config, batches: Batches, seed: int = 0) -> System:
    """scikit-learn's MLP with ``partial_fit`` on one batch per call (one Adam step). It has no
    batch norm or dropout: for such a configuration the plain MLP is timed (less work) and
    labelled so."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if cfg.activation not in _SKLEARN_ACT:
        raise ValueError(f"sklearn has no {cfg.activation!r} activation")
    kw = dict(
        hidden_layer_sizes=cfg.hidden,
        activation=_SKLEARN_ACT[cfg.activation],
        solver="adam",
        alpha=0.0,
        batch_size=cfg.batch,
        learning_rate_init=cfg.lr,
        shuffle=False,
        random_state=seed,
    )
    X, y = batches.X, batches.y
    t0 = time.perf_counter()
    if cfg.loss == "cross_entropy":
        est = MLPClassifier(**kw)
        est.partial_fit(X[0], y[0], classes=np.arange(cfg.n_out))
        ys = y
    else:
        est = MLPRegressor(**kw)
        ys = [t.ravel() if t.shape[1] == 1 else t for t in y]
        est.partial_fit(X[0], ys[0])

    def run(i: int):
        est.partial_fit(X[i], ys[i])

    info = {
        "estimator": type(est).__name__,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()},
        "dtype": str(est.coefs_[0].dtype),
    }
    if cfg.batchnorm or cfg.dropout:
        info["note"] = "no batch norm / dropout in scikit-learn: the plain MLP is timed (less work)"
    return System("sklearn", run, info, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# validation


def fm_dropout_masks(cfg: Config, model, step: int, batch: int) -> list[np.ndarray]:
    """fusedmlp's dropout masks (times 1/(1-rate)) of a training step, one per Dropout layer,
    regenerated with ``fm.ops.dropout`` from the Network's Philox key: (seed, step, layer id),
    where the layer id is the layer's position + 1 (csrc/network/network.cpp)."""
    fm = import_fm()
    from fusedmlp import layers as L

    masks, width = [], cfg.n_in
    for pos, layer in enumerate(model.layers):
        if isinstance(layer, L.Dense):
            width = layer.units
        if isinstance(layer, L.Dropout):
            ones = np.ones((batch, width), np.float32)
            masks.append(
                fm.ops.dropout(
                    ones, layer.rate, seed=int(model._net.seed), step=step, layer=pos + 1
                )
            )
    return masks


def validate(cfg: Config, batches: Batches, k: int = 3, rtol: float = 1e-4, seed: int = 0) -> dict:
    """Train fusedmlp and PyTorch eager from identical weights on the same ``k`` batches and
    require equal losses (relative ``rtol``), step by step.

    With dropout, the torch model multiplies by fusedmlp's own masks (regenerated through
    ``fm.ops.dropout`` from the Network's Philox key), so the whole training step, dropout
    included, is compared. The parameter difference after ``k`` steps is recorded too.

    Returns:
        dict with ``ok``, the losses, the worst relative loss difference and the parameter
        difference.
    """
    import torch

    fm_model = build_fm_model(cfg, seed)
    trainer = build_fm_trainer(cfg, fm_model)
    w0 = fm_model.get_weights()
    tmodel = torch_model(cfg, w0, dropout="mask")
    opt = torch.optim.Adam(tmodel.parameters(), lr=cfg.lr)
    loss_fn = torch_loss_fn(cfg)
    Xt, yt = batches.torch("cpu")
    mask_layers = [m for m in tmodel if type(m).__name__ == "MaskMul"]
    ours, theirs = [], []
    for s in range(k):
        i = s % len(batches)
        for m, mask in zip(mask_layers, fm_dropout_masks(cfg, fm_model, s, cfg.batch), strict=True):
            m.mask = torch.from_numpy(mask)
        ours.append(float(trainer.train_step(batches.X[i], batches.y[i])))
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(tmodel(Xt[i]), yt[i])
        loss.backward()
        opt.step()
        theirs.append(float(loss.item()))
    rel = [abs(a - b) / max(abs(b), 1e-30) for a, b in zip(ours, theirs, strict=True)]
    # parameters after k steps, in fusedmlp's order
    tw = []
    for m in tmodel:
        if isinstance(m, torch.nn.Linear):
            tw += [m.weight.detach().numpy().T, m.bias.detach().numpy()]
        elif isinstance(m, torch.nn.BatchNorm1d):
            tw += [m.weight.detach().numpy(), m.bias.detach().numpy()]
    fw = [
        w
        for w, (li, name) in zip(fm_model.get_weights(), fm_model._weight_names(), strict=True)
        if name in ("W", "b", "gamma", "beta")
    ]
    pdiff = max(float(np.max(np.abs(a - b))) for a, b in zip(fw, tw, strict=True))
    what = f"{k} training steps from identical weights, losses compared step by step"
    if cfg.dropout:
        what += "; dropout applied in torch with fusedmlp's Philox masks"
    return {
        "ok": bool(max(rel) <= rtol),
        "rtol": rtol,
        "what": what,
        "losses_fusedmlp": ours,
        "losses_torch": theirs,
        "max_rel_loss_diff": max(rel),
        "max_abs_param_diff": pdiff,
    }


# ---------------------------------------------------------------------------------------------
# reporting


def derived(cfg: Config, summary: dict, floor: dict | None, batch: int | None = None) -> dict:
    """ms/step, samples/s, GFLOP/s and the fraction of the GEMM floor's rate."""
    b = cfg.batch if batch is None else batch
    t = summary["median_s"]
    out = {
        "ms": t * 1e3,
        "ms_q1": summary["q1_s"] * 1e3,
        "ms_q3": summary["q3_s"] * 1e3,
        "ms_min": summary["min_s"] * 1e3,
        "samples_per_s": b / t,
        "gflops": training_flops(cfg, b) / t / 1e9,
    }
    if floor:
        out["floor_fraction"] = floor["time_s"] / t
        out["x_floor"] = t / floor["time_s"]
    return out


def check_targets(
    results: dict[str, dict], targets=CPU_TARGETS, system: str = "fusedmlp"
) -> list[dict]:
    """Evaluate the targets for ``system`` (default fusedmlp as users get it) on
    ``results[config]["systems"][name]["ms"]`` and ``["floor"]``."""
    rows = []
    for name, peer, kind, value in targets:
        r = results.get(name)
        if r is None:
            continue
        sysr = r["systems"]
        ours = sysr.get(system, {}).get("ms")
        row = {
            "system": system,
            "config": name,
            "peer": peer,
            "kind": kind,
            "target": value,
            "measured": None,
            "pass": None,
        }
        if ours is None:
            row["note"] = f"{system} not timed"
        elif kind == "floor":
            fl = r.get("floor")
            if fl:
                row["measured"] = ours / (fl["time_s"] * 1e3)
                row["pass"] = row["measured"] <= value
        else:
            p = sysr.get(peer, {})
            if "ms" in p:
                row["measured"] = p["ms"] / ours
                row["pass"] = row["measured"] > value if value == 1.0 else row["measured"] >= value
                if p.get("note"):
                    row["note"] = p["note"]
            else:
                row["note"] = p.get("error", "peer not timed")
        rows.append(row)
    return rows


def write_json(data: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def fmt_ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def markdown_config_table(cfg: Config, r: dict) -> str:
    """One configuration: a row per system with time, IQR, throughput, GFLOP/s, fraction of
    the GEMM floor's rate and the peer's time over ours."""
    lines = [f"### {cfg.name} ({cfg.describe()})", ""]
    fl = r.get("floor")
    if fl:
        lines.append(
            f"GEMM floor: {fmt_ms(fl['time_s'] * 1e3)} ms/step ({fl['gflops']:.1f} GFLOP/s); "
            f"training FLOPs/step: {training_flops(cfg) / 1e6:.2f} MFLOP."
        )
        lines.append("")
    if r.get("loadavg"):
        a, b = r["loadavg"]
        lines.append(f"1-min load average {a[0]:.2f} at the start, {b[0]:.2f} at the end.")
        lines.append("")
    val = r.get("validation")
    if val:
        lines.append(
            f"Validation ({val['what']}): {'passed' if val['ok'] else 'FAILED'}, max rel. loss "
            f"difference {val['max_rel_loss_diff']:.1e}, max param. difference "
            f"{val['max_abs_param_diff']:.1e}."
        )
        lines.append("")
    lines += [
        "| system | ms/step (median) | IQR (ms) | min (ms) | samples/s | GFLOP/s "
        "| floor rate fraction | "
        "time / fusedmlp |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours = r["systems"].get("fusedmlp", {}).get("ms")
    for name, s in r["systems"].items():
        if "ms" not in s:
            lines.append(f"| {name} | n/a | | | | | | {s.get('error', '')} |")
            continue
        ratio = f"{s['ms'] / ours:.2f}x" if ours else ""
        label = name + (" (plain MLP, no BN/dropout)" if s.get("note") else "")
        lines.append(
            f"| {label} | {fmt_ms(s['ms'])} | {fmt_ms(s['ms_q1'])}-{fmt_ms(s['ms_q3'])} | "
            f"{fmt_ms(s['ms_min'])} | "
            f"{s['samples_per_s']:,.0f} | {s['gflops']:.2f} | {s.get('floor_fraction', 0):.2f} | "
            f"{ratio} |"
        )
    return "\n".join(lines)


def markdown_targets(rows: list[dict]) -> str:
    lines = ["| system | config | target | measured | result |", "|---|---|---|---:|---|"]
    for r in rows:
        if r["kind"] == "floor":
            tgt = f"step / GEMM floor <= {r['target']:g}"
        elif r["target"] == 1.0:
            tgt = f"faster than {r['peer']}"
        else:
            tgt = f">= {r['target']:g}x faster than {r['peer']}"
        meas = f"{r['measured']:.2f}x" if r["measured"] is not None else "n/a"
        res = "n/a" if r["pass"] is None else "pass" if r["pass"] else "FAIL"
        if r.get("note") and r["pass"] is None:
            res += f" ({r['note']})"
        system = r.get("system", "fusedmlp")
        lines.append(f"| {system} | {r['config']} | {tgt} | {meas} | {res} |")
    return "\n".join(lines)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def script_setup() -> None:
    """Quiet, reproducible defaults for the scripts (set before torch is imported)."""
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


# ---------------------------------------------------------------------------------------------
# one benchmark point: validate, floor, build the systems, time them side by side

ALL_SYSTEMS = ("fusedmlp", "fusedmlp-raw", "torch", "torch-compile", "sklearn")


def build_systems(
    cfg: Config,
    batches: Batches,
    names,
    weights,
    compile_mode: str = "default",
    compile_optimizer: bool = True,
) -> tuple[dict[str, System], dict[str, str]]:
    """The requested systems that can run here; the second dict says why the others cannot."""
    systems, errors = {}, {}
    torch = try_import("torch")
    for name in names:
        try:
            if name == "fusedmlp":
                s = fm_system(cfg, batches)
            elif name == "fusedmlp-raw":
                s = fm_raw_system(cfg, batches)
            elif name in ("torch", "torch-compile") and torch is None:
                raise RuntimeError("torch is not installed (pip install .[bench])")
            elif name == "torch":
                s = torch_system(cfg, batches, weights)
            elif name == "torch-compile":
                log(f"  compiling the torch step (mode {compile_mode}) ...")
                s = torch_compile_system(
                    cfg, batches, weights, mode=compile_mode, compile_optimizer=compile_optimizer
                )
                log(f"  compiled in {s.setup_s:.1f} s")
            elif name == "sklearn":
                if try_import("sklearn") is None:
                    raise RuntimeError("scikit-learn is not installed (pip install .[bench])")
                s = sklearn_system(cfg, batches)
            else:
                raise ValueError(
                    f"unknown system {name!r}; expected one of {', '.join(ALL_SYSTEMS)}"
                )
            systems[name] = s
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"  {name}: not timed ({errors[name]})")
    return systems, errors


def run_point(
    cfg: Config,
    names,
    *,
    repeats: int = 30,
    min_block_s: float = 0.02,
    max_s_per_system: float = 25.0,
    compile_mode: str = "default",
    compile_optimizer: bool = True,
    floor: bool = True,
    validation: bool = True,
    floor_repeats: int = 15,
) -> dict:
    """Validate, measure the GEMM floor (before and after the timing; the faster run is kept),
    and time the systems ``names`` side by side on one configuration.

    Returns:
        JSON-ready dict: config, validation, floor, systems (ms, IQR, samples/s, GFLOP/s,
        floor fraction, timing details, system info) and errors of systems that could not run.
    """
    batches = make_batches(cfg)
    result: dict = {
        "config": cfg.to_dict(),
        "n_rotating_batches": len(batches),
        "training_flops": training_flops(cfg),
        "validation": None,
        "floor": None,
    }
    if validation and try_import("torch") is not None:
        val = validate(cfg, batches)
        result["validation"] = val
        log(
            f"  validation: {'ok' if val['ok'] else 'FAILED'} (max rel loss diff "
            f"{val['max_rel_loss_diff']:.1e}, param diff {val['max_abs_param_diff']:.1e})"
        )
        if not val["ok"]:
            log("  fusedmlp's losses differ from PyTorch's: fusedmlp is timed but marked invalid")
    fl = None
    if floor:
        fl = gemm_floor(cfg, repeats=floor_repeats)
        log(f"  GEMM floor: {fl['time_s'] * 1e3:.3f} ms ({fl['gflops']:.1f} GFLOP/s)")
    weights = build_fm_model(cfg).get_weights()
    systems, errors = build_systems(cfg, batches, names, weights, compile_mode, compile_optimizer)
    timings = (
        time_interleaved(
            {k: s.step for k, s in systems.items()},
            len(batches),
            repeats=repeats,
            min_block_s=min_block_s,
            max_s_per_system=max_s_per_system,
            log=log,
        )
        if systems
        else {}
    )
    if floor:
        fl2 = gemm_floor(cfg, repeats=floor_repeats)
        result["floor_runs_s"] = [fl["time_s"], fl2["time_s"]]
        fl = fl2 if fl2["time_s"] < fl["time_s"] else fl
        result["floor"] = fl
    out = {}
    for name in names:
        if name in errors:
            out[name] = {"error": errors[name]}
            continue
        s = systems[name]
        d = {
            **derived(cfg, timings[name], fl),
            "timing": timings[name],
            "info": s.info,
            "setup_s": s.setup_s,
        }
        if s.info.get("note"):
            d["note"] = s.info["note"]
        if name == "fusedmlp" and result["validation"] is not None:
            d["valid"] = result["validation"]["ok"]
        out[name] = d
        log(
            f"  {name:14s} {d['ms']:9.3f} ms  [{d['ms_q1']:.3f}, {d['ms_q3']:.3f}]  "
            f"min {d['ms_min']:.3f}  "
            f"{d['gflops']:7.2f} GFLOP/s"
            + (f"  floor x{d['x_floor']:.2f}" if "x_floor" in d else "")
        )
    result["systems"] = out
    return result


# ---------------------------------------------------------------------------------------------
# shared machines


def cpu_busy_fraction(window_s: float = 1.0) -> float:
    """Fraction of all CPUs busy (not idle or iowait) over ``window_s``, from /proc/stat.

    Returns:
        a value in [0, 1]; 0.0 where /proc/stat is unavailable.
    """

    def snap():
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)

    try:
        t0, i0 = snap()
        time.sleep(window_s)
        t1, i1 = snap()
    except OSError:
        return 0.0
    return 0.0 if t1 == t0 else max(0.0, 1.0 - (i1 - i0) / (t1 - t0))


def wait_for_idle(max_busy: float, timeout_s: float = 600.0, window_s: float = 2.0) -> dict:
    """Wait (sleeping) until the other processes keep at most ``max_busy`` of the CPUs busy.

    Returns:
        dict with the seconds waited, the last busy fraction and whether it timed out.
    """
    t0 = time.time()
    busy = cpu_busy_fraction(window_s)
    while busy > max_busy and time.time() - t0 < timeout_s:
        busy = cpu_busy_fraction(window_s)
    return {
        "waited_s": round(time.time() - t0, 1),
        "busy": round(busy, 3),
        "timed_out": busy > max_busy,
    }
