"""One agent's whole step, as scalar loops over packed rows: the body of every fused kernel.

Each function works on 1-D rows of the packed buffers described in ``fa_gpu.layout`` (the
agent's row of a per-agent buffer, row 0 of a shared one) plus the integer tables, and writes
its results in place. Nothing allocates: temporaries live in a caller-provided ``work`` row, so
the same source runs in a CPU thread (``kernels.cpu``) and in a GPU thread (``kernels.cuda``).

Math and order follow ``fa_gpu.reference`` (pymdp 1.0.4): fixed-point state inference, negative
expected free energy over a policy tree (policies in lexicographic order share prefixes, so each
tree node is evaluated once), softmax policy posterior, Dirichlet learning, action selection,
empirical prior.
"""
from __future__ import annotations

import math

import numpy as np

from .columns import (A_DHI, A_DLO, A_J, A_O, A_OFF, B_DHI, B_DLO, B_J, B_NEXT, B_OFF, B_S, B_U,
                      C_OFF, H_OFF, OPT_LEARN_A, OPT_LEARN_B, OPT_LEARN_D, OPT_MARGINAL,
                      OPT_NUM_ITER, OPT_STATE_INFO, OPT_STOCHASTIC, OPT_UTILITY, OPT_WA, OPT_WB)
from .jit import MINVAL, device_jit
from .rng import uniform


@device_jit
def log_stable(x):
    return math.log(x if x > MINVAL else MINVAL)


@device_jit
def softmax_inplace(x, lo, hi):
    """x[lo:hi] <- softmax(x[lo:hi]), max subtracted first."""
    m = x[lo]
    for i in range(lo + 1, hi):
        if x[i] > m:
            m = x[i]
    s = 0.0
    for i in range(lo, hi):
        e = math.exp(x[i] - m)
        x[i] = e
        s += e
    for i in range(lo, hi):
        x[i] = x[i] / s


@device_jit
def dep_index(deps, k, j, S_off):
    """Index of dependency k's factor inside joint index j."""
    d = deps[k, 0]
    return (j // deps[k, 1]) % (S_off[d + 1] - S_off[d])


@device_jit
def joint_weight(q, S_off, deps, lo, hi, j, skip):
    """prod over dependencies k in [lo, hi), k != skip, of q at k's index in joint index j."""
    w = 1.0
    for k in range(lo, hi):
        if k != skip:
            w *= q[S_off[deps[k, 0]] + dep_index(deps, k, j, S_off)]
    return w


@device_jit
def weights(q, S_off, deps, lo, hi, J, wbuf):
    """Joint-state weights for a dependency list: returns (array, offset) to read w(j) from.
    A single dependency reads q in place; several fill wbuf[0:J]."""
    if hi - lo == 1:
        return q, S_off[deps[lo, 0]]
    for j in range(J):
        wbuf[j] = joint_weight(q, S_off, deps, lo, hi, j, -1)
    return wbuf, 0


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
@device_jit
def infer_states(obs_n, logA_r, prior_n, qs_n, A_meta, A_deps, S_off, num_iter, work):
    """qs_n <- fixed-point posterior given outcomes obs_n and prior_n. work: >= 3 * S_tot."""
    F = S_off.shape[0] - 1
    S = S_off[F]
    M = A_meta.shape[0]
    if F == 1:  # exact single pass
        for s in range(S):
            qs_n[s] = log_stable(prior_n[s])
        for m in range(M):
            base = A_meta[m, A_OFF] + obs_n[m] * A_meta[m, A_J]
            for s in range(S):
                qs_n[s] += logA_r[base + s]
        softmax_inplace(qs_n, 0, S)
        return
    lp = work[0:S]
    lq = work[S:2 * S]
    q = work[2 * S:3 * S]
    for s in range(S):
        lp[s] = log_stable(prior_n[s])
        lq[s] = 0.0
    for _ in range(num_iter):
        for s in range(S):
            q[s] = lq[s]
            lq[s] = lp[s]
        for f in range(F):
            softmax_inplace(q, S_off[f], S_off[f + 1])
        for m in range(M):
            J = A_meta[m, A_J]
            lo, hi = A_meta[m, A_DLO], A_meta[m, A_DHI]
            base = A_meta[m, A_OFF] + obs_n[m] * J
            for j in range(J):
                ll = logA_r[base + j]
                for k in range(lo, hi):
                    idx = S_off[A_deps[k, 0]] + dep_index(A_deps, k, j, S_off)
                    lq[idx] += ll * joint_weight(q, S_off, A_deps, lo, hi, j, k)
    for s in range(S):
        qs_n[s] = lq[s]
    for f in range(F):
        softmax_inplace(qs_n, S_off[f], S_off[f + 1])


# -- transitions and expected free energy ----------------------------------------------------
@device_jit
def transition(q_in, q_out, B_r, B_meta, B_deps, B_next, S_off, u_row, wbuf):
    """q_out[f] <- sum_j B[f][u_f][:, j] w(j) for every factor (one-hot B: a scatter)."""
    for f in range(B_meta.shape[0]):
        Sf, J = B_meta[f, B_S], B_meta[f, B_J]
        lo, hi = B_meta[f, B_DLO], B_meta[f, B_DHI]
        u = u_row[f]
        o0 = S_off[f]
        w, w0 = weights(q_in, S_off, B_deps, lo, hi, J, wbuf)
        nxt = B_meta[f, B_NEXT]
        if nxt >= 0:
            for s in range(Sf):
                q_out[o0 + s] = 0.0
            base = nxt + u * J
            for j in range(J):
                q_out[o0 + B_next[base + j]] += w[w0 + j]
        else:
            base = B_meta[f, B_OFF] + u * Sf * J
            for s in range(Sf):
                acc = 0.0
                row = base + s * J
                for j in range(J):
                    acc += B_r[row + j] * w[w0 + j]
                q_out[o0 + s] = acc


@device_jit
def step_value(q_t, q_n, u_row, A_r, H_r, C_r, wA_r, wB_r, A_meta, A_deps, B_meta, B_deps,
               S_off, use_utility, use_info, use_wA, use_wB, qo, wbuf):
    """One time step's contribution to the negative EFE: info gain + utility - param info."""
    g = 0.0
    for m in range(A_meta.shape[0]):
        O, J = A_meta[m, A_O], A_meta[m, A_J]
        aoff = A_meta[m, A_OFF]
        w, w0 = weights(q_n, S_off, A_deps, A_meta[m, A_DLO], A_meta[m, A_DHI], J, wbuf)
        for o in range(O):
            acc = 0.0
            row = aoff + o * J
            for j in range(J):
                acc += A_r[row + j] * w[w0 + j]
            qo[o] = acc
        if use_info:
            hoff = A_meta[m, H_OFF]
            amb = 0.0
            for j in range(J):
                amb += H_r[hoff + j] * w[w0 + j]
            ent = 0.0
            for o in range(O):
                ent -= qo[o] * log_stable(qo[o])
            g += ent - amb
        if use_utility:
            coff = A_meta[m, C_OFF]
            for o in range(O):
                g += qo[o] * C_r[coff + o]
        if use_wA:
            for o in range(O):
                acc = 0.0
                row = aoff + o * J
                for j in range(J):
                    acc += wA_r[row + j] * w[w0 + j]
                g -= qo[o] * acc
    if use_wB:
        for f in range(B_meta.shape[0]):
            Sf, J = B_meta[f, B_S], B_meta[f, B_J]
            w, w0 = weights(q_t, S_off, B_deps, B_meta[f, B_DLO], B_meta[f, B_DHI], J, wbuf)
            base = B_meta[f, B_OFF] + u_row[f] * Sf * J
            for s in range(Sf):
                acc = 0.0
                for j in range(J):
                    acc += wB_r[base + s * J + j] * w[w0 + j]
                g -= q_n[S_off[f] + s] * acc
    return g


@device_jit
def neg_efe(qs_n, G_n, A_r, H_r, C_r, B_r, wA_r, wB_r, A_meta, A_deps, B_meta, B_deps, B_next,
            S_off, pol, branch, use_utility, use_info, use_wA, use_wB, work):
    """G_n[p] <- negative EFE of every policy. Policy p re-rolls only from branch[p], the first
    step where it differs from policy p-1; earlier steps' beliefs and sums are kept in work."""
    S = S_off[S_off.shape[0] - 1]
    T = pol.shape[1]
    Q = work[0:(T + 1) * S]
    acc = work[(T + 1) * S:(T + 1) * S + T + 1]
    rest = work[(T + 1) * S + T + 1:]
    O_max = 0
    for m in range(A_meta.shape[0]):
        O_max = max(O_max, A_meta[m, A_O])
    qo = rest[0:O_max]
    wbuf = rest[O_max:]
    for s in range(S):
        Q[s] = qs_n[s]
    acc[0] = 0.0
    for p in range(pol.shape[0]):
        for t in range(branch[p], T):
            q_t = Q[t * S:(t + 1) * S]
            q_n = Q[(t + 1) * S:(t + 2) * S]
            transition(q_t, q_n, B_r, B_meta, B_deps, B_next, S_off, pol[p, t], wbuf)
            acc[t + 1] = acc[t] + step_value(q_t, q_n, pol[p, t], A_r, H_r, C_r, wA_r, wB_r, A_meta,
                                             A_deps, B_meta, B_deps, S_off, use_utility, use_info,
                                             use_wA, use_wB, qo, wbuf)
        G_n[p] = acc[T]


@device_jit
def policy_posterior(G_n, E_r, gamma, q_pi_n):
    """q_pi_n <- softmax(gamma * G_n + log E)."""
    P = G_n.shape[0]
    for p in range(P):
        q_pi_n[p] = gamma * G_n[p] + log_stable(E_r[p])
    softmax_inplace(q_pi_n, 0, P)


# -- learning --------------------------------------------------------------------------------
@device_jit
def learn_A(obs_n, qs_n, lr, pA_r, A_r, logA_r, H_r, wA_r, use_wA, A_meta, A_deps, S_off, wbuf):
    """pA += lr * onehot(o) (x) qs[deps]; A, log A, H[A] (and wA) re-derived column by column."""
    for m in range(A_meta.shape[0]):
        O, J, aoff = A_meta[m, A_O], A_meta[m, A_J], A_meta[m, A_OFF]
        w, w0 = weights(qs_n, S_off, A_deps, A_meta[m, A_DLO], A_meta[m, A_DHI], J, wbuf)
        row = aoff + obs_n[m] * J
        for j in range(J):
            pA_r[row + j] += lr * w[w0 + j]
        hoff = A_meta[m, H_OFF]
        for j in range(J):
            tot = 0.0
            for o in range(O):
                c = pA_r[aoff + o * J + j]
                tot += c if c > MINVAL else MINVAL
            h = 0.0
            for o in range(O):
                i = aoff + o * J + j
                c = pA_r[i]
                a = (c if c > MINVAL else MINVAL) / tot
                A_r[i] = a
                la = log_stable(a)
                logA_r[i] = la
                h -= a * la
                if use_wA:
                    wA_r[i] = dirichlet_weight(c, tot)
            H_r[hoff + j] = h


@device_jit
def learn_B(qs_n, qs_prev_n, prev_n, lr, pB_r, B_r, wB_r, use_wB, B_meta, B_deps, S_off, wbuf):
    """After a valid previous action: pB[f][u] += lr * qs[f] (x) qs_prev[deps]; B (and wB)
    re-derived for every column of the factor."""
    for f in range(B_meta.shape[0]):
        if prev_n[f] < 0:
            return
    for f in range(B_meta.shape[0]):
        Sf, U, J, boff = B_meta[f, B_S], B_meta[f, B_U], B_meta[f, B_J], B_meta[f, B_OFF]
        w, w0 = weights(qs_prev_n, S_off, B_deps, B_meta[f, B_DLO], B_meta[f, B_DHI], J, wbuf)
        base = boff + prev_n[f] * Sf * J
        for s in range(Sf):
            qf = qs_n[S_off[f] + s]
            for j in range(J):
                pB_r[base + s * J + j] += lr * qf * w[w0 + j]
        for u in range(U):
            for j in range(J):
                tot = 0.0
                for s in range(Sf):
                    c = pB_r[boff + (u * Sf + s) * J + j]
                    tot += c if c > MINVAL else MINVAL
                for s in range(Sf):
                    i = boff + (u * Sf + s) * J + j
                    c = pB_r[i]
                    B_r[i] = (c if c > MINVAL else MINVAL) / tot
                    if use_wB:
                        wB_r[i] = dirichlet_weight(c, tot)


@device_jit
def learn_D(qs_n, lr, pD_r, D_r, S_off):
    """On an agent's first step: pD += lr * qs; D re-derived."""
    for f in range(S_off.shape[0] - 1):
        tot = 0.0
        for s in range(S_off[f], S_off[f + 1]):
            pD_r[s] += lr * qs_n[s]
            c = pD_r[s]
            tot += c if c > MINVAL else MINVAL
        for s in range(S_off[f], S_off[f + 1]):
            c = pD_r[s]
            D_r[s] = (c if c > MINVAL else MINVAL) / tot


# -- action selection ------------------------------------------------------------------------
@device_jit
def categorical(p, lo, hi, alpha, u):
    """Index in [0, hi-lo) drawn from softmax(alpha * log p[lo:hi]) by inverse CDF (float64)."""
    m = -math.inf
    for i in range(lo, hi):
        x = alpha * log_stable(np.float64(p[i]))
        if x > m:
            m = x
    tot = 0.0
    for i in range(lo, hi):
        tot += math.exp(alpha * log_stable(np.float64(p[i])) - m)
    target = u * tot
    cum = 0.0
    for i in range(lo, hi):
        cum += math.exp(alpha * log_stable(np.float64(p[i])) - m)
        if cum > target:
            return i - lo
    return hi - lo - 1


@device_jit
def select_action(n, q_pi_n, act_n, pol, alpha, stochastic, marginal, seed, t, B_meta, tmp):
    """act_n <- first actions of the selected policy (full) or per-factor marginal choices."""
    P = pol.shape[0]
    F = pol.shape[2]
    if not marginal:
        if stochastic:
            k = categorical(q_pi_n, 0, P, np.float64(alpha), uniform(seed, n, t, 0))
        else:
            k = 0
            for p in range(1, P):
                if q_pi_n[p] > q_pi_n[k]:
                    k = p
        for f in range(F):
            act_n[f] = pol[k, 0, f]
        return
    for f in range(F):
        U = B_meta[f, B_U]
        for a in range(U):
            tmp[a] = 0.0
        for p in range(P):
            tmp[pol[p, 0, f]] += q_pi_n[p]
        if stochastic:
            act_n[f] = categorical(tmp, 0, U, np.float64(alpha), uniform(seed, n, t, f))
        else:
            k = 0
            for a in range(1, U):
                if tmp[a] > tmp[k]:
                    k = a
            act_n[f] = k


# -- the whole step --------------------------------------------------------------------------
@device_jit
def agent_step(n, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t, gamma, alpha, lr,
               A, logA, H, C, B, D, E, pA, pB, pD, wA, wB,
               A_meta, A_deps, B_meta, B_deps, B_next, S_off, pol, branch, opts, seed, work):
    """Agent n's whole step in pymdp's order. Parameter buffers with one row are shared; with
    N rows, row n is agent n's. lr is (N, 3): lr_pA, lr_pB, lr_pD."""
    rA = n if A.shape[0] > 1 else 0
    rB = n if B.shape[0] > 1 else 0
    S = S_off[S_off.shape[0] - 1]
    T = pol.shape[1]
    tmp = work[(T + 1) * S + T + 1:]  # free while neg_efe is not running
    infer_states(obs[n], logA[rA], prior[n], qs[n], A_meta, A_deps, S_off, opts[OPT_NUM_ITER], tmp)
    neg_efe(qs[n], G[n], A[rA], H[rA], C[n if C.shape[0] > 1 else 0], B[rB],
            wA[n if wA.shape[0] > 1 else 0], wB[n if wB.shape[0] > 1 else 0], A_meta, A_deps,
            B_meta, B_deps, B_next, S_off, pol, branch, opts[OPT_UTILITY], opts[OPT_STATE_INFO],
            opts[OPT_WA], opts[OPT_WB], work)
    policy_posterior(G[n], E[n if E.shape[0] > 1 else 0], gamma[n], q_pi[n])
    if opts[OPT_LEARN_A]:
        learn_A(obs[n], qs[n], lr[n, 0], pA[n], A[n], logA[n], H[n], wA[n if wA.shape[0] > 1 else 0],
                opts[OPT_WA], A_meta, A_deps, S_off, tmp)
    if opts[OPT_LEARN_B]:
        learn_B(qs[n], qs_prev[n], prev_actions[n], lr[n, 1], pB[n], B[n],
                wB[n if wB.shape[0] > 1 else 0], opts[OPT_WB], B_meta, B_deps, S_off, tmp)
    if opts[OPT_LEARN_D] and t[n] == 0:
        learn_D(qs[n], lr[n, 2], pD[n], D[n], S_off)
    select_action(n, q_pi[n], actions[n], pol, alpha[n], opts[OPT_STOCHASTIC], opts[OPT_MARGINAL],
                  seed, t[n], B_meta, tmp)
    transition(qs[n], prior[n], B[rB], B_meta, B_deps, B_next, S_off, actions[n], tmp)
    for s in range(S):
        qs_prev[n, s] = qs[n, s]
    for f in range(actions.shape[1]):
        prev_actions[n, f] = actions[n, f]
    t[n] += 1
