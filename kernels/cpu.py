"""Fused CPU step over a range of agents: the one compiled, cached CPU kernel.

``step_range(state, model, tables, seed, work, row, lo, hi)`` steps agents ``lo <= n < hi`` in
tiles of up to ``LANES`` agents (:func:`tile_step`: every inner loop runs across a tile's
agents, so it vectorizes), with temporaries in ``work[row]``, so nothing is allocated per
agent. It releases the GIL: the numba backend runs it on disjoint agent ranges from the host
compute pool (``fa_gpu.runtime.pools``), one scratch row per thread. A whole step, a cohort and a
one-thread step run the same machine code and give bitwise the same numbers (lanes never mix,
and the kernel is compiled without reassociation, so a lane computes the same in the vector body
as in the remainder loop).

Arguments: ``state``, ``model``, ``tables`` are the named tuples of ``fa_gpu.schema`` (state:
``obs (N, M)`` int64, ``qs``/``prior``/``qs_prev`` ``(N, sum S_f)``, ``q_pi``/``neg_efe`` ``(N, P)``,
``actions``/``prev_actions`` ``(N, F)`` int64, ``t (N,)`` int64, the window of mmp/vmp and
categorical observations ``obs_window (N, H sum O_m)``, ``act_window (N, (H-1) F)`` int64,
``qs_window (N, H sum S_f)`` (``(1, 1)`` placeholders when absent), ``vfe (N,)``; model: packed
parameter rows; tables: int64 layout tables); ``seed`` uint64; ``work``
``(rows, Layout.lane_scratch_size)`` of the engine's float dtype.
"""
from __future__ import annotations

from .agent import agent_tail
from .columns import LANES, OPT_ALGO, OPT_CATEGORICAL, TILE_BEL, TILE_G, TILE_PI, TILE_ROWS
from .jit import LANE_FASTMATH, device_jit, kernel_njit
from .lanes import infer_rows, neg_efe_rows, policy_rows
from .window import window_rows


@device_jit(inline=True)
def tile_step(n0, W, st, md, tb, seed, w, wr):
    """The whole step of agents n0..n0+W-1 (W <= LANES): state inference (``lanes.infer_rows``,
    fpi; ``window.window_rows``, mmp, vmp and categorical observations), neg EFE and policy
    posterior across the tile's W lanes (the tile: the first ``TILE_ROWS * W`` elements of
    scratch row ``w[wr]``, seen as ``(TILE_ROWS, W)``), written back; then each agent's
    ``agent_tail`` (learning, action, empirical prior) with scratch past the tile."""
    tile = tb.tile
    t = w[wr, 0:tile[TILE_ROWS] * W].reshape((tile[TILE_ROWS], W))
    S, P = tb.S_off[tb.S_off.shape[0] - 1], tb.policies.shape[0]
    if tb.opts[OPT_ALGO] != 0 or tb.opts[OPT_CATEGORICAL]:
        window_rows(n0, W, st, md, tb, t)
    else:
        infer_rows(n0, W, st, md, tb, t)
    neg_efe_rows(n0, W, md, tb, t)
    policy_rows(n0, W, md, tb, t)
    bel, g0, pi = tile[TILE_BEL], tile[TILE_G], tile[TILE_PI]
    for l in range(W):
        n = n0 + l
        for s in range(S):
            st.qs[n, s] = t[bel + s, l]
        for p in range(P):
            st.neg_efe[n, p] = t[g0 + p, l]
            st.q_pi[n, p] = t[pi + p, l]
    tail = tile[TILE_ROWS] * W
    for l in range(W):
        agent_tail(n0 + l, st, md, tb, seed, w, wr, tail)


# No allocation inside (the caller owns ``work``), so no reference counting either: with it, every
# call would bump shared counters atomically, which costs more than the arithmetic.
@kernel_njit(_nrt=False, fastmath=LANE_FASTMATH)
def step_range(state, model, tables, seed, work, row, lo, hi):
    for n0 in range(lo, hi, LANES):
        tile_step(n0, min(LANES, hi - n0), state, model, tables, seed, work, row)
