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
#: the agent-lanes kernel's loops run across agents, elementwise: they vectorize without
#: reassociation, and without it (or reciprocals) a lane gives the same bits in a vector body as
#: in a scalar remainder loop, so tile widths and thread splits never change a number
LANE_FASTMATH = {"nsz", "contract"}

MINVAL = 2.220446049250313e-16  # pymdp's floor before logs (float64 machine epsilon)

#: Deterministic selection takes the lowest index whose probability is within this relative
#: tolerance of the maximum, by precision: exact ties then stay ties whatever the summation order
#: of a backend, while distinct probabilities (pymdp's argmax) are kept apart. float32 sums of
#: the same policy value differ by a few ulp between backends; float64 ones by ~1e-15.
TIE_RTOL = {"float32": 1e-5, "float64": 1e-12}


def minval_like(x):
    """MINVAL in the precision of ``x``, so a float32 log stays a (5x cheaper) float32 log."""
    return MINVAL


@overload(minval_like)
def _minval_like(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: np.float32(MINVAL)
    return lambda x: MINVAL


def cast_like(x, v):
    """``v`` in the precision of ``x``: float32 lanes stay float32 (a float literal is float64)."""
    return v


@overload(cast_like)
def _cast_like(x, v):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x, v: np.float32(v)
    return lambda x, v: np.float64(v)


def tie_rtol_like(x):
    """:data:`TIE_RTOL` for the precision of ``x``."""
    return TIE_RTOL["float32"] if np.asarray(x).dtype == np.float32 else TIE_RTOL["float64"]


@overload(tie_rtol_like)
def _tie_rtol_like(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        tol = np.float32(TIE_RTOL["float32"])
        return lambda x: tol
    tol = TIE_RTOL["float64"]
    return lambda x: tol


# Numba's on-disk cache checks only the decorated function's own file, not the functions it
# calls in other files: an edit to agent.py would leave cpu.py's cached kernel stale. So the cache
# lives in a directory named by a hash of every kernel source file. FA_GPU_NUMBA_CACHE=0 turns
# caching off (e.g. to inspect generated code).
_HERE = Path(__file__).resolve().parent
_SRC_HASH = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(_HERE.glob("*.py")))).hexdigest()[:16]
CACHE = os.environ.get("FA_GPU_NUMBA_CACHE", "1") != "0"


def cache_dir() -> Path:
    """Where the compiled kernels of this source version are cached."""
    if os.environ.get("NUMBA_CACHE_DIR"):  # the user chose a place: respect it
        return Path(os.environ["NUMBA_CACHE_DIR"])
    return _HERE / "__pycache__" / f"numba-{_SRC_HASH}"


def prune_stale_caches(root: Path = _HERE / "__pycache__", keep: str = f"numba-{_SRC_HASH}") -> list:
    """Remove the cache directories of earlier kernel sources (``numba-<other hash>`` under
    ``root``), best effort; returns the names removed. Called after a successful compile (and
    by hand), never at import: another process may still be running the older sources."""
    removed = []
    for d in root.glob("numba-*"):
        if d.name != keep and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed


def _marker(tag: str) -> Path:
    return cache_dir() / f"fa_gpu-{_SRC_HASH}-{tag}.compiled"


def is_compiled(tag: str) -> bool:
    """Whether the kernels for ``tag`` (e.g. ``"step-float32"``) were compiled into the cache by
    an earlier process (so this one loads them instead of compiling)."""
    return CACHE and _marker(tag).exists()


def mark_compiled(tag: str) -> None:
    """Record that the kernels for ``tag`` are in the cache (best effort)."""
    if not CACHE:
        return
    try:
        _marker(tag).parent.mkdir(parents=True, exist_ok=True)
        _marker(tag).touch()
    except OSError:
        pass


@contextlib.contextmanager
def _cache_dir():
    if os.environ.get("NUMBA_CACHE_DIR"):  # the user chose a place: respect it
        yield
        return
    saved = config.CACHE_DIR
    config.CACHE_DIR = str(cache_dir())
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


def device_jit(fn=None, *, inline: bool = False, fastmath=None):
    """``njit`` for CPU and CUDA callers; identity under the CUDA simulator.

    ``inline=True`` (for tiny helpers called in inner loops) inlines at Numba IR level: Numba
    does not inline across separately compiled functions, and a call per element or per row
    costs more than the arithmetic. An inlined function compiles with its caller's flags; one
    compiled on its own takes ``fastmath`` (default :data:`FASTMATH`).
    """
    if fn is None:
        return lambda f: device_jit(f, inline=inline, fastmath=fastmath)
    if config.ENABLE_CUDASIM:
        @functools.wraps(fn)
        def simulated(*args):
            with np.errstate(over="ignore"):  # uint64 hashing wraps on purpose
                return fn(*args)
        return simulated
    return kernel_njit(inline="always" if inline else "never", _nrt=False,
                       fastmath=FASTMATH if fastmath is None else fastmath)(fn)
