"""Command line: ``fusedmlp train`` / ``python -m fusedmlp train``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import ops
from .datasets import load_digits


def _train_demo(args: argparse.Namespace) -> int:
    """Trains a 64-64-10 tanh network on the bundled digits with the fused kernels."""
    X, y = load_digits()
    X = X / 16.0
    rng = np.random.default_rng(args.seed)
    idx = rng.permutation(len(X))
    n_test = len(X) // 5
    te, tr = idx[:n_test], idx[n_test:]
    W1 = (rng.normal(size=(64, 64)) / 8).astype(np.float32)
    b1 = np.zeros(64, np.float32)
    W2 = (rng.normal(size=(64, 10)) / 8).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    onehot = np.eye(10, dtype=np.float32)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(tr)
        total = 0.0
        for s in range(0, len(order), args.batch_size):
            bi = order[s : s + args.batch_size]
            xb, yb = X[bi], onehot[y[bi]]
            Z1, A1 = ops.dense_forward(xb, W1, b1, "tanh")
            Z2, _ = ops.dense_forward(A1, W2, b2)
            P = ops.softmax(Z2)
            total += float(-np.log(P[np.arange(len(bi)), y[bi]] + 1e-12).sum())
            g2 = ops.dense_backward(A1, W2, Z2, (P - yb) / len(bi))
            g1 = ops.dense_backward(xb, W1, Z1, g2["dX"], "tanh", need_dx=False)
            for p, g in ((W1, g1["dW"]), (b1, g1["db"]), (W2, g2["dW"]), (b2, g2["db"])):
                p -= args.lr * g
        if args.verbose:
            print(f"epoch {epoch + 1}/{args.epochs}  loss {total / len(tr):.4f}")
    _, A1 = ops.dense_forward(X[te], W1, b1, "tanh")
    Z2, _ = ops.dense_forward(A1, W2, b2)
    acc = float((Z2.argmax(axis=1) == y[te]).mean())
    print(f"held-out accuracy {acc:.4f} on {len(te)} digits ({time.perf_counter() - t0:.2f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fusedmlp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network (default: the bundled digits)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)
    return _train_demo(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
