"""Fused CPU step over a range of agents: the one compiled, cached CPU kernel.

``step_range(state, model, tables, seed, work, row, lo, hi)`` steps agents ``lo <= n < hi`` in
tiles of up to ``tables.tile[TILE_LANES]`` agents (``Layout.lanes``) (``kernels.lanes.tile_step``: every inner loop runs across a
tile's agents, so it vectorizes), with temporaries in ``work[row]``, so nothing is allocated per
agent. It releases the GIL: the numba backend runs it on disjoint agent ranges from the host
compute pool (``fa_gpu.runtime.pools``), one scratch row per thread. A whole step, a cohort and a
one-thread step run the same machine code and give bitwise the same numbers (lanes never mix,
and the kernel is compiled without reassociation, so a lane computes the same in the vector body
as in the remainder loop).

Arguments: ``state``, ``model``, ``tables`` are the named tuples of ``fa_gpu.schema`` (state:
``obs (N, M)`` int64, ``qs``/``prior``/``qs_prev`` ``(N, sum S_f)``, ``q_pi``/``neg_efe`` ``(N, P)``,
``actions``/``prev_actions`` ``(N, F)`` int64, ``t (N,)`` int64; model: packed parameter rows; tables:
int64 layout tables); ``seed`` uint64; ``work`` ``(rows, Layout.lane_scratch_size)`` of the engine's
float dtype.
"""
from __future__ import annotations

from .columns import TILE_LANES
from .jit import LANE_FASTMATH, kernel_njit
from .lanes import tile_step


# No allocation inside (the caller owns ``work``), so no reference counting either: with it, every
# call would bump shared counters atomically, which costs more than the arithmetic.
@kernel_njit(_nrt=False, fastmath=LANE_FASTMATH)
def step_range(state, model, tables, seed, work, row, lo, hi):
    lanes = tables.tile[TILE_LANES]
    for n0 in range(lo, hi, lanes):
        tile_step(n0, min(lanes, hi - n0), state, model, tables, seed, work, row)
