"""One agent's whole step, as scalar loops over packed rows: the body of every fused kernel.

Every array is addressed as ``(array, row, offset)``: parameter buffers by the agent's row (row 0
of a shared buffer), state by agent ``n``, temporaries in row ``wr`` of a ``work`` array. Nothing
is sliced and nothing allocates: on the CPU each slice would cost two atomic reference-count
updates on a buffer that every thread shares, and a CUDA thread cannot allocate. So the same
source runs in a GPU thread (``kernels.cuda``: :func:`agent_step`, or the window sweep then
:func:`agent_decide`) and in a CPU thread (``kernels.cpu``, the agent-lanes kernel:
:func:`agent_tail` and :func:`shift_window` for each agent of a tile).

Math and order follow ``fa_gpu.reference`` (pymdp 1.0.4): fixed-point state inference, negative
expected free energy over a policy tree (policies in lexicographic order share prefixes, so each
tree node is evaluated once), softmax policy posterior, Dirichlet learning, action selection,
empirical prior. Policies arrive flattened, ``pol[p, t * F + f]``. Deterministic choices take
the first index within ``TIE_RTOL`` of the maximum (``kernels.jit``), as the reference does.
"""
from __future__ import annotations

import math

import numpy as np

from .columns import (A_DHI, A_DLO, A_J, A_LEAD, A_LL, A_O, A_OFF, ALGO_FPI, B_DHI, B_DLO, B_J, B_NEXT,
                      B_OFF, B_S, B_U, C_OFF, H_OFF, OPT_AGENT_OFFSET, OPT_ALGO, OPT_CATEGORICAL,
                      OPT_HORIZON, OPT_LEARN_A, OPT_LEARN_B, OPT_LEARN_D, OPT_MARGINAL, OPT_NUM_ITER,
                      OPT_STATE_INFO, OPT_STOCHASTIC, OPT_UTILITY, OPT_WA, OPT_WB)
from .jit import MINVAL, device_jit, minval_like, tie_rtol_like
from .rng import uniform


@device_jit(inline=True)
def log_stable(x):
    m = minval_like(x)
    return math.log(x if x > m else m)


@device_jit(inline=True)
def row_of(X, n):
    """Row of a parameter buffer for agent n: its own when per-agent, row 0 when shared."""
    return n if X.shape[0] > 1 else 0


@device_jit(inline=True)
def softmax(x, r, lo, hi):
    """x[r, lo:hi] <- softmax(x[r, lo:hi]), max subtracted first."""
    v = x[r, lo:hi]
    m = v[0]
    for i in range(1, v.shape[0]):
        if v[i] > m:
            m = v[i]
    s = 0.0
    for i in range(v.shape[0]):
        e = math.exp(v[i] - m)
        v[i] = e
        s += e
    for i in range(v.shape[0]):
        v[i] = v[i] / s


@device_jit(inline=True)
def dep_index(deps, k, j, S_off):
    """Index of dependency k's factor inside joint index j."""
    d = deps[k, 0]
    return (j // deps[k, 1]) % (S_off[d + 1] - S_off[d])


@device_jit(inline=True)
def joint_weight(q, qr, qoff, S_off, deps, lo, hi, j, skip):
    """prod over dependencies k in [lo, hi), k != skip, of q at k's index in joint index j."""
    w = 1.0
    for k in range(lo, hi):
        if k != skip:
            w *= q[qr, qoff + S_off[deps[k, 0]] + dep_index(deps, k, j, S_off)]
    return w


@device_jit(inline=True)
def weights(q, qr, qoff, S_off, deps, lo, hi, J, w, wr, woff):
    """w[wr, woff + j] <- joint-state weight of joint index j (j < J) for a dependency list."""
    out = w[wr, woff:woff + J]
    if hi - lo == 1:
        base = qoff + S_off[deps[lo, 0]]
        src = q[qr, base:base + J]
        for j in range(J):
            out[j] = src[j]
    elif hi - lo == 2:  # the common interaction: an outer product, no index arithmetic
        d0, d1 = deps[lo, 0], deps[lo + 1, 0]
        S1 = S_off[d1 + 1] - S_off[d1]
        q0 = q[qr, qoff + S_off[d0]:qoff + S_off[d0 + 1]]
        q1 = q[qr, qoff + S_off[d1]:qoff + S_off[d1 + 1]]
        for a in range(q0.shape[0]):
            for b in range(S1):
                out[a * S1 + b] = q0[a] * q1[b]
    else:
        for j in range(J):
            out[j] = joint_weight(q, qr, qoff, S_off, deps, lo, hi, j, -1)


@device_jit(inline=True)
def matvec(M, mr, moff, O, J, x, xr, xoff, out, outr, outoff):
    """out[outr, outoff + o] <- sum_j M[mr, moff + o*J + j] * x[xr, xoff + j], o < O."""
    # Row slices indexed by loop counters: provably non-negative indices, so Numba emits no
    # negative-index wraparound and LLVM vectorizes (7x faster than indexing with offsets).
    Mv = M[mr, moff:moff + O * J]
    xv = x[xr, xoff:xoff + J]
    ov = out[outr, outoff:outoff + O]
    for o in range(O):
        acc = Mv[0] - Mv[0]  # zero of M's dtype: float32 keeps float32 lanes
        for j in range(J):
            acc += Mv[o * J + j] * xv[j]
        ov[o] = acc


@device_jit
def digamma(x):
    """Digamma for x >= 1 (float64), as ``fa_gpu.reference.digamma``."""
    acc = 0.0
    while x < 12.0:
        acc -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (
        1.0 / 240 - inv2 * (1.0 / 132 - inv2 * (691.0 / 32760))))))
    return acc + math.log(x) - 0.5 / x - series


@device_jit
def dirichlet_weight(count, total):
    """pymdp's exact parameter-information-gain weight of one count in a column summing to total."""
    if count <= 0.0:
        return 0.0
    a = count if count > MINVAL else MINVAL
    s = total if total > MINVAL else MINVAL
    return -(math.log(s) - math.log(a) + digamma(a + 1.0) - digamma(s + 1.0))


# -- state inference -------------------------------------------------------------------------
@device_jit(inline=True)
def infer_states(obs, n, logA, rA, prior, qs, A_meta, A_deps, S_off, num_iter, w, wr, woff):
    """qs[n] <- fixed-point posterior given obs[n] and prior[n]. Uses w[wr, woff:woff+3*S+LL]
    (LL: the summed log-likelihoods of modalities that share dependencies, contracted once per
    sweep instead of once per modality)."""
    F = S_off.shape[0] - 1
    S = S_off[F]
    M = A_meta.shape[0]
    if F == 1:  # exact single pass
        q1, p1 = qs[n, 0:S], prior[n, 0:S]
        for s in range(S):
            q1[s] = log_stable(p1[s])
        for m in range(M):
            base = A_meta[m, A_OFF] + obs[n, m] * A_meta[m, A_J]
            ll = logA[rA, base:base + S]
            for s in range(S):
                q1[s] += ll[s]
        softmax(qs, n, 0, S)
        return
    lp, lq, q, lls = woff, woff + S, woff + 2 * S, woff + 3 * S
    for m in range(M):
        J = A_meta[m, A_J]
        base = A_meta[m, A_OFF] + obs[n, m] * J
        src, dst = logA[rA, base:base + J], w[wr, lls + A_meta[m, A_LL]:lls + A_meta[m, A_LL] + J]
        if A_meta[m, A_LEAD] == m:
            for j in range(J):
                dst[j] = src[j]
        else:
            for j in range(J):
                dst[j] += src[j]
    for s in range(S):
        w[wr, lp + s] = log_stable(prior[n, s])
        w[wr, lq + s] = 0.0
    for _ in range(num_iter):
        for s in range(S):
            w[wr, q + s] = w[wr, lq + s]
            w[wr, lq + s] = w[wr, lp + s]
        for f in range(F):
            softmax(w, wr, q + S_off[f], q + S_off[f + 1])
        for m in range(M):
            if A_meta[m, A_LEAD] != m:
                continue
            J = A_meta[m, A_J]
            lo, hi = A_meta[m, A_DLO], A_meta[m, A_DHI]
            base = lls + A_meta[m, A_LL]
            if hi - lo == 2:  # same sums as below, without index arithmetic
                o0, o1 = S_off[A_deps[lo, 0]], S_off[A_deps[lo + 1, 0]]
                S0, S1 = S_off[A_deps[lo, 0] + 1] - o0, S_off[A_deps[lo + 1, 0] + 1] - o1
                for a in range(S0):
                    for b in range(S1):
                        ll = w[wr, base + a * S1 + b]
                        w[wr, lq + o0 + a] += ll * w[wr, q + o1 + b]
                        w[wr, lq + o1 + b] += ll * w[wr, q + o0 + a]
                continue
            for j in range(J):
                ll = w[wr, base + j]
                for k in range(lo, hi):
                    idx = lq + S_off[A_deps[k, 0]] + dep_index(A_deps, k, j, S_off)
                    w[wr, idx] += ll * joint_weight(w, wr, q, S_off, A_deps, lo, hi, j, k)
    for s in range(S):
        qs[n, s] = w[wr, lq + s]
    for f in range(F):
        softmax(qs, n, S_off[f], S_off[f + 1])


# -- transitions and expected free energy ----------------------------------------------------
@device_jit(inline=True)
def transition(q, qr, qoff, out, outr, outoff, B, rB, B_meta, B_deps, B_next, S_off, U, ur, uoff,
               w, wr, woff):
    """out[f] <- sum_j B[f][u_f][:, j] w(j) for every factor, u_f = U[ur, uoff + f] (one-hot B:
    a scatter). q and out are belief rows at (qr, qoff) and (outr, outoff)."""
    for f in range(B_meta.shape[0]):
        Sf, J = B_meta[f, B_S], B_meta[f, B_J]
        u = U[ur, uoff + f]
        o0 = outoff + S_off[f]
        weights(q, qr, qoff, S_off, B_deps, B_meta[f, B_DLO], B_meta[f, B_DHI], J, w, wr, woff)
        nxt = B_meta[f, B_NEXT]
        if nxt >= 0:
            ov = out[outr, o0:o0 + Sf]
            wv = w[wr, woff:woff + J]
            nv = B_next[nxt + u * J:nxt + (u + 1) * J]
            for s in range(Sf):
                ov[s] = 0.0
            for j in range(J):
                ov[nv[j]] += wv[j]
        else:
            matvec(B, rB, B_meta[f, B_OFF] + u * Sf * J, Sf, J, w, wr, woff, out, outr, o0)


@device_jit(inline=True)
def step_value(w, wr, qt, qn, qo, wb, pol, p, toff, A, rA, H, C, rC, wA, rwA, wB, rwB,
               A_meta, A_deps, B_meta, B_deps, S_off, use_utility, use_info, use_wA, use_wB):
    """One time step's contribution to the negative EFE (info gain + utility - parameter info)
    for beliefs at w[wr, qt] -> w[wr, qn]; qo (O_max + 1) and wb (J_max) are scratch offsets."""
    g = 0.0
    for m in range(A_meta.shape[0]):
        O, J, aoff = A_meta[m, A_O], A_meta[m, A_J], A_meta[m, A_OFF]
        weights(w, wr, qn, S_off, A_deps, A_meta[m, A_DLO], A_meta[m, A_DHI], J, w, wr, wb)
        matvec(A, rA, aoff, O, J, w, wr, wb, w, wr, qo)
        if use_info:
            matvec(H, rA, A_meta[m, H_OFF], 1, J, w, wr, wb, w, wr, qo + O)  # E_q[H[A]]
            qv = w[wr, qo:qo + O]
            ent = 0.0
            for o in range(O):
                ent -= qv[o] * log_stable(qv[o])
            g += ent - w[wr, qo + O]
        if use_utility:
            coff = A_meta[m, C_OFF]
            qv, cv = w[wr, qo:qo + O], C[rC, coff:coff + O]
            for o in range(O):
                g += qv[o] * cv[o]
        if use_wA:
            for o in range(O):
                acc = 0.0
                for j in range(J):
                    acc += wA[rwA, aoff + o * J + j] * w[wr, wb + j]
                g -= w[wr, qo + o] * acc
    if use_wB:
        for f in range(B_meta.shape[0]):
            Sf, J = B_meta[f, B_S], B_meta[f, B_J]
            weights(w, wr, qt, S_off, B_deps, B_meta[f, B_DLO], B_meta[f, B_DHI], J, w, wr, wb)
            base = B_meta[f, B_OFF] + pol[p, toff + f] * Sf * J
            for s in range(Sf):
                acc = 0.0
                for j in range(J):
                    acc += wB[rwB, base + s * J + j] * w[wr, wb + j]
                g -= w[wr, qn + S_off[f] + s] * acc
    return g


@device_jit(inline=True)
def neg_efe(qs, n, G, A, rA, H, C, rC, B, rB, wA, rwA, wB, rwB, A_meta, A_deps, B_meta, B_deps,
            B_next, S_off, pol, branch, use_utility, use_info, use_wA, use_wB, w, wr):
    """G[n, p] <- negative EFE of every policy. Policy p re-rolls only from branch[p], the first
    step where it differs from policy p-1; earlier beliefs and partial sums stay in work:
    [beliefs (T+1) x S | partial sums T+1 | qo O_max+1 | weights J_max]."""
    F = B_meta.shape[0]
    S = S_off[F]
    T = pol.shape[1] // F
    acc = (T + 1) * S
    qo = acc + T + 1
    O_max = 0
    for m in range(A_meta.shape[0]):
        O_max = max(O_max, A_meta[m, A_O])
    wb = qo + O_max + 1
    for s in range(S):
        w[wr, s] = qs[n, s]
    w[wr, acc] = 0.0
    for p in range(pol.shape[0]):
        for t in range(branch[p], T):
            qt, qn = t * S, (t + 1) * S
            transition(w, wr, qt, w, wr, qn, B, rB, B_meta, B_deps, B_next, S_off, pol, p, t * F,
                       w, wr, wb)
            w[wr, acc + t + 1] = w[wr, acc + t] + step_value(
                w, wr, qt, qn, qo, wb, pol, p, t * F, A, rA, H, C, rC, wA, rwA, wB, rwB, A_meta,
                A_deps, B_meta, B_deps, S_off, use_utility, use_info, use_wA, use_wB)
        G[n, p] = w[wr, acc + T]


@device_jit(inline=True)
def policy_posterior(G, n, E, rE, gamma, q_pi):
    """q_pi[n] <- softmax(gamma * G[n] + log E)."""
    P = G.shape[1]
    for p in range(P):
        q_pi[n, p] = gamma * G[n, p] + log_stable(E[rE, p])
    softmax(q_pi, n, 0, P)


# -- learning --------------------------------------------------------------------------------
@device_jit
def learn_A(obs, ow, cat, Hw, n, qs, lr, pA, A, logA, H, wA, use_wA, A_meta, A_deps, S_off, w, wr, wb):
    """pA += lr * onehot(o) (x) qs[deps] (``cat``: the distribution in the newest of the ``Hw``
    slots of ``ow``, the observation window, in place of onehot(o)); A, log A, H[A] (and wA)
    re-derived column by column. Learned buffers are per-agent: row n."""
    for m in range(A_meta.shape[0]):
        O, J, aoff = A_meta[m, A_O], A_meta[m, A_J], A_meta[m, A_OFF]
        weights(qs, n, 0, S_off, A_deps, A_meta[m, A_DLO], A_meta[m, A_DHI], J, w, wr, wb)
        if cat:
            obase = Hw * A_meta[m, C_OFF] + (Hw - 1) * O
            for o in range(O):
                c = ow[n, obase + o]
                for j in range(J):
                    pA[n, aoff + o * J + j] += lr * (c * w[wr, wb + j])
        else:
            row = aoff + obs[n, m] * J
            for j in range(J):
                pA[n, row + j] += lr * w[wr, wb + j]
        hoff = A_meta[m, H_OFF]
        for j in range(J):
            tot = 0.0
            for o in range(O):
                c = pA[n, aoff + o * J + j]
                tot += c if c > MINVAL else MINVAL
            h = 0.0
            for o in range(O):
                i = aoff + o * J + j
                c = pA[n, i]
                a = (c if c > MINVAL else MINVAL) / tot
                A[n, i] = a
                la = log_stable(a)
                logA[n, i] = la
                h -= a * la
                if use_wA:
                    wA[n, i] = dirichlet_weight(c, tot)
            H[n, hoff + j] = h


@device_jit
def learn_B(qs, qs_prev, prev, n, lr, pB, B, wB, use_wB, B_meta, B_deps, S_off, w, wr, wb):
    """After a valid previous action: pB[f][u] += lr * qs[f] (x) qs_prev[deps]; B (and wB)
    re-derived for every column of the factor. Learned buffers are per-agent: row n."""
    for f in range(B_meta.shape[0]):
        if prev[n, f] < 0:
            return
    for f in range(B_meta.shape[0]):
        Sf, U, J, boff = B_meta[f, B_S], B_meta[f, B_U], B_meta[f, B_J], B_meta[f, B_OFF]
        weights(qs_prev, n, 0, S_off, B_deps, B_meta[f, B_DLO], B_meta[f, B_DHI], J, w, wr, wb)
        base = boff + prev[n, f] * Sf * J
        for s in range(Sf):
            qf = qs[n, S_off[f] + s]
            for j in range(J):
                pB[n, base + s * J + j] += lr * qf * w[wr, wb + j]
        for u in range(U):
            for j in range(J):
                tot = 0.0
                for s in range(Sf):
                    c = pB[n, boff + (u * Sf + s) * J + j]
                    tot += c if c > MINVAL else MINVAL
                for s in range(Sf):
                    i = boff + (u * Sf + s) * J + j
                    c = pB[n, i]
                    B[n, i] = (c if c > MINVAL else MINVAL) / tot
                    if use_wB:
                        wB[n, i] = dirichlet_weight(c, tot)


@device_jit
def learn_D(qs, n, lr, pD, D, S_off):
    """On an agent's first step: pD += lr * qs; D re-derived (per-agent rows)."""
    for f in range(S_off.shape[0] - 1):
        tot = 0.0
        for s in range(S_off[f], S_off[f + 1]):
            pD[n, s] += lr * qs[n, s]
            c = pD[n, s]
            tot += c if c > MINVAL else MINVAL
        for s in range(S_off[f], S_off[f + 1]):
            c = pD[n, s]
            D[n, s] = (c if c > MINVAL else MINVAL) / tot


# -- action selection ------------------------------------------------------------------------
@device_jit
def categorical(x, r, lo, hi, alpha, u):
    """Index in [0, hi-lo) drawn from softmax(alpha * log x[r, lo:hi]) by inverse CDF (float64)."""
    m = -math.inf
    for i in range(lo, hi):
        v = alpha * log_stable(np.float64(x[r, i]))
        if v > m:
            m = v
    tot = 0.0
    for i in range(lo, hi):
        tot += math.exp(alpha * log_stable(np.float64(x[r, i])) - m)
    target = u * tot
    cum = 0.0
    for i in range(lo, hi):
        cum += math.exp(alpha * log_stable(np.float64(x[r, i])) - m)
        if cum > target:
            return i - lo
    return hi - lo - 1


@device_jit(inline=True)
def first_max(x, r, lo, hi):
    """Index in [0, hi-lo) of the first of x[r, lo:hi] within ``tie_rtol`` (relative) of the
    maximum: ties decided by position, never by the last bit of a sum."""
    m = x[r, lo]
    for i in range(lo + 1, hi):
        if x[r, i] > m:
            m = x[r, i]
    floor = m - tie_rtol_like(x[r, lo]) * abs(m)
    for i in range(lo, hi):
        if x[r, i] >= floor:
            return i - lo
    return 0


@device_jit
def select_action(n, key, q_pi, actions, pol, alpha, stochastic, marginal, seed, t, B_meta, w, wr, woff):
    """actions[n] <- first actions of the selected policy (full) or per-factor marginal choices;
    draws keyed by (seed, key: the agent's global index, t, draw)."""
    P = pol.shape[0]
    F = B_meta.shape[0]
    if not marginal:
        if stochastic:
            k = categorical(q_pi, n, 0, P, np.float64(alpha), uniform(seed, key, t, 0))
        else:
            k = first_max(q_pi, n, 0, P)
        for f in range(F):
            actions[n, f] = pol[k, f]
        return
    for f in range(F):
        U = B_meta[f, B_U]
        for a in range(U):
            w[wr, woff + a] = 0.0
        for p in range(P):
            w[wr, woff + pol[p, f]] += q_pi[n, p]
        if stochastic:
            actions[n, f] = categorical(w, wr, woff, woff + U, np.float64(alpha), uniform(seed, key, t, f))
        else:
            actions[n, f] = first_max(w, wr, woff, woff + U)


# -- the whole step --------------------------------------------------------------------------
@device_jit
def shift_window(n, st, wn, md, tb):
    """Agent n's windows after a sequence step (mmp, vmp; as the numpy backend's
    ``update_empirical_prior``): ``obs_window`` one slot left (the newest slot kept),
    ``act_window`` one slot left with this step's actions last; the next prior is D."""
    A_meta, S_off, H, F = tb.A_meta, tb.S_off, tb.opts[OPT_HORIZON], tb.B_meta.shape[0]
    ow, aw = wn.obs_window, wn.act_window
    for m in range(A_meta.shape[0]):
        O, base = A_meta[m, A_O], H * A_meta[m, C_OFF]
        for i in range((H - 1) * O):
            ow[n, base + i] = ow[n, base + O + i]
    if H > 1:
        for i in range((H - 2) * F):
            aw[n, i] = aw[n, F + i]
        for f in range(F):
            aw[n, (H - 2) * F + f] = st.actions[n, f]
    r = row_of(md.D, n)
    for s in range(S_off[S_off.shape[0] - 1]):
        st.prior[n, s] = md.D[r, s]


@device_jit
def agent_tail(n, st, md, tb, seed, w, wr, woff, ow):
    """Agent n's step after its policy posterior (``st.qs[n]``, ``st.q_pi[n]`` written): learning,
    action selection, empirical prior (fpi; mmp, vmp: :func:`shift_window` after it), the step's
    bookkeeping; temporaries in w[wr, woff:]. ``ow``: the observation window (categorical
    observations' learning reads its newest slot; any float array otherwise). The GPU kernels
    (through :func:`agent_decide`) and the agent-lanes CPU kernel (``kernels.cpu``) share it."""
    B, B_meta, B_deps, S_off, opts = md.B, tb.B_meta, tb.B_deps, tb.S_off, tb.opts
    qs, F = st.qs, B_meta.shape[0]
    if opts[OPT_LEARN_A]:
        learn_A(st.obs, ow, opts[OPT_CATEGORICAL], opts[OPT_HORIZON], n, qs, md.lr[n, 0],
                md.pA, md.A, md.logA, md.H_A, md.wA, opts[OPT_WA],
                tb.A_meta, tb.A_deps, S_off, w, wr, woff)
    if opts[OPT_LEARN_B]:
        learn_B(qs, st.qs_prev, st.prev_actions, n, md.lr[n, 1], md.pB, B, md.wB, opts[OPT_WB], B_meta,
                B_deps, S_off, w, wr, woff)
    if opts[OPT_LEARN_D] and st.t[n] == 0:
        learn_D(qs, n, md.lr[n, 2], md.pD, md.D, S_off)
    select_action(n, n + opts[OPT_AGENT_OFFSET], st.q_pi, st.actions, tb.policies, md.alpha[n], opts[OPT_STOCHASTIC],
                  opts[OPT_MARGINAL], seed, st.t[n], B_meta, w, wr, woff)
    if opts[OPT_ALGO] == ALGO_FPI:  # mmp, vmp: the window kernel's shift_window sets the prior
        transition(qs, n, 0, st.prior, n, 0, B, row_of(B, n), B_meta, B_deps, tb.B_next, S_off, st.actions,
                   n, 0, w, wr, woff)
    for s in range(S_off[F]):
        st.qs_prev[n, s] = qs[n, s]
    for f in range(F):
        st.prev_actions[n, f] = st.actions[n, f]
    st.t[n] += 1


@device_jit(inline=True)
def past_policy_values(tb):
    """First scratch element past :func:`neg_efe`'s beliefs and partial sums ((T + 1)(S + 1)):
    free for the temporaries of the step's other parts."""
    S_off, pol = tb.S_off, tb.policies
    F = S_off.shape[0] - 1
    return (pol.shape[1] // F + 1) * (S_off[F] + 1)


@device_jit
def agent_decide(n, st, md, tb, seed, w, wr, ow):
    """Agent n's step after state inference (``st.qs[n]`` written): negative EFE, policy
    posterior, then :func:`agent_tail` (``ow``: its observation window argument); temporaries in
    w[wr]. The one-agent fpi step (:func:`agent_step`) and the one-lane window step
    (``kernels.window.window_agent_step``) share it."""
    A_meta, B_meta, S_off, pol, opts = tb.A_meta, tb.B_meta, tb.S_off, tb.policies, tb.opts
    neg_efe(st.qs, n, st.neg_efe, md.A, row_of(md.A, n), md.H_A, md.C, row_of(md.C, n), md.B,
            row_of(md.B, n), md.wA, row_of(md.wA, n), md.wB, row_of(md.wB, n), A_meta, tb.A_deps,
            B_meta, tb.B_deps, tb.B_next, S_off, pol, tb.branch, opts[OPT_UTILITY],
            opts[OPT_STATE_INFO], opts[OPT_WA], opts[OPT_WB], w, wr)
    policy_posterior(st.neg_efe, n, md.E, row_of(md.E, n), md.gamma[n], st.q_pi)
    agent_tail(n, st, md, tb, seed, w, wr, past_policy_values(tb), ow)


@device_jit
def agent_step(n, st, md, tb, seed, w, wr):
    """Agent n's whole step in pymdp's order (fpi from index observations), temporaries in
    w[wr]. ``st``, ``md``, ``tb``: the state, model and tables bundles of ``fa_gpu.schema`` (named
    tuples of arrays); ``md.lr`` is (N, 3): lr_pA, lr_pB, lr_pD. Model buffers with one row are
    shared; with N rows, row n is agent n's."""
    infer_states(st.obs, n, md.logA, row_of(md.logA, n), st.prior, st.qs, tb.A_meta, tb.A_deps,
                 tb.S_off, tb.opts[OPT_NUM_ITER], w, wr, past_policy_values(tb))
    agent_decide(n, st, md, tb, seed, w, wr, st.qs)  # the windows are not this kernel's
