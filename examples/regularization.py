"""Deck 002, "Underfitting and overfitting" / "Regularization": a network that overfits a
small real data set, then L2, dropout and early stopping.

Data: scikit-learn's diabetes set (442 patients, 10 baseline measurements, disease
progression after one year; bundled with scikit-learn, no download), split at random into
221 training and 221 validation rows; features and target z-scored with the training
statistics (``fm.preprocessing.StandardScaler``), so a validation MSE of 1 is no better than
predicting the mean. A network far larger than 221 rows need (10-256-256-1, ReLU, He normal)
is trained by Adam (lr 1e-3, batches of 32) for 300 epochs on the MSE:

    none            train MSE -> 0 while the validation MSE turns up after a few epochs
                    (deck 002: "the validation set average loss eventually begins to increase")
    L2              lambda/2 ||w||^2 on the weights, lambda = 1e-2 (``fm.regularizers.L2``)
    dropout         drop rate 0.5 after each hidden layer (deck 002: keep probability p "can
                    simply be set at 0.5"; ``fm.MLP(dropout=0.5)``)
    early stopping  deck 002 Algorithm 7.1: patience p = 20 epochs on the validation MSE, then
                    the best parameters theta* back (``fm.callbacks.EarlyStopping``)

The deck shows the curves only (no numbers); the outcome is qualitative. lambda = 1e-3 is too
weak to matter here (final validation MSE as without regularization); the deck gives no value.
On the library's embedded 8x8 digits the same comparison is much less telling: the classes
are so clean that an unregularized network reaches ~96% validation accuracy and its
validation loss rises only slightly.

Run: ``python examples/regularization.py [--quick] [--out DIR]``
"""

from __future__ import annotations

import _common
import fusedmlp as fm
import numpy as np
from sklearn.datasets import load_diabetes

HIDDEN, LR, BATCH, L2, DROPOUT, PATIENCE = [256, 256], 1e-3, 32, 1e-2, 0.5, 20
CASES = ("none", "L2", "dropout", "early stopping")


def split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random half / half split, z-scored with the training half's statistics (float32)."""
    X, y = load_diabetes(return_X_y=True)
    y = y[:, None]
    order = np.random.default_rng(seed).permutation(len(X))
    tr, va = order[: len(X) // 2], order[len(X) // 2 :]
    xs = fm.preprocessing.StandardScaler().fit(X[tr])
    ys = fm.preprocessing.StandardScaler().fit(y[tr])
    f32 = np.float32
    return (
        xs.transform(X[tr]).astype(f32),
        ys.transform(y[tr]).astype(f32),
        xs.transform(X[va]).astype(f32),
        ys.transform(y[va]).astype(f32),
    )


def train(case: str, data: tuple, epochs: int, seed: int) -> dict:
    """One configuration from the seed's initial weights; returns its curves and final numbers."""
    Xtr, ytr, Xva, yva = data
    model = fm.MLP(
        n_in=Xtr.shape[1],
        hidden=HIDDEN,
        n_out=1,
        activation="relu",
        dropout=DROPOUT if case == "dropout" else 0.0,
        seed=seed,
    )
    regs = [fm.regularizers.L2(L2)] if case == "L2" else None
    stop = fm.callbacks.EarlyStopping(
        monitor="val_loss", patience=PATIENCE, restore_best_weights=True
    )
    trainer = fm.Trainer(
        model,
        loss="mse",
        optimizer=fm.optim.Adam(lr=LR),
        regularizers=regs,
        metrics=(),
        callbacks=[stop] if case == "early stopping" else None,
    )
    hist = trainer.fit(
        Xtr, ytr, epochs=epochs, batch_size=BATCH, validation_data=(Xva, yva), verbose=0
    )
    h = hist.history
    return {
        "loss": h["loss"],
        "val_loss": h["val_loss"],
        "final_train_loss": trainer.evaluate(Xtr, ytr)["loss"],
        "final_val_loss": trainer.evaluate(Xva, yva)["loss"],
        "min_val_loss": float(np.min(h["val_loss"])),
        "best_epoch": int(np.argmin(h["val_loss"])) + 1,
        "epochs_run": len(h["loss"]),
    }


def run(
    quick: bool = False, seed: int = 0, out: str = _common.DEFAULT_OUT, plot: bool = True
) -> dict:
    """The four configurations on one split, from the same initial weights.

    Args:
        quick: 100 epochs instead of 300 (the unregularized validation MSE has turned up long
            before; early stopping stops before either).
        seed: seeds the split, the weights, dropout and the batch order.
        out, plot: where and whether to save ``regularization.png`` (train/validation curves).

    Returns:
        ``{case: train(...) result}``; losses are MSEs of the z-scored target (the "final"
        ones in inference mode, with early stopping's restored parameters).
    """
    epochs = 100 if quick else 300
    data = split(seed)
    results = {case: train(case, data, epochs, seed) for case in CASES}
    print(
        f"diabetes: {len(data[0])} training / {len(data[2])} validation rows (z-scored), "
        f"MLP 10-256-256-1 ReLU, Adam lr {LR}, batch {BATCH}, up to {epochs} epochs, seed {seed}"
    )
    rows = [
        [
            case,
            r["epochs_run"],
            f"{r['final_train_loss']:.4f}",
            f"{r['final_val_loss']:.4f}",
            f"{r['min_val_loss']:.4f} @ {r['best_epoch']}",
        ]
        for case, r in results.items()
    ]
    print(
        _common.table(
            ["regularization", "epochs", "final train MSE", "final val MSE", "min val MSE @ epoch"],
            rows,
        )
    )
    print(
        f"L2 lambda {L2}, dropout rate {DROPOUT}, early-stopping patience {PATIENCE}; final = the "
        "parameters training ends with (early stopping: the best epoch's, restored). A val MSE of "
        "1 = predicting the mean."
    )

    def make(plt):
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, (case, r) in enumerate(results.items()):
            ep = np.arange(1, r["epochs_run"] + 1)
            ax.semilogy(ep, r["loss"], f"C{i}", ls=":", lw=1)
            ax.semilogy(ep, r["val_loss"], f"C{i}", label=case)
            if case == "early stopping":
                ax.axvline(r["best_epoch"], color=f"C{i}", lw=0.8, ls="--")
        ax.set(
            xlabel="epoch",
            ylabel="MSE (z-scored target)",
            title="validation (solid) and training (dotted, training mode) MSE (deck 002)",
        )
        ax.legend(fontsize=8)
        return fig

    _common.plot_or_note(plot, out, make, "regularization.png")
    return results


def main(argv=None) -> dict:
    args = _common.parse_args(__doc__.splitlines()[0], argv)
    return run(quick=args.quick, seed=args.seed, out=args.out, plot=args.plot)


if __name__ == "__main__":
    main()
