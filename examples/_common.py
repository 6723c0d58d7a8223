"""Helpers shared by the experiment scripts: the command line, table printing and plotting.

Every script runs as ``python examples/<name>.py [--quick] [--out DIR] [--seed N]
[--no-plot] [--threads N]``; its ``run(...)`` function returns the numbers it prints, so the
tests can assert on them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def parse_args(
    description: str, argv: Sequence[str] | None = None, seed: int = 0
) -> argparse.Namespace:
    """The command line every script accepts.

    Args:
        description: the script's one-line summary (shown by ``--help``).
        argv: arguments (None: ``sys.argv[1:]``).
        seed: the default seed.

    Returns:
        the parsed namespace with ``quick``, ``out``, ``seed``, ``plot`` and ``threads``
        (already applied with ``fm.set_num_threads``).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller run (fewer seeds/epochs/steps)")
    p.add_argument(
        "--out", default=DEFAULT_OUT, help=f"folder for the plot (default {DEFAULT_OUT})"
    )
    p.add_argument("--seed", type=int, default=seed, help=f"random seed (default {seed})")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the plot")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of the kernels (default: the library's; 1 is fastest on a busy machine)",
    )
    args = p.parse_args(argv)
    if args.threads is not None:
        import fusedmlp as fm

        fm.set_num_threads(args.threads)
    return args


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".6g") -> str:
    """A plain-text table with right-aligned columns (floats formatted by ``floatfmt``)."""

    def cell(x: Any) -> str:
        if isinstance(x, float):
            return format(x, floatfmt)
        return str(x)

    cells = [[cell(x) for x in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(str(h).rjust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str, name: str) -> str:
    """Save ``fig`` as ``out/name`` (creating ``out``), close it, and return the path."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_or_note(plot: bool, out: str, make, name: str) -> str | None:
    """Call ``make(plt)`` (it returns a figure) and save it; print where, or why not.

    Returns:
        the saved path, or None (plotting off or matplotlib missing).
    """
    if not plot:
        return None
    plt = pyplot()
    if plt is None:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    path = save(make(plt), out, name)
    print(f"plot: {path}")
    return path
