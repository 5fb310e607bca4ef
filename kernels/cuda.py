"""Fused GPU step: one CUDA thread per agent (grid-stride), the same ``agent.agent_step`` as the
CPU kernel, compiled for the device by Numba-CUDA.

Thread i keeps its temporaries in row i of ``work`` (one row per launched thread, allocated once
per engine). Importing this module needs ``numba.cuda`` (the ``numba-cuda`` package), nothing
else: it compiles lazily at the first launch, and under ``NUMBA_ENABLE_CUDASIM=1`` it runs on
Numba's simulator.
"""
from __future__ import annotations

from numba import cuda

from .agent import agent_step


def _step_kernel(work, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t, gamma, alpha, lr,
                 A, logA, H, C, B, D, E, pA, pB, pD, wA, wB,
                 A_meta, A_deps, B_meta, B_deps, B_next, S_off, pol, branch, opts, seed):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    for n in range(i, obs.shape[0], stride):
        agent_step(n, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t, gamma, alpha, lr,
                   A, logA, H, C, B, D, E, pA, pB, pD, wA, wB, A_meta, A_deps, B_meta, B_deps,
                   B_next, S_off, pol, branch, opts, seed, work, i)


#: the uncompiled kernel source, for ``numba.cuda.compile_ptx`` checks
step_kernel_py = _step_kernel
step_kernel = cuda.jit(_step_kernel)
