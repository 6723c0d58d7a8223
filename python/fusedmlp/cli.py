"""Command line: ``fusedmlp train`` / ``python -m fusedmlp train`` and ``fusedmlp export``.

``train`` trains an MLP on the bundled digits by default, on the generated 200k-row tabular
set (``--dataset tabular``), or on a CSV/NPZ file (``--data``),
prints progress and the held-out accuracy (or MSE), and optionally saves a checkpoint.
``export CHECKPOINT OUT.onnx`` writes a checkpoint's model as an ONNX graph (the ``onnx``
extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _load(path: str, target: str | None):
    if not os.path.exists(path):
        raise ValueError(f"--data: no such file: {path}")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                if "X" not in z or "y" not in z:
                    raise ValueError(
                        f"--data: {path} must hold arrays 'X' and 'y' (has {', '.join(z.files)})"
                    )
                return z["X"].astype(np.float32), z["y"]
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"--data: cannot read {path} as .npz ({exc})") from exc
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
        data = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=np.float64)
    except Exception as exc:
        raise ValueError(f"--data: cannot read {path} as CSV ({exc})") from exc
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError(f"--data: {path} has no numeric rows")
    col = target if target is not None else header[-1]
    if col not in header:
        raise ValueError(f"--target: no column {col!r} in {path} (columns: {', '.join(header)})")
    j = header.index(col)
    if not np.isfinite(data).all():
        raise ValueError(f"--data: {path} has missing or non-numeric values")
    return np.delete(data, j, axis=1).astype(np.float32), data[:, j]


def _train(args: argparse.Namespace) -> int:
    import fusedmlp as fm

    if args.data is not None and args.dataset is not None:
        raise ValueError("--data, --dataset: give one of the two")
    if args.data is None:
        dataset = args.dataset or "digits"
        X, y = fm.datasets.load(dataset, seed=args.seed)
    else:
        dataset = None
        X, y = _load(args.data, args.target)
    # Per data set defaults: the 200k-row tabular set takes larger batches and fewer epochs,
    # for a run of a few seconds.
    big = dataset == "tabular"
    if args.epochs is None:
        args.epochs = 3 if big else 30
    if args.batch_size is None:
        args.batch_size = 256 if big else 32
    task = args.task
    if task == "auto":
        task = (
            "classification"
            if np.all(np.mod(y, 1) == 0) and len(np.unique(y)) <= 100
            else "regression"
        )
    if task == "classification":
        classes, y = np.unique(y, return_inverse=True)
        n_out, loss, metrics = len(classes), "cross_entropy", ("accuracy",)
    else:
        y = y.astype(np.float32).reshape(len(y), -1)
        n_out, loss, metrics = y.shape[1], "mse", ("mse",)
    rng = np.random.default_rng(args.seed)
    idx = rng.permutation(len(X))
    n_test = max(1, int(len(X) * args.test_fraction))
    te, tr = idx[:n_test], idx[n_test:]
    scaler = fm.preprocessing.StandardScaler().fit(X[tr])
    Xtr, Xte = (
        scaler.transform(X[tr]).astype(np.float32),
        scaler.transform(X[te]).astype(np.float32),
    )
    hidden = [int(h) for h in args.hidden.split(",") if h]
    model = fm.MLP(
        n_in=X.shape[1],
        hidden=hidden,
        n_out=n_out,
        activation=args.activation,
        dropout=args.dropout,
        batchnorm=args.batchnorm,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
    )
    opt = fm.optim.get(args.optimizer, lr=args.lr)
    sched = (
        None
        if args.schedule == "constant"
        else fm.schedules.get(
            args.schedule, lr=args.lr, **({"T": args.epochs} if args.schedule == "cosine" else {})
        )
    )
    trainer = fm.Trainer(
        model,
        loss=loss,
        optimizer=opt,
        schedule=sched,
        metrics=metrics,
        distributed=args.distributed,
    )
    t0 = time.perf_counter()
    trainer.fit(
        Xtr,
        y[tr],
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_split=0.1,
        verbose=args.verbose,
    )
    res = trainer.evaluate(Xte, y[te])
    name, value = ("accuracy", res["accuracy"]) if task == "classification" else ("mse", res["mse"])
    lead = getattr(trainer, "rank", 0) == 0  # distributed: rank 0 reports (all hold the same)
    if lead:
        print(
            f"held-out {name} {value:.4f} on {len(te)} rows ({time.perf_counter() - t0:.2f} s, "
            f"{trainer.step_count} fused steps)"
        )
    if args.save:
        trainer.save(args.save)  # distributed: rank 0 writes
        if lead:
            print(f"saved {args.save}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .trainer import Trainer

    if not os.path.exists(args.checkpoint):
        raise ValueError(f"CHECKPOINT: no such file: {args.checkpoint}")
    trainer = Trainer.load(args.checkpoint, device="cpu")
    trainer.model.to_onnx(args.out, opset=args.opset, output=args.output, loss=trainer.losses)
    print(f"wrote {args.out} ({args.output}, opset {args.opset})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fusedmlp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network (default: the bundled digits)")
    t.add_argument("--data", help="a .csv (header row) or .npz (arrays X, y) file")
    t.add_argument(
        "--dataset",
        choices=("digits", "tabular"),
        help="a built-in data set instead of --data: digits (the default) or tabular "
        "(fusedmlp.datasets.make_tabular: 200,000 rows, 32 features, 3 classes, from --seed)",
    )
    t.add_argument("--target", help="CSV target column (default: the last)")
    t.add_argument("--task", choices=("auto", "classification", "regression"), default="auto")
    t.add_argument("--hidden", default="128,64", help="hidden widths, comma separated")
    t.add_argument("--activation", default="relu")
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--batchnorm", action="store_true")
    t.add_argument(
        "--optimizer", default="adam", help="sgd, adam, rmsprop, adagrad, adadelta, nadam, ..."
    )
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument(
        "--schedule", default="constant", help="constant, cosine, step, exponential, ..."
    )
    t.add_argument("--epochs", type=int, help="default 30 (3 for --dataset tabular)")
    t.add_argument("--batch-size", type=int, help="default 32 (256 for --dataset tabular)")
    t.add_argument("--test-fraction", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.add_argument(
        "--precision",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="GEMM operand precision on the GPU (mixed precision, fp32 master weights)",
    )
    t.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel across the ranks of mpiexec -n N (--batch-size is per rank)",
    )
    t.add_argument("--save", help="write a checkpoint here")
    t.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    e = sub.add_parser("export", help="write a checkpoint's model as ONNX (the onnx extra)")
    e.add_argument("checkpoint", help="a checkpoint written by Trainer.save / train --save")
    e.add_argument("out", help="the .onnx file to write")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument(
        "--output",
        choices=("logits", "probabilities"),
        default="logits",
        help="logits (as model.predict) or the loss's output activation (as Trainer.predict)",
    )
    args = parser.parse_args(argv)
    try:
        return _train(args) if args.command == "train" else _export(args)
    except (ValueError, TypeError, ImportError) as exc:
        print(f"fusedmlp: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
