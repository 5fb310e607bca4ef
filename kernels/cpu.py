"""Fused CPU step: all agents in one call, split over Numba threads.

Agents ``lo <= n < hi`` (all, or one cohort) are cut into chunks (a few per thread, for balance); chunk c uses row c of the caller's
``work`` array (allocated once per engine) and runs ``agent.agent_step`` for its agents (policies flattened to ``(P, T*F)``), so nothing is allocated per agent. The same
Python source is compiled twice: with ``prange`` threads, and serially for small N where starting
a parallel region costs more than the work.
"""
from __future__ import annotations

from numba import prange

from .agent import agent_step
from .jit import kernel_njit


def _step_all(work, lo, hi, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t,
              gamma, alpha, lr, A, logA, H, C, B, D, E, pA, pB, pD, wA, wB,
              A_meta, A_deps, B_meta, B_deps, B_next, S_off, pol, branch, opts, seed):
    n_chunks = work.shape[0]
    size = (hi - lo + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        for n in range(lo + c * size, min(hi, lo + (c + 1) * size)):
            agent_step(n, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t, gamma, alpha,
                       lr, A, logA, H, C, B, D, E, pA, pB, pD, wA, wB, A_meta, A_deps, B_meta,
                       B_deps, B_next, S_off, pol, branch, opts, seed, work, c)


# No allocation inside (the caller owns ``work``), so no reference counting either: with it, every
# call would bump shared counters atomically, which costs more than the arithmetic. The parallel
# driver is not cached: loaded from Numba's cache it ran on one thread here (numba 0.68); it is
# small, and the per-agent functions it calls are cached.
step_parallel = kernel_njit(parallel=True, _nrt=False, cache=False)(_step_all)
step_serial = kernel_njit(_nrt=False)(_step_all)
