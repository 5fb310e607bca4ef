"""Counter-based random numbers keyed by (seed, agent, step, draw).

A draw is a pure function of its key, so every backend (NumPy, Numba CPU, Numba CUDA) gets the
same number for the same agent at the same step, whatever the order or thread it runs in, and no
generator state has to be stored or copied per agent. The hash is SplitMix64's finalizer applied
once per key component (a bijective 64-bit mixer with full avalanche); the uniform is the top 53
bits. ``kernels.rng`` holds the scalar twin used inside compiled kernels; the two are tested
equal bit for bit.
"""
from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def key_hash(seed, agent, step, draw, xp=np):
    """uint64 hash of the key; arguments are ints or integer arrays that broadcast together."""
    u64 = lambda v: xp.asarray(v).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(u64(seed) ^ GOLDEN)
        h = _mix(h + u64(agent))
        h = _mix(h + u64(step))
        return _mix(h + u64(draw))


def uniform(seed, agent, step, draw, xp=np):
    """float64 uniforms in [0, 1), one per broadcast element of (agent, step, draw)."""
    h = key_hash(seed, agent, step, draw, xp)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
