"""float64 NumPy reference of the radial basis function layer (deck 003):
``phi_nk = exp(-||x_n - mu_k||^2 / (2 sigma_k^2))``, written with explicit differences
``x_n - mu_k`` (no GEMM expansion, no clamp), and its backward by the chain rule one
intermediate at a time. Independent of the C++ kernels' ``||x||^2 + ||mu||^2 - 2 x.mu`` form.
"""

from __future__ import annotations

import numpy as np


def forward(X, centers, widths):
    """Returns (D, Phi): squared distances and features, both (batch, K)."""
    X = np.asarray(X, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.float64)
    diff = X[:, None, :] - centers[None, :, :]  # (batch, K, n_in)
    D = np.sum(diff * diff, axis=2)
    return D, np.exp(-D / (2.0 * widths**2))


def backward(X, centers, widths, grad_phi):
    """Returns (dX, dcenters, dwidths) for dL/dPhi = grad_phi."""
    X = np.asarray(X, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.float64)
    G = np.asarray(grad_phi, dtype=np.float64)
    diff = X[:, None, :] - centers[None, :, :]
    D = np.sum(diff * diff, axis=2)
    phi = np.exp(-D / (2.0 * widths**2))
    # dphi/dx_n = phi * (-(x_n - mu_k) / sigma_k^2); dphi/dmu_k = phi * (x_n - mu_k) / sigma_k^2
    a = G * phi / widths**2  # (batch, K)
    dX = -np.einsum("nk,nkj->nj", a, diff)
    dcenters = np.einsum("nk,nkj->kj", a, diff)
    # dphi/dsigma_k = phi * D / sigma_k^3
    dwidths = np.sum(G * phi * D, axis=0) / widths**3
    return dX, dcenters, dwidths


def network_forward(X, centers, log_widths, W, b):
    """An RBF layer (widths stored as log sigma, as the Network does) followed by a linear
    output layer: returns ``Phi @ W + b``."""
    _, phi = forward(X, centers, np.exp(log_widths))
    return phi @ np.asarray(W, dtype=np.float64) + np.asarray(b, dtype=np.float64)
