"""CUDA backend: every buffer on the device (CuPy arrays, agent-major), one Numba-CUDA kernel
launch per step (``kernels.cuda``) on the engine's own stream.

Allocator seam: on a GPU, arrays are CuPy arrays; under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) they are NumPy arrays, which the simulator runs kernels on. The
kernel, its arguments and the launch are the same code either way, so whole trajectories can be
checked against the reference without a GPU.
"""
from __future__ import annotations

import functools
import importlib.util

import numpy as np

from .kernel_args import kernel_args
from .numpy import NumpyBackend

THREADS_PER_BLOCK = 128
#: launched threads are capped (grid-stride loop past it): bounds the scratch rows kept
MAX_THREADS = 1 << 20


def simulated() -> bool:
    from numba import config
    return bool(config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str:
    """'' when the cuda backend can run here, else why not. Probed once (a real allocation:
    CuPy imports without a driver and fails only at the first call) and cached."""
    # numba still ships a deprecated built-in CUDA target under the same name, numba.cuda; our
    # kernels need the numba-cuda package, which replaces it when installed.
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not importable (package numba-cuda not installed); pip install 'fa_gpu[gpu]'"
    try:
        import numba.cuda  # noqa: F401  (recent numba-cuda needs cuda-bindings even to import)
    except ImportError as exc:
        return f"numba-cuda is not importable ({exc}); pip install 'fa_gpu[gpu]'"
    if simulated():
        return ""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc}); pip install 'fa_gpu[gpu]'"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device is visible"
        cupy.zeros(1).sum().item()
    except Exception as exc:  # CUDARuntimeError (no driver), driver/toolkit mismatch, ...
        return f"CuPy cannot use a GPU: {type(exc).__name__}: {exc}"
    return ""


class CudaBackend(NumpyBackend):
    """Device-resident engine state; ``step`` is one fused kernel launch."""

    name = "cuda"

    def __init__(self, device: int | None = None):
        from fa_gpu.kernels import cuda as kcuda

        self._k = kcuda
        self.device_info = None
        if simulated():
            self.xp = np
            self.stream = None
            return
        import cupy
        from numba import cuda

        from .. import devices

        self.xp = cupy
        devs = devices.cuda_devices()
        self.device = devices.pick_device(devs, device)
        self.device_info = next(d for d in devs if d["cuda_index"] == self.device)
        cupy.cuda.Device(self.device).use()
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._nb_stream = cuda.external_stream(self.stream.ptr)

    # -- memory ----------------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        if self.stream is None:
            return np.array(x, dtype=dtype)
        with self.stream:
            return self.xp.array(x, dtype=dtype)

    def to_host(self, x) -> np.ndarray:
        if self.stream is None:
            return np.array(x)
        return self.xp.asnumpy(x, stream=self.stream, blocking=True)

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def check_memory(self, needed: int) -> None:
        """MemoryError before allocating when the engine cannot fit on the chosen device."""
        if self.device_info is not None:
            from .. import devices
            devices.check_fits(needed, self.device_info)

    # -- the step --------------------------------------------------------------------------
    def launch_shape(self, n: int) -> tuple[int, int]:
        """(blocks, threads per block) for n agents."""
        if self.stream is None:  # the simulator runs one Python thread per CUDA thread: keep it small
            return 1, min(n, 32)
        tpb = THREADS_PER_BLOCK
        return (min(n, MAX_THREADS) + tpb - 1) // tpb, tpb

    def work_rows(self, n: int) -> int:
        """One scratch row per launched thread."""
        blocks, tpb = self.launch_shape(n)
        return blocks * tpb

    def _work(self, p, cfg):
        w = p.packed.get("work")
        if w is None:
            w = p.packed["work"] = self.xp.empty((self.work_rows(cfg.n_agents), p.scratch_size),
                                                 dtype=cfg.dtype)
        return w

    def step(self, p, s, cfg, lo: int = 0, hi: int | None = None) -> None:
        self.step_async(p, s, cfg, lo, hi)
        self.synchronize()

    def shared_model_sizes(self, p):
        """Row widths of the model copied into each block's shared memory, or None when it is
        per-agent or too big (then every thread reads global memory)."""
        return self._k.shared_model_sizes(*(p.packed[k] for k in ("A", "logA", "H_A", "C", "B", "E")))

    def step_async(self, p, s, cfg, lo: int = 0, hi: int | None = None) -> None:
        """Queue the fused step for agents ``lo..hi-1`` on the engine's stream; no waiting."""
        hi = cfg.n_agents if hi is None else hi
        blocks, tpb = self.launch_shape(hi - lo)
        args = kernel_args(p, s, cfg)
        work = self._work(p, cfg)
        kernel = self._k.step_kernel(self.shared_model_sizes(p), cfg.dtype.str)
        if self.stream is None:
            kernel[blocks, tpb](work, lo, hi, *args)
        else:
            kernel[blocks, tpb, self._nb_stream](work, lo, hi, *args)
