"""Deck 000, "Another experiment": y = sin(5x) + 0.5 sin(20x) + noise fitted by a network
with 3 hidden layers of 128 units, trained by SGD, SGD+momentum, RMSProp and Adam.

The deck shows the loss curves and the fits after training (plots only, no numbers) and
concludes "Start with ADAM!". It does not give the data size, noise level, activation,
batch size or learning rates. Here: 1024 points x ~ U(-1, 1) with N(0, 0.1^2) noise
(``fm.datasets.make_sin``), ReLU hidden layers (He normal), mini-batches of 32, the same
initial weights for every optimizer, and the deck's own optimizer settings where it gives
them: momentum rho = 0.9, RMSProp decay 0.9, Adam betas (0.9, 0.999), lr 1e-3 for Adam
("a great starting point"), eps 1e-7 (deck 000's code); lr 1e-2 for SGD and momentum, 1e-3
for RMSProp.

Library: ``fm.MLP(n_in=1, hidden=[128, 128, 128], n_out=1)``, ``fm.optim.SGD/RMSProp/Adam``,
``fm.Trainer.fit`` with the "mse" loss.

Run: ``python examples/sin_optimizers.py [--quick] [--out DIR]``
"""

from __future__ import annotations

import _common
import fusedmlp as fm
import numpy as np


def optimizers() -> dict:
    """The four optimizers of the deck's comparison (deck 000's forms and defaults)."""
    return {
        "SGD": fm.optim.SGD(lr=1e-2),
        "SGD+momentum": fm.optim.SGD(lr=1e-2, momentum=0.9),
        "RMSProp": fm.optim.RMSProp(lr=1e-3, rho=0.9, eps=1e-7),
        "Adam": fm.optim.Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-7),
    }


def truth(x: np.ndarray) -> np.ndarray:
    """The noiseless target sin(5x) + 0.5 sin(20x)."""
    return np.sin(5 * x) + 0.5 * np.sin(20 * x)


def run(
    quick: bool = False, seed: int = 0, out: str = _common.DEFAULT_OUT, plot: bool = True
) -> dict:
    """Train one network per optimizer from the same initial weights.

    Args:
        quick: 150 epochs instead of 300 (plain SGD is already far behind the other three).
        seed: seeds the data, the weights and the batch order.
        out, plot: where and whether to save ``sin_optimizers.png`` (loss curves and fits).

    Returns:
        ``{name: {"loss": [per-epoch training loss], "final_loss": float, "fit_mse": float}}``;
        ``fit_mse`` is the mean squared distance to the noiseless curve on a grid of [-1, 1].
    """
    epochs = 150 if quick else 300
    X, y = fm.datasets.make_sin(n=1024, noise=0.1, seed=seed)
    grid = np.linspace(-1, 1, 801, dtype=np.float32)[:, None]
    results = {}
    for name, opt in optimizers().items():
        model = fm.MLP(n_in=1, hidden=[128, 128, 128], n_out=1, activation="relu", seed=seed)
        trainer = fm.Trainer(model, loss="mse", optimizer=opt, metrics=())
        hist = trainer.fit(X, y, epochs=epochs, batch_size=32, verbose=0)
        pred = trainer.predict(grid)
        results[name] = {
            "loss": hist.history["loss"],
            "final_loss": trainer.evaluate(X, y)["loss"],
            "fit_mse": float(np.mean((pred - truth(grid)) ** 2)),
            "pred": pred[:, 0].tolist(),
        }
    print(
        f"y = sin(5x) + 0.5 sin(20x) + N(0, 0.1^2), 1024 points, MLP 1-128-128-128-1 ReLU, "
        f"batch 32, {epochs} epochs, seed {seed}"
    )
    marks = [e for e in (1, 10, 50, 100, 150, 300) if e <= epochs]
    rows = [
        [name]
        + [f"{r['loss'][e - 1]:.4f}" for e in marks]
        + [f"{r['final_loss']:.4f}", f"{r['fit_mse']:.4f}"]
        for name, r in results.items()
    ]
    print(
        _common.table(
            ["optimizer"] + [f"loss ep {e}" for e in marks] + ["final train MSE", "MSE to truth"],
            rows,
        )
    )
    print(
        "The noise floor is 0.01 (noise variance). The deck shows curves only; its verdict: "
        "start with Adam."
    )

    def make(plt):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for name, r in results.items():
            axes[0].semilogy(np.arange(1, epochs + 1), r["loss"], label=name)
            axes[1].plot(grid[:, 0], r["pred"], lw=1.2, label=name)
        axes[0].set(xlabel="epoch", ylabel="training MSE", title="loss comparison (deck 000)")
        axes[1].scatter(X[:, 0], y[:, 0], s=3, c="0.7", label="data")
        axes[1].plot(grid[:, 0], truth(grid)[:, 0], "k--", lw=1, label="sin(5x) + 0.5 sin(20x)")
        axes[1].set(xlabel="x", ylabel="y", title="predictions after training")
        axes[0].legend(fontsize=8)
        axes[1].legend(fontsize=7)
        return fig

    _common.plot_or_note(plot, out, make, "sin_optimizers.png")
    return results


def main(argv=None) -> dict:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    return run(quick=args.quick, seed=args.seed, out=args.out, plot=args.plot)


if __name__ == "__main__":
    main()
