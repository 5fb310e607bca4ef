"""Fused GPU step: one CUDA thread per agent (grid-stride), compiled for the device by
Numba-CUDA from the CPU kernels' per-agent source: ``agent.agent_step`` (fpi from index
observations), or ``window.window_agent_step`` (mmp, vmp, categorical observations: the window
sweep of ``kernels.window`` on a tile of one lane, then the same policy and learning code).

The kernel takes the named-tuple bundles of ``fa_gpu.schema`` (``state``, ``model``, ``tables``),
the ``seed``, ``work`` (one scratch row per launched thread, allocated once per engine in
column-major order, so a warp's accesses to one scratch element coalesce), the window kernel
also ``window`` (the window bundle), and ``lo, hi``. When
the model is shared by all agents and small enough, each block first copies it (A, log A, H[A],
C, B, E) into shared memory, and every thread of the block reads it from there instead of
global memory. Importing this module needs ``numba.cuda`` only; kernels compile at their first
launch, and under ``NUMBA_ENABLE_CUDASIM=1`` they run on Numba's simulator.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda, types
from numba.cuda.extending import overload

# numba-cuda 0.30.4 (the newest, 2026-07) still calls np.row_stack when it compiles a kernel;
# NumPy 2.5 removed that alias of np.vstack (found on an H200 whose image has NumPy 2.5.2).
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from .agent import agent_step
from .vmath import vexp, vlog
from .window import window_agent_step

# The lanes code's vectorizable log and exp (``kernels.vmath``, CPU overloads) are libdevice's on
# the GPU, whose log and exp are one instruction sequence per thread anyway.
@overload(vlog, target="cuda", inline="always")
def _vlog_cuda(x):
    if isinstance(x, types.Float):
        return lambda x: math.log(x)


@overload(vexp, target="cuda", inline="always")
def _vexp_cuda(x):
    if isinstance(x, types.Float):
        return lambda x: math.exp(x)


#: static shared memory a block may use (bytes)
SHARED_LIMIT = 48 * 1024
#: the model buffers a block may copy into shared memory, with their sharing group (``Engine``'s
#: per-agent keys)
SHARED_FIELDS = {"A": "A", "logA": "A", "H_A": "A", "C": "C", "B": "B", "E": "E"}


def shared_model_sizes(model, per_agent: dict):
    """Row widths of ``model``'s :data:`SHARED_FIELDS` when all are shared by the agents
    (``per_agent``: group key -> bool; a learned group is per-agent, and its one row at N = 1
    is written by the kernel, so never a block's read-only copy) and fit in a block's shared
    memory together, else None."""
    if any(per_agent[g] for g in SHARED_FIELDS.values()):
        return None
    bufs = [getattr(model, k) for k in SHARED_FIELDS]
    if sum(b.shape[1] for b in bufs) * bufs[0].itemsize > SHARED_LIMIT:
        return None
    return tuple(b.shape[1] for b in bufs)


@cuda.jit(device=True, inline=True)
def _copy_row(src, dst):
    """Row 0 of src into dst, the block's threads sharing the work."""
    for k in range(cuda.threadIdx.x, src.shape[1], cuda.blockDim.x):
        dst[0, k] = src[0, k]


def _block_model(shared_sizes, dtype, model_type):
    """Device function ``model -> model`` seen by a block's threads: with ``shared_sizes`` (row
    widths of :data:`SHARED_FIELDS`, compile-time constants: shared arrays need constant shapes)
    the block first copies those fields into its shared memory and the model bundle is rebuilt
    around the copies (``model_type``: its named-tuple class); without, the model itself."""
    if shared_sizes is None:
        return cuda.jit(device=True, inline=True)(lambda model: model)
    LA, LlA, LH, LC, LB, LE = shared_sizes

    def block_model(model):
        sA = cuda.shared.array((1, LA), dtype)
        slogA = cuda.shared.array((1, LlA), dtype)
        sH = cuda.shared.array((1, LH), dtype)
        sC = cuda.shared.array((1, LC), dtype)
        sB = cuda.shared.array((1, LB), dtype)
        sE = cuda.shared.array((1, LE), dtype)
        _copy_row(model.A, sA)
        _copy_row(model.logA, slogA)
        _copy_row(model.H_A, sH)
        _copy_row(model.C, sC)
        _copy_row(model.B, sB)
        _copy_row(model.E, sE)
        cuda.syncthreads()
        # every field by name: a field added to the bundle and missing here fails to compile
        return model_type(A=sA, logA=slogA, H_A=sH, C=sC, B=sB, D=model.D, E=sE, pA=model.pA,
                          pB=model.pB, pD=model.pD, wA=model.wA, wB=model.wB,
                          gamma=model.gamma, alpha=model.alpha, lr=model.lr)

    return cuda.jit(device=True, inline=True)(block_model)


def _make(shared_sizes, dtype, model_type, window: bool):
    """The kernel: ``window`` False, fpi from index observations (``agent.agent_step``); True,
    the window sweep (``window.window_agent_step``; one more argument, the window bundle). Two
    signatures, because a kernel argument cannot be None: numba-cuda's launcher has no way to
    pass one. The model a block reads: :func:`_block_model`."""
    block_model = _block_model(shared_sizes, dtype, model_type)
    if not window:
        def step_kernel(state, model, tables, seed, work, lo, hi):
            md = block_model(model)
            i = cuda.grid(1)
            for n in range(lo + i, hi, cuda.gridsize(1)):
                agent_step(n, state, md, tables, seed, work, i)
        return step_kernel

    def window_kernel(state, model, tables, seed, work, window, lo, hi):
        md = block_model(model)
        i = cuda.grid(1)
        for n in range(lo + i, hi, cuda.gridsize(1)):
            window_agent_step(n, state, window, md, tables, seed, work, i)
    return window_kernel


def step_kernel_py(shared_sizes, dtype, model_type, window: bool):
    """The uncompiled kernel source, for ``numba.cuda.compile_ptx`` checks."""
    return _make(shared_sizes, numba.from_dtype(dtype), model_type, window)


@functools.lru_cache(maxsize=None)
def step_kernel(shared_sizes, dtype_str: str, model_type, window: bool):
    """The compiled (lazily, at first launch) kernel for a float dtype such as ``'<f4'``."""
    return cuda.jit(step_kernel_py(shared_sizes, np.dtype(dtype_str), model_type, window))
