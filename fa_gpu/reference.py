"""The readable reference algorithm: one active-inference step for N agents at once.

Array-generic: every function takes arrays of one array module ``xp`` (NumPy, or CuPy
unchanged) and never loops over agents. It is the oracle every fast backend is tested against,
and it reproduces pymdp 1.0.4 (``fpi`` inference, ``mmp``/``vmp`` sequence inference over a window
of past observations and actions, the variational free energy, categorical observations,
expected free energy, action selection, Dirichlet learning) to floating-point rounding.

Conventions: ``N`` agents; per-agent arrays carry a leading ``N`` axis; model arrays are either
per-agent ``(N, ...)`` or shared (no ``N`` axis, stored once), and functions tell the two apart
by ``ndim``. Beliefs ``qs[f]`` are ``(N, S_f)``; observations ``(N, M)`` ints.
"""
from __future__ import annotations

import string

import numpy as np

from . import rng

#: Floor applied before every log and Dirichlet normalization (pymdp's ``MINVAL``).
MINVAL = float(np.finfo(np.float64).eps)
#: Relative tolerance of a tie in deterministic selection, by dtype name (the kernels' own copy:
#: ``fa_gpu.kernels.jit.TIE_RTOL``; a test keeps the two equal).
TIE_RTOL = {"float32": 1e-5, "float64": 1e-12}


# -- small array helpers ---------------------------------------------------------------------
def log_stable(x, xp=np):
    """``log(max(x, MINVAL))`` elementwise."""
    return xp.log(xp.maximum(x, MINVAL))


def softmax(x, xp=np, axis=-1):
    """Softmax over ``axis`` with the max subtracted first (as ``jax.nn.softmax``)."""
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def xlogx(x, xp=np):
    """``x * log(max(x, MINVAL))`` with ``0 log 0 = 0``."""
    return x * log_stable(x, xp)


def contract(T, vecs, keep=None, xp=np):
    """Contract a tensor with per-agent vectors on all axes but ``keep``.

    T : per-agent ``(N, d0, ..., d_{k-1})`` or shared ``(d0, ..., d_{k-1})`` (told apart by
    ``ndim``); vecs : the ``(N, d_i)`` for every axis ``i != keep``, in axis order; keep : the
    axis (0..k-1) left open, or None. Returns ``(N, d_keep)`` or ``(N,)``.

    A shared ``T`` meets its first vector in one matrix product (``tensordot``: BLAS on the CPU,
    cuBLAS under CuPy), so the agents never get a broadcast copy of ``T`` each.
    """
    k = len(vecs) + (keep is not None)
    if T.ndim == k:
        first = 1 if keep == 0 else 0
        T = xp.tensordot(vecs[0], T, axes=([1], [first]))  # (N, remaining axes in order)
        vecs, k = vecs[1:], k - 1
        keep = None if keep is None else keep - (keep > first)
    letters = string.ascii_lowercase[:k]
    out = "z" + (letters[keep] if keep is not None else "")
    ins = ["z" + letters] + ["z" + letters[i] for i in range(k) if i != keep]
    return xp.einsum(",".join(ins) + "->" + out, T, *vecs)


# -- state inference -------------------------------------------------------------------------
def log_likelihoods(logA, obs, A_dependencies, xp=np):
    """Per-modality log-likelihoods of the observed outcomes.

    logA : list of ``log_stable(A[m])``, per-agent ``(N, O_m, *S_deps)`` or shared
    ``(O_m, *S_deps)``; obs : int ``(N, M)``. Returns a list of ``(N, *S_deps)``.
    """
    n = obs.shape[0]
    return [la[obs[:, m]] if la.ndim == len(deps) + 1 else la[xp.arange(n), obs[:, m]]
            for m, (la, deps) in enumerate(zip(logA, A_dependencies))]


def infer_states(ll, prior, A_dependencies, num_iter: int, xp=np):
    """Fixed-point iteration (pymdp ``run_factorized_fpi``).

    ll : list of per-modality log-likelihoods ``(N, *S_deps)``; prior : list of ``(N, S_f)``.
    One factor: exact single pass. Several: ``num_iter`` parallel (Jacobi) sweeps from uniform
    beliefs, no early stop. Returns ``qs``: list of ``(N, S_f)``.
    """
    log_prior = [log_stable(p, xp) for p in prior]
    if len(prior) == 1:
        return [softmax(sum(ll) + log_prior[0], xp)]
    log_q = [xp.zeros_like(lp) for lp in log_prior]
    for _ in range(num_iter):
        q = [softmax(x, xp) for x in log_q]
        new = [lp.copy() for lp in log_prior]
        for m, deps in enumerate(A_dependencies):
            for i, f in enumerate(deps):
                others = [q[d] for j, d in enumerate(deps) if j != i]
                new[f] = new[f] + contract(ll[m], others, keep=i, xp=xp)
        log_q = new
    return [softmax(x, xp) for x in log_q]


def expected_state(qs, B, actions, B_dependencies, xp=np):
    """One transition: ``qs'[f] = sum_deps B[f][:, deps, u_f] prod qs[deps]``.

    qs : list of ``(N, S_f)``; B : list of per-agent ``(N, S_f, *S_deps, U_f)`` or shared
    ``(S_f, *S_deps, U_f)`` arrays; actions : int ``(N, F)`` or a length-F sequence shared by all
    agents. Returns a list of ``(N, S_f)``.
    """
    n = qs[0].shape[0]
    per_agent_actions = getattr(actions, "ndim", 1) == 2
    out = []
    for f, deps in enumerate(B_dependencies):
        vecs = [qs[d] for d in deps]
        if not per_agent_actions:
            out.append(contract(B[f][..., int(actions[f])], vecs, keep=0, xp=xp))
        elif B[f].ndim == len(deps) + 3:
            out.append(contract(B[f][xp.arange(n), ..., actions[:, f]], vecs, keep=0, xp=xp))
        else:  # shared B, actions per agent: per action, one product over the agents taking it
            res = xp.zeros((n, B[f].shape[0]), dtype=qs[f].dtype)
            for a in range(B[f].shape[-1]):
                idx = xp.nonzero(actions[:, f] == a)[0]
                if idx.size:
                    res[idx] = contract(B[f][..., a], [v[idx] for v in vecs], keep=0, xp=xp)
            out.append(res)
    return out


# -- categorical observations, sequence inference, free energy ---------------------------------
def obs_log_likelihoods(logA, obs, A_dependencies, xp=np):
    """Per-modality log-likelihoods of distributional observations: ``sum_o obs_m[o] logA_m[o]``
    (pymdp's ``distr_obs=True``; a one-hot ``obs_m`` gives :func:`log_likelihoods`).

    logA : as in :func:`log_likelihoods`; obs : list of ``(N, O_m)`` or ``(N, T, O_m)`` (a
    window of T steps). Returns a list of ``(N, *S_deps)`` or ``(N, T, *S_deps)``.
    """
    out = []
    for o, la, deps in zip(obs, logA, A_dependencies):
        if la.ndim == len(deps) + 1:  # shared: one matrix product over all agents and steps
            out.append(xp.tensordot(o, la, axes=([o.ndim - 1], [0])))
        else:
            out.append(xp.einsum("n" + "t" * (o.ndim - 2) + "o,no...->n" + "t" * (o.ndim - 2) + "...", o, la))
    return out


def select_transitions(B, actions, B_dependencies, xp=np):
    """The transition tensors of the actions taken: ``B[f][..., actions[:, k, f]]``.

    B : list of shared ``(S_f, *S_deps, U_f)`` or per-agent ``(N, S_f, *S_deps, U_f)``;
    actions : int ``(N, K, F)``, all valid. Returns a list of ``(N, K, S_f, *S_deps)``.
    """
    n = actions.shape[0]
    out = []
    for f, deps in enumerate(B_dependencies):
        shared = B[f].ndim == len(deps) + 2
        b = xp.moveaxis(B[f], -1, 0 if shared else 1)
        a = actions[:, :, f]
        out.append(b[a] if shared else b[xp.arange(n)[:, None], a])
    return out


def _keep(T, vecs: dict, keep: tuple, xp=np):
    """Contract per-batch ``T`` ``(R, d0, ..., d_{k-1})`` with the ``(R, d_i)`` vectors of
    ``vecs`` (axis -> vector), leaving the axes ``keep`` open in that order: ``(R, *d_keep)``."""
    letters = string.ascii_lowercase[:T.ndim - 1]
    ins = ["z" + letters] + ["z" + letters[i] for i in vecs]
    out = "z" + "".join(letters[i] for i in keep)
    return xp.einsum(",".join(ins) + "->" + out, T, *vecs.values())


def sequence_messages(algo: str, qs, log_prior, Bs, B_dependencies, xp=np):
    """Messages from the past (``future`` of pymdp: prior and transitions into s_t) and from the
    future (``past``: transitions out of s_t) of every factor at every step of a window.

    algo : ``"mmp"`` (marginal message passing: logs of expected transitions, each edge half in
    each direction, the backward one normalized over the parent) or ``"vmp"`` (variational:
    expected log transitions). qs : list of ``(N, T, S_f)``; log_prior : list of ``(N, S_f)``
    (the window's first step), or None for no prior message; Bs : list of
    ``(N, T - 1, S_f, *S_deps)`` (:func:`select_transitions`). Returns ``(forward, backward)``: lists of ``(N, T, S_f)``.
    """
    n, T = qs[0].shape[:2]
    fwd = [xp.zeros_like(q) for q in qs]
    bwd = [xp.zeros_like(q) for q in qs]
    for f, lp in enumerate(log_prior or ()):
        fwd[f][:, 0] = lp
    if T == 1:
        return fwd, bwd
    flat = lambda x: x.reshape((n * (T - 1),) + x.shape[2:])
    before = [flat(q[:, :-1]) for q in qs]
    after = [flat(q[:, 1:]) for q in qs]
    for f, deps in enumerate(B_dependencies):
        b = flat(Bs[f])
        lb = log_stable(b, xp)
        parents = {1 + j: before[d] for j, d in enumerate(deps)}
        if algo == "mmp":
            msg = log_stable(_keep(b, parents, (0,), xp), xp)
        else:
            msg = _keep(lb, parents, (0,), xp)
        fwd[f][:, 1:] = msg.reshape(n, T - 1, -1)
        for j, g in enumerate(deps):  # the message of f's transition to its parent g
            others = {k: v for k, v in parents.items() if k != 1 + j}
            if algo == "mmp":
                pair = _keep(b, others, (0, 1 + j), xp)  # (R, S_f, S_g)
                pair = pair / xp.maximum(xp.sum(pair, axis=-1, keepdims=True), MINVAL)
                msg = 0.5 * log_stable(xp.einsum("zi,zig->zg", after[f], pair), xp)
            else:
                msg = _keep(lb, {0: after[f], **others}, (1 + j,), xp)
            bwd[g][:, :-1] += msg.reshape(n, T - 1, -1)
    if algo == "mmp":  # the other half of every edge (the prior's included) is the backward one
        for x in fwd:
            x[:, :-1] *= 0.5
    return fwd, bwd


def infer_sequence(algo: str, ll, prior, Bs, A_dependencies, B_dependencies, num_iter: int,
                   use_prior: bool = True, xp=np):
    """Sequence inference over a window (pymdp ``run_mmp`` / ``run_vmp``, step size 1).

    ll : list of per-modality log-likelihoods ``(N, T, *S_deps)``; prior : list of ``(N, S_f)``
    (over the window's first state); Bs : list of ``(N, T - 1, S_f, *S_deps)``. ``use_prior``
    False leaves the prior out: pymdp 1.0.4's vmp does so on a trajectory's first step (called
    without past actions, it has no transitions and sends no messages at all). From uniform
    beliefs, ``num_iter`` parallel sweeps ``q(s_t) = softmax(likelihood + forward + backward)``
    over all factors and steps. Returns qs: list of ``(N, T, S_f)``.
    """
    n, T = ll[0].shape[:2]
    qs = [xp.full((n, T, p.shape[1]), 1.0 / p.shape[1], dtype=p.dtype) for p in prior]
    log_prior = [log_stable(p, xp) for p in prior] if use_prior else None
    flat_ll = [x.reshape((n * T,) + x.shape[2:]) for x in ll]
    for _ in range(num_iter):
        fwd, bwd = sequence_messages(algo, qs, log_prior, Bs, B_dependencies, xp)
        x = [a + b for a, b in zip(fwd, bwd)]
        flat_q = [q.reshape(n * T, -1) for q in qs]
        for m, deps in enumerate(A_dependencies):
            for i, f in enumerate(deps):
                others = [flat_q[d] for j, d in enumerate(deps) if j != i]
                x[f] = x[f] + contract(flat_ll[m], others, keep=i, xp=xp).reshape(n, T, -1)
        qs = [softmax(v, xp) for v in x]
    return qs


def free_energy(qs, prior, ll, Bs, A_dependencies, B_dependencies, xp=np):
    """Variational free energy of a mean-field posterior over a window (pymdp ``calc_vfe``).

    qs : list of ``(N, T, S_f)``; prior : list of ``(N, S_f)`` (over the first step); ll : list
    of ``(N, T, *S_deps)``; Bs : list of ``(N, T - 1, S_f, *S_deps)`` (None when T is 1). A single
    step (fpi) is T = 1. ``F = sum_t [E log q(s_t) - E log p(o_t | s_t)] - E log p(s_0)
    - sum_{t>0} E log p(s_t | s_{t-1}, a_{t-1})``. Returns ``(N,)``.
    """
    n, T = qs[0].shape[:2]
    flat = lambda x, k: x.reshape((n * k,) + x.shape[2:])
    v = sum(xp.sum(xlogx(q, xp), axis=(1, 2)) for q in qs)
    v = v - sum(xp.sum(q[:, 0] * log_stable(p, xp), axis=1) for q, p in zip(qs, prior))
    flat_q = [flat(q, T) for q in qs]
    for m, deps in enumerate(A_dependencies):
        acc = contract(flat(ll[m], T), [flat_q[d] for d in deps], xp=xp)
        v = v - xp.sum(acc.reshape(n, T), axis=1)
    if T > 1:
        before = [flat(q[:, :-1], T - 1) for q in qs]
        after = [flat(q[:, 1:], T - 1) for q in qs]
        for f, deps in enumerate(B_dependencies):
            e = contract(log_stable(flat(Bs[f], T - 1), xp), [after[f]] + [before[d] for d in deps], xp=xp)
            v = v - xp.sum(e.reshape(n, T - 1), axis=1)
    return v


# -- policy inference ------------------------------------------------------------------------
def neg_efe(qs, A, B, C, policies, A_dependencies, B_dependencies, *, H_A=None,
            use_utility=True, use_states_info_gain=True, wA=None, wB=None, xp=np):
    """Negative expected free energy of every policy (pymdp ``compute_neg_efe_policy``).

    qs : list of ``(N, S_f)``; A, B : model arrays, per-agent ``(N, ...)`` or shared (no agent
    axis); C : list of ``(N, O_m)`` or ``(O_m,)``; policies : int ``(P, T, F)`` (host NumPy);
    H_A : list of ``(N, *S_deps)`` or ``(*S_deps)`` conditional outcome entropies
    ``-sum_o A log A``; wA, wB : Dirichlet weights (``dirichlet_weights``) for parameter
    information gain, or None. Returns ``(N, P)``.
    """
    n = qs[0].shape[0]
    P, T, _ = policies.shape
    G = xp.zeros((n, P), dtype=qs[0].dtype)
    for p in range(P):
        q = qs
        g = xp.zeros(n, dtype=qs[0].dtype)
        for t in range(T):
            u = policies[p, t]
            q_next = expected_state(q, B, u, B_dependencies, xp)
            qo = [contract(A[m], [q_next[d] for d in deps], keep=0, xp=xp)
                  for m, deps in enumerate(A_dependencies)]
            if use_states_info_gain:
                for m, deps in enumerate(A_dependencies):
                    g = g + (-xp.sum(xlogx(qo[m], xp), axis=-1)
                             - contract(H_A[m], [q_next[d] for d in deps], xp=xp))
            if use_utility:
                for m in range(len(qo)):
                    g = g + xp.sum(qo[m] * C[m], axis=-1)
            if wA is not None:
                for m, deps in enumerate(A_dependencies):
                    g = g - xp.sum(qo[m] * contract(wA[m], [q_next[d] for d in deps], keep=0, xp=xp), -1)
            if wB is not None:
                for f, deps in enumerate(B_dependencies):
                    w = contract(wB[f][..., int(u[f])], [q[d] for d in deps], keep=0, xp=xp)
                    g = g - xp.sum(q_next[f] * w, axis=-1)
            q = q_next
        G[:, p] = g
    return G


def policy_posterior(G, E, gamma, xp=np):
    """``q_pi = softmax(gamma * G + log E)``; G ``(N, P)``, E ``(N, P)`` or ``(P,)``, gamma ``(N,)``."""
    return softmax(gamma[:, None] * G + log_stable(E, xp), xp)


def conditional_entropy(A_m, axis: int, xp=np):
    """``H[A](s) = -sum_o A[o, s] log A[o, s]``, summing over the outcome ``axis``."""
    return -xp.sum(xlogx(A_m, xp), axis=axis)


def digamma(x, xp=np):
    """Digamma for ``x >= 1`` in float64 (error ~1e-15): the recurrence lifts x to >= 12, then the
    asymptotic series to x^-12. Only ever called on ``counts + 1``."""
    x = xp.asarray(x, dtype=np.float64)
    acc = xp.zeros_like(x)
    for _ in range(12):
        small = x < 12.0
        acc = acc - xp.where(small, 1.0 / x, 0.0)
        x = xp.where(small, x + 1.0, x)
    inv2 = 1.0 / (x * x)
    series = inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (
        1.0 / 240 - inv2 * (1.0 / 132 - inv2 * (691.0 / 32760))))))
    return acc + xp.log(x) - 0.5 / x - series


def dirichlet_weights(counts, axis: int, xp=np):
    """pymdp's exact parameter-information-gain weights (``spm_wnorm``), masked to counts > 0.

    ``w = -(log S - log a + psi(a + 1) - psi(S + 1)) * (a > 0)`` with ``a = max(counts, MINVAL)``
    and ``S`` the sum of ``a`` over ``axis`` (the outcome / next-state axis).
    """
    a = xp.maximum(counts, MINVAL)
    s = xp.maximum(xp.sum(a, axis=axis, keepdims=True), MINVAL)
    w = -(xp.log(s) - xp.log(a) + digamma(a + 1.0, xp) - digamma(s + 1.0, xp))
    return (w * (counts > 0)).astype(counts.dtype)


# -- action selection ------------------------------------------------------------------------
def action_marginals(q_pi, policies, num_controls, xp=np):
    """Per factor, the probability of each first action: list of ``(N, U_f)``."""
    first = policies[:, 0, :]
    out = []
    for f, nu in enumerate(num_controls):
        onehot = (first[:, f][:, None] == np.arange(nu)[None, :]).astype(np.float64)
        out.append(q_pi @ xp.asarray(onehot, dtype=q_pi.dtype))
    return out


def categorical(probs, alpha, u, xp=np):
    """Draw from ``softmax(alpha * log probs)`` by inverse CDF with uniforms ``u``.

    probs ``(N, K)``; alpha ``(N,)``; u ``(N,)`` in [0, 1). All in float64 so every backend
    draws the same index. Returns int64 ``(N,)``.
    """
    x = alpha[:, None].astype(np.float64) * log_stable(probs.astype(np.float64), xp)
    w = xp.exp(x - xp.max(x, axis=1, keepdims=True))
    cum = xp.cumsum(w, axis=1)
    target = u * cum[:, -1]
    idx = xp.sum(cum <= target[:, None], axis=1)
    return xp.minimum(idx, probs.shape[1] - 1).astype(np.int64)


def first_max(x, xp=np):
    """Per row, the lowest index whose value is within ``TIE_RTOL`` (relative, by precision) of
    the row's maximum: ``(N, K) -> (N,)`` int64. Exact ties stay ties whatever the summation
    order that produced them; pymdp's ``argmax`` (first maximum) on its exact ties."""
    tol = TIE_RTOL[np.dtype(x.dtype).name]
    m = xp.max(x, axis=1, keepdims=True)
    return xp.argmax(x >= m - tol * xp.abs(m), axis=1).astype(np.int64)


def sample_action(q_pi, policies, num_controls, *, action_selection, sampling_mode, alpha,
                  seed, agent_ids, steps, xp=np):
    """Actions ``(N, F)`` int64 (pymdp ``sample_policy`` / ``sample_action``).

    ``full``: pick a policy (the first maximum of q_pi, see :func:`first_max`, or a draw from
    ``softmax(alpha log q_pi)``) and take its first action. ``marginal``: per factor, the
    marginal of each first action, then its first maximum or a draw. Draws use the counter-based
    generator keyed by (seed, agent id, step, draw index).
    """
    pols = xp.asarray(policies[:, 0, :])
    if sampling_mode == "full":
        if action_selection == "deterministic":
            idx = first_max(q_pi, xp)
        else:
            idx = categorical(q_pi, alpha, rng.uniform(seed, agent_ids, steps, 0, xp), xp)
        return pols[idx]
    margs = action_marginals(q_pi, policies, num_controls, xp)
    cols = []
    for f, mg in enumerate(margs):
        if action_selection == "deterministic":
            cols.append(first_max(mg, xp))
        else:
            cols.append(categorical(mg, alpha, rng.uniform(seed, agent_ids, steps, f, xp), xp))
    return xp.stack(cols, axis=1).astype(np.int64)


# -- learning --------------------------------------------------------------------------------
def dirichlet_mean(counts, axis: int, xp=np):
    """Expected categorical of Dirichlet counts over ``axis`` (pymdp ``dirichlet_expected_value``)."""
    a = xp.maximum(counts, MINVAL)
    return a / xp.sum(a, axis=axis, keepdims=True)


def outer(vecs, xp=np):
    """Per-agent outer product of ``(N, d_i)`` vectors: ``(N, d0, d1, ...)``."""
    out = vecs[0]
    for v in vecs[1:]:
        out = out[..., None] * v.reshape((v.shape[0],) + (1,) * (out.ndim - 1) + (v.shape[1],))
    return out


def learn_A(pA, obs, qs, A_dependencies, lr, xp=np):
    """In place: ``pA[m] += lr * onehot(o_m) (x) qs[deps]``; returns the new A (list, per-agent),
    the Dirichlet mean of ``pA`` (pymdp re-derives A at every step, the first included).

    pA : list of per-agent ``(N, O_m, *S_deps)``; obs : int ``(N, M)``, or a list of M
    distributions ``(N, O_m)`` (categorical observations); lr ``(N,)``.
    """
    n = lr.shape[0]
    A = []
    for m, deps in enumerate(A_dependencies):
        if isinstance(obs, (list, tuple)):
            onehot = obs[m].astype(pA[m].dtype)
        else:
            onehot = (obs[:, m][:, None] == xp.arange(pA[m].shape[1])[None, :]).astype(pA[m].dtype)
        upd = outer([onehot] + [qs[d] for d in deps], xp)
        pA[m] += lr.reshape((n,) + (1,) * (upd.ndim - 1)).astype(pA[m].dtype) * upd
        A.append(dirichlet_mean(pA[m], 1, xp))
    return A


def learn_B(pB, B, qs, qs_prev, prev_actions, B_dependencies, lr, xp=np):
    """In place: ``pB[f][:, deps, a] += lr * qs[f] (x) qs_prev[deps]`` for the agents whose previous
    action ``a`` is valid (all factors >= 0); those agents' ``B[f]`` becomes the Dirichlet mean of
    ``pB[f]``, the others' is unchanged. pB, B : per-agent ``(N, S_f, *S_deps, U_f)``. Returns the
    new B (list)."""
    n = qs[0].shape[0]
    valid = xp.all(prev_actions >= 0, axis=1)
    out = []
    for f, deps in enumerate(B_dependencies):
        nu = pB[f].shape[-1]
        onehot = (prev_actions[:, f][:, None] == xp.arange(nu)[None, :]) & valid[:, None]
        upd = outer([qs[f]] + [qs_prev[d] for d in deps] + [onehot.astype(pB[f].dtype)], xp)
        pB[f] += lr.reshape((n,) + (1,) * (upd.ndim - 1)).astype(pB[f].dtype) * upd
        keep = valid.reshape((n,) + (1,) * (upd.ndim - 1))
        out.append(xp.where(keep, dirichlet_mean(pB[f], 1, xp), B[f]))
    return out


def learn_D(pD, D, qs, lr, mask, xp=np):
    """In place: ``pD[f] += lr * qs[f]`` for agents in ``mask`` (bool ``(N,)``: their first step);
    those agents' ``D[f]`` becomes the Dirichlet mean of ``pD[f]``. Returns the new D (list)."""
    out = []
    for f in range(len(pD)):
        pD[f] += (lr * mask)[:, None].astype(pD[f].dtype) * qs[f]
        out.append(xp.where(mask[:, None], dirichlet_mean(pD[f], 1, xp), D[f]))
    return out
