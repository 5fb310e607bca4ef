"""Fused CPU step over a range of agents: the one compiled, cached CPU kernel.

``step_range(state, model, tables, seed, work, row, lo, hi)`` runs ``agent.agent_step`` for agents
``lo <= n < hi`` with temporaries in ``work[row]``, so nothing is allocated per agent. It releases
the GIL: the numba backend runs it on disjoint agent ranges from the host compute pool
(``fa_gpu.runtime.pools``), one scratch row per thread. A whole step, a cohort and a one-thread
step therefore run the same machine code and give bitwise the same numbers.

Arguments: ``state``, ``model``, ``tables`` are the named tuples of ``fa_gpu.schema`` (state:
``obs (N, M)`` int64, ``qs``/``prior``/``qs_prev`` ``(N, sum S_f)``, ``q_pi``/``neg_efe`` ``(N, P)``,
``actions``/``prev_actions`` ``(N, F)`` int64, ``t (N,)`` int64; model: packed parameter rows; tables:
int64 layout tables); ``seed`` uint64; ``work`` ``(rows, scratch)`` of the engine's float dtype.
"""
from __future__ import annotations

from .agent import agent_step
from .jit import kernel_njit


# No allocation inside (the caller owns ``work``), so no reference counting either: with it, every
# call would bump shared counters atomically, which costs more than the arithmetic.
@kernel_njit(_nrt=False)
def step_range(state, model, tables, seed, work, row, lo, hi):
    for n in range(lo, hi):
        agent_step(n, state, model, tables, seed, work, row)
