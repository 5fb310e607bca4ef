"""CUDA backend: every buffer on the device (CuPy arrays, agent-major), one Numba-CUDA kernel
launch per step (``kernels.cuda``) on the engine's own stream.

Two step paths (``cuda_path``):

- ``"fused"``: one thread per agent runs the whole step (``kernels.cuda``); a shared model that
  fits is read from each block's shared memory.
- ``"batched"``: the reference algorithm (:mod:`fa_gpu.reference`) on CuPy arrays, where every
  contraction of a shared model with the agents' beliefs is one matrix product (cuBLAS), in
  chunks of at most ``MAX_THREADS`` agents so temporaries stay bounded. For large models
  (hundreds of states) a thread-per-agent matrix-vector product would stream the whole of A from
  L2 for every agent and policy; a GEMM reads it once per tile.

``"auto"`` takes ``batched`` for a shared model (A and B without an agent axis) that does not
fit in shared memory and has a factor with ``BATCHED_MIN_STATES`` states or more, else
``fused``. That threshold comes from the arithmetic above, not a measurement on a card:
``benchmarks/gpu_check.py`` times both paths on the 400-state grid.

Allocator seam: on a GPU, arrays are CuPy arrays; under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) they are NumPy arrays, which the simulator runs kernels on. The
kernel, its arguments and the launch are the same code either way, so whole trajectories can be
checked against the reference without a GPU.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util

import numpy as np

from .kernel_args import kernel_args
from .numpy import NumpyBackend

THREADS_PER_BLOCK = 128
#: launched threads are capped (grid-stride loop past it): bounds the scratch rows kept; also the
#: batched path's chunk of agents
MAX_THREADS = 1 << 20
PATHS = ("auto", "fused", "batched")
#: ``auto`` picks the batched path only for models with a factor at least this large
BATCHED_MIN_STATES = 128


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


def _on_stream(method):
    """A :class:`NumpyBackend` method run with the engine's stream current, so its CuPy work is
    queued in order with the fused kernels."""
    @functools.wraps(method)
    def run(self, *args):
        with self.on_stream():
            return method(self, *args)
    return run


class CudaBackend(NumpyBackend):
    """Device-resident engine state; ``step`` is one fused kernel launch, or the batched
    reference for large shared models (see the module docstring)."""

    name = "cuda"

    def __init__(self, device: int | None = None, cuda_path: str = "auto"):
        from fa_gpu.kernels import cuda as kcuda

        if cuda_path not in PATHS:
            raise ValueError(f"cuda_path must be one of {', '.join(map(repr, PATHS))}; got {cuda_path!r}")
        self.cuda_path = cuda_path
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
        # a blocking stream: CuPy work the engine queues on the default stream (reset, writes
        # through views) stays ordered with the kernels
        self.stream = cupy.cuda.Stream(non_blocking=False)
        self._nb_stream = cuda.external_stream(self.stream.ptr)

    # -- memory ----------------------------------------------------------------------------
    def on_stream(self):
        """Context in which CuPy work goes to the engine's stream (nothing under the simulator)."""
        return contextlib.nullcontext() if self.stream is None else self.stream

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

    def step_path(self, p, cfg) -> str:
        """``"fused"`` or ``"batched"``: how this engine's step runs (``cuda_path``, or the auto
        rule of the module docstring)."""
        if self.cuda_path != "auto":
            return self.cuda_path
        shared = all(p.packed[k].shape[0] == 1 for k in ("A", "B"))
        if (shared and self.shared_model_sizes(p) is None
                and max(cfg.num_states) >= BATCHED_MIN_STATES):
            return "batched"
        return "fused"

    def step_async(self, p, s, cfg, lo: int = 0, hi: int | None = None) -> None:
        """Queue the step for agents ``lo..hi-1`` on the engine's stream; no waiting."""
        hi = cfg.n_agents if hi is None else hi
        if self.step_path(p, cfg) == "batched":
            with self.on_stream():
                for a in range(lo, hi, MAX_THREADS):
                    NumpyBackend.step(self, p, s, cfg, a, min(a + MAX_THREADS, hi))
            return
        blocks, tpb = self.launch_shape(hi - lo)
        args = kernel_args(p, s, cfg)
        work = self._work(p, cfg)
        kernel = self._k.step_kernel(self.shared_model_sizes(p), cfg.dtype.str)
        if self.stream is None:
            kernel[blocks, tpb](work, lo, hi, *args)
        else:
            kernel[blocks, tpb, self._nb_stream](work, lo, hi, *args)

    # -- the reference's methods, on the engine's stream -----------------------------------
    infer_states = _on_stream(NumpyBackend.infer_states)
    infer_policies = _on_stream(NumpyBackend.infer_policies)
    infer_parameters = _on_stream(NumpyBackend.infer_parameters)
    sample_action = _on_stream(NumpyBackend.sample_action)
    update_empirical_prior = _on_stream(NumpyBackend.update_empirical_prior)
    refresh_A = _on_stream(NumpyBackend.refresh_A)
    refresh_B = _on_stream(NumpyBackend.refresh_B)
