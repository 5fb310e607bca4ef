"""The one decorator every per-agent kernel function uses.

Functions written with it are compiled by Numba for the CPU and, when called from a
``numba.cuda`` kernel, compiled again for the GPU from the same source: one algorithm, two
targets. Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) kernels run as Python and pass
simulator arrays that a CPU-compiled function cannot take, so there the functions stay plain
Python.
"""
from __future__ import annotations

from numba import config, njit

# Reassociation lets LLVM vectorize the dot products; no 'nnan'/'ninf': logs only ever see
# values clipped at MINVAL, and we keep IEEE semantics for everything else.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

MINVAL = 2.220446049250313e-16  # pymdp's floor before logs (float64 machine epsilon)


def device_jit(fn):
    """``njit`` for CPU and CUDA callers; identity under the CUDA simulator."""
    if config.ENABLE_CUDASIM:
        return fn
    return njit(cache=True, nogil=True, fastmath=FASTMATH)(fn)
