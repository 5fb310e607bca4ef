"""The CPU step across agents: tiles of up to ``Layout.lanes`` agents (32 to 256, the most whose
tile fits in ``kernels.columns.TILE_BYTES``), every inner loop over the tile's lanes.

One agent's step is a few thousand flops spread over loops of length 2-5 (states, outcomes,
actions) plus ``log``/``exp`` calls: as scalar code (``kernels.agent``, one agent at a time) it
runs ~10x below this CPU's scalar peak, and LLVM cannot vectorize it. Here the same algorithm
runs on a tile of agents at once: each quantity of the step (a belief ``q_f[s]``, a predicted
outcome, a partial EFE sum) is one tile row of values, one per agent, and every
innermost loop runs over the lanes, so LLVM emits one vector instruction per operation, and
``vmath``'s polynomial ``log``/``exp`` vectorize with it. The tile lives in the calling thread's
scratch row (``work[row]``, row offsets from ``Layout.tile``, see ``kernels.columns.TILE_*``).

Divergence between agents is handled inside the tile: observations select their log-likelihood
columns per lane (a gather at the start of state inference); policies, and so the actions of
the roll-out, are the same for every agent; per-agent (learned) parameters are read per lane,
shared ones once per tile row. A range's last tile holds what is left (N, a cohort or a chunk
not a multiple of the lanes): a narrower tile, down to one agent.
Lanes never mix, so an agent's numbers do not depend on which tile or lane it ran in: whole
steps, cohorts and any thread split agree bitwise.

Sequence inference (mmp, vmp) and categorical observations replace ``infer_rows`` by the window
sweep of ``kernels.window`` (built on the row helpers here); the tile's step lives in
``kernels.cpu``, one kernel for each kind of state inference, so this module does not import the
window's.

What does not vectorize across agents stays per agent, in ``kernels.agent.agent_tail``, shared
with the one-agent kernel: learning, action selection (a choice per agent), the empirical prior
(each agent's own action; mmp, vmp: the window's shift), bookkeeping. They cost O(P + S J) per
agent against the roll-out's O(P T S J).

The GPU kernel (``kernels.cuda``) keeps ``kernels.agent.agent_step``, one agent per thread: on
a GPU the lanes are the warp's threads, and a tile per thread would hold 16 agents' rows in one
thread's local memory.

Math and order of operations follow ``kernels.agent`` (and ``fa_gpu.reference``); the sums run
in the same order per agent, with ``vmath``'s ``log``/``exp`` (a few ulp from libm's).
"""
from __future__ import annotations

from .agent import dep_index
from .columns import (A_DHI, A_DLO, A_J, A_LEAD, A_LL, A_O, A_OFF, A_SP, B_DHI, B_DLO, B_J, B_NEXT,
                      B_OFF, B_S, B_SP, C_OFF, H_OFF, OPT_NUM_ITER, OPT_STATE_INFO, OPT_UTILITY, OPT_WA,
                      OPT_WB, TILE_ACC, TILE_BEL, TILE_G, TILE_LLS, TILE_LP, TILE_LQ, TILE_PI,
                      TILE_Q, TILE_QO, TILE_RED, TILE_VAL, TILE_WB)
from .jit import LANE_FASTMATH, device_jit, minval_like
from .vmath import vexp, vlog


@device_jit(inline=True)
def vlog_stable(x):
    m = minval_like(x)
    return vlog(x if x > m else m)


@device_jit(fastmath=LANE_FASTMATH)
def softmax_rows(t, lo, hi, red):
    """Rows lo..hi-1 <- their softmax, lane by lane (max subtracted first); rows red, red+1 are
    scratch."""
    W = t.shape[1]
    mx, sm = t[red], t[red + 1]
    v = t[lo]
    for l in range(W):
        mx[l] = v[l]
        sm[l] = 0.0
    for i in range(lo + 1, hi):
        v = t[i]
        for l in range(W):
            mx[l] = v[l] if v[l] > mx[l] else mx[l]
    for i in range(lo, hi):
        v = t[i]
        for l in range(W):
            e = vexp(v[l] - mx[l])
            v[l] = e
            sm[l] += e
    for i in range(lo, hi):
        v = t[i]
        for l in range(W):
            v[l] = v[l] / sm[l]


@device_jit(inline=True)
def weights_rows(t, qoff, S_off, deps, lo, hi, J, woff, skip):
    """Rows woff..woff+J-1 <- joint-state weights of beliefs at row qoff, for the dependency
    list deps[lo:hi] (as ``agent.weights``), leaving dependency ``skip`` out of the products
    (``skip < lo``: none; with one left out, row j multiplies the other dependencies' beliefs at
    their indices in j, 1 when there are none). One dependency and none left out: callers read
    the belief rows themselves (:func:`joint_weight_rows`)."""
    W = t.shape[1]
    if skip < lo and hi - lo == 2:
        d0, d1 = deps[lo, 0], deps[lo + 1, 0]
        S0, S1 = S_off[d0 + 1] - S_off[d0], S_off[d1 + 1] - S_off[d1]
        for a in range(S0):
            qa = t[qoff + S_off[d0] + a]
            for b in range(S1):
                qb, dst = t[qoff + S_off[d1] + b], t[woff + a * S1 + b]
                for l in range(W):
                    dst[l] = qa[l] * qb[l]
        return
    for j in range(J):
        dst = t[woff + j]
        for l in range(W):
            dst[l] = 1.0
        for k in range(lo, hi):
            if k == skip:
                continue
            q = t[qoff + S_off[deps[k, 0]] + dep_index(deps, k, j, S_off)]
            for l in range(W):
                dst[l] *= q[l]


@device_jit(inline=True)
def joint_weight_rows(t, qoff, S_off, deps, lo, hi, J, woff, skip):
    """The first of J rows holding the joint-state weights of the beliefs at row qoff for the
    dependency list deps[lo:hi], dependency ``skip`` left out (``skip < lo``: none): one
    dependency's weights are its belief rows themselves (no copy); otherwise they are written to
    rows woff.. (:func:`weights_rows`)."""
    if skip < lo and hi - lo == 1:
        return qoff + S_off[deps[lo, 0]]
    weights_rows(t, qoff, S_off, deps, lo, hi, J, woff, skip)
    return woff


@device_jit(fastmath=LANE_FASTMATH)
def matvec_rows(M, n0, moff, O, J, t, x, out, logm, sparse, plan):
    """Rows out..out+O-1 <- sum_j M[., moff + o*J + j] * row x+j (``logm``: log max(M, MINVAL)
    in M's place): M's row 0 when shared, each lane's agent's row when per-agent. A shared M with
    a product plan (``plan >= 0``: its offset in ``sparse``, see ``kernels.columns``; not with
    ``logm``; plans exist only for matrices no agent learns, so a per-agent M of one row, N = 1,
    has none) costs its columns' bases, its rows and its deviations from them; without one it
    goes four output rows at a time (each source row loaded once for four products), its
    all-zero quadruples skipped (adding 0 * x changes no bit)."""
    W = t.shape[1]
    if M.shape[0] == 1 and plan >= 0 and not logm:
        nb = sparse[plan]
        starts = plan + 1 + 2 * nb
        first = starts + O + 1  # the entries
        acc = t[out]
        for l in range(W):
            acc[l] = 0.0
        for k in range(nb):
            j, r = sparse[plan + 1 + 2 * k], sparse[plan + 2 + 2 * k]
            m, src = M[0, moff + r * J + j], t[x + j]
            for l in range(W):
                acc[l] += m * src[l]
        for o in range(1, O):
            dst = t[out + o]
            for l in range(W):
                dst[l] = acc[l]
        for o in range(O):
            dst = t[out + o]
            for e in range(sparse[starts + o], sparse[starts + o + 1]):
                j, r = sparse[first + 2 * e], sparse[first + 2 * e + 1]
                m = M[0, moff + o * J + j]
                if r >= 0:
                    m -= M[0, moff + r * J + j]
                src = t[x + j]
                for l in range(W):
                    dst[l] += m * src[l]
        return
    for o in range(O):
        dst = t[out + o]
        for l in range(W):
            dst[l] = 0.0
    if M.shape[0] > 1:
        for o in range(O):
            dst = t[out + o]
            for j in range(J):
                src, i = t[x + j], moff + o * J + j
                if logm:
                    for l in range(W):
                        dst[l] += vlog_stable(M[n0 + l, i]) * src[l]
                else:
                    for l in range(W):
                        dst[l] += M[n0 + l, i] * src[l]
        return
    o = 0
    while o + 4 <= O:
        d0, d1, d2, d3 = t[out + o], t[out + o + 1], t[out + o + 2], t[out + o + 3]
        for j in range(J):
            i = moff + o * J + j
            m0, m1, m2, m3 = M[0, i], M[0, i + J], M[0, i + 2 * J], M[0, i + 3 * J]
            if logm:
                m0, m1, m2, m3 = vlog_stable(m0), vlog_stable(m1), vlog_stable(m2), vlog_stable(m3)
            if m0 == 0.0 and m1 == 0.0 and m2 == 0.0 and m3 == 0.0:
                continue
            src = t[x + j]
            for l in range(W):
                v = src[l]
                d0[l] += m0 * v
                d1[l] += m1 * v
                d2[l] += m2 * v
                d3[l] += m3 * v
        o += 4
    while o < O:
        dst = t[out + o]
        for j in range(J):
            m = M[0, moff + o * J + j]
            if logm:
                m = vlog_stable(m)
            if m == 0.0:
                continue
            src = t[x + j]
            for l in range(W):
                dst[l] += m * src[l]
        o += 1


# -- state inference -------------------------------------------------------------------------
@device_jit(fastmath=LANE_FASTMATH)
def log_prior_rows(prior, n0, t, out, S):
    """Rows out..out+S-1 <- log max(prior, MINVAL) of the tile's agents."""
    W = t.shape[1]
    for s in range(S):
        dst = t[out + s]
        for l in range(W):
            dst[l] = vlog_stable(prior[n0 + l, s])


@device_jit(inline=True)
def gather_ll(obs, logA, A_meta, m, n0, t, dst, add):
    """Rows dst..dst+J_m-1 <- (or += when ``add``) log A[m] at each lane's agent's observation:
    the column block ``log A[m][o_n, ...]``, a gather per lane (row n of a per-agent log A)."""
    J, aoff = A_meta[m, A_J], A_meta[m, A_OFF]
    for l in range(t.shape[1]):
        a = n0 + l
        base, r = aoff + obs[a, m] * J, a if logA.shape[0] > 1 else 0
        for j in range(J):
            if add:
                t[dst + j, l] += logA[r, base + j]
            else:
                t[dst + j, l] = logA[r, base + j]


@device_jit(fastmath=LANE_FASTMATH)
def ll_rows(A_meta, A_deps, S_off, t, q, lq, lls, red):
    """Rows lq.. (S) += every modality group's summed log-likelihoods (rows lls + A_LL, J_m
    each) contracted with the beliefs at rows q.. on all its dependencies but the one receiving
    (one sweep's likelihood term, as ``agent.infer_states``); row red + 2 is scratch."""
    W = t.shape[1]
    for m in range(A_meta.shape[0]):
        if A_meta[m, A_LEAD] != m:
            continue
        J, lo, hi = A_meta[m, A_J], A_meta[m, A_DLO], A_meta[m, A_DHI]
        base = lls + A_meta[m, A_LL]
        if hi - lo == 1:  # no co-parents: the log-likelihood itself
            o0 = lq + S_off[A_deps[lo, 0]]
            for j in range(J):
                ll, dst = t[base + j], t[o0 + j]
                for l in range(W):
                    dst[l] += ll[l]
            continue
        if hi - lo == 2:
            o0, o1 = S_off[A_deps[lo, 0]], S_off[A_deps[lo + 1, 0]]
            S0, S1 = S_off[A_deps[lo, 0] + 1] - o0, S_off[A_deps[lo + 1, 0] + 1] - o1
            for a in range(S0):
                qa, la = t[q + o0 + a], t[lq + o0 + a]
                for b in range(S1):
                    ll = t[base + a * S1 + b]
                    qb, lb = t[q + o1 + b], t[lq + o1 + b]
                    for l in range(W):
                        la[l] += ll[l] * qb[l]
                        lb[l] += ll[l] * qa[l]
            continue
        prod = t[red + 2]
        for j in range(J):
            ll = t[base + j]
            for k in range(lo, hi):
                for l in range(W):
                    prod[l] = ll[l]
                for k2 in range(lo, hi):
                    if k2 != k:
                        qk = t[q + S_off[A_deps[k2, 0]] + dep_index(A_deps, k2, j, S_off)]
                        for l in range(W):
                            prod[l] *= qk[l]
                dst = t[lq + S_off[A_deps[k, 0]] + dep_index(A_deps, k, j, S_off)]
                for l in range(W):
                    dst[l] += prod[l]


@device_jit(fastmath=LANE_FASTMATH)
def infer_rows(n0, W, st, md, tb, t):
    """Tile rows TILE_BEL.. (S) <- each agent's fixed-point posterior given its observation and
    prior (as ``agent.infer_states``)."""
    A_meta, A_deps, S_off, tile, logA = tb.A_meta, tb.A_deps, tb.S_off, tb.tile, md.logA
    F = S_off.shape[0] - 1
    S = S_off[F]
    M = A_meta.shape[0]
    q0, red = tile[TILE_BEL], tile[TILE_RED]
    if F == 1:  # exact single pass
        log_prior_rows(st.prior, n0, t, q0, S)
        for m in range(M):
            gather_ll(st.obs, logA, A_meta, m, n0, t, q0, True)
        softmax_rows(t, q0, q0 + S, red)
        return
    lp, lq, q, lls = tile[TILE_LP], tile[TILE_LQ], tile[TILE_Q], tile[TILE_LLS]
    for m in range(M):
        gather_ll(st.obs, logA, A_meta, m, n0, t, lls + A_meta[m, A_LL], A_meta[m, A_LEAD] != m)
    log_prior_rows(st.prior, n0, t, lp, S)
    for s in range(S):
        dst = t[lq + s]
        for l in range(W):
            dst[l] = 0.0
    for _ in range(tb.opts[OPT_NUM_ITER]):
        for s in range(S):
            vq, vlq, vlp = t[q + s], t[lq + s], t[lp + s]
            for l in range(W):
                vq[l] = vlq[l]
                vlq[l] = vlp[l]
        for f in range(F):
            softmax_rows(t, q + S_off[f], q + S_off[f + 1], red)
        ll_rows(A_meta, A_deps, S_off, t, q, lq, lls, red)
    for s in range(S):
        src, dst = t[lq + s], t[q0 + s]
        for l in range(W):
            dst[l] = src[l]
    for f in range(F):
        softmax_rows(t, q0 + S_off[f], q0 + S_off[f + 1], red)


# -- expected free energy over the policy tree ------------------------------------------------
@device_jit(fastmath=LANE_FASTMATH)
def transition_rows(n0, W, md, tb, p, ts, t, qt, qn):
    """Rows qn.. <- beliefs after policy p's actions at step ts from rows qt.. (as
    ``agent.transition``; a one-hot B is a scatter of rows)."""
    B, B_meta, B_deps, B_next, S_off, pol = md.B, tb.B_meta, tb.B_deps, tb.B_next, tb.S_off, tb.policies
    F, wb = B_meta.shape[0], tb.tile[TILE_WB]
    for f in range(F):
        Sf, J = B_meta[f, B_S], B_meta[f, B_J]
        u = pol[p, ts * F + f]
        o0 = qn + S_off[f]
        x = joint_weight_rows(t, qt, S_off, B_deps, B_meta[f, B_DLO], B_meta[f, B_DHI], J, wb, -1)
        nxt = B_meta[f, B_NEXT]
        if nxt >= 0:
            for s in range(Sf):
                dst = t[o0 + s]
                for l in range(W):
                    dst[l] = 0.0
            for j in range(J):
                src, dst = t[x + j], t[o0 + B_next[nxt + u * J + j]]
                for l in range(W):
                    dst[l] += src[l]
        else:
            sp = B_meta[f, B_SP]
            matvec_rows(B, n0, B_meta[f, B_OFF] + u * Sf * J, Sf, J, t, x, o0, False, tb.sparse,
                        tb.sparse[sp + u] if sp >= 0 else -1)


@device_jit(inline=True)
def param_info_rows(Wt, n0, base, R, J, t, wb, q, g):
    """g[l] -= sum_r t[q + r, l] * sum_j Wt[., base + r*J + j] * t[wb + j, l], lane by lane: the
    parameter information gain of one modality (wA, R = O) or factor (wB, R = S_f), as in
    ``agent.step_value``. Learning runs only, so per agent: Wt's row is the lane's agent's when
    per-agent, row 0 when shared."""
    for l in range(t.shape[1]):
        row = n0 + l if Wt.shape[0] > 1 else 0
        for r in range(R):
            acc = 0.0
            for j in range(J):
                acc += Wt[row, base + r * J + j] * t[wb + j, l]
            g[l] -= t[q + r, l] * acc


@device_jit(fastmath=LANE_FASTMATH)
def step_value_rows(n0, W, md, tb, p, ts, t, qt, qn):
    """Row TILE_VAL <- one step's negative-EFE term (info gain + utility - parameter info gain)
    for the move from rows qt.. to rows qn.. (as ``agent.step_value``)."""
    A_meta, A_deps, B_meta, B_deps, S_off, opts = tb.A_meta, tb.A_deps, tb.B_meta, tb.B_deps, tb.S_off, tb.opts
    tile, C, wA, wB = tb.tile, md.C, md.wA, md.wB
    qo, wb, val = tile[TILE_QO], tile[TILE_WB], tile[TILE_VAL]
    g = t[val]
    for l in range(W):
        g[l] = 0.0
    for m in range(A_meta.shape[0]):
        O, J, aoff = A_meta[m, A_O], A_meta[m, A_J], A_meta[m, A_OFF]
        x = joint_weight_rows(t, qn, S_off, A_deps, A_meta[m, A_DLO], A_meta[m, A_DHI], J, wb, -1)
        matvec_rows(md.A, n0, aoff, O, J, t, x, qo, False, tb.sparse, A_meta[m, A_SP])
        if opts[OPT_STATE_INFO]:
            matvec_rows(md.H_A, n0, A_meta[m, H_OFF], 1, J, t, x, qo + O, False, tb.sparse, -1)  # E_q[H[A]]
            for o in range(O):
                qv = t[qo + o]
                for l in range(W):
                    g[l] -= qv[l] * vlog_stable(qv[l])
            hv = t[qo + O]
            for l in range(W):
                g[l] -= hv[l]
        if opts[OPT_UTILITY]:
            coff = A_meta[m, C_OFF]
            for o in range(O):
                qv = t[qo + o]
                if C.shape[0] == 1:
                    c = C[0, coff + o]
                    for l in range(W):
                        g[l] += qv[l] * c
                else:
                    for l in range(W):
                        g[l] += qv[l] * C[n0 + l, coff + o]
        if opts[OPT_WA]:
            param_info_rows(wA, n0, aoff, O, J, t, x, qo, g)
    if opts[OPT_WB]:
        F = B_meta.shape[0]
        for f in range(F):
            Sf, J = B_meta[f, B_S], B_meta[f, B_J]
            x = joint_weight_rows(t, qt, S_off, B_deps, B_meta[f, B_DLO], B_meta[f, B_DHI], J, wb, -1)
            base = B_meta[f, B_OFF] + tb.policies[p, ts * F + f] * Sf * J
            param_info_rows(wB, n0, base, Sf, J, t, x, qn + S_off[f], g)


@device_jit(fastmath=LANE_FASTMATH)
def neg_efe_rows(n0, W, md, tb, t):
    """Rows TILE_G.. (P) <- negative EFE of every policy, from the posterior in rows TILE_BEL..;
    policy p re-rolls only from branch[p] (as ``agent.neg_efe``)."""
    tile, pol, branch = tb.tile, tb.policies, tb.branch
    S = tb.S_off[tb.S_off.shape[0] - 1]
    T = pol.shape[1] // tb.B_meta.shape[0]
    bel, acc, val, g0 = tile[TILE_BEL], tile[TILE_ACC], tile[TILE_VAL], tile[TILE_G]
    a = t[acc]
    for l in range(W):
        a[l] = 0.0
    for p in range(pol.shape[0]):
        for ts in range(branch[p], T):
            qt, qn = bel + ts * S, bel + (ts + 1) * S
            transition_rows(n0, W, md, tb, p, ts, t, qt, qn)
            step_value_rows(n0, W, md, tb, p, ts, t, qt, qn)
            a0, a1, v = t[acc + ts], t[acc + ts + 1], t[val]
            for l in range(W):
                a1[l] = a0[l] + v[l]
        src, dst = t[acc + T], t[g0 + p]
        for l in range(W):
            dst[l] = src[l]


@device_jit(fastmath=LANE_FASTMATH)
def policy_rows(n0, W, md, tb, t):
    """Rows TILE_PI.. (P) <- softmax(gamma * G + log E) per agent."""
    tile, E = tb.tile, md.E
    g0, pi, red = tile[TILE_G], tile[TILE_PI], tile[TILE_RED]
    gam = t[red + 3]
    for l in range(W):
        gam[l] = md.gamma[n0 + l]
    P = tb.policies.shape[0]
    for p in range(P):
        gv, pv = t[g0 + p], t[pi + p]
        if E.shape[0] == 1:
            le = vlog_stable(E[0, p])
            for l in range(W):
                pv[l] = gam[l] * gv[l] + le
        else:
            for l in range(W):
                pv[l] = gam[l] * gv[l] + vlog_stable(E[n0 + l, p])
    softmax_rows(t, pi, pi + P, red)
