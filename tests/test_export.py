"""ONNX export (issue 18, item 1): onnxruntime's output of the exported graph equals
``model.predict`` to 1e-5 in float32, for every activation, BatchNorm (folded), dropout and
noise (removed), RBF, softmax/maxout, multi-head models and the "probabilities" output, at
batch sizes 1 and 1000 through one dynamic batch dimension; and the CLI's ``export``."""

from __future__ import annotations

import fusedmlp as fm
import numpy as np
import pytest
from fusedmlp import _activations as acts
from fusedmlp import cli

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = {"rtol": 1e-5, "atol": 1e-5}
BATCHES = (1, 1000)

# non-default hyper-parameters where an activation has them (the defaults are the kernels'
# fallbacks and are covered by the models without parameters)
HYPER = {
    "leaky_relu": {"alpha": 0.2},
    "isru": {"alpha": 0.5},
    "isrlu": {"alpha": 2.0},
    "elu": {"alpha": 1.5},
    "soft_clipping": {"alpha": 2.0},
    "rrelu": {"lower": 0.1, "upper": 0.3},
    "soboleva_tanh": {"a": 1.2, "b": 0.8, "c": 1.0, "d": 0.9},
    "apl": {"hinges": 2},
}
ELEMENTWISE = [n for n in acts.names() if n not in acts.ROW_OPS]


def _session(proto):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _inputs(n_in: int, n: int, seed: int = 0) -> np.ndarray:
    # spread over the activations' interesting ranges (kinks, the sinc series near 0)
    return (2.0 * np.random.default_rng(seed).normal(size=(n, n_in))).astype(np.float32)


def _check(model, proto=None, n_outputs: int = 1, **export_args):
    proto = model.to_onnx(**export_args) if proto is None else proto
    sess = _session(proto)
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"  # one graph for every batch size
    for n in BATCHES:
        X = _inputs(model.n_in, n, seed=n)
        got = sess.run(None, {"input": X})
        ref = model.predict(X)
        ref = ref if isinstance(ref, list) else [ref]
        assert len(got) == len(ref) == n_outputs
        for g, r in zip(got, ref, strict=True):
            assert g.shape == r.shape and g.dtype == np.float32
            np.testing.assert_allclose(g, r, **TOL)
    return proto


def _randomize_act_params(model, seed: int = 1) -> None:
    """Learnable activation parameters away from their initial values (PReLU slopes of both
    signs, SReLU thresholds, soft exponential alphas < 0, = 0 and > 0)."""
    rng = np.random.default_rng(seed)
    for (li, name), _ in model._index.items():
        if name != "act_params":
            continue
        act = model._all_layers()[li]._act.name
        P = model._param_view(li, name)
        if act == "srelu":
            P[0] = rng.uniform(-1.5, -0.2, P.shape[1])
            P[1] = rng.uniform(-0.3, 0.5, P.shape[1])
            P[2] = rng.uniform(0.2, 1.5, P.shape[1])
            P[3] = rng.uniform(0.5, 2.0, P.shape[1])
        elif act == "soft_exponential":
            P[0] = rng.choice([-0.5, -0.2, -1e-3, 0.0, 1e-3, 0.1, 0.3], P.shape[1])
        else:
            P[...] = rng.uniform(-0.5, 0.5, P.shape)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_every_activation_matches_predict(name):
    hp = HYPER.get(name, {})
    model = fm.Sequential(
        [
            fm.Dense(16, activation=name, activation_params=hp),
            fm.Dense(12, activation=name, activation_params=hp),
            fm.Dense(3),
        ],
        n_in=5,
        seed=3,
    )
    _randomize_act_params(model)
    _check(model)


@pytest.mark.parametrize("name", ["prelu", "srelu", "apl", "soft_exponential", "rrelu", "gelu"])
def test_standalone_activation_layers(name):
    model = fm.Sequential(
        [fm.Dense(10), fm.Activation(name, params=HYPER.get(name, {})), fm.Dense(2)], n_in=4
    )
    _randomize_act_params(model)
    _check(model)


def test_soft_exponential_small_alphas_keep_precision():
    # (e^{ax} - 1)/a and log(1 - a(x + a))/a with |a| = 1e-4: a naive e^{ax} - 1 or log(1 + v)
    # loses ~1e-3 here, the expm1/log1p forms of the exporter do not
    model = fm.Sequential([fm.Dense(8, activation="soft_exponential"), fm.Dense(1)], n_in=3)
    P = model._param_view(0, "act_params")
    P[0] = np.array([-1e-4, 1e-4, -3e-4, 3e-4, 1e-4, -1e-4, 0.0, 2e-4])
    _check(model)


def test_softmax_and_maxout_layers():
    for opset in (13, 17, 18):  # ReduceMax takes its axes as an input from opset 18
        model = fm.Sequential(
            [
                fm.Dense(12),
                fm.Activation("maxout", pieces=3),
                fm.Dense(5),
                fm.Activation("softmax"),
            ],
            n_in=6,
        )
        proto = _check(model, opset=opset)
        assert proto.opset_import[0].version == opset


def _set_bn_stats(model, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    for li, layer in enumerate(model._all_layers()):
        if isinstance(layer, fm.BatchNorm):
            n = model._param_view(li, "running_mean").shape[0]
            model._param_view(li, "running_mean")[:] = rng.normal(size=n)
            model._param_view(li, "running_var")[:] = rng.uniform(0.2, 3.0, n)
            if layer.affine:
                model._param_view(li, "gamma")[:] = rng.uniform(0.5, 2.0, n)
                model._param_view(li, "beta")[:] = rng.normal(size=n)


@pytest.mark.parametrize("batchnorm", ["post", "pre"])
def test_batchnorm_is_folded(batchnorm):
    model = fm.MLP(n_in=7, hidden=[32, 16], n_out=4, batchnorm=batchnorm, dropout=0.3, seed=1)
    _set_bn_stats(model)
    proto = _check(model)
    ops = [node.op_type for node in proto.graph.node]
    # "pre": into the linear Dense before; "post": into the Dense after (dropout removed)
    assert ops.count("Gemm") == 3 and "Mul" not in ops and "Dropout" not in ops


def test_batchnorm_without_a_dense_neighbour_and_without_affine():
    # a trailing BN of the trunk feeds two heads: exported as Mul + Add
    model = fm.Sequential(
        [fm.Dense(8, activation="tanh"), fm.BatchNorm(affine=False)],
        n_in=3,
        heads=[[fm.Dense(2)], [fm.BatchNorm(), fm.Activation("elu")]],
    )
    _set_bn_stats(model)
    _check(model, n_outputs=2)


def test_dropout_and_noise_are_removed():
    model = fm.Sequential(
        [
            fm.Dropout(0.2),
            fm.GaussianNoise(0.5),
            fm.Dense(16, activation="relu"),
            fm.Dropout(0.5),
            fm.Dense(3),
        ],
        n_in=4,
    )
    proto = _check(model)
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Relu", "Gemm", "Identity"]


def test_rbf_network():
    X = _inputs(3, 200)
    model = fm.Sequential([fm.RBF(10), fm.Dense(2)], n_in=3)
    model.init_rbf(X)
    _check(model)
    deep = fm.Sequential(
        [fm.Dense(6, activation="tanh"), fm.RBF(5, width=0.7), fm.Dense(1)], n_in=3
    )
    deep.init_rbf(X)
    _check(deep)


def test_two_heads_and_probabilities():
    model = fm.Sequential(
        [fm.Dense(16, activation="relu")],
        n_in=5,
        heads=[[fm.Dense(4)], [fm.Dense(3)], [fm.Dense(1)]],
    )
    proto = _check(model, n_outputs=3)
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1", "output_2"]
    losses = ["cross_entropy", "bce", "mse"]
    sess = _session(model.to_onnx(output="probabilities", loss=losses))
    for n in BATCHES:
        X = _inputs(5, n)
        got = sess.run(None, {"input": X})
        for g, z, loss in zip(got, model.predict(X), losses, strict=True):
            np.testing.assert_allclose(g, fm.ops.loss_output(loss, z), **TOL)
    np.testing.assert_allclose(got[0].sum(axis=1), 1.0, rtol=1e-6)


def test_float64_model_exports_in_float32():
    model = fm.MLP(n_in=4, hidden=[8], n_out=2, activation="gelu", dtype="float64")
    proto = model.to_onnx()
    X = _inputs(4, 100)
    got = _session(proto).run(None, {"input": X})[0]
    np.testing.assert_allclose(got, model.predict(X), **TOL)


def test_writes_a_file(tmp_path):
    model = fm.MLP(n_in=3, hidden=[4], n_out=2)
    path = tmp_path / "m.onnx"
    proto = model.to_onnx(path)
    assert onnx.load(str(path)) == proto


def test_bad_arguments():
    model = fm.MLP(n_in=3, hidden=[4], n_out=2)
    with pytest.raises(ValueError, match="opset"):
        model.to_onnx(opset=12)
    with pytest.raises(ValueError, match="output"):
        model.to_onnx(output="probs")
    with pytest.raises(ValueError, match="loss"):
        model.to_onnx(output="probabilities")
    with pytest.raises(ValueError, match="loss"):
        model.to_onnx(output="probabilities", loss=["ce", "ce"])
    with pytest.raises(ValueError, match="loss"):
        model.to_onnx(output="probabilities", loss="hinge")
    with pytest.raises(TypeError, match="path"):
        model.to_onnx(path=3)


def test_cli_export(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int32)
    model = fm.MLP(n_in=4, hidden=[8], n_out=2, batchnorm=True)
    trainer = fm.Trainer(model, loss="cross_entropy", metrics=())
    trainer.fit(X, y, epochs=2, batch_size=16, verbose=0)
    ckpt, out = tmp_path / "run.npz", tmp_path / "run.onnx"
    trainer.save(ckpt)
    assert cli.main(["export", str(ckpt), str(out)]) == 0
    got = _session(onnx.load(str(out))).run(None, {"input": X})[0]
    np.testing.assert_allclose(got, model.predict(X), **TOL)
    assert cli.main(["export", str(ckpt), str(out), "--output", "probabilities"]) == 0
    got = _session(onnx.load(str(out))).run(None, {"input": X})[0]
    np.testing.assert_allclose(got, trainer.predict(X), **TOL)
    assert cli.main(["export", str(tmp_path / "missing.npz"), str(out)]) == 2
    assert "missing.npz" in capsys.readouterr().err
