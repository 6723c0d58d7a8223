"""Deck 002, "Parameter Initialization Strategies": chains of 512 x 512 matrix products.

The deck multiplies a random start ``a`` by 100 fresh random 512 x 512 matrices in turn
(``a = a @ x``, optionally ``a = relu(a @ x)``) and prints the mean and std of ``a`` after
each product (PyTorch, float32):

    N(0, 1)                a 512 x 512 start; std x sqrt(512) = 22.6 per product: inf/nan
                           after ~28 products
    N(0, 1) x 0.01         a 512 x 512 start; std x 0.226 per product: 0 within 10
    U(-1, 1)               a 512-vector start; std x sqrt(512/3) = 13 per product
    Xavier normal/uniform  Var = 2 / (m + n): std stays near 1 (linear chain)
    Xavier normal + ReLU   ReLU halves the variance each product: std -> 0
    Kaiming uniform/normal Var = 2 / m: std stays near 0.8 with ReLU
    + ReLU

Here every product is the library's fused dense kernel ``fm.ops.dense_forward(a, x, None,
"identity" | "relu")`` in float32, every matrix is drawn by ``fm.init.initialize`` (a
512-vector start is a (1, 512) batch). Once ``a`` holds inf, the chain stops: the library's
kernels refuse non-finite inputs with a ValueError (PyTorch goes on to print nan).

Run: ``python examples/matrix_chains.py [--quick] [--out DIR]``
"""

from __future__ import annotations

import math

import _common
import fusedmlp as fm
import numpy as np

N = 512

#: (label, start shape rows, fm.init name, keyword arguments, activation)
CASES = [
    ("N(0,1)", N, "normal", {"std": 1.0}, "identity"),
    ("N(0,1)*0.01", N, "normal", {"std": 0.01}, "identity"),
    ("U(-1,1)", 1, "uniform", {"limit": 1.0}, "identity"),
    ("Xavier normal", 1, "glorot_normal", {}, "identity"),
    ("Xavier uniform", 1, "glorot_uniform", {}, "identity"),
    ("Xavier normal+ReLU", 1, "glorot_normal", {}, "relu"),
    ("Kaiming uniform+ReLU", 1, "he_uniform", {}, "relu"),
    ("Kaiming normal+ReLU", 1, "he_normal", {}, "relu"),
]

#: The std the deck prints after product k (1-based), for the rows it shows.
DECK_STD = {
    "N(0,1)": {
        1: 22.652037,
        2: 513.349121,
        5: 5980599.0,
        10: 3.6095647547392e13,
        20: 1.278462370926979e27,
        26: 1.7273710228652168e35,
        27: 3.889063939783492e36,
        28: math.nan,
    },
    "N(0,1)*0.01": {1: 0.226504, 2: 0.051263, 5: 0.000589, 10: 0.0},
    "U(-1,1)": {
        1: 11.693220,
        2: 147.562729,
        5: 334509.03125,
        10: 126828232704.0,
        19: 1.6923004620034319e21,
    },
    "Xavier normal": {1: 0.951901, 2: 0.937428, 5: 0.908854, 10: 0.847287, 19: 0.882660},
    "Xavier uniform": {1: 0.944218, 2: 0.908482, 5: 1.018810, 10: 1.030944, 19: 0.972662},
    "Xavier normal+ReLU": {
        1: 0.603390,
        2: 0.445417,
        5: 0.149000,
        10: 0.024214,
        20: 0.000838,
        30: 0.000028,
        44: 0.0,
    },
    "Kaiming uniform+ReLU": {1: 0.858193, 2: 0.889948, 5: 0.842151, 10: 0.877963, 19: 0.774003},
    "Kaiming normal+ReLU": {1: 0.807100, 2: 0.810401, 5: 0.855162, 10: 0.805401, 19: 1.030282},
}


def chain(
    rows: int, init: str, kwargs: dict, activation: str, steps: int, rng: np.random.Generator
) -> dict:
    """Multiply ``a`` (rows x 512, N(0, 1)) by ``steps`` fresh matrices.

    Returns:
        ``{"mean": [...], "std": [...], "nonfinite_at": k or None}``: the statistics after each
        product (float64 reductions of the float32 result) up to the first product whose
        result holds inf or nan (``nonfinite_at``, 1-based).
    """
    a = rng.standard_normal((rows, N)).astype(np.float32)
    means, stds, bad = [], [], None
    for k in range(1, steps + 1):
        x = fm.init.initialize(init, N, N, rng, **kwargs).astype(np.float32)
        _, a = fm.ops.dense_forward(a, x, None, activation)
        with np.errstate(invalid="ignore", over="ignore"):
            means.append(float(a.mean(dtype=np.float64)))
            stds.append(float(a.std(dtype=np.float64)))
        if not np.isfinite(a).all():
            bad = k
            break
    return {"mean": means, "std": stds, "nonfinite_at": bad}


def run(
    quick: bool = False, seed: int = 0, out: str = _common.DEFAULT_OUT, plot: bool = True
) -> dict:
    """All eight chains.

    Args:
        quick: 40 products instead of the deck's 100 (the deck prints at most 28 rows per
            chain, all within 40).
        seed: seeds the starts and the matrices.
        out, plot: where and whether to save ``matrix_chains.png``.

    Returns:
        ``{label: chain(...) result}``.
    """
    steps = 40 if quick else 100
    rng = np.random.default_rng(seed)
    results = {
        label: chain(rows, init, kw, act, steps, rng) for label, rows, init, kw, act in CASES
    }

    shown = [1, 2, 5, 10, 19, 20, 27, 28, 30, 40, 50, 100]
    shown = [k for k in shown if k <= steps]
    print(
        f"std of a after k products (float32, seed {seed}); the deck's value in brackets "
        "where it prints one"
    )
    rows = []
    for label, *_ in CASES:
        r = results[label]
        row = [label]
        for k in shown:
            ours = "stop" if k > len(r["std"]) else f"{r['std'][k - 1]:.3g}"
            deck = DECK_STD[label].get(k)
            row.append(ours if deck is None else f"{ours} [{deck:.3g}]")
        rows.append(row)
    print(_common.table(["chain"] + [f"k={k}" for k in shown], rows))
    print()
    summary = []
    for label, *_ in CASES:
        r = results[label]
        s = np.asarray(r["std"])
        fin = s[np.isfinite(s)]
        summary.append(
            [
                label,
                r["nonfinite_at"] or "-",
                f"{fin.min():.3g}",
                f"{fin.max():.3g}",
                f"{s[-1]:.3g}",
            ]
        )
    print(_common.table(["chain", "inf/nan at k", "min std", "max std", "last std"], summary))
    print(
        "A chain stops at its first non-finite product: fm.ops refuses inf/nan inputs "
        "(deck: nan at k=28)."
    )

    def make(plt):
        fig, ax = plt.subplots(figsize=(8, 5))
        for label, *_ in CASES:
            s = np.asarray(results[label]["std"], dtype=float)
            k = np.arange(1, len(s) + 1)
            ok = np.isfinite(s) & (s > 0)
            ax.semilogy(k[ok], s[ok], label=label)
        ax.axhline(np.finfo(np.float32).max, color="k", ls=":", lw=0.8)
        ax.set(
            xlabel="number of products k",
            ylabel="std of a",
            title="512 x 512 product chains (deck 002)",
        )
        ax.legend(fontsize=8)
        return fig

    _common.plot_or_note(plot, out, make, "matrix_chains.png")
    return results


def main(argv=None) -> dict:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    return run(quick=args.quick, seed=args.seed, out=args.out, plot=args.plot)


if __name__ == "__main__":
    main()
