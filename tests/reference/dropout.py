"""NumPy references for dropout and Gaussian noise: an independent Philox4x32-10 (Salmon et
al., SC'11) with fusedmlp's keying (csrc/common/philox.h), the inverted-dropout mask and
the Box-Muller normals, vectorized over element indices in uint64 arithmetic.

Keying: key = (seed lo, seed hi ^ step hi), counter = (block lo, block hi, layer, step lo);
element e of dropout takes word e % 4 of block e // 4; element e of the normal stream uses
words 2 (e % 2) and 2 (e % 2) + 1 of block e // 2.
"""

from __future__ import annotations

import numpy as np

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)


def philox_blocks(seed: int, step: int, layer: int, blocks: np.ndarray) -> np.ndarray:
    """The 4 Philox words of each block index in ``blocks``: uint32 array (len(blocks), 4)."""
    b = np.asarray(blocks, dtype=np.uint64)
    c0 = b & _MASK32
    c1 = b >> np.uint64(32)
    c2 = np.full_like(c0, layer & 0xFFFFFFFF)
    c3 = np.full_like(c0, step & 0xFFFFFFFF)
    k0 = seed & 0xFFFFFFFF
    k1 = ((seed >> 32) ^ (step >> 32)) & 0xFFFFFFFF
    for _ in range(10):
        p0 = _M0 * c0  # < 2^64: exact in uint64
        p1 = _M1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0 = (k0 + _W0) & 0xFFFFFFFF
        k1 = (k1 + _W1) & 0xFFFFFFFF
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def uniform_float(words: np.ndarray) -> np.ndarray:
    """Words to float32 uniforms in (0, 1): ((w >> 8) + 1/2) / 2^24."""
    return ((words >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)


def uniform_double(words: np.ndarray) -> np.ndarray:
    """Words to float64 uniforms in (0, 1): (w + 1/2) / 2^32."""
    return (words.astype(np.float64) + 0.5) * 2.0**-32


def keep_mask(shape, rate: float, seed: int, step: int, layer: int) -> np.ndarray:
    """Boolean keep mask of inverted dropout: element e kept iff u_e >= float32(rate)."""
    n = int(np.prod(shape))
    e = np.arange(n, dtype=np.uint64)
    lane = (e & np.uint64(3)).astype(np.intp)
    words = philox_blocks(seed, step, layer, e >> np.uint64(2))[np.arange(n), lane]
    return (uniform_float(words) >= np.float32(rate)).reshape(shape)


def dropout(x: np.ndarray, rate: float, seed: int, step: int, layer: int) -> np.ndarray:
    """y = x * mask / (1 - rate) in float64."""
    m = keep_mask(x.shape, rate, seed, step, layer)
    return np.where(m, x / (1.0 - rate), 0.0)


def normals(shape, seed: int, step: int, layer: int) -> np.ndarray:
    """Standard normals of the noise stream (Box-Muller, cosine branch), float64."""
    n = int(np.prod(shape))
    e = np.arange(n, dtype=np.uint64)
    blocks = philox_blocks(seed, step, layer, e >> np.uint64(1))
    lane = (e & np.uint64(1)).astype(np.intp) * 2
    u1 = uniform_double(blocks[np.arange(n), lane])
    u2 = uniform_double(blocks[np.arange(n), lane + 1])
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).reshape(shape)


def gaussian_noise(x: np.ndarray, stddev: float, seed: int, step: int, layer: int) -> np.ndarray:
    return x + stddev * normals(x.shape, seed, step, layer)
