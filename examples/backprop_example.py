"""Deck 004, "How to compute the gradient: backpropagation": the worked example.

    z1 = sigmoid(x w1),  y_hat = z1 w2,  L = 1/2 (y_hat - y)^2,  x = 1, w1 = 0.5, w2 = -1, y = 1

The deck computes z1 ~ 0.622, y_hat ~ -0.622, L ~ 1.315, dL/dw2 ~ -1.009, dL/dw1 ~ 0.381
(rounding z1 to 0.622 first; the exact values are L = 1.31619, dL/dw2 = -1.00991,
dL/dw1 = 0.38128).

The library computes them three ways: (1) the Network's one-call training step
(``fm.Sequential([fm.Dense(1, "sigmoid", use_bias=False), fm.Dense(1, use_bias=False)])``,
loss "mse" with ``half_mse=True``, float64): ``Trainer.train_step`` returns the loss before
the update and ``model.gradients`` holds dL/dw1, dL/dw2; (2) the update itself: one SGD step
with lr 1 moves each weight by minus its gradient; (3) the single fused kernels
``fm.ops.dense_forward`` / ``fm.ops.loss`` / ``fm.ops.dense_backward``.

Run: ``python examples/backprop_example.py [--out DIR]``
"""

from __future__ import annotations

import math

import _common
import fusedmlp as fm
import numpy as np

X1, W1, W2, Y = 1.0, 0.5, -1.0, 1.0
DECK = {"z1": 0.622, "y_hat": -0.622, "L": 1.315, "dL/dw2": -1.009, "dL/dw1": 0.381}


def exact() -> dict:
    """The example evaluated in closed form (math module, float64)."""
    z1 = 1.0 / (1.0 + math.exp(-X1 * W1))
    y_hat = z1 * W2
    dy = y_hat - Y
    return {
        "z1": z1,
        "y_hat": y_hat,
        "L": 0.5 * dy * dy,
        "dL/dw2": dy * z1,
        "dL/dw1": dy * W2 * z1 * (1.0 - z1) * X1,
    }


def network() -> dict:
    """Loss and gradients from the Network's fused step, and the SGD(lr=1) update."""
    model = fm.Sequential(
        [fm.Dense(1, activation="sigmoid", use_bias=False), fm.Dense(1, use_bias=False)],
        n_in=1,
        dtype="float64",
    )
    model.set_weights([np.array([[W1]]), np.array([[W2]])])
    trainer = fm.Trainer(
        model, loss="mse", half_mse=True, optimizer=fm.optim.SGD(lr=1.0), metrics=()
    )
    x, y = np.array([[X1]]), np.array([[Y]])
    z1 = float(fm.ops.dense_forward(x, model.get_weights()[0], None, "sigmoid")[1][0, 0])
    y_hat = float(model.predict(x)[0, 0])
    loss = trainer.train_step(x, y)
    g = model.gradients.copy()  # [dL/dw1, dL/dw2]: the arena holds the layers in order
    w1_new, w2_new = (float(w[0, 0]) for w in model.get_weights())
    return {
        "z1": z1,
        "y_hat": y_hat,
        "L": loss,
        "dL/dw1": float(g[0]),
        "dL/dw2": float(g[1]),
        "step dL/dw1": W1 - w1_new,
        "step dL/dw2": W2 - w2_new,
    }


def kernels() -> dict:
    """The same example through the single fused kernels."""
    x, y = np.array([[X1]]), np.array([[Y]])
    Wa, Wb = np.array([[W1]]), np.array([[W2]])
    Za, z1 = fm.ops.dense_forward(x, Wa, None, "sigmoid")
    Zb, y_hat = fm.ops.dense_forward(z1, Wb, None, "identity")
    L, dy = fm.ops.loss("mse", y_hat, y, half=True)
    gb = fm.ops.dense_backward(z1, Wb, Zb, dy, "identity", has_bias=False)
    ga = fm.ops.dense_backward(x, Wa, Za, gb["dX"], "sigmoid", has_bias=False, need_dx=False)
    return {
        "z1": float(z1[0, 0]),
        "y_hat": float(y_hat[0, 0]),
        "L": float(L),
        "dL/dw1": float(ga["dW"][0, 0]),
        "dL/dw2": float(gb["dW"][0, 0]),
    }


def run(
    quick: bool = False, seed: int = 0, out: str = _common.DEFAULT_OUT, plot: bool = True
) -> dict:
    """Compute the example; print the deck's values beside the library's.

    Args:
        quick, seed: unused (the example is deterministic and instant); accepted for a
            uniform command line.
        out, plot: where and whether to save ``backprop_example.png`` (L and its two slopes
            along w1 and w2 around the example's point).

    Returns:
        ``{"deck": ..., "exact": ..., "network": ..., "kernels": ...}`` dicts of the quantities.
    """
    del quick, seed
    res = {"deck": DECK, "exact": exact(), "network": network(), "kernels": kernels()}
    keys = ["z1", "y_hat", "L", "dL/dw2", "dL/dw1"]
    rows = [
        [
            k,
            f"{DECK[k]:.3f}",
            f"{res['exact'][k]:.6f}",
            f"{res['network'][k]:.6f}",
            f"{res['kernels'][k]:.6f}",
        ]
        for k in keys
    ]
    print(
        "Deck 004 backprop example: x=1, w1=0.5, w2=-1, y=1, sigmoid hidden unit, linear output, "
        "1/2 squared error"
    )
    print(_common.table(["quantity", "deck", "exact", "fm Network step", "fm.ops kernels"], rows))
    n = res["network"]
    print(
        f"SGD(lr=1) step moved w1 by {-n['step dL/dw1']:+.6f} and w2 by {-n['step dL/dw2']:+.6f} "
        "(minus the gradients)"
    )
    print("The deck rounds z1 to 0.622 before squaring, hence its L = 1.315 (exact 1.31619).")

    def make(plt):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, (name, w0, slope) in zip(
            axes,
            [("w1", W1, res["network"]["dL/dw1"]), ("w2", W2, res["network"]["dL/dw2"])],
            strict=True,
        ):
            w = np.linspace(w0 - 1.5, w0 + 1.5, 200)
            a, b = (w, W2) if name == "w1" else (W1, w)
            L = 0.5 * (1.0 / (1.0 + np.exp(-X1 * a)) * b - Y) ** 2
            ax.plot(w, L, label="L")
            ax.plot(
                w,
                res["network"]["L"] + slope * (w - w0),
                "--",
                label=f"slope {slope:.3f} (library)",
            )
            ax.plot([w0], [res["network"]["L"]], "ko")
            ax.set(xlabel=name, ylabel="L", title=f"L along {name} (deck 004)")
            ax.legend(fontsize=8)
        return fig

    _common.plot_or_note(plot, out, make, "backprop_example.png")
    return res


def main(argv=None) -> dict:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    return run(quick=args.quick, seed=args.seed, out=args.out, plot=args.plot)


if __name__ == "__main__":
    main()
