"""Prints a SHA-256 of fusedmlp's own CPU kernels' outputs on fixed inputs.

Run natively and under an emulated older CPU (tests/portable/check_portable.sh,
tests/test_portable.py): a portable build of ``_core`` must run there and print the same
digest, i.e. the AVX-512, AVX2 and baseline clones of the loops give the same bits. Only
kernels without a GEMM are included: OpenBLAS picks its own kernels per CPU and sums in a
different order on each.
"""

from __future__ import annotations

import hashlib
import sys

import fusedmlp as fm
import numpy as np


def outputs():
    rng = np.random.default_rng(2024)
    for dtype in (np.float32, np.float64):
        z = rng.normal(0.0, 3.0, (7, 45)).astype(dtype)
        z[0, :4] = [-100.0, 100.0, 0.0, -0.0]
        dy = rng.normal(size=z.shape).astype(dtype)
        for name in (
            "sigmoid",
            "tanh",
            "relu",
            "elu",
            "selu",
            "softplus",
            "silu",
            "gelu",
            "gelu_tanh",
            "softsign",
            "isrlu",
            "sinusoid",
            "gaussian",
            "softmax",
        ):
            yield fm.ops.activation(name, z)
            yield fm.ops.activation_backward(name, z, dy)[0]
        yield fm.ops.activation("prelu", z, np.full((1, 45), 0.2, dtype))
        labels = rng.integers(0, 45, 7)
        for loss, target in (
            ("mse", dy),
            ("binary_cross_entropy", (dy > 0).astype(dtype)),
            ("cross_entropy", labels),
        ):
            value, grad = fm.ops.loss(loss, z, target)
            yield np.array([value])
            yield grad
            yield fm.ops.loss_output(loss, z)
        gamma, beta = np.ones(45, dtype), np.zeros(45, dtype)
        rm, rv = np.zeros(45, dtype), np.ones(45, dtype)
        y, saved = fm.ops.batchnorm_forward(z, gamma, beta, rm, rv)
        yield y
        yield from (a for a in fm.ops.batchnorm_backward(z, dy, gamma, saved) if a is not None)
        yield fm.ops.dropout(z, 0.4, seed=3, step=1)
        for cls in (
            fm.optim.SGD,
            fm.optim.AdaGrad,
            fm.optim.RMSProp,
            fm.optim.AdaDelta,
            fm.optim.Adam,
            fm.optim.AdamW,
            fm.optim.NAdam,
            fm.optim.AdaMax,
            fm.optim.AdaBelief,
            fm.optim.Adafactor,
        ):
            params = [z.copy(), z[0].copy()]
            opt = cls()
            for t in range(3):
                opt.step(params, [dy * (t + 1), dy[1] * (t + 1)])
            yield from params


def main() -> None:
    h = hashlib.sha256()
    n = 0
    for a in outputs():
        h.update(np.ascontiguousarray(a).tobytes())
        n += 1
    print(n, h.hexdigest())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
