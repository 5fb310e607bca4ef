"""NVIDIA devices: telemetry through NVML (package ``nvidia-ml-py``, imported as ``pynvml``),
device choice, and ``info()``.

NVML numbers devices physically and ignores ``CUDA_VISIBLE_DEVICES``; CUDA (and CuPy) number the
visible devices. The two are matched by PCI bus id before any NVML figure is paired with a CUDA
device. Every function here works without a driver: NVML errors (``pynvml.NVMLError``, e.g.
``NVMLError_LibraryNotFound``) and a missing ``pynvml`` become an empty device list and a reason.
A reason names the missing driver or GPU first (:func:`driver_reason`): no Python package can
make up for that, so package advice comes only when there is a GPU to use.
"""
from __future__ import annotations

import ctypes
import functools
import sys

#: the CUDA driver library, as the driver installs it
_DRIVER_LIBS = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
GPU_EXTRA = "pip install 'fa_gpu[gpu]'"


def to_host(x):
    """``x`` as a NumPy array: a device array (CuPy: ``__cuda_array_interface__`` and ``.get()``)
    copied to the host, anything else through ``np.asarray`` (no copy when it is one already)."""
    import numpy as np

    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
        return x.get()
    return np.asarray(x)


@functools.lru_cache(maxsize=1)
def driver_reason() -> str:
    """'' when the NVIDIA driver answers and sees a GPU, else ``"no NVIDIA driver/GPU found
    (...)"``. Asks the driver library itself through ctypes (``cuInit``, ``cuDeviceGetCount``,
    which respects ``CUDA_VISIBLE_DEVICES``), so the answer does not depend on which GPU packages
    are installed. Probed once per process."""
    lib = None
    for name in _DRIVER_LIBS:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return f"no NVIDIA driver/GPU found ({_DRIVER_LIBS[0]} cannot be loaded)"
    err = lib.cuInit(0)
    if err:
        return f"no NVIDIA driver/GPU found (cuInit failed with CUDA error {err})"
    count = ctypes.c_int(0)
    err = lib.cuDeviceGetCount(ctypes.byref(count))
    if err or count.value < 1:
        return "no NVIDIA driver/GPU found (the driver sees no CUDA device)"
    return ""


def _norm_bus_id(bus_id) -> str:
    """'00000000:3B:00.0' and '0000:3b:00.0' -> '3b:00.0' (NVML and CUDA pad the domain differently)."""
    if isinstance(bus_id, bytes):
        bus_id = bus_id.decode()
    parts = str(bus_id).strip().lower().split(":")
    return ":".join(parts[-2:])


def nvml_devices() -> tuple[list[dict], str]:
    """(one dict per physical GPU, reason when NVML is unusable). Dict keys: nvml_index, name,
    uuid, pci_bus_id, memory_total, memory_free, memory_used (bytes), utilization_gpu,
    utilization_memory (percent, None when not reported), driver_version."""
    no_driver = driver_reason()
    if no_driver:
        return [], no_driver
    try:
        import pynvml
    except ImportError:
        return [], f"nvidia-ml-py (pynvml) is not installed; {GPU_EXTRA}"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"NVML unavailable: {exc}"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                util = pynvml.nvmlDeviceGetUtilizationRates(h)
                ug, um = util.gpu, util.memory
            except pynvml.NVMLError:
                ug = um = None
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            out.append(dict(
                nvml_index=i, name=name.decode() if isinstance(name, bytes) else name,
                uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                pci_bus_id=_norm_bus_id(pynvml.nvmlDeviceGetPciInfo(h).busId),
                memory_total=int(mem.total), memory_free=int(mem.free), memory_used=int(mem.used),
                utilization_gpu=ug, utilization_memory=um,
                driver_version=driver.decode() if isinstance(driver, bytes) else driver))
        return out, ""
    except pynvml.NVMLError as exc:
        return [], f"NVML query failed: {exc}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def cuda_devices() -> list[dict]:
    """Visible CUDA devices (CuPy numbering) with NVML figures matched by PCI bus id:
    keys cuda_index, pci_bus_id, memory_free, memory_total (from CUDA), plus NVML keys if found."""
    import cupy

    nv = {d["pci_bus_id"]: d for d in nvml_devices()[0]}
    out = []
    for i in range(cupy.cuda.runtime.getDeviceCount()):
        with cupy.cuda.Device(i) as dev:
            free, total = cupy.cuda.runtime.memGetInfo()
            bus = _norm_bus_id(dev.pci_bus_id)
        d = dict(nv.get(bus, {}))
        d.update(cuda_index=i, pci_bus_id=bus, memory_free=int(free), memory_total=int(total))
        out.append(d)
    return out


def pick_device(devices: list[dict], requested: int | None = None) -> int:
    """CUDA index to use: ``requested`` when given (checked), else the most free memory."""
    if not devices:
        raise RuntimeError("no CUDA device is visible")
    if requested is not None:
        idx = [d["cuda_index"] for d in devices]
        if requested not in idx:
            raise ValueError(f"device must be one of the visible CUDA devices {idx}; got {requested}")
        return requested
    return max(devices, key=lambda d: d["memory_free"])["cuda_index"]


def check_fits(needed: int, device: dict) -> None:
    """MemoryError with both figures when ``needed`` bytes exceed the device's free memory."""
    free = device["memory_free"]
    if needed > free:
        gib = 2.0 ** 30
        raise MemoryError(f"the engine needs {needed / gib:.2f} GiB, device {device['cuda_index']} "
                          f"has {free / gib:.2f} GiB free; use fewer agents or dtype='float32'")


@functools.lru_cache(maxsize=1)
def _cpu():
    from .runtime.topology import cpu_topology, pool_sizes
    return cpu_topology().describe(), pool_sizes()


def info() -> dict:
    """What this machine offers fa_gpu: backends (and why not), NVIDIA driver and devices
    (memory, utilization), CPU topology and pool sizes."""
    from . import backends

    devs, why = nvml_devices()
    topo, pools = _cpu()
    return dict(
        backends=backends.availability(),
        driver_version=devs[0]["driver_version"] if devs else None,
        devices=devs, devices_reason=why, cpu=topo,
        pools=dict(compute_threads=pools.compute_threads, io_threads=pools.io_threads))
