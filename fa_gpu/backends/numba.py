"""Numba CPU backend: a compiled, cached kernel (``kernels.cpu.step_range``; mmp, vmp and
categorical observations: ``kernels.cpu.window_step_range``) run on disjoint agent ranges by the
host compute pool.

Individual methods (``infer_states`` alone, etc.) run the reference on the same packed buffers;
``step`` runs the fused kernel, for every configuration (fpi; mmp, vmp and categorical
observations through the window sweep, ``kernels.window``): agents ``lo..hi`` are cut into
chunks (one below :data:`SERIAL_BELOW` agents), and the calling thread and ``num_threads - 1`` workers of the compute
pool (``fa_gpu.runtime.pools``) take chunks until none is left, the GIL released; the step
returns when all have finished. Each thread has its own scratch row, so whatever the split, every
agent runs the same machine code on the same inputs: whole steps, cohorts and one-thread steps
agree bitwise.

Threads: the usable physical cores of this process (affinity and cgroup quota respected,
``fa_gpu.runtime.topology``), or ``num_threads`` / ``FA_GPU_NUM_THREADS``.
"""
from __future__ import annotations

import sys
import threading
import time

import numba
import numpy as np

from ..runtime import pools
from ..runtime.topology import pool_sizes
from .numpy import NumpyBackend

#: below this many agents in a step one thread runs it all (a pool round trip costs more)
SERIAL_BELOW = 256
#: a step is cut into about this many chunks per thread, of at most MAX_CHUNK agents
CHUNKS_PER_THREAD, MAX_CHUNK = 4, 16384
_compile_lock = threading.Lock()


def compiled_step(args: tuple, window: bool = False):
    """The compiled ``step_range`` (``window``: ``window_step_range``, for mmp, vmp and
    categorical observations) for these arguments' types, loaded from Numba's cache or compiled
    (saying so on stderr, once per process, kernel and dtype); returns its entry point, which
    skips the dispatcher's per-call type checks (the engine passes the same buffers every step)."""
    from fa_gpu.kernels import cpu, jit

    sig = tuple(numba.typeof(a) for a in args)
    disp = cpu.window_step_range if window else cpu.step_range
    what = "fa_gpu window kernels" if window else "fa_gpu kernels"
    with _compile_lock:
        if sig not in disp.overloads:
            dtype = args[1].A.dtype.name
            tag = f"{'window' if window else 'step'}-{dtype}"
            fresh = not jit.is_compiled(tag)
            if fresh:
                where = "cached afterwards" if jit.CACHE else "FA_GPU_NUMBA_CACHE=0: not cached"
                print(f"compiling {what} for {dtype} (first use, {where})...",
                      file=sys.stderr, flush=True)
            start = time.perf_counter()
            disp.compile(sig)
            if fresh:
                print(f"compiled {what} for {dtype} in {time.perf_counter() - start:.1f} s",
                      file=sys.stderr, flush=True)
                jit.mark_compiled(tag)
                jit.prune_stale_caches()
        return disp.overloads[sig].entry_point


class NumbaBackend(NumpyBackend):
    name = "numba"
    path = "fused"

    def __init__(self, num_threads: int | None = None):
        self.num_threads = pool_sizes(compute_threads=num_threads).compute_threads
        self._entry = None  # compiled step_range, bound at the first step
        self._window = False  # the window kernel (which also writes vfe)

    def work_rows(self, n: int) -> int:
        """One scratch row per thread (one thread below :data:`SERIAL_BELOW` agents)."""
        return 1 if n < SERIAL_BELOW else self.num_threads

    def scratch_size(self, layout) -> int:
        """Elements of one thread's scratch row: the agent-lanes kernel's tile and tail."""
        return layout.lane_scratch_size

    def prepare(self, cfg, layout, shared_model: bool) -> None:
        """Every configuration runs a fused kernel: fpi (``kernels.cpu.step_range``), and mmp,
        vmp and categorical observations (``kernels.cpu.window_step_range``: the window sweep of
        ``kernels.window``, which also computes the free energy)."""
        self.path = "fused"
        self._window = layout.window > 0
        self.lanes = layout.lanes

    def temp_bytes(self, cfg, layout) -> int:
        """A fused step allocates nothing (its scratch is the schema's ``work``)."""
        return 0

    def step(self, b, cfg, lo: int = 0, hi: int | None = None) -> None:
        """The fused kernel for agents ``lo..hi-1`` (default: all). The fpi step from index
        observations leaves the free energy out: ``vfe`` is NaN after it."""
        hi = cfg.n_agents if hi is None else hi
        if not self._window:
            if hi - lo == b.vfe.shape[0]:
                b.vfe.fill(np.nan)  # 0.2 us less than a slice at N=1
            else:
                b.vfe[lo:hi] = np.nan
        args = b.kernel_args(cfg.seed, window=self._window)
        if self._entry is None:
            self._entry = compiled_step(args + (0, 0, 0), window=self._window)
        rows = args[4].shape[0]  # work: one scratch row per thread
        if rows == 1 or hi - lo < SERIAL_BELOW:
            self._entry(*args, 0, lo, hi)
            return
        # Chunks handed out as the threads ask (a few per thread): a thread slowed by other work
        # on its core takes fewer, instead of the whole step waiting for its fixed share.
        size = max(SERIAL_BELOW // 2, min(MAX_CHUNK, -(-(hi - lo) // (CHUNKS_PER_THREAD * rows))))
        size = -(-size // self.lanes) * self.lanes  # whole tiles of the kernel, but the last
        starts = iter(range(lo, hi, size))  # next() on it is atomic under the GIL

        def run(row):
            for a in starts:
                self._entry(*args, row, a, min(hi, a + size))

        pool, futures = pools.compute_pool(self.num_threads), []
        try:
            for r in range(1, rows):
                futures.append(pool.submit(run, r))
            run(0)
        finally:
            # Workers still queued (behind other work on the shared pool) have nothing left to
            # do: cancel them; wait for the others, so no chunk writes after the step returns.
            for f in futures:
                if not f.cancel():
                    f.result()
