"""Central differences, (f(a + h e_i) - f(a - h e_i)) / 2h at every entry i, the independent
check of every analytic gradient (the references' and the kernels'). The truncation error is
O(h^2 f''') and the rounding error O(eps |f| / h); with h = 1e-6 in float64 the
rounding term dominates, about 1e-10 relative to |f|, far below the callers' tolerances."""

from __future__ import annotations

import numpy as np


def central_difference_grad(f, x, h=1e-6):
    """d f / d x of the scalar f at every entry of x."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def central_difference_grads(f, arrays, h=1e-6):
    """d f / d a for each array a in ``arrays`` (f takes them all), by central differences."""
    out = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [b.copy() for b in arrays]
            minus = [b.copy() for b in arrays]
            plus[k][idx] += h
            minus[k][idx] -= h
            g[idx] = (f(*plus) - f(*minus)) / (2 * h)
        out.append(g)
    return out


def central_difference_entries(f, p, indices, h=1e-6):
    """d f / d p[i] for each i in ``indices``: f takes no argument and reads the flat array p
    (a Network's parameter view), which is changed in place and restored entry by entry."""
    out = []
    for i in indices:
        old = p[i]
        p[i] = old + h
        lp = f()
        p[i] = old - h
        lm = f()
        p[i] = old
        out.append((lp - lm) / (2 * h))
    return out
