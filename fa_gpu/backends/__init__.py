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
ENV_VAR = "FA_GPU_BACKEND"


def _probe(name: str):
    """(backend class or None, reason it cannot run or '')."""
    if name == "numpy":
        return NumpyBackend, ""
    if name == "numba":
        try:
            from .numba import NumbaBackend
        except ImportError as exc:  # numba missing or broken
            return None, f"numba is not importable ({exc})"
        return NumbaBackend, ""
    if name == "cuda":
        try:
            from .cuda import CudaBackend, unavailable_reason
        except ImportError as exc:
            return None, f"the cuda backend is not importable ({exc})"
        reason = unavailable_reason()
        return (None, reason) if reason else (CudaBackend, "")
    raise ValueError(f"backend must be one of 'auto', {', '.join(map(repr, ORDER))}; got {name!r}")


def availability() -> dict:
    """``{name: reason}`` for every backend; an empty reason means it can run."""
    return {name: _probe(name)[1] for name in ORDER}


def resolve(name: str = "auto"):
    """Backend instance for ``name`` (``FA_GPU_BACKEND`` wins when set).

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
        return cls(), {}
    skipped = {}
    for cand in ORDER:
        cls, reason = _probe(cand)
        if cls is not None:
            for k, why in skipped.items():
                log.info("fa_gpu backend auto: skipped %s: %s", k, why)
            return cls(), skipped
        skipped[cand] = reason
    raise RuntimeError(f"no backend can run: {skipped}")  # unreachable: numpy always runs
