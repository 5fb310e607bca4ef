"""CUDA backend: every buffer on the device (CuPy arrays; per-agent buffers and scratch
column-major, the agent innermost, so a warp's accesses coalesce), all work on the engine's own
stream. Two step paths (``cuda_path``):

- ``"fused"``: one Numba-CUDA kernel launch per step (``kernels.cuda``), one thread per agent; a
  shared model that fits is read from each block's shared memory. With a window (mmp, vmp,
  categorical observations) the kernel runs the window sweep first (``kernels.window``).
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

from .. import schema
from ..kernels.columns import TILE_ROWS
from .numpy import NumpyBackend, reference_temp_bytes

THREADS_PER_BLOCK = 128
#: launched threads are capped (grid-stride loop past it): bounds the scratch rows kept; also the
#: batched path's largest chunk of agents
MAX_THREADS = 1 << 20
PATHS = ("auto", "fused", "batched")
#: ``auto`` picks the batched path only for models with a factor at least this large
BATCHED_MIN_STATES = 128
#: the batched path's temporaries per chunk of agents
BATCHED_TEMP_BYTES = 4 << 30
def simulated() -> bool:
    from numba import config
    return bool(config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str:
    """'' when the cuda backend can run here, else why not: the missing driver or GPU first
    (:func:`fa_gpu.devices.driver_reason`), then a missing package with the extra to install.
    Probed once (a real allocation: CuPy imports without a driver and fails only at the first
    call) and cached."""
    from .. import devices

    sim = simulated()
    if not sim:  # the simulator needs no driver
        no_driver = devices.driver_reason()
        if no_driver:
            return no_driver
    # numba still ships a deprecated built-in CUDA target under the same name, numba.cuda; our
    # kernels need the numba-cuda package, which replaces it when installed.
    if importlib.util.find_spec("numba_cuda") is None:
        return f"numba-cuda is not importable (package numba-cuda not installed); {devices.GPU_EXTRA}"
    try:
        import numba.cuda  # noqa: F401  (recent numba-cuda needs cuda-bindings even to import)
    except ImportError as exc:
        return f"numba-cuda is not importable ({exc}); {devices.GPU_EXTRA}"
    if sim:
        return ""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc}); {devices.GPU_EXTRA}"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device is visible"
        cupy.zeros(1).sum().item()
    except Exception as exc:  # CUDARuntimeError (driver/toolkit mismatch, ...)
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
        self._window = False  # the fused kernel runs the window sweep (and writes vfe)
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
        """MemoryError before allocating when the engine cannot fit on the chosen device (under
        the simulator, whose arrays live on the host: in host memory)."""
        if self.device_info is None:
            return super().check_memory(needed)
        from .. import devices
        devices.check_fits(needed, self.device_info)

    # -- the step --------------------------------------------------------------------------
    def launch_shape(self, n: int) -> tuple[int, int]:
        """(blocks, threads per block) for n agents."""
        if self.stream is None:  # the simulator runs one Python thread per CUDA thread: keep it small
            return 1, min(n, 32, MAX_THREADS)
        tpb = THREADS_PER_BLOCK
        return (min(n, MAX_THREADS) + tpb - 1) // tpb, tpb

    #: scratch is column-major (a warp's threads side by side): no row padding against false sharing
    pads_work = False
    #: per-agent buffers column-major too (``schema.allocate``): a warp's loads coalesce
    agent_innermost = True
    #: a thread's window sweep is a tile of one lane: it reads its own action's matrix from B
    #: (possibly in shared memory) rather than copying it into its scratch every step
    lane_matrices = False

    def empty_work(self, shape, dtype):
        """Scratch ``(threads, scratch_size)`` in column-major order: thread i's element k sits
        next to thread i+1's, so a warp's scratch reads and writes are coalesced (row-major, each
        thread's row would be a separate memory segment)."""
        return self.xp.empty(shape, dtype=dtype, order="F")

    def step(self, b, cfg, lo: int = 0, hi: int | None = None) -> None:
        with self.on_stream():
            self.step_async(b, cfg, lo, hi)
        self.synchronize()

    def shared_model_sizes(self, b):
        """Row widths of the model copied into each block's shared memory, or None when it is
        per-agent or too big (then every thread reads global memory)."""
        if "shared_sizes" not in b.cache:
            b.cache["shared_sizes"] = self._k.shared_model_sizes(b.bundle("model"), b.per_agent)
        return b.cache["shared_sizes"]

    def prepare(self, cfg, layout, shared_model: bool) -> None:
        """Choose the step path (module docstring) and the batched path's chunk of agents. The
        fused kernel runs the window sweep (``kernels.window``) when the engine has a window
        (mmp, vmp, categorical observations: ``layout.window > 0``)."""
        path = self.cuda_path
        if path == "auto":
            big = max(cfg.num_states) >= BATCHED_MIN_STATES
            path = "batched" if shared_model and big else "fused"
        self.path = path
        self._window = layout.window > 0
        self.chunk = max(1, min(MAX_THREADS, BATCHED_TEMP_BYTES // reference_temp_bytes(cfg, layout)))

    @staticmethod
    def scratch_size(layout) -> int:
        """Elements of one thread's scratch: the one-agent step's, and with a window the window
        sweep's tile of one lane (``Layout.tile``) too (the two are used one after the other)."""
        if layout.window > 0:
            return max(layout.scratch_size, int(layout.tile[TILE_ROWS]))
        return layout.scratch_size

    def work_rows(self, n: int) -> int:
        """One scratch row per launched thread (none on the batched path)."""
        if self.path == "batched":
            return 0
        blocks, tpb = self.launch_shape(n)
        return blocks * tpb

    def temp_bytes(self, cfg, layout) -> int:
        """The batched path's temporaries for one chunk; the fused kernel allocates nothing."""
        if self.path == "batched":
            return min(cfg.n_agents, self.chunk) * reference_temp_bytes(cfg, layout)
        return 0

    def step_async(self, b, cfg, lo: int = 0, hi: int | None = None) -> None:
        """Queue the step for agents ``lo..hi-1`` on the engine's stream; no waiting. The caller
        (the Engine) holds :meth:`on_stream`, as for every method it calls here."""
        hi = cfg.n_agents if hi is None else hi
        if self.path == "batched":
            for a in range(lo, hi, self.chunk):
                NumpyBackend.step(self, b, cfg, a, min(a + self.chunk, hi))
            return
        if not self._window:
            b.vfe[lo:hi] = np.nan  # the fpi kernel leaves the free energy out
        blocks, tpb = self.launch_shape(hi - lo)
        args = b.kernel_args(cfg.seed, window=self._window)
        if "kernel" not in b.cache:
            kernel = self._k.step_kernel(self.shared_model_sizes(b), cfg.dtype.str, schema.ModelBundle,
                                         self._window)
            if self.stream is not None:
                # typed once for these buffers (the same every step): a plain launch re-types
                # every argument, each CuPy array through a DLPack export (~0.6 ms per launch,
                # measured on an H200 with 36-40 arrays)
                kernel = kernel.specialize(*args, lo, hi)
            b.cache["kernel"] = kernel
        kernel = b.cache["kernel"]
        launch = kernel[blocks, tpb] if self.stream is None else kernel[blocks, tpb, self._nb_stream]
        launch(*args, lo, hi)
