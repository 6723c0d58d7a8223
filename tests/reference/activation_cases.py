"""Activation inputs and hyper-parameters shared by tests/test_activation.py
and tests/test_alignment.py: the non-default hyper-parameters, the
learnable parameters of each parametric activation, and the inputs."""

from __future__ import annotations

import numpy as np

HYPER = {  # non-default values so the hyper-parameters are really exercised
    "leaky_relu": {"alpha": 0.07},
    "isru": {"alpha": 0.6},
    "isrlu": {"alpha": 1.7},
    "elu": {"alpha": 0.8},
    "soft_clipping": {"alpha": 2.5},
    "rrelu": {"lower": 0.1, "upper": 0.4},
    "soboleva_tanh": {"a": 1.2, "b": 0.8, "c": 1.1, "d": 0.9},
}


def make_params(name, n, rng):
    if name == "prelu":
        return rng.uniform(0.05, 0.5, size=(1, n))
    if name == "soft_exponential":
        return np.resize(np.array([-0.3, 0.4, 0.7]), (1, n)).astype(float)
    if name == "srelu":
        tl = rng.uniform(-1.0, -0.2, n)
        tr = rng.uniform(0.2, 1.5, n)
        return np.stack([tl, rng.uniform(0.01, 0.5, n), tr, rng.uniform(0.3, 2.0, n)])
    if name == "apl":
        s = 3
        return np.concatenate([rng.uniform(-0.5, 0.5, (s, n)), rng.uniform(-1.5, 1.5, (s, n))])
    return None


def make_inputs(name, shape, rng):
    x = rng.normal(0.0, 2.0, size=shape)
    if name == "soft_exponential":  # stay inside the alpha < 0 branch's domain
        x = np.clip(x, -2.5, 2.5)
    return x
