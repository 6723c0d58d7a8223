"""Deck 003, "Does the starting point matter?": XOR with a 2-4-1 sigmoid network.

The deck's setup: 3 dense layers 2-4-1, sigmoid activations, biases 0, binary cross-entropy,
SGD (lr 0.1, momentum 0.99), 1000 epochs, 20 runs, weights drawn from

    U(-10, 10)                  "It fails 6/20 times."
    N(0, 1/sqrt(fan_in))        "It fails 0/20 times."

The second argument of N(0, .) is a standard deviation in the deck (its Glorot normal is
N(0, sqrt(2)/sqrt(fan_in + fan_out))), so the second initializer is LeCun normal
(``fm.init`` "lecun_normal", std 1/sqrt(fan_in)). The four XOR points form one batch, so an
epoch is one step. The deck does not define "fails": here a run fails when, after training,
the thresholded output (sigmoid > 0.5) gets any of the four points wrong.

Library: ``fm.Sequential([fm.Dense(4, "sigmoid"), fm.Dense(1)])`` with the output sigmoid
fused into the "binary_cross_entropy" loss, ``fm.optim.SGD(lr=0.1, momentum=0.99,
deck_variant=True)`` (deck 003 Alg. 2: v <- mu v - lr g, theta <- theta + v), ``fm.Trainer.fit``.
U(-10, 10) is drawn with ``fm.init.initialize("uniform", limit=10)`` and set with
``set_weights`` (``Dense(init=...)`` takes an initializer by name only, U(-0.05, 0.05) for
"uniform").

Run: ``python examples/xor_init.py [--quick] [--out DIR]``
"""

from __future__ import annotations

import _common
import fusedmlp as fm
import numpy as np

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([[0], [1], [1], [0]], dtype=np.float32)
DECK_FAILURES = {"U(-10,10)": 6, "N(0,1/sqrt(fan_in))": 0}


def build(init: str, seed: int) -> fm.Sequential:
    """The 2-4-1 network, biases 0, weights from ``init`` ("U(-10,10)" or "N(0,1/sqrt(fan_in))")."""
    name = "uniform" if init == "U(-10,10)" else "lecun_normal"
    model = fm.Sequential(
        [fm.Dense(4, activation="sigmoid", init=name), fm.Dense(1, init=name)], n_in=2, seed=seed
    )
    if init == "U(-10,10)":
        rng = np.random.default_rng(seed)
        W0 = fm.init.initialize("uniform", 2, 4, rng, limit=10.0)
        W1 = fm.init.initialize("uniform", 4, 1, rng, limit=10.0)
        model.set_weights([W0, np.zeros(4), W1, np.zeros(1)])
    return model


def train(init: str, seed: int, epochs: int) -> dict:
    """One run. Returns the loss curve, the final predictions and whether it failed."""
    model = build(init, seed)
    trainer = fm.Trainer(
        model,
        loss="binary_cross_entropy",
        metrics=(),
        optimizer=fm.optim.SGD(lr=0.1, momentum=0.99, deck_variant=True),
    )
    hist = trainer.fit(X, Y, epochs=epochs, batch_size=4, shuffle=False, verbose=0)
    prob = trainer.predict(X)
    failed = bool(np.any((prob > 0.5) != (Y > 0.5)))
    return {
        "loss": hist.history["loss"],
        "final_loss": trainer.evaluate(X, Y)["loss"],
        "prob": prob.ravel().tolist(),
        "failed": failed,
    }


def run(
    quick: bool = False, seed: int = 0, out: str = _common.DEFAULT_OUT, plot: bool = True
) -> dict:
    """20 runs (seeds ``seed`` .. ``seed + 19``) per initializer, as the deck; the full run
    adds 80 more seeds to estimate each failure rate.

    Args:
        quick: only the deck's 20 runs per initializer.
        seed: the first run's seed.
        out, plot: where and whether to save ``xor_init.png`` (the first 20 runs).

    Returns:
        ``{init: {"failures": int (first 20 runs), "failures_all": int, "n_all": int,
        "runs": [train(...) results]}}``.
    """
    n_runs, n_all, epochs = 20, 20 if quick else 100, 1000
    results = {}
    for init in DECK_FAILURES:
        runs = [train(init, seed + i, epochs) for i in range(n_all)]
        results[init] = {
            "failures": sum(r["failed"] for r in runs[:n_runs]),
            "failures_all": sum(r["failed"] for r in runs),
            "n_all": n_all,
            "runs": runs,
        }
    print(
        f"XOR 2-4-1 sigmoid, BCE, SGD lr 0.1 momentum 0.99, {epochs} epochs, "
        f"seeds {seed}..{seed + n_runs - 1}"
    )
    rows = []
    for init, deck in DECK_FAILURES.items():
        r = results[init]
        losses = np.array([x["final_loss"] for x in r["runs"][:n_runs]])
        row = [init, f"{r['failures']}/{n_runs}", f"{deck}/{n_runs}"]
        if n_all > n_runs:
            row.append(f"{r['failures_all']}/{n_all} ({100 * r['failures_all'] / n_all:.0f}%)")
        rows.append(row + [f"{np.median(losses):.3g}", f"{losses.max():.3g}"])
    headers = ["init", "fails (ours)", "fails (deck)"] + (
        [f"fails, {n_all} seeds"] if n_all > n_runs else []
    )
    print(_common.table(headers + ["median final BCE", "max final BCE"], rows))
    print("fails: some XOR point misclassified (sigmoid output > 0.5 vs label) after training")
    for init in DECK_FAILURES:
        bad = [seed + i for i, x in enumerate(results[init]["runs"][:n_runs]) if x["failed"]]
        print(f"  {init}: failed seeds {bad}")

    def make(plt):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, init in zip(axes, DECK_FAILURES, strict=True):
            for x in results[init]["runs"][:n_runs]:
                ax.semilogy(
                    x["loss"], color="tab:red" if x["failed"] else "tab:blue", alpha=0.6, lw=1
                )
            ax.set(title=f"{init}: {results[init]['failures']}/{n_runs} fail (red)", xlabel="epoch")
        axes[0].set_ylabel("training BCE")
        return fig

    _common.plot_or_note(plot, out, make, "xor_init.png")
    return results


def main(argv=None) -> dict:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    return run(quick=args.quick, seed=args.seed, out=args.out, plot=args.plot)


if __name__ == "__main__":
    main()
