"""Fused GPU step: one CUDA thread per agent (grid-stride), the same ``agent.agent_step`` as the
CPU kernel, compiled for the device by Numba-CUDA.

Thread i keeps its temporaries in row i of ``work`` (one row per launched thread, allocated once
per engine). When the model is shared by all agents and small enough, each block first copies it
(A, log A, H[A], C, B, E) into dynamic shared memory, and every thread of the block reads it from
there instead of global memory. Importing this module needs ``numba.cuda`` only; kernels compile
at their first launch, and under ``NUMBA_ENABLE_CUDASIM=1`` they run on Numba's simulator.
"""
from __future__ import annotations

import functools

import numba
from numba import cuda

from .agent import agent_step

#: dynamic shared memory a block may use without opting in to more (bytes)
SHARED_LIMIT = 48 * 1024


def shared_model_bytes(A, logA, H, C, B, E) -> int:
    """Bytes of the shared-memory copy of a shared model (buffers with one row)."""
    return (2 * A.shape[1] + H.shape[1] + C.shape[1] + B.shape[1] + E.shape[1]) * A.itemsize


@cuda.jit(device=True, inline=True)
def _copy_row(src, dst, off):
    for k in range(cuda.threadIdx.x, src.shape[1], cuda.blockDim.x):
        dst[off + k] = src[0, k]


def _make(shared_model: bool, dtype):
    """The kernel; ``shared_model`` and ``dtype`` are compile-time constants of its source."""

    def step_kernel(work, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t, gamma, alpha,
                    lr, A, logA, H, C, B, D, E, pA, pB, pD, wA, wB,
                    A_meta, A_deps, B_meta, B_deps, B_next, S_off, pol, branch, opts, seed):
        if shared_model:
            sh = cuda.shared.array(0, dtype)
            o1 = A.shape[1]
            o2 = o1 + A.shape[1]
            o3 = o2 + H.shape[1]
            o4 = o3 + C.shape[1]
            o5 = o4 + B.shape[1]
            _copy_row(A, sh, 0)
            _copy_row(logA, sh, o1)
            _copy_row(H, sh, o2)
            _copy_row(C, sh, o3)
            _copy_row(B, sh, o4)
            _copy_row(E, sh, o5)
            cuda.syncthreads()
            A = sh[0:o1].reshape((1, o1))
            logA = sh[o1:o2].reshape((1, o2 - o1))
            H = sh[o2:o3].reshape((1, o3 - o2))
            C = sh[o3:o4].reshape((1, o4 - o3))
            B = sh[o4:o5].reshape((1, o5 - o4))
            E = sh[o5:o5 + E.shape[1]].reshape((1, E.shape[1]))
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        for n in range(i, obs.shape[0], stride):
            agent_step(n, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t, gamma, alpha,
                       lr, A, logA, H, C, B, D, E, pA, pB, pD, wA, wB, A_meta, A_deps, B_meta,
                       B_deps, B_next, S_off, pol, branch, opts, seed, work, i)

    return step_kernel


def step_kernel_py(shared_model: bool, dtype):
    """The uncompiled kernel source, for ``numba.cuda.compile_ptx`` checks."""
    return _make(shared_model, numba.from_dtype(dtype))


@functools.lru_cache(maxsize=None)
def step_kernel(shared_model: bool, dtype_str: str):
    """The compiled (lazily, at first launch) kernel for a float dtype such as ``'<f4'``."""
    import numpy as np

    return cuda.jit(step_kernel_py(shared_model, np.dtype(dtype_str)))
