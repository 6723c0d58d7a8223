"""Deck 003, "Let us take a simple example": y = 3x + 2 + U(-0.1, 0.1) by SGD, momentum and
Nesterov momentum, with the optimization paths.

The deck's setup: N = 30 samples, model rho(x) = theta^T [1, x], l2 loss
L = (1/M) sum (y_i - rho(x_i))^2, learning rate 0.005, theta_0 = [10, 5], 1000 iterations:

    SGD                        theta_1000 = [1.9882, 2.9975]
    momentum,  beta = 0.6      theta_1000 = [1.9837, 2.9933]   (deck 003 Alg. 2)
    Nesterov,  beta = 0.8      theta_1000 = [1.9738, 2.9914]   (deck 003 Alg. 3)

The deck does not say how x is drawn nor the minibatch size. Here x ~ N(0, 1) and every
iteration uses all 30 samples (M = N): with lr 0.005 the bias then converges as
(1 - 0.01)^t, so 1000 plain gradient steps reach the deck's precision. With x ~ U(0, 1)
plain gradient descent would still be far off after 1000 steps (the slow eigenvalue of the
Hessian is 0.13), which contradicts the deck's SGD row.

Library: ``fm.Sequential([fm.Dense(1)])`` (theta = [b, w]) in float64, the "mse" loss (mean
over the samples), ``fm.optim.SGD(lr=0.005[, momentum, nesterov], deck_variant=True)`` (the
velocity form v <- beta v - lr g of deck 003), ``fm.Trainer.fit`` with a callback recording
theta after every step. With ``nesterov`` the library stores the look-ahead parameters
theta + beta v (as PyTorch and Keras do); they equal theta once v has died out.

Run: ``python examples/linreg_momentum.py [--quick] [--out DIR]``
"""

from __future__ import annotations

import _common
import fusedmlp as fm
import numpy as np

N, LR, ITERS = 30, 0.005, 1000
THETA0 = (10.0, 5.0)  # (bias, slope)

#: (label, momentum, nesterov, the deck's theta_1000)
CASES = [
    ("SGD", 0.0, False, (1.9882, 2.9975)),
    ("momentum 0.6", 0.6, False, (1.9837, 2.9933)),
    ("Nesterov 0.8", 0.8, True, (1.9738, 2.9914)),
]


class ThetaPath(fm.callbacks.Callback):
    """Records theta = [bias, slope] of a one-unit linear model after every step."""

    def __init__(self):
        self.path: list[tuple[float, float]] = []

    def on_batch_end(self, batch, logs=None):
        W, b = self.trainer.model.get_weights()
        self.path.append((float(b[0]), float(W[0, 0])))


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x ~ N(0, 1) (30, 1) and y = 3x + 2 + U(-0.1, 0.1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 1))
    return x, 3.0 * x + 2.0 + rng.uniform(-0.1, 0.1, size=(N, 1))


def fit(x: np.ndarray, y: np.ndarray, momentum: float, nesterov: bool, iters: int) -> dict:
    """Full-batch training from theta_0; returns the path (theta_0 first) and the losses."""
    model = fm.Sequential([fm.Dense(1)], n_in=1, dtype="float64")
    model.set_weights([np.array([[THETA0[1]]]), np.array([THETA0[0]])])
    path = ThetaPath()
    opt = fm.optim.SGD(lr=LR, momentum=momentum, nesterov=nesterov, deck_variant=True)
    trainer = fm.Trainer(model, loss="mse", optimizer=opt, metrics=(), callbacks=[path])
    hist = trainer.fit(x, y, epochs=iters, batch_size=None, shuffle=False, verbose=0)
    return {"path": [THETA0] + path.path, "loss": hist.history["loss"], "theta": path.path[-1]}


def run(
    quick: bool = False, seed: int = 0, out: str = _common.DEFAULT_OUT, plot: bool = True
) -> dict:
    """The three optimizers on one data set.

    Args:
        quick: same as the full run (3 x 1000 steps of a one-unit model); accepted for a
            uniform command line.
        seed: seeds the data.
        out, plot: where and whether to save ``linreg_momentum.png`` (paths over the loss
            contours, and the loss per iteration).

    Returns:
        ``{"lstsq": (b, w), label: fit(...) result}``.
    """
    del quick
    x, y = make_data(seed)
    A = np.hstack([np.ones_like(x), x])
    lstsq = tuple(float(t) for t in np.linalg.lstsq(A, y[:, 0], rcond=None)[0])
    results: dict = {"lstsq": lstsq}
    rows = []
    for label, mom, nest, deck in CASES:
        r = fit(x, y, mom, nest, ITERS)
        results[label] = r
        rows.append(
            [
                label,
                f"[{r['theta'][0]:.4f}, {r['theta'][1]:.4f}]",
                f"[{deck[0]:.4f}, {deck[1]:.4f}]",
                f"{r['loss'][-1]:.3g}",
            ]
        )
    rows.append(["least squares", f"[{lstsq[0]:.4f}, {lstsq[1]:.4f}]", "", ""])
    print(
        f"y = 3x + 2 + U(-0.1, 0.1), N={N}, x ~ N(0, 1), lr {LR}, theta_0 = {list(THETA0)}, "
        f"{ITERS} full-batch iterations, data seed {seed}"
    )
    print(
        _common.table(["optimizer", "theta_1000 (ours)", "theta_1000 (deck)", "final loss"], rows)
    )
    print(
        "theta = [bias, slope]; the least-squares fit is where every optimizer converges "
        "on this data."
    )

    def make(plt):
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        b = np.linspace(-1, 11, 200)
        w = np.linspace(1.5, 5.5, 200)
        B, Wg = np.meshgrid(b, w)
        L = ((B[..., None] + Wg[..., None] * x[:, 0] - y[:, 0]) ** 2).mean(-1)
        axes[0].contour(
            B, Wg, L, levels=np.geomspace(L.min() * 2, L.max(), 25), colors="0.75", linewidths=0.6
        )
        for label, *_ in CASES:
            p = np.asarray(results[label]["path"])
            axes[0].plot(p[:, 0], p[:, 1], ".-", ms=2, lw=0.8, label=label)
            axes[1].semilogy(results[label]["loss"], label=label)
        axes[0].plot(*lstsq, "k*", ms=10, label="least squares")
        axes[0].set(
            xlabel="theta_0 (bias)", ylabel="theta_1 (slope)", title="optimization path (deck 003)"
        )
        axes[1].set(
            xlabel="iteration", ylabel="loss (before the step)", title="the value of the function"
        )
        axes[0].legend(fontsize=8)
        axes[1].legend(fontsize=8)
        return fig

    _common.plot_or_note(plot, out, make, "linreg_momentum.png")
    return results


def main(argv=None) -> dict:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    return run(quick=args.quick, seed=args.seed, out=args.out, plot=args.plot)


if __name__ == "__main__":
    main()
