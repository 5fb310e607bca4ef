"""Fused GPU step: one CUDA thread per agent (grid-stride), the same ``agent.agent_step`` as the
CPU kernel, compiled for the device by Numba-CUDA.

Thread i keeps its temporaries in row i of ``work`` (one row per launched thread, allocated once
per engine in column-major order, so a warp's accesses to one scratch element coalesce). When
the model is shared by all agents and small enough, each block first copies it (A, log A, H[A],
C, B, E) into shared memory, and every thread of the block reads it from there instead of
global memory. Importing this module needs ``numba.cuda`` only; kernels compile
at their first launch, and under ``NUMBA_ENABLE_CUDASIM=1`` they run on Numba's simulator.
"""
from __future__ import annotations

import functools

import numba
from numba import cuda

from .agent import agent_step

#: static shared memory a block may use (bytes)
SHARED_LIMIT = 48 * 1024


def shared_model_sizes(A, logA, H, C, B, E):
    """Row widths (A, H, C, B, E) of a model that fits in a block's shared memory, else None
    (per-agent buffers, or too big)."""
    bufs = (A, logA, H, C, B, E)
    if any(b.shape[0] != 1 for b in bufs):
        return None
    if sum(b.shape[1] for b in bufs) * A.itemsize > SHARED_LIMIT:
        return None
    return (A.shape[1], H.shape[1], C.shape[1], B.shape[1], E.shape[1])


@cuda.jit(device=True, inline=True)
def _copy_row(src, dst):
    """Row 0 of src into dst, the block's threads sharing the work."""
    for k in range(cuda.threadIdx.x, src.shape[1], cuda.blockDim.x):
        dst[0, k] = src[0, k]


def _make(shared_sizes, dtype):
    """The kernel. ``shared_sizes`` (row widths of A, H, C, B, E; None: no shared memory) and
    ``dtype`` are compile-time constants of its source: shared arrays need constant shapes."""
    if shared_sizes is not None:
        LA, LH, LC, LB, LE = shared_sizes

    def step_kernel(work, lo, hi, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t, gamma, alpha,
                    lr, A, logA, H, C, B, D, E, pA, pB, pD, wA, wB,
                    A_meta, A_deps, B_meta, B_deps, B_next, S_off, pol, branch, opts, seed):
        if shared_sizes is not None:
            sA = cuda.shared.array((1, LA), dtype)
            slogA = cuda.shared.array((1, LA), dtype)
            sH = cuda.shared.array((1, LH), dtype)
            sC = cuda.shared.array((1, LC), dtype)
            sB = cuda.shared.array((1, LB), dtype)
            sE = cuda.shared.array((1, LE), dtype)
            _copy_row(A, sA)
            _copy_row(logA, slogA)
            _copy_row(H, sH)
            _copy_row(C, sC)
            _copy_row(B, sB)
            _copy_row(E, sE)
            cuda.syncthreads()
            A, logA, H, C, B, E = sA, slogA, sH, sC, sB, sE
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        for n in range(lo + i, hi, stride):
            agent_step(n, obs, qs, prior, qs_prev, q_pi, G, actions, prev_actions, t, gamma, alpha,
                       lr, A, logA, H, C, B, D, E, pA, pB, pD, wA, wB, A_meta, A_deps, B_meta,
                       B_deps, B_next, S_off, pol, branch, opts, seed, work, i)

    return step_kernel


def step_kernel_py(shared_sizes, dtype):
    """The uncompiled kernel source, for ``numba.cuda.compile_ptx`` checks."""
    return _make(shared_sizes, numba.from_dtype(dtype))


@functools.lru_cache(maxsize=None)
def step_kernel(shared_sizes, dtype_str: str):
    """The compiled (lazily, at first launch) kernel for a float dtype such as ``'<f4'``."""
    import numpy as np

    return cuda.jit(step_kernel_py(shared_sizes, np.dtype(dtype_str)))
