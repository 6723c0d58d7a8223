"""The summation order the inference GEMM promises (csrc/cpu/gemm_rows.h), in NumPy.

``C[i, j] = (((0 + a_i0 b_0j) + a_i1 b_1j) + ... + a_i,k-1 b_k-1,j) + bias[j]``, every product
and every sum rounded on its own in the operands' dtype (NumPy's elementwise float32/float64
operations are correctly rounded and never fused), p ascending. Bit-identical to the kernel
by construction, whatever the CPU: used to check that order exactly, while the dense tests
check the values against float64.
"""

from __future__ import annotations

import numpy as np


def gemm_rows(A, B, bias=None):
    A = np.asarray(A)
    B = np.asarray(B)
    s = np.zeros((A.shape[0], B.shape[1]), dtype=A.dtype)
    for p in range(A.shape[1]):
        s = s + A[:, p : p + 1] * B[p]
    return s if bias is None else s + bias
