"""Fused CPU step over a range of agents: the compiled, cached CPU kernels.

``step_range(state, model, tables, seed, work, row, lo, hi)`` (fpi) and
``window_step_range(state, model, tables, seed, work, window, row, lo, hi)`` (mmp, vmp,
categorical observations) step agents ``lo <= n < hi`` in tiles of up
to ``Layout.lanes`` agents (``tables.tile[TILE_LANES]``; every inner loop runs across a tile's
agents, so it vectorizes), with temporaries in ``work[row]``, so nothing is allocated per
agent. It releases the GIL: the numba backend runs it on disjoint agent ranges from the host
compute pool (``fa_gpu.runtime.pools``), one scratch row per thread. A whole step, a cohort and a
one-thread step run the same machine code and give bitwise the same numbers (lanes never mix,
and the kernel is compiled without reassociation, so a lane computes the same in the vector body
as in the remainder loop).

Arguments: ``state``, ``model``, ``tables`` are the named tuples of ``fa_gpu.schema`` (state:
``obs (N, M)`` int64, ``qs``/``prior``/``qs_prev`` ``(N, sum S_f)``, ``q_pi``/``neg_efe`` ``(N, P)``,
``actions``/``prev_actions`` ``(N, F)`` int64, ``t (N,)`` int64; model: packed parameter rows;
tables: int64 layout tables; window: ``obs_window (N, H sum O_m)``, ``act_window (N, (H-1) F)``
int64, ``qs_window (N, H sum S_f)`` (``(1, 1)`` placeholders when absent), ``vfe (N,)``);
``seed`` uint64; ``work`` ``(rows, Layout.lane_scratch_size)`` of the engine's float dtype. The
window buffers travel in a bundle of their own: in the state bundle, four more arrays in every
call's argument struct made the fpi kernel 2x slower.
"""
from __future__ import annotations

from .agent import agent_tail, shift_window
from .columns import ALGO_FPI, OPT_ALGO, TILE_BEL, TILE_G, TILE_LANES, TILE_PI, TILE_ROWS
from .jit import LANE_FASTMATH, device_jit, kernel_njit
from .lanes import infer_rows, neg_efe_rows, policy_rows
from .window import window_rows


@device_jit(inline=True)
def tile_rows(W, tb, w, wr):
    """The tile of W lanes: the first ``TILE_ROWS * W`` elements of scratch row ``w[wr]``, seen
    as ``(TILE_ROWS, W)``."""
    rows = tb.tile[TILE_ROWS]
    return w[wr, 0:rows * W].reshape((rows, W))


@device_jit(inline=True)
def tile_finish(n0, W, st, md, tb, seed, w, wr, t, ow):
    """The rest of the step of agents n0..n0+W-1, from their posterior in the tile rows
    TILE_BEL..: neg EFE and policy posterior across the lanes, written back; then each agent's
    ``agent_tail`` (learning, action, fpi's empirical prior) with scratch past the tile (``ow``:
    its observation window argument)."""
    tile = tb.tile
    S, P = tb.S_off[tb.S_off.shape[0] - 1], tb.policies.shape[0]
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
        agent_tail(n0 + l, st, md, tb, seed, w, wr, tail, ow)


# No allocation inside (the caller owns ``work``), so no reference counting either: with it, every
# call would bump shared counters atomically, which costs more than the arithmetic. Two kernels,
# compiled each on its first use: the window sweep would double the compile time of every fpi user.
@kernel_njit(_nrt=False, fastmath=LANE_FASTMATH)
def step_range(state, model, tables, seed, work, row, lo, hi):
    """fpi from index observations (``lanes.infer_rows``)."""
    lanes = tables.tile[TILE_LANES]
    for n0 in range(lo, hi, lanes):
        W = min(lanes, hi - n0)
        t = tile_rows(W, tables, work, row)
        infer_rows(n0, W, state, model, tables, t)
        tile_finish(n0, W, state, model, tables, seed, work, row, t, state.qs)


@kernel_njit(_nrt=False, fastmath=LANE_FASTMATH)
def window_step_range(state, model, tables, seed, work, window, row, lo, hi):
    """mmp, vmp and categorical observations (``window.window_rows``; ``window``: the window
    bundle of ``fa_gpu.schema``); mmp and vmp shift each agent's windows afterwards."""
    lanes = tables.tile[TILE_LANES]
    for n0 in range(lo, hi, lanes):
        W = min(lanes, hi - n0)
        t = tile_rows(W, tables, work, row)
        window_rows(n0, W, state, window, model, tables, t)
        tile_finish(n0, W, state, model, tables, seed, work, row, t, window.obs_window)
        if tables.opts[OPT_ALGO] != ALGO_FPI:
            for n in range(n0, n0 + W):
                shift_window(n, state, window, model, tables)
