"""``print(model)``, ``model.summary()`` and ``repr(model)`` (issue 18, item 2)."""

from __future__ import annotations

import re

import fusedmlp as fm


def _rows(text: str) -> dict[str, list[str]]:
    """{layer index: the row's cells} of a summary table."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\d+)\s{2}", line)
        if m:
            out[m.group(1)] = re.split(r"\s{2,}", line.strip())
    return out


def _total(text: str, what: str) -> int:
    m = re.search(rf"^{what} params: ([\d,]+) \(", text, re.M)
    return int(m.group(1).replace(",", ""))


def test_mlp_summary_counts_shapes_and_bytes(capsys):
    model = fm.MLP(n_in=784, hidden=[256, 256], n_out=10, batchnorm=True, dropout=0.2)
    model.summary()
    text = capsys.readouterr().out.rstrip("\n")
    assert text == str(model)
    rows = _rows(text)
    assert rows["0"] == ["0", "Dense(256)", "(batch, 256)", "relu", "200,960", "0"]
    # BatchNorm: gamma and beta train, the running statistics do not
    assert rows["1"] == ["1", "BatchNorm", "(batch, 256)", "-", "1,024", "512"]
    assert rows["2"] == ["2", "Dropout(0.2)", "(batch, 256)", "-", "0", "0"]
    assert rows["6"] == ["6", "Dense(10)", "(batch, 10)", "identity", "2,570", "0"]
    weights = sum(w.size for w in model.get_weights())
    assert _total(text, "Total") == weights == 200960 + 1024 + 65792 + 1024 + 2570
    assert _total(text, "Non-trainable") == 1024
    assert _total(text, "Trainable") == weights - 1024
    assert f"Total params: {weights:,} ({weights * 4 / 1024**2:.2f} MiB)" in text
    assert text.startswith("MLP: 784 inputs, 1 head(s), float32, cpu")


def test_frozen_layers_heads_and_row_ops():
    model = fm.Sequential(
        [
            fm.Dense(12, activation="prelu"),
            fm.Activation("maxout", pieces=3),
            fm.RBF(5),
            fm.Dense(4, activation="leaky_relu", activation_params={"alpha": 0.1}),
        ],
        n_in=3,
        heads=[[fm.Dense(2), fm.Activation("softmax")], []],
        dtype="float64",
    )
    model.set_trainable(0, False)
    text = str(model)
    rows = _rows(text)
    assert rows["0"] == ["0", "Dense(12) [frozen]", "(batch, 12)", "prelu", "60", "60"]
    assert rows["1"][1:4] == ["Maxout(3)", "(batch, 4)", "maxout"]
    assert rows["2"][1:5] == ["RBF(5)", "(batch, 5)", "gaussian rbf", "25"]
    assert rows["3"][3] == "leaky_relu(alpha=0.1)"
    assert rows["5"][1:3] == ["Softmax", "(batch, 2)"]
    assert "head 0:" in text and "head 1 (no layers: the trunk's output):" in text
    total = sum(w.size for w in model.get_weights())
    assert _total(text, "Total") == total and _total(text, "Non-trainable") == 60
    assert f"Non-trainable params: 60 ({60 * 8} B)" in text  # float64: 8 bytes each


def test_repr_is_one_short_line():
    model = fm.MLP(n_in=4, hidden=[8], n_out=3, activation="tanh")
    n = sum(w.size for w in model.get_weights())
    assert repr(model) == f"MLP(4 -> Dense(8, tanh) -> Dense(3); {n} params, float32, cpu)"
    deep = fm.MLP(n_in=4, hidden=[8] * 20, n_out=3, dropout=0.1)
    r = repr(deep)
    assert "\n" not in r and "..." in r and len(r) < 150
    two = fm.Sequential([fm.Dense(5)], n_in=2, heads=[[fm.Dense(1)], [fm.Dense(2)]])
    assert "heads [Dense(1)], [Dense(2)]" in repr(two)


def test_sklearn_estimators_keep_their_repr():
    from fusedmlp.sklearn import MLPClassifier

    assert repr(MLPClassifier(hidden_layer_sizes=(5,))) == "MLPClassifier(hidden_layer_sizes=(5,))"
