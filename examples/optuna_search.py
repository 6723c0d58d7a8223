"""Hyper-parameter search with Optuna: width, depth, learning rate, dropout and optimizer of an
MLP on the bundled digits, with unpromising trials pruned by ``fm.callbacks.OptunaPruning``.

Deck 000 ("How to train a NN: some tips for your first try") ends its list with
"Hyperparameter Optimization (network architecture, learning rate and decay schedule, presence
of regularization, ...)" and cites Bergstra & Bengio, "Random Search for Hyper-Parameter
Optimization" (JMLR 2012). Their argument: only a few hyper-parameters matter for a given
problem, and which ones is not known in advance; a grid of g values per axis tries only g
distinct values of the one that matters, while n random trials try n. So this search samples
(Optuna's RandomSampler, seeded) instead of gridding, draws the learning rate on a log scale
(its effect is multiplicative), and lets the median pruner stop trials whose validation loss
after an epoch is worse than the median of earlier trials at the same epoch.

Needs the ``optuna`` extra (``pip install 'fusedmlp[optuna]'``).

Run: ``python examples/optuna_search.py [--quick] [--seed N] [--threads N]``
"""

from __future__ import annotations

import _common
import fusedmlp as fm
import numpy as np

OPTIMIZERS = ("adam", "sgd", "rmsprop")


def _split(seed: int):
    X, y = fm.datasets.load("digits")
    idx = np.random.default_rng(seed).permutation(len(X))
    n_test = len(X) // 5
    te, tr = idx[:n_test], idx[n_test:]
    return X[tr], y[tr].astype(np.int32), X[te], y[te].astype(np.int32)


def run(quick: bool = False, seed: int = 0, n_trials: int | None = None) -> dict:
    """Run the study; returns the best parameters, its validation loss, the held-out accuracy
    of the best trial's model and the number of trials in each state."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Xtr, ytr, Xte, yte = _split(seed)
    n_trials = n_trials or (6 if quick else 30)
    epochs = 4 if quick else 15
    accuracy: dict[int, float] = {}

    def objective(trial: optuna.Trial) -> float:
        width = trial.suggest_int("width", 16, 256, log=True)
        depth = trial.suggest_int("depth", 1, 3)
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        optimizer = trial.suggest_categorical("optimizer", OPTIMIZERS)
        model = fm.MLP(
            n_in=Xtr.shape[1], hidden=[width] * depth, n_out=10, dropout=dropout, seed=seed
        )
        trainer = fm.Trainer(
            model,
            loss="cross_entropy",
            optimizer=fm.optim.get(optimizer, lr=lr),
            metrics=("accuracy",),
            callbacks=[fm.callbacks.OptunaPruning(trial, monitor="val_loss")],
        )
        hist = trainer.fit(Xtr, ytr, epochs=epochs, batch_size=64, validation_split=0.2, verbose=0)
        accuracy[trial.number] = trainer.evaluate(Xte, yte)["accuracy"]
        return hist.history["val_loss"][-1]

    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    study.optimize(objective, n_trials=n_trials)
    states = [t.state.name for t in study.trials]
    return {
        "best_params": study.best_params,
        "best_val_loss": study.best_value,
        "best_test_accuracy": accuracy[study.best_trial.number],
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
    }


if __name__ == "__main__":
    args = _common.parse_args(__doc__.splitlines()[0], seed=0)
    res = run(quick=args.quick, seed=args.seed)
    print(
        _common.table(["parameter", "best"], [[k, v] for k, v in res["best_params"].items()], ".4g")
    )
    print(
        f"best val_loss {res['best_val_loss']:.4f}, held-out accuracy "
        f"{res['best_test_accuracy']:.4f}; {res['complete']} trials complete, "
        f"{res['pruned']} pruned"
    )
