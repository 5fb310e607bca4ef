"""Consistent host copies of an engine's per-agent state, taken while another thread steps it.

A sequence lock on ``engine._epoch``: the engine bumps the epoch before and after every write of
the per-agent state (a step, a single method such as ``infer_states``, ``reset``), so an odd
epoch means a write is under way. A reader copies the arrays between two reads of the epoch
and keeps the copy only if both reads are the same even number; otherwise a step ran meanwhile
(the copy may be torn) and it copies again. The stepping thread never takes a lock or waits for
readers; readers pay with retries.
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["read_consistent", "take_snapshot"]

_BACKOFF_MAX_S = 1e-3  # readers poll an odd epoch at most this long apart


def read_consistent(engine, read):
    """``(read(), epoch)`` where ``read()`` ran entirely between two steps of ``engine``.

    ``read`` copies what it needs to the host (it may be called several times). Blocks while a
    step is in flight; a step started by ``step_async`` (on any thread) is finished here rather
    than waited for: its starter may itself be waiting for this reader (a ``host_fn`` that
    snapshots during ``run(..., pipeline=2)``). RuntimeError when the engine is unusable.
    """
    pause = 1e-6
    while True:
        engine._check_usable()
        e1 = engine._epoch
        if e1 & 1:
            if engine._pending is not None:
                engine.wait()
                continue
            time.sleep(pause)
            pause = min(2 * pause, _BACKOFF_MAX_S)
            continue
        out = read()
        if engine._epoch == e1:
            engine._check_usable()  # a write torn during the copy left the epoch even
            return out, e1


def _split(packed: np.ndarray, sizes) -> list:
    """``(N, sum S_f)`` host buffer -> F views ``(N, S_f)``."""
    return np.split(packed, np.cumsum(sizes)[:-1], axis=1)


def take_snapshot(engine) -> dict:
    """A host copy of every per-agent array of ``engine``, all from the same step.

    Returns a dict of NumPy arrays (private copies, float arrays in the engine's dtype):

    - ``qs``, ``prior``: lists of F arrays ``(N, S_f)``: posterior of the last step and the
      empirical prior for the next one;
    - ``q_pi``, ``neg_efe``: ``(N, P)``; ``actions``: ``(N, F)`` int64; ``obs``: ``(N, M)``
      int64 (the last step's input); ``t``: ``(N,)`` int64 (steps since each agent's reset);
    - ``vfe``: ``(N,)``; ``qs_window`` (mmp/vmp engines only): list of F arrays ``(N, T, S_f)``;
    - ``step_epoch``: int, the engine's epoch when copied: twice the number of writes since the
      engine was made (a step is one; so are ``reset`` and each single method).

    Safe from any thread while another steps the engine; see :func:`read_consistent`.
    """
    be, packed = engine._backend, engine._buffers.packed
    windowed = engine._buffers.qs_window is not None

    def read():
        return {k: be.to_host(packed[k]) for k in ("qs", "prior", "q_pi", "neg_efe", "actions", "obs", "t",
                                                   "vfe") + (("qs_window",) if windowed else ())}

    snap, epoch = read_consistent(engine, read)
    sizes = engine.config.num_states
    snap["qs"], snap["prior"] = _split(snap["qs"], sizes), _split(snap["prior"], sizes)
    if windowed:
        n, H = engine.config.n_agents, engine.config.window
        snap["qs_window"] = [w.reshape(n, H, -1) for w in _split(snap["qs_window"], [H * s for s in sizes])]
    snap["step_epoch"] = epoch
    return snap
