"""Resident memory stays flat (issue 14, item 5 "Memory"): the short version of
``python -m bench.memory`` (20,000 steps and 2,000 cycles there; measured growth 0.0 MB and
0.8 MB). A leak of one small arena per step or per model (a few KB) would exceed the bound."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the RSS from /proc/self/statm"
)

_PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "memory.py"


def _memory():
    spec = importlib.util.spec_from_file_location("fusedmlp_bench_memory", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Generous: allocator pools settle by about 1 MB. A per-step leak of one 64x64 float32 weight
# matrix (16 KB) adds 32 MB over 2,000 steps; one model's arenas (parameters, gradients, Adam
# state: about 110 KB) per cycle add 33 MB over 300 cycles.
BOUND_MB = 20.0


def test_rss_flat_over_training_steps():
    r = _memory().steps_growth(2000, warmup=300)
    assert r["growth_mb"] < BOUND_MB, r


def test_rss_flat_over_model_create_destroy_cycles():
    r = _memory().cycles_growth(300, warmup=30)
    assert r["growth_mb"] < BOUND_MB, r
