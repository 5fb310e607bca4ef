"""Scalar twin of ``fa_gpu.rng`` for compiled kernels: the same SplitMix64-based key hash, so a
kernel draws bit for bit the number the NumPy reference draws for (seed, agent, step, draw)."""
from __future__ import annotations

import numpy as np

from .jit import device_jit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0


@device_jit
def mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@device_jit
def uniform(seed, agent, step, draw):
    """float64 in [0, 1) for the key; ``seed`` uint64, the others non-negative ints."""
    h = mix64(seed ^ _GOLDEN)
    h = mix64(h + np.uint64(agent))
    h = mix64(h + np.uint64(step))
    h = mix64(h + np.uint64(draw))
    return np.float64(h >> _S11) * _INV53
