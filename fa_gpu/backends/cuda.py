"""CUDA backend: every buffer on the device (CuPy arrays, agent-major), all work on the engine's
own stream. Two step paths (``cuda_path``):

- ``"fused"``: one Numba-CUDA kernel launch per step (``kernels.cuda``), one thread per agent; a
  shared model that fits is read from each block's shared memory.
- ``"batched"``: the reference algorithm (:mod:`fa_gpu.reference`) on CuPy arrays. A shared A or
  B meets the agents' beliefs in one matrix product (cuBLAS ``tensordot``); what is left is
  batched per-agent work (einsum, elementwise). Agents go in chunks sized so the temporaries
  stay within ``BATCHED_TEMP_BYTES``. For large models (hundreds of states) a thread-per-agent
  matrix-vector product streams the whole of A from L2 for every agent and policy; a GEMM reads
  it once per tile.

``"auto"`` takes ``batched`` for a shared model (A and B without an agent axis) with a factor
of ``BATCHED_MIN_STATES`` states or more (its B alone is then too big for shared memory), else
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

from .kernel_args import cached_kernel_args
from .numpy import NumpyBackend

THREADS_PER_BLOCK = 128
#: launched threads are capped (grid-stride loop past it): bounds the scratch rows kept; also the
#: batched path's largest chunk of agents
MAX_THREADS = 1 << 20
PATHS = ("auto", "fused", "batched")
#: ``auto`` picks the batched path only for models with a factor at least this large
BATCHED_MIN_STATES = 128
#: the batched path's temporaries per chunk of agents
BATCHED_TEMP_BYTES = 4 << 30
#: live temporaries of the largest size during a batched step (measured with tracemalloc on the
#: numpy backend: peak 8.0 KB per agent on the 400-state grid in float32, 5x its 1.6 KB largest)
_LIVE = 6


def batched_temp_bytes(cfg, layout) -> int:
    """Bytes per agent the batched step needs at its peak: ``_LIVE`` times its largest per-agent
    temporary, which is one of: all modalities' log-likelihoods (sum J_m), a shared A or B
    contracted with its first dependency (O_m J_m / S_first, S_f J_f / S_first), the float64
    policy arrays (2 P), or, when learning, a whole A or B (twice, in float64, with parameter
    information gain). Checked against tracemalloc peaks on every random test model."""
    S, sz = cfg.num_states, layout.sizes
    joint = lambda deps: int(np.prod([S[d] for d in deps]))
    learned = max(sz["A"] if cfg.learn_A else 0, sz["B"] if cfg.learn_B else 0)
    largest = max(
        sz["H"],
        max(o * joint(deps) // S[deps[0]] for o, deps in zip(cfg.num_obs, cfg.A_dependencies)),
        max(S[f] * joint(deps) // S[deps[0]] for f, deps in enumerate(cfg.B_dependencies)),
        2 * cfg.num_policies,
        learned * (2 if cfg.use_param_info_gain else 1))
    return _LIVE * largest * cfg.dtype.itemsize


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
    """Device-resident engine state; ``step`` is one fused kernel launch, or the batched
    reference for large shared models (see the module docstring)."""

    name = "cuda"

    def __init__(self, device: int | None = None, cuda_path: str = "auto"):
        from fa_gpu.kernels import cuda as kcuda

        self.cuda_path = cuda_path  # checked by the Engine
        self.path, self.chunk = "fused", MAX_THREADS
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
        self._cupy, self._nb_cuda = cupy, cuda
        with cupy.cuda.Device(self.device), cuda.gpus[self.device]:
            # blocking: work a user queues on the legacy default stream, e.g. on the
            # *_device arrays, stays ordered with the engine's
            self.stream = cupy.cuda.Stream(non_blocking=False)
            self._nb_stream = cuda.external_stream(self.stream.ptr)

    # -- memory ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def on_stream(self):
        """Context in which this thread's CuPy and Numba work goes to the engine's device and
        stream (nothing under the simulator)."""
        if self.stream is None:
            yield
            return
        with self._cupy.cuda.Device(self.device), self._nb_cuda.gpus[self.device], self.stream:
            yield

    def asarray(self, x, dtype=None):
        with self.on_stream():
            return self.xp.array(x, dtype=dtype)

    def to_host(self, x) -> np.ndarray:
        if self.stream is None:
            return np.array(x)
        with self.on_stream():
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
        """Scratch ``(threads, scratch_size)`` in column-major order: thread i's element k sits
        next to thread i+1's, so a warp's scratch reads and writes are coalesced (row-major, each
        thread's row would be a separate memory segment)."""
        w = p.packed.get("work")
        if w is None:
            w = p.packed["work"] = self.xp.empty((self.work_rows(cfg.n_agents), p.scratch_size),
                                                 dtype=cfg.dtype, order="F")
        return w

    def step(self, p, s, cfg, lo: int = 0, hi: int | None = None) -> None:
        with self.on_stream():
            self.step_async(p, s, cfg, lo, hi)
        self.synchronize()

    def shared_model_sizes(self, p):
        """Row widths of the model copied into each block's shared memory, or None when it is
        per-agent or too big (then every thread reads global memory)."""
        return self._k.shared_model_sizes(*(p.packed[k] for k in ("A", "logA", "H_A", "C", "B", "E")))

    def prepare(self, cfg, layout, shared_model: bool) -> None:
        """Choose the step path (module docstring) and the batched path's chunk of agents."""
        path = self.cuda_path
        if path == "auto":
            big = max(cfg.num_states) >= BATCHED_MIN_STATES
            path = "batched" if shared_model and big else "fused"
        self.path = path
        self.chunk = max(1, min(MAX_THREADS, BATCHED_TEMP_BYTES // batched_temp_bytes(cfg, layout)))

    def scratch_bytes(self, cfg, layout) -> int:
        """The fused kernel's scratch rows, or the batched path's temporaries for one chunk."""
        if self.path == "batched":
            return min(cfg.n_agents, self.chunk) * batched_temp_bytes(cfg, layout)
        return super().scratch_bytes(cfg, layout)

    def step_async(self, p, s, cfg, lo: int = 0, hi: int | None = None) -> None:
        """Queue the step for agents ``lo..hi-1`` on the engine's stream; no waiting. The caller
        (the Engine) holds :meth:`on_stream`, as for every method it calls here."""
        hi = cfg.n_agents if hi is None else hi
        if self.path == "batched":
            for a in range(lo, hi, self.chunk):
                NumpyBackend.step(self, p, s, cfg, a, min(a + self.chunk, hi))
            return
        blocks, tpb = self.launch_shape(hi - lo)
        args = cached_kernel_args(p, s, cfg)
        work = self._work(p, cfg)
        kernel = self._k.step_kernel(self.shared_model_sizes(p), cfg.dtype.str)
        if self.stream is None:
            kernel[blocks, tpb](work, lo, hi, *args)
        else:
            kernel[blocks, tpb, self._nb_stream](work, lo, hi, *args)
