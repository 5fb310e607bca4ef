"""Backend registry and selection.

``resolve(name)`` turns ``"auto"``/``"numpy"``/``"numba"``/``"cuda"`` (or the ``FA_GPU_BACKEND``
environment variable, which overrides the argument) into a backend instance. ``auto`` takes the
first that can run, in the order cuda > numba > numpy, and records why it skipped the others; a
backend asked for by name that cannot run raises a ``RuntimeError`` with the reason.
"""
from __future__ import annotations

import logging
import os

from .numpy import NumpyBackend

log = logging.getLogger("fa_gpu")

ORDER = ("cuda", "numba", "numpy")
_OPTIONS = {"numba": ("num_threads",), "cuda": ("device", "cuda_path")}
ENV_VAR = "FA_GPU_BACKEND"


def _probe(name: str, for_auto: bool = False):
    """(backend class or None, reason it cannot run or ''). ``auto`` never picks the CUDA
    simulator: it is for checking kernels, and slow."""
    if name == "numpy":
        return NumpyBackend, ""
    if name == "numba":
        try:
            from numba import config

            from .numba import NumbaBackend
        except ImportError as exc:  # numba missing or broken
            return None, f"numba is not importable ({exc})"
        if config.ENABLE_CUDASIM:  # kernels.jit leaves the shared functions as Python there
            return None, "NUMBA_ENABLE_CUDASIM=1 is set: the CPU kernels cannot be compiled in this process"
        return NumbaBackend, ""
    if name == "cuda":
        try:
            from .cuda import CudaBackend, simulated, unavailable_reason
        except ImportError as exc:
            return None, f"the cuda backend is not importable ({exc})"
        reason = unavailable_reason()
        if not reason and for_auto and simulated():
            reason = "only Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): ask for 'cuda' by name"
        return (None, reason) if reason else (CudaBackend, "")
    raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, ORDER))}; got {name!r}")


def _make(cls, options):
    allowed = _OPTIONS.get(cls.name, ())
    return cls(**{k: v for k, v in options.items() if k in allowed and v is not None})


def availability() -> dict:
    """``{name: reason}`` for every backend; an empty reason means ``auto`` may pick it."""
    return {name: _probe(name, for_auto=True)[1] for name in ORDER}


def resolve(name: str = "auto", **options):
    """Backend instance for ``name`` (``FA_GPU_BACKEND`` wins when set); ``options`` go to the
    chosen backend's constructor when it takes them (``device`` and ``cuda_path`` for cuda,
    ``num_threads`` for numba).

    Returns ``(backend, skipped)`` where ``skipped`` maps each backend passed over by ``auto``
    to the reason.
    """
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced != "auto" and forced not in ORDER:
            raise ValueError(f"{ENV_VAR} must be one of 'auto', {', '.join(map(repr, ORDER))}; "
                             f"got {forced!r}")
        name = forced
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, got {type(name).__name__}")
    name = name.lower()
    if name != "auto":
        cls, reason = _probe(name)
        if cls is None:
            src = f" (forced by {ENV_VAR})" if forced else ""
            raise RuntimeError(f"backend {name!r}{src} cannot run: {reason}")
        return _make(cls, options), {}
    skipped = {}
    for cand in ORDER:
        cls, reason = _probe(cand, for_auto=True)
        if cls is not None:
            for k, why in skipped.items():
                log.info("fa_gpu backend auto: skipped %s: %s", k, why)
            return _make(cls, options), skipped
        skipped[cand] = reason
    raise RuntimeError(f"no backend can run: {skipped}")  # unreachable: numpy always runs
