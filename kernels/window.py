"""Sequence inference in the fused kernels: mmp and vmp over each agent's window of past
observations and actions, and state inference from categorical observations (fpi as a one-step
window), across a tile's lanes: the agent-lanes CPU kernel's tiles (``kernels.cpu``), or one
agent per CUDA thread as a tile of one lane (:func:`window_agent_step`, ``kernels.cuda``).

The algorithm is ``fa_gpu.reference.infer_sequence`` / ``sequence_messages`` / ``free_energy``
as the numpy backend runs it (``_infer_sequence``). Every quantity of the window (a step's
belief ``q_k[s]``, a message, a step's summed log-likelihoods) is one tile row of W lanes, so
the sweeps vectorize across agents like the rest of ``kernels.lanes``.

Agents of one tile differ in their window: agent n's covers its last ``T_n = min(t_n + 1, H)``
steps. Windows are right-aligned: the newest step is slot H - 1 for every agent, and agent n's
slots ``H - T_n .. H - 1`` are live (its "first live slot" ``H - T_n`` gets the prior message,
pymdp 1.0.4's vmp leaves it out on an agent's first step). Every slot from the tile's earliest
first live slot on is computed for every lane; a message reaches a lane's beliefs only where
its slot (or edge) is live for that lane (a per-lane select, never a product with 0), and slots
that are not live are neither written back nor counted in the free energy. The action between
slots e and e + 1 (``act_window[:, e]``) differs per agent: once a step, each lane's transition
matrix of its action is copied into the tile (:func:`select_rows`; with mmp's parent-normalized
twin, and as log B for vmp), so the sweeps read them lane by lane. A model whose matrices would
not fit (``Layout.window_sel_rows`` is 0: ``fa_gpu.layout.SEL_MAX_BYTES``) runs each transition
product once per action present in the tile (the tile's shared B, or each lane's own row) and
each lane keeps the product of its own action.

Tile rows (``Layout.tile``, ``kernels.columns.TILE_W*``): beliefs of every slot ``TILE_WQ`` and
their next values ``TILE_WX`` (H x S each, slot-major; the two swap roles every sweep), summed
log-likelihoods per slot ``TILE_WLL`` (H x LL), actions per edge and factor ``TILE_WACT``,
message scratch ``TILE_WMSG``, per-lane first live slot / prior used / free energy
``TILE_WLANE``, the per-lane matrices ``TILE_WSEL``.

The order of operations follows the reference per agent (its sums may group differently, which
moves the last bits only).
"""
from __future__ import annotations

from .agent import agent_decide, dep_index, shift_window
from .columns import (A_DHI, A_DLO, A_J, A_LEAD, A_LL, A_O, A_OFF, ALGO_FPI, ALGO_MMP, ALGO_VMP,
                      B_DHI, B_DLO, B_J, B_OFF, B_S, B_U, C_OFF, OPT_ALGO, OPT_CATEGORICAL,
                      OPT_HORIZON, OPT_NUM_ITER, TILE_BEL, TILE_LP, TILE_RED, TILE_ROWS, TILE_WACT,
                      TILE_WB, TILE_WLANE, TILE_WLL, TILE_WMSG, TILE_WQ, TILE_WSEL, TILE_WX)
from .jit import LANE_FASTMATH, cast_like, device_jit, minval_like
from .lanes import joint_weight_rows, ll_rows, log_prior_rows, matvec_rows, softmax_rows, vlog_stable


@device_jit(fastmath=LANE_FASTMATH)
def window_ll_rows(n0, wn, md, tb, t, H, k0, wll, LL, red):
    """Rows wll + k*LL .. (slots k0..H-1) <- each slot's summed log-likelihoods of every
    modality group: ``sum_o obs_window[m][k, o] log A[m][o, ...]`` (as
    ``reference.obs_log_likelihoods``; a one-hot row gives log A's column exactly)."""
    W = t.shape[1]
    A_meta, logA, ow = tb.A_meta, md.logA, wn.obs_window
    wo = t[red + 2]
    for k in range(k0, H):
        for m in range(A_meta.shape[0]):
            O, J, aoff = A_meta[m, A_O], A_meta[m, A_J], A_meta[m, A_OFF]
            dst = wll + k * LL + A_meta[m, A_LL]
            if A_meta[m, A_LEAD] == m:
                for j in range(J):
                    d = t[dst + j]
                    for l in range(W):
                        d[l] = 0.0
            for o in range(O):
                col = H * A_meta[m, C_OFF] + k * O + o
                for l in range(W):
                    wo[l] = ow[n0 + l, col]
                for j in range(J):
                    d, i = t[dst + j], aoff + o * J + j
                    if logA.shape[0] > 1:
                        for l in range(W):
                            d[l] += wo[l] * logA[n0 + l, i]
                    else:
                        la = logA[0, i]
                        for l in range(W):
                            d[l] += wo[l] * la


@device_jit(fastmath=LANE_FASTMATH)
def joint_rows(t, qoff, S_off, deps, lo, hi, J, woff, skip):
    """``lanes.joint_weight_rows`` (the first of the weights' J rows), compiled once for the
    window's callers (it is inlined where it is called; the window sweep's calls are not hot
    enough to need that). Callers pass ``skip = lo - 1`` for none: a literal -1 would compile a
    second copy."""
    return joint_weight_rows(t, qoff, S_off, deps, lo, hi, J, woff, skip)


@device_jit
def sel_row(tb, e, f):
    """Tile row of factor f's per-lane transition matrix over edge e (TILE_WSEL block:
    edge-major, factor f at 2 sum_{g<f} S_g J_g), or -1 when the tile has none."""
    tile, B_meta = tb.tile, tb.B_meta
    rows = tile[TILE_WSEL + 1] - tile[TILE_WSEL]
    if rows == 0:
        return -1
    size, off = 0, 0
    for g in range(B_meta.shape[0]):
        if g == f:
            off = size
        size += 2 * B_meta[g, B_S] * B_meta[g, B_J]
    return tile[TILE_WSEL] + e * size + off


@device_jit(fastmath=LANE_FASTMATH)
def select_rows(n0, md, tb, t, e, f, sel, mmp):
    """Rows sel.. (S_f J_f) <- factor f's transition matrix ``(S_f, J_f)`` of each lane's action
    over edge e: B (mmp) or log max(B, MINVAL) (vmp); mmp with one dependency also rows
    sel + S_f J_f.. <- B normalized over the parent (``pair`` of
    ``reference.sequence_messages``). Once a step: the sweeps then read them lane by lane."""
    W = t.shape[1]
    B, B_meta = md.B, tb.B_meta
    Sf, J, boff = B_meta[f, B_S], B_meta[f, B_J], B_meta[f, B_OFF]
    SJ = Sf * J
    one = B_meta[f, B_DHI] - B_meta[f, B_DLO] == 1
    act = t[tb.tile[TILE_WACT] + e * B_meta.shape[0] + f]
    for l in range(W):
        r = n0 + l if B.shape[0] > 1 else 0
        base = boff + int(act[l]) * SJ
        for k in range(SJ):
            t[sel + k, l] = B[r, base + k] if mmp else vlog_stable(B[r, base + k])
        if mmp and one:
            for i in range(Sf):
                row = base + i * J
                z = B[r, row] - B[r, row]
                for g in range(J):
                    z += B[r, row + g]
                mv = minval_like(z)
                z = z if z > mv else mv
                for g in range(J):
                    t[sel + SJ + i * J + g, l] = B[r, row + g] / z


@device_jit(inline=True)
def lanes_taking(act, u):
    """How many lanes of the action row ``act`` (one value per lane) took action u."""
    cnt = 0
    for l in range(act.shape[0]):
        cnt += act[l] == u
    return cnt


@device_jit(fastmath=LANE_FASTMATH)
def forward_rows(n0, md, tb, t, e, f, q, logm, mmp, sel, out, tmp):
    """Rows out.. (S_f) <- factor f's transition over edge e (slot e -> e + 1) applied to the
    beliefs of slot e at rows q..: ``sum_j B[f][:, j, a] w(j)`` (``logm``: log B, vmp's message
    and the free energy's term), ``a`` each lane's action (row TILE_WACT + e*F + f). ``sel``:
    the edge's per-lane matrices (:func:`select_rows`; B for ``mmp``, else log B), or -1: each
    action's product from B, each lane keeping its own (rows tmp.. (S_f) scratch)."""
    W = t.shape[1]
    B, B_meta, F = md.B, tb.B_meta, tb.B_meta.shape[0]
    Sf, J, U = B_meta[f, B_S], B_meta[f, B_J], B_meta[f, B_U]
    wb = tb.tile[TILE_WB]
    lo = B_meta[f, B_DLO]
    x = joint_rows(t, q, tb.S_off, tb.B_deps, lo, B_meta[f, B_DHI], J, wb, lo - 1)
    if sel >= 0:
        for s in range(Sf):
            d = t[out + s]
            for l in range(W):
                d[l] = 0.0
            for j in range(J):
                m, w = t[sel + s * J + j], t[x + j]
                if logm and mmp:
                    for l in range(W):
                        d[l] += vlog_stable(m[l]) * w[l]
                else:
                    for l in range(W):
                        d[l] += m[l] * w[l]
        return
    act = t[tb.tile[TILE_WACT] + e * F + f]
    for u in range(U):
        cnt = lanes_taking(act, u)
        if cnt == 0:
            continue
        dst = out if cnt == W else tmp
        matvec_rows(B, n0, B_meta[f, B_OFF] + u * Sf * J, Sf, J, t, x, dst, logm, tb.sparse, -1)
        if cnt < W:
            for s in range(Sf):
                src, d = t[tmp + s], t[out + s]
                for l in range(W):
                    d[l] = src[l] if act[l] == u else d[l]


@device_jit(fastmath=LANE_FASTMATH)
def pair_rows(t, M, n0, moff, lanes, logm, J, Sg, kd, B_deps, S_off, wb, pair):
    """Rows pair.. (S_g) <- one row of a transition matrix (J_f entries) contracted with the
    co-parents' weights (rows wb..), dependency kd left open. The row: tile rows moff.. when
    ``lanes`` (per-lane matrices), else ``M[., moff + j]`` (each lane's agent's row of a
    per-agent M, row 0 of a shared one; ``logm``: log max(M, MINVAL))."""
    W = t.shape[1]
    for s in range(Sg):
        p = t[pair + s]
        for l in range(W):
            p[l] = 0.0
    for j in range(J):
        p, w = t[pair + dep_index(B_deps, kd, j, S_off)], t[wb + j]
        if lanes:
            m = t[moff + j]
            for l in range(W):
                p[l] += m[l] * w[l]
        elif M.shape[0] > 1:
            if logm:
                for l in range(W):
                    p[l] += vlog_stable(M[n0 + l, moff + j]) * w[l]
            else:
                for l in range(W):
                    p[l] += M[n0 + l, moff + j] * w[l]
        else:
            c = vlog_stable(M[0, moff + j]) if logm else M[0, moff + j]
            if c == 0.0:
                continue
            for l in range(W):
                p[l] += c * w[l]


@device_jit(fastmath=LANE_FASTMATH)
def backward_rows(n0, md, tb, t, e, f, kd, q, qn, mmp, sel, out, tmp, pair, red):
    """Rows out.. (S_g) <- the message of factor f's transition over edge e to its dependency
    kd (factor g), from the beliefs of slot e (rows q..) and of f at slot e + 1 (rows qn..), as
    ``reference.sequence_messages``: mmp ``0.5 log sum_i q'_f[i] pair[i, g]`` with
    ``pair[i, :]`` the transition contracted with g's co-parents, normalized; vmp
    ``sum_i q'_f[i] sum_j log B[i, j] (co-parents' weights)``. Each lane's own action: from the
    per-lane matrices ``sel`` (:func:`select_rows`), or (-1) from B once per action present,
    each lane keeping its own. Rows tmp.., pair.. (S_g each) and row red + 2 are scratch."""
    W = t.shape[1]
    B, B_meta, B_deps, S_off = md.B, tb.B_meta, tb.B_deps, tb.S_off
    F = B_meta.shape[0]
    Sf, J, U, boff = B_meta[f, B_S], B_meta[f, B_J], B_meta[f, B_U], B_meta[f, B_OFF]
    g = B_deps[kd, 0]
    Sg = S_off[g + 1] - S_off[g]
    wb = tb.tile[TILE_WB]
    # one dependency and per-lane rows: pair[i, :] is the matrix's row i itself (normalized
    # once, by select_rows)
    single = sel >= 0 and B_meta[f, B_DHI] - B_meta[f, B_DLO] == 1
    if not single:  # kd left out (skip >= lo): the co-parents' weights are always written to wb
        joint_rows(t, q, S_off, B_deps, B_meta[f, B_DLO], B_meta[f, B_DHI], J, wb, kd)
    act, z = t[tb.tile[TILE_WACT] + e * F + f], t[red + 2]
    for u in range(U if sel < 0 else 1):
        cnt = W if sel >= 0 else lanes_taking(act, u)
        if cnt == 0:
            continue
        dst = out if cnt == W else tmp
        for s in range(Sg):
            d = t[dst + s]
            for l in range(W):
                d[l] = 0.0
        for i in range(Sf):
            base = boff + (u * Sf + i) * J
            a = t[qn + S_off[f] + i]
            if single:
                m0 = sel + Sf * J if mmp else sel
                for s in range(Sg):
                    m, d = t[m0 + i * J + s], t[dst + s]
                    for l in range(W):
                        d[l] += a[l] * m[l]
                continue
            lanes = sel >= 0
            pair_rows(t, B, n0, sel + i * J if lanes else base, lanes, not mmp, J, Sg, kd, B_deps,
                      S_off, wb, pair)
            if mmp:  # q'_f[i] / sum_g pair[i, g]: the pair normalized over the parent
                for l in range(W):
                    z[l] = 0.0
                for s in range(Sg):
                    p = t[pair + s]
                    for l in range(W):
                        z[l] += p[l]
                mv = minval_like(z[0])
                for l in range(W):
                    z[l] = a[l] / (z[l] if z[l] > mv else mv)
            else:
                for l in range(W):
                    z[l] = a[l]
            for s in range(Sg):
                p, d = t[pair + s], t[dst + s]
                for l in range(W):
                    d[l] += z[l] * p[l]
        if cnt < W:
            for s in range(Sg):
                src, d = t[tmp + s], t[out + s]
                for l in range(W):
                    d[l] = src[l] if act[l] == u else d[l]
    if mmp:
        h = cast_like(t[out, 0], 0.5)
        for s in range(Sg):
            d = t[out + s]
            for l in range(W):
                d[l] = h * vlog_stable(d[l])


@device_jit(fastmath=LANE_FASTMATH)
def window_rows(n0, W, st, wn, md, tb, t):
    """``wn``: the window bundle (``obs_window``, ``act_window``, ``qs_window``, ``vfe``).
    State inference over each agent's window (mmp, vmp; fpi from categorical observations:
    a one-step window): tile rows TILE_BEL.. (S) <- the newest step's posterior; ``qs_window``
    (live slots; mmp, vmp) and ``vfe`` of the tile's agents written. Index observations first enter the
    window's newest slot of ``obs_window`` as one-hot rows (as the numpy backend does). From
    uniform beliefs, ``num_iter`` parallel sweeps ``q_k = softmax(forward + backward +
    likelihood)`` over all factors and slots (as ``reference.infer_sequence``); fpi with one
    factor needs one."""
    tile, opts, S_off, A_meta, B_meta = tb.tile, tb.opts, tb.S_off, tb.A_meta, tb.B_meta
    F, M = S_off.shape[0] - 1, A_meta.shape[0]
    S = S_off[F]
    H, algo = opts[OPT_HORIZON], opts[OPT_ALGO]
    mmp = algo == ALGO_MMP
    qb, xb, wll, wact = tile[TILE_WQ], tile[TILE_WX], tile[TILE_WLL], tile[TILE_WACT]
    msg, red, lp, lane = tile[TILE_WMSG], tile[TILE_RED], tile[TILE_LP], tile[TILE_WLANE]
    S_max = (tile[TILE_WMSG + 1] - msg) // 3
    tmp, pair = msg + S_max, msg + 2 * S_max
    LL = (tile[TILE_WLL + 1] - wll) // H
    start, usep, v = t[lane], t[lane + 1], t[lane + 2]
    # each lane's first live slot (T_n = min(t_n + 1, H)) and whether its prior enters
    k0 = H - 1
    for l in range(W):
        tn = st.t[n0 + l]
        k = H - tn - 1 if tn + 1 < H else 0
        start[l] = k
        usep[l] = 0.0 if algo == ALGO_VMP and tn == 0 else 1.0
        k0 = k if k < k0 else k0
    ow = wn.obs_window
    if not opts[OPT_CATEGORICAL]:
        for l in range(W):
            n = n0 + l
            for m in range(M):
                O = A_meta[m, A_O]
                base = H * A_meta[m, C_OFF] + (H - 1) * O
                for o in range(O):
                    ow[n, base + o] = 1.0 if o == st.obs[n, m] else 0.0
    for e in range(k0, H - 1):  # actions between slots as lane rows (edges not live: action 0)
        for f in range(F):
            a = t[wact + e * F + f]
            for l in range(W):
                u = wn.act_window[n0 + l, e * F + f]
                a[l] = u if u > 0 else 0
    for e in range(k0, H - 1):
        for f in range(F):
            sel = sel_row(tb, e, f)
            if sel >= 0:
                select_rows(n0, md, tb, t, e, f, sel, mmp)
    window_ll_rows(n0, wn, md, tb, t, H, k0, wll, LL, red)
    log_prior_rows(st.prior, n0, t, lp, S)
    for k in range(k0, H):
        for f in range(F):
            u0 = 1.0 / (S_off[f + 1] - S_off[f])
            for s in range(S_off[f], S_off[f + 1]):
                d = t[qb + k * S + s]
                for l in range(W):
                    d[l] = u0
    zero = cast_like(t[lane, 0], 0.0)
    num_iter = 1 if algo == ALGO_FPI and F == 1 else opts[OPT_NUM_ITER]
    for _ in range(num_iter):
        for k in range(k0, H):
            # the prior at each lane's first live slot (mmp: half of it, but in a 1-step window)
            half, kf = cast_like(zero, 0.5 if mmp and k < H - 1 else 1.0), cast_like(zero, k)
            for s in range(S):
                d, p = t[xb + k * S + s], t[lp + s]
                for l in range(W):
                    d[l] = half * p[l] if start[l] == kf and usep[l] > zero else zero
        for e in range(k0, H - 1):
            half, ef = cast_like(zero, 0.5 if mmp and e + 1 < H - 1 else 1.0), cast_like(zero, e)
            for f in range(F):
                sel = sel_row(tb, e, f)
                forward_rows(n0, md, tb, t, e, f, qb + e * S, not mmp, mmp, sel, msg, tmp)
                for s in range(S_off[f + 1] - S_off[f]):
                    src, d = t[msg + s], t[xb + (e + 1) * S + S_off[f] + s]
                    if mmp:
                        for l in range(W):
                            d[l] += half * vlog_stable(src[l]) if ef >= start[l] else zero
                    else:
                        for l in range(W):
                            d[l] += src[l] if ef >= start[l] else zero
                for kd in range(B_meta[f, B_DLO], B_meta[f, B_DHI]):
                    g = tb.B_deps[kd, 0]
                    backward_rows(n0, md, tb, t, e, f, kd, qb + e * S, qb + (e + 1) * S, mmp, sel,
                                  msg, tmp, pair, red)
                    for s in range(S_off[g + 1] - S_off[g]):
                        src, d = t[msg + s], t[xb + e * S + S_off[g] + s]
                        for l in range(W):
                            d[l] += src[l] if ef >= start[l] else zero
        for k in range(k0, H):
            ll_rows(A_meta, tb.A_deps, S_off, t, qb + k * S, xb + k * S, wll + k * LL, red)
        for k in range(k0, H):
            for f in range(F):
                softmax_rows(t, xb + k * S + S_off[f], xb + k * S + S_off[f + 1], red)
        qb, xb = xb, qb
    # the free energy of the window's posterior (reference.free_energy), live slots only. A
    # masked accumulation selects the updated sum, never the term: as a select of the term, the
    # vector body fuses product and sum (contract) and the scalar remainder loop, whose branch
    # splits them, does not, and a lane's bits would depend on its position in the tile
    logB = H > 1  # True wherever it is used (edges exist); a plain bool: one compiled forward_rows
    for l in range(W):
        v[l] = 0.0
    for k in range(k0, H):
        kf = cast_like(zero, k)
        for s in range(S):
            q = t[qb + k * S + s]
            for l in range(W):
                nv = v[l] + q[l] * vlog_stable(q[l])
                v[l] = nv if kf >= start[l] else v[l]
    for s in range(S):
        p = t[lp + s]
        for l in range(W):
            v[l] -= t[qb + int(start[l]) * S + s, l] * p[l]
    wb = tile[TILE_WB]
    for k in range(k0, H):
        kf = cast_like(zero, k)
        for m in range(M):
            if A_meta[m, A_LEAD] != m:
                continue
            J = A_meta[m, A_J]
            lo = A_meta[m, A_DLO]
            xw = joint_rows(t, qb + k * S, S_off, tb.A_deps, lo, A_meta[m, A_DHI], J, wb, lo - 1)
            for j in range(J):
                x, w = t[wll + k * LL + A_meta[m, A_LL] + j], t[xw + j]
                for l in range(W):
                    nv = v[l] - x[l] * w[l]
                    v[l] = nv if kf >= start[l] else v[l]
    for e in range(k0, H - 1):
        ef = cast_like(zero, e)
        for f in range(F):
            forward_rows(n0, md, tb, t, e, f, qb + e * S, logB, mmp, sel_row(tb, e, f), msg, tmp)
            for s in range(S_off[f + 1] - S_off[f]):
                x, q = t[msg + s], t[qb + (e + 1) * S + S_off[f] + s]
                for l in range(W):
                    nv = v[l] - q[l] * x[l]
                    v[l] = nv if ef >= start[l] else v[l]
    # write back: the newest step's posterior to the tile, the live slots to qs_window
    bel = tile[TILE_BEL]
    for s in range(S):
        src, d = t[qb + (H - 1) * S + s], t[bel + s]
        for l in range(W):
            d[l] = src[l]
    for l in range(W):
        n = n0 + l
        wn.vfe[n] = v[l]
        if algo == ALGO_FPI:  # no qs_window (a placeholder): the posterior is qs
            continue
        for f in range(F):
            Sf = S_off[f + 1] - S_off[f]
            for k in range(int(start[l]), H):
                for s in range(Sf):
                    wn.qs_window[n, H * S_off[f] + k * Sf + s] = t[qb + k * S + S_off[f] + s, l]


@device_jit
def window_agent_step(n, st, wn, md, tb, seed, w, wr):
    """Agent n's whole step (mmp, vmp; fpi from categorical observations) as a tile of one lane:
    :func:`window_rows` on the tile ``(TILE_ROWS, 1)`` seen in w's column wr of ``w.T`` (so
    ``w[wr, r]`` is tile row r: the CUDA backend's column-major scratch keeps a warp's tile rows
    side by side), then ``agent.agent_decide`` from its posterior with w[wr] as scratch, then
    ``agent.shift_window`` (mmp, vmp). The CUDA window kernel's body (``kernels.cuda``)."""
    t = w.T[0:tb.tile[TILE_ROWS], wr:wr + 1]
    window_rows(n, 1, st, wn, md, tb, t)
    bel = tb.tile[TILE_BEL]
    for s in range(tb.S_off[tb.S_off.shape[0] - 1]):
        st.qs[n, s] = t[bel + s, 0]
    agent_decide(n, st, md, tb, seed, w, wr, wn.obs_window)
    if tb.opts[OPT_ALGO] != ALGO_FPI:
        shift_window(n, st, wn, md, tb)
