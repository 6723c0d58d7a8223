"""Hyper-parameter search (issue 18, item 3): the estimators inside GridSearchCV /
RandomizedSearchCV with n_jobs=2 (loky worker processes: the estimators are pickled there and
back), each worker with its own thread count (no oversubscription), and the Optuna pruning
callback (the optuna extra; skipped without it).
"""

from __future__ import annotations

import os
import warnings

import fusedmlp as fm
import numpy as np
import pytest

pytest.importorskip("sklearn")


def _data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    return X, y


def _search(cls, n_jobs):
    from fusedmlp.sklearn import MLPClassifier

    params = {"hidden_layer_sizes": [(8,), (16,)], "learning_rate_init": [1e-3, 1e-2]}
    est = MLPClassifier(max_iter=20, random_state=0)
    kw = {"n_iter": 3, "random_state": 0} if cls.__name__ == "RandomizedSearchCV" else {}
    search = cls(est, params, cv=2, n_jobs=n_jobs, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return search.fit(*_data())


@pytest.mark.parametrize("name", ["GridSearchCV", "RandomizedSearchCV"])
def test_search_with_two_worker_processes_matches_one(name):
    import sklearn.model_selection as ms

    cls = getattr(ms, name)
    par, ser = _search(cls, 2), _search(cls, 1)
    np.testing.assert_array_equal(
        par.cv_results_["mean_test_score"], ser.cv_results_["mean_test_score"]
    )
    assert par.best_params_ == ser.best_params_
    X, _ = _data()
    np.testing.assert_array_equal(par.predict_proba(X), ser.predict_proba(X))


def test_workers_use_their_share_of_the_cores():
    """joblib's loky workers get OMP_NUM_THREADS = cores // n_jobs (as scikit-learn's own
    OpenMP estimators rely on); the kernels' OpenMP pool takes its size from it, so two
    workers do not each start one thread per core. The scorer runs in the worker and returns
    the thread count the fit there used. The estimators that come back were pickled."""
    from fusedmlp.sklearn import MLPClassifier
    from sklearn.model_selection import cross_validate

    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cross_validate(
            MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0),
            X,
            y,
            cv=2,
            n_jobs=2,
            return_estimator=True,
            scoring=lambda est, X, y: fm.get_num_threads(),
        )
    share = max(1, (os.cpu_count() or 1) // 2)
    assert all(1 <= t <= share for t in res["test_score"]), res["test_score"]
    for est in res["estimator"]:
        assert est.predict_proba(X).shape == (len(X), 2)


# -- Optuna -----------------------------------------------------------------------------------
def _trainer(trial, epochs_seen):
    X, y = _data()
    model = fm.MLP(n_in=5, hidden=[8], n_out=2, seed=0, dtype="float32")
    cb = fm.callbacks.OptunaPruning(trial, monitor="val_loss")
    trainer = fm.Trainer(model, loss="cross_entropy", callbacks=[cb])
    epochs_seen.append(cb)
    return trainer, X.astype(np.float32), y


def test_optuna_pruning_prunes_and_reports():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cbs = []

    def objective(trial):
        trainer, X, y = _trainer(trial, cbs)
        hist = trainer.fit(X, y, epochs=5, validation_split=0.25, verbose=0)
        return hist.history["val_loss"][-1]

    # A threshold no val_loss reaches: every trial is pruned after its first epoch.
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1e-6))
    study.optimize(objective, n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(cb.pruned_epoch == 0 for cb in cbs)
    assert list(study.trials[0].intermediate_values) == [0]
    # No pruning: every epoch is reported and the trial completes.
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert list(study.trials[0].intermediate_values) == [0, 1, 2, 3, 4]


def test_optuna_pruning_checks_its_arguments():
    optuna = pytest.importorskip("optuna")
    with pytest.raises(TypeError, match="trial: expected an optuna Trial"):
        fm.callbacks.OptunaPruning(object())
    trial = optuna.trial.FixedTrial({})
    cb = fm.callbacks.OptunaPruning(trial, monitor="val_auc")
    trainer = fm.Trainer(fm.MLP(n_in=5, hidden=[4], n_out=2, seed=0), callbacks=[cb])
    X, y = _data(40)
    with pytest.raises(ValueError, match="monitor: 'val_auc' is not in the logs"):
        trainer.fit(X, y, epochs=1, verbose=0)
