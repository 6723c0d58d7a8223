"""Resident memory over long runs (issue 14, item 5 "Memory"): RSS must stay flat over many
training steps and over many model create/destroy cycles. A leak of one parameter arena, one
workspace or one Python reference per step or per model shows up here as steady growth.

Both measurements warm up first (workspaces sized, allocator pools and import-time caches
filled), then read the resident set size (Linux /proc/self/statm) before and after the
measured loop, after a garbage collection. The figure is the growth in MB; the first read
after warm-up is the baseline.

Usage::

    python -m bench.memory                       # 20,000 steps, 2,000 create/destroy cycles
    python -m bench.memory --steps 2000 --cycles 300

tests/test_memory.py runs the short version and bounds the growth.

Example:
    >>> from bench import memory
    >>> memory.rss_mb() > 0
    True
"""

from __future__ import annotations

import argparse
import gc
import os

import fusedmlp as fm
import numpy as np

N_IN, N_OUT = 32, 10


def rss_mb() -> float:
    """The resident set size of this process in MB (Linux)."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _settled_rss() -> float:
    gc.collect()
    return rss_mb()


def _data(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, N_IN)).astype(np.float32)
    y = rng.integers(0, N_OUT, size=n).astype(np.int32)
    return X, y


def _model(seed: int = 0) -> fm.Sequential:
    # BatchNorm and dropout: the step then touches every arena and the RNG.
    return fm.MLP(
        n_in=N_IN,
        hidden=[64, 64],
        n_out=N_OUT,
        batchnorm=True,
        dropout=0.1,
        seed=seed,
        dtype="float32",
    )


def _growth(action, what: str, n: int, warmup: int) -> dict:
    """Runs ``action(i)`` ``warmup`` times, then ``n`` times between two settled RSS reads."""
    for i in range(warmup):
        action(i)
    before = _settled_rss()
    for i in range(n):
        action(warmup + i)
    after = _settled_rss()
    return {what: n, "rss_before_mb": before, "rss_after_mb": after, "growth_mb": after - before}


def steps_growth(steps: int, warmup: int = 500) -> dict:
    """RSS growth (MB) over `steps` training steps of one Trainer, batches of 2..64 rows (the
    workspaces hold the largest after warm-up), with a predict every 100 steps."""
    X, y = _data(4096)
    trainer = fm.Trainer(_model(), optimizer=fm.optim.Adam(lr=1e-3), metrics=())

    def step(i: int) -> None:
        b = 2 + (i * 7) % 63
        s = (i * 64) % (len(X) - 64)
        trainer.train_step(X[s : s + b], y[s : s + b])
        if i % 100 == 0:
            trainer.model.predict(X[:256])

    return _growth(step, "steps", steps, warmup)


def cycles_growth(cycles: int, warmup: int = 50) -> dict:
    """RSS growth (MB) over `cycles` create/train/predict/destroy cycles of a model and its
    Trainer."""
    X, y = _data(64)

    def cycle(i: int) -> None:
        model = _model(seed=i)
        trainer = fm.Trainer(model, optimizer=fm.optim.Adam(lr=1e-3), metrics=())
        trainer.train_step(X, y)
        model.predict(X)
        model.get_weights()
        del trainer, model

    return _growth(cycle, "cycles", cycles, warmup)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--cycles", type=int, default=2_000)
    args = p.parse_args(argv)
    s = steps_growth(args.steps)
    print(
        f"{s['steps']} train steps: RSS {s['rss_before_mb']:.1f} -> {s['rss_after_mb']:.1f} MB "
        f"(growth {s['growth_mb']:+.2f} MB)"
    )
    c = cycles_growth(args.cycles)
    print(
        f"{c['cycles']} create/destroy cycles: RSS {c['rss_before_mb']:.1f} -> "
        f"{c['rss_after_mb']:.1f} MB (growth {c['growth_mb']:+.2f} MB)"
    )


if __name__ == "__main__":
    main()
