"""Interop (issue 18, item 5): Trainer.fit/predict and the estimators take pandas and polars
DataFrames and PyTorch CPU tensors; a float32 C-contiguous input stays a view (no copy).
Each library's tests skip when it is not installed (CI installs them through the test extra).
"""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    return X, y


def _model():
    return fm.MLP(n_in=4, hidden=[8], n_out=3, seed=0, dtype="float32")


def _fit_predict(X, y):
    trainer = fm.Trainer(_model(), loss="cross_entropy", optimizer=fm.optim.Adam(lr=1e-2))
    trainer.fit(X, y, epochs=2, batch_size=16, verbose=0)
    return trainer.model.parameters.copy(), trainer.predict(X)


def test_pandas_dataframe_is_a_view_and_trains_like_numpy():
    pd = pytest.importorskip("pandas")
    X, y = _data()
    df = pd.DataFrame(X, columns=list("abcd"), copy=False)
    assert np.shares_memory(_model().check_X(df), X)  # one float32 block: no copy
    ref = _fit_predict(X, y)
    got = _fit_predict(df, pd.Series(y))
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


def test_polars_dataframe_trains_like_numpy():
    pl = pytest.importorskip("polars")
    X, y = _data()
    ref = _fit_predict(X, y)
    got = _fit_predict(pl.DataFrame(X), pl.Series(y))  # columnar: one copy to rows
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


def test_torch_cpu_tensor_is_a_view_and_trains_like_numpy():
    torch = pytest.importorskip("torch")
    X, y = _data()
    t = torch.from_numpy(X)
    assert np.shares_memory(_model().check_X(t), X)
    ref = _fit_predict(X, y)
    got = _fit_predict(t, torch.from_numpy(y))
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    with pytest.raises(TypeError, match=r"X: cannot read Tensor as a NumPy array"):
        _model().check_X(t.clone().requires_grad_())


class _DLPackOnly:
    """An exporter with DLPack and no __array__ (as some array libraries)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_dlpack_only_exporter_is_a_view():
    X, _ = _data()
    assert np.shares_memory(_model().check_X(_DLPackOnly(X)), X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["pandas", "polars", "torch"])
def test_estimators_take_dataframes_and_tensors(kind):
    pytest.importorskip("sklearn")
    from fusedmlp.sklearn import MLPClassifier, MLPRegressor

    X, y = _data()
    if kind == "pandas":
        pd = pytest.importorskip("pandas")
        Xk, yk = pd.DataFrame(X, columns=list("abcd")), pd.Series(y)
    elif kind == "polars":
        pl = pytest.importorskip("polars")
        Xk, yk = pl.DataFrame(X, schema=list("abcd")), pl.Series(y)
    else:
        torch = pytest.importorskip("torch")
        Xk, yk = torch.from_numpy(X), torch.from_numpy(y)
    # the array scikit-learn's own validation makes of the input (polars float32 columns
    # arrive as float64 there, so both libraries compute in float64 for them)
    from sklearn.utils import check_array

    Xn = check_array(Xk, dtype=(np.float64, np.float32))
    for est_cls, target, out in [
        (MLPClassifier, yk, "predict_proba"),
        (MLPRegressor, X[:, 0].astype(np.float64), "predict"),
    ]:
        kw = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
        ref = est_cls(**kw).fit(Xn, y if est_cls is MLPClassifier else target)
        est = est_cls(**kw).fit(Xk, target)
        np.testing.assert_array_equal(getattr(est, out)(Xk), getattr(ref, out)(Xn))
    if kind in ("pandas", "polars"):
        assert est.feature_names_in_.tolist() == list("abcd")
