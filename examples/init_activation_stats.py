"""Deck 000, "Initialization": per-layer activation statistics of a 10-layer, 500-unit net.

The deck's setup (CS231n's experiment): 1000 inputs drawn from N(0, 1) in 500 dimensions,
ten fully connected layers of 500 units without bias, every layer followed by the same
activation, weights drawn from

    N(0, 0.01^2) + tanh   std shrinks geometrically (x0.22 per layer): vanishing
    N(0, 1)      + tanh   every unit saturates at +-1 (std ~0.98)
    Glorot       + tanh   Var(W) = 2 / (n_in + n_out): a slow decay (0.63 -> 0.23)
    Glorot       + ReLU   halves the variance each layer (0.58 -> 0.026)
    He           + ReLU   Var(W) = 2 / n_in keeps it (~0.83 in every layer)

The network is an ``fm.Sequential`` of ``fm.Dense`` layers; its weights come from
``fm.init`` (``Dense(init="normal")`` is N(0, 0.01^2); N(0, 1) is drawn with
``fm.init.initialize("normal", std=1)`` and set with ``set_weights``, as ``Dense`` takes an
initializer by name only). The library has no public accessor for a hidden layer's output,
so the per-layer activations are recomputed with the fused kernel ``fm.ops.dense_forward``
from the model's weights; the last one is checked against ``model.predict``.

Run: ``python examples/init_activation_stats.py [--quick] [--out DIR]``
"""

from __future__ import annotations

import _common
import fusedmlp as fm
import numpy as np

N_LAYERS, WIDTH, N_SAMPLES = 10, 500, 1000

#: (label, activation, fm.init name, std for "normal") in the deck's order.
CASES = [
    ("N(0,0.01^2)+tanh", "tanh", "normal", 0.01),
    ("N(0,1)+tanh", "tanh", "normal", 1.0),
    ("Glorot+tanh", "tanh", "glorot_normal", None),
    ("Glorot+ReLU", "relu", "glorot_normal", None),
    ("He+ReLU", "relu", "he_normal", None),
]

#: The deck's printed per-layer std (layers 1..10), one table per case.
DECK_STD = {
    "N(0,0.01^2)+tanh": [
        0.213081,
        0.047551,
        0.010630,
        0.002378,
        0.000532,
        0.000119,
        0.000026,
        0.000006,
        0.000001,
        0.000000,
    ],
    "N(0,1)+tanh": [
        0.981879,
        0.981649,
        0.981601,
        0.981755,
        0.981614,
        0.981560,
        0.981520,
        0.981913,
        0.981728,
        0.981736,
    ],
    "Glorot+tanh": [
        0.627953,
        0.486051,
        0.407723,
        0.357108,
        0.320917,
        0.292116,
        0.273387,
        0.254935,
        0.239266,
        0.228008,
    ],
    "Glorot+ReLU": [
        0.582273,
        0.403795,
        0.276912,
        0.198685,
        0.140299,
        0.103280,
        0.072748,
        0.051572,
        0.038583,
        0.026076,
    ],
    "He+ReLU": [
        0.825232,
        0.827835,
        0.813855,
        0.826902,
        0.834092,
        0.860035,
        0.870610,
        0.889348,
        0.845357,
        0.844523,
    ],
}


def build(activation: str, init: str, std: float | None, seed: int) -> fm.Sequential:
    """The deck's 10 x 500 network (no biases) with weights drawn by ``fm.init``."""
    layers = [
        fm.Dense(WIDTH, activation=activation, init=init, use_bias=False) for _ in range(N_LAYERS)
    ]
    model = fm.Sequential(layers, n_in=WIDTH, seed=seed)
    if init == "normal" and std != 0.01:  # Dense(init="normal") is N(0, 0.01^2); other stds are set
        rng = np.random.default_rng(seed)
        model.set_weights(
            [fm.init.initialize("normal", WIDTH, WIDTH, rng, std=std) for _ in range(N_LAYERS)]
        )
    return model


def layer_outputs(model: fm.Sequential, activation: str, X: np.ndarray) -> list[np.ndarray]:
    """Each layer's activation, by the fused dense kernel with the model's weights."""
    outs, H = [], X
    for W in model.get_weights():
        _, H = fm.ops.dense_forward(H, W, None, activation)
        outs.append(H)
    final = model.predict(X)
    if not np.allclose(outs[-1], final, rtol=1e-4, atol=1e-6):
        raise RuntimeError("layer-by-layer forward disagrees with model.predict")
    return outs


def run(
    quick: bool = False, seed: int = 0, out: str = _common.DEFAULT_OUT, plot: bool = True
) -> dict:
    """Per-layer mean and std of the activations for every case.

    Args:
        quick: 250 input rows instead of 1000 (the statistics are over 250 x 500 values,
            still tight).
        seed: seeds the inputs and the weights.
        out: folder for the plot.
        plot: save ``init_activation_stats.png``.

    Returns:
        ``{label: {"mean": [10 floats], "std": [10 floats], "input_std": float}}``.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((250 if quick else N_SAMPLES, WIDTH)).astype(np.float32)
    results = {}
    for label, act, init, std in CASES:
        outs = layer_outputs(build(act, init, std, seed), act, X)
        results[label] = {
            "mean": [float(h.mean(dtype=np.float64)) for h in outs],
            "std": [float(h.std(dtype=np.float64)) for h in outs],
            "input_std": float(X.std(dtype=np.float64)),
        }
    print(
        f"Per-layer std of the activations, {X.shape[0]} inputs ~ N(0, 1), 10 layers x 500 units "
        f"(deck 000's value in brackets)"
    )
    headers = ["layer"] + [label for label, *_ in CASES]
    rows = []
    for i in range(N_LAYERS):
        rows.append(
            [i + 1]
            + [f"{results[lab]['std'][i]:.6f} [{DECK_STD[lab][i]:.6f}]" for lab, *_ in CASES]
        )
    print(_common.table(headers, rows))
    print("\nPer-layer mean (the deck's ReLU means are 0.40 -> 0.018 for Glorot, ~0.56 for He):")
    print(
        _common.table(
            headers,
            [
                [i + 1] + [f"{results[lab]['mean'][i]:+.6f}" for lab, *_ in CASES]
                for i in range(N_LAYERS)
            ],
        )
    )

    def make(plt):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for lab, *_ in CASES:
            axes[0].semilogy(
                range(1, N_LAYERS + 1), np.maximum(results[lab]["std"], 1e-12), "o-", label=lab
            )
            axes[1].plot(range(1, N_LAYERS + 1), results[lab]["mean"], "o-", label=lab)
        axes[0].set(
            xlabel="layer", ylabel="std of the activations", title="std per layer (deck 000)"
        )
        axes[1].set(xlabel="layer", ylabel="mean of the activations", title="mean per layer")
        axes[0].legend(fontsize=8)
        return fig

    _common.plot_or_note(plot, out, make, "init_activation_stats.png")
    return results


def main(argv=None) -> dict:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    return run(quick=args.quick, seed=args.seed, out=args.out, plot=args.plot)


if __name__ == "__main__":
    main()
