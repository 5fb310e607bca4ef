"""The one decorator every per-agent kernel function uses.

Functions written with it are compiled by Numba for the CPU and, when called from a
``numba.cuda`` kernel, compiled again for the GPU from the same source: one algorithm, two
targets. Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) kernels run as Python and pass
simulator arrays that a CPU-compiled function cannot take, so there the functions stay plain
Python.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
from numba import config, njit, types
from numba.extending import overload

# Reassociation lets LLVM vectorize the dot products; no 'nnan'/'ninf': logs only ever see
# values clipped at MINVAL, and we keep IEEE semantics for everything else.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

MINVAL = 2.220446049250313e-16  # pymdp's floor before logs (float64 machine epsilon)


def minval_like(x):
    """MINVAL in the precision of ``x``, so a float32 log stays a (5x cheaper) float32 log."""
    return MINVAL


@overload(minval_like)
def _minval_like(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: np.float32(MINVAL)
    return lambda x: MINVAL


# Numba's on-disk cache checks only the decorated function's own file, not the functions it
# calls in other files: an edit to agent.py would leave cpu.py's cached kernel stale. So the cache
# lives in a directory named by a hash of every kernel source file. FA_GPU_NUMBA_CACHE=0 turns
# caching off (e.g. to inspect generated code).
_HERE = Path(__file__).resolve().parent
_SRC_HASH = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(_HERE.glob("*.py")))).hexdigest()[:16]
CACHE = os.environ.get("FA_GPU_NUMBA_CACHE", "1") != "0"


def prune_stale_caches(root: Path = _HERE / "__pycache__", keep: str = f"numba-{_SRC_HASH}") -> list:
    """Remove the cache directories of earlier kernel sources (``numba-<other hash>`` under
    ``root``), best effort; returns the names removed. Without this every edit of the kernels
    would leave its compiled code behind for good."""
    removed = []
    for d in root.glob("numba-*"):
        if d.name != keep and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


if CACHE and not os.environ.get("NUMBA_CACHE_DIR"):
    prune_stale_caches()


@contextlib.contextmanager
def _cache_dir():
    if os.environ.get("NUMBA_CACHE_DIR"):  # the user chose a place: respect it
        yield
        return
    saved = config.CACHE_DIR
    config.CACHE_DIR = str(_HERE / "__pycache__" / f"numba-{_SRC_HASH}")
    try:
        yield
    finally:
        config.CACHE_DIR = saved


def kernel_njit(**options):
    """``numba.njit`` with nogil, fastmath and the source-hash-keyed cache."""
    options = {"nogil": True, "fastmath": FASTMATH, "cache": CACHE, **options}

    def wrap(fn):
        with _cache_dir():
            return njit(**options)(fn)
    return wrap


def device_jit(fn=None, *, inline: bool = False):
    """``njit`` for CPU and CUDA callers; identity under the CUDA simulator.

    ``inline=True`` (for tiny helpers called in inner loops) inlines at Numba IR level: Numba
    does not inline across separately compiled functions, and a call per element or per row
    costs more than the arithmetic.
    """
    if fn is None:
        return lambda f: device_jit(f, inline=inline)
    if config.ENABLE_CUDASIM:
        @functools.wraps(fn)
        def simulated(*args):
            with np.errstate(over="ignore"):  # uint64 hashing wraps on purpose
                return fn(*args)
        return simulated
    return kernel_njit(inline="always" if inline else "never", _nrt=False)(fn)
