"""The fuzz of the public API (tests/fuzz, issue 14 item 5), a fast deterministic slice: a few
hundred generated calls, each in a worker process, must give no defect (no crash, no hang, no
exception other than a ValueError/TypeError naming the bad argument, no invalid input
accepted, no NaN from valid input). The full run: ``python -m tests.fuzz --calls 40000``."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

from fuzz.harness import fuzz  # noqa: E402


def test_fuzz_finds_no_defect():
    tally = fuzz(300, seed=1234)
    detail = "\n".join(
        f"[{kind}] {case[0]} bad={case[2]} kwargs={case[1]}: {text[:300]}"
        for kind, examples in tally.examples.items()
        for case, text in examples[:5]
    )
    assert tally.defects == 0, f"\n{tally.table()}\n{detail}"
