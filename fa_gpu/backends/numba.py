"""Numba CPU backend: one fused, multi-threaded kernel call per step (``kernels.cpu``).

Individual methods (``infer_states`` alone, etc.) run the reference on the same packed buffers;
``step`` runs the fused kernel. Threads: the usable physical cores of this process (affinity and
cgroup quota respected, ``fa_gpu.runtime.topology``), or ``num_threads`` / ``FA_GPU_NUM_THREADS``.
"""
from __future__ import annotations

import numba
import numpy as np

from ..runtime.topology import pool_sizes
from .numpy import NumpyBackend
from .kernel_args import cached_kernel_args

#: below this many agents one thread does the whole step (a parallel region costs more)
SERIAL_BELOW = 256


class NumbaBackend(NumpyBackend):
    name = "numba"
    path = "fused"

    def __init__(self, num_threads: int | None = None):
        from fa_gpu.kernels import cpu  # compiled lazily: importing fa_gpu stays fast

        self._cpu = cpu
        want = pool_sizes(compute_threads=num_threads).compute_threads
        self.num_threads = max(1, min(want, numba.config.NUMBA_NUM_THREADS))

    def work_rows(self, n: int) -> int:
        """One scratch row per chunk of agents (a few chunks per thread)."""
        return 1 if n < SERIAL_BELOW else min(n, 4 * self.num_threads)

    def _work(self, p, cfg):
        """Scratch rows: allocated on first use, reused every step."""
        chunks = self.work_rows(cfg.n_agents)
        w = p.packed.get("work")
        if w is None or w.shape[0] != chunks:
            w = p.packed["work"] = np.empty((chunks, p.scratch_size), dtype=cfg.dtype)
        return w

    def step(self, p, s, cfg, lo: int = 0, hi: int | None = None) -> None:
        """The fused kernel for agents ``lo..hi-1`` (default: all)."""
        hi = cfg.n_agents if hi is None else hi
        work = self._work(p, cfg)
        args = cached_kernel_args(p, s, cfg)
        if work.shape[0] == 1:  # by the engine's size, not the cohort's: see below
            self._cpu.step_serial(work, lo, hi, *args)
            return
        # A cohort of a large engine runs the parallel kernel too, however small: the serial and
        # the parallel kernel are compiled separately, and with fastmath reassociation their
        # sums may round differently in the last bit; cohorts must equal whole steps exactly.
        numba.set_num_threads(self.num_threads)
        self._cpu.step_parallel(work, lo, hi, *args)
