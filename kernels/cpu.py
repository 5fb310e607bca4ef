"""Fused CPU step: all agents in one call, split over Numba threads.

Agents are cut into chunks (a few per thread, for balance); each chunk allocates its scratch row
once and runs ``agent.agent_step`` for its agents, so nothing is allocated per agent. The same
Python source is compiled twice: with ``prange`` threads, and serially for small N where starting
a parallel region costs more than the work.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .agent import agent_step
from .jit import FASTMATH


def _step_all(n_chunks, scratch_size, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t,
              gamma, alpha, lr, A, logA, H, C, B, D, E, pA, pB, pD, wA, wB,
              A_meta, A_deps, B_meta, B_deps, B_next, S_off, pol, branch, opts, seed):
    N = obs.shape[0]
    size = (N + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        work = np.empty(scratch_size, dtype=qs.dtype)
        for n in range(c * size, min(N, (c + 1) * size)):
            agent_step(n, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t, gamma, alpha,
                       lr, A, logA, H, C, B, D, E, pA, pB, pD, wA, wB, A_meta, A_deps, B_meta,
                       B_deps, B_next, S_off, pol, branch, opts, seed, work)


step_parallel = njit(parallel=True, cache=True, nogil=True, fastmath=FASTMATH)(_step_all)
step_serial = njit(cache=True, nogil=True, fastmath=FASTMATH)(_step_all)
