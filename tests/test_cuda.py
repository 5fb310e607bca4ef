"""The cuda backend without a GPU: kernels on Numba's CUDA simulator against the reference, PTX
for sm_80 and sm_90, and every fallback path (no CuPy, no driver, no NVML, forced backends).

The simulator and PTX checks run in subprocesses (the simulator must be on before numba is first
imported). On CI (``CI`` set) a missing numba-cuda is a failure, never a skip.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import fa_gpu
from fa_gpu import backends, devices
from fa_gpu.backends import cuda as bcuda

SCRIPTS = Path(__file__).parent / "gpu_scripts"


def _need_numba_cuda():
    # `import numba.cuda` alone is no test: numba's deprecated built-in target answers to that
    # name too, and cannot compile these kernels. The numba-cuda package must be there.
    reason = bcuda.unavailable_reason()
    if reason.startswith("numba-cuda"):
        if os.environ.get("CI"):
            pytest.fail(f"numba-cuda must be installed on CI (pip install -e '.[gpu]'): {reason}")
        pytest.skip(reason)


def _start(script, *args, sim=False):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return subprocess.Popen([sys.executable, str(SCRIPTS / script), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=900) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:] + err[-6000:]
    return out


def _run(script, *args, sim=False, timeout=900):
    return _finish(_start(script, *args, sim=sim), timeout)


def test_simulator_trajectories_equal_reference():
    """Every random model, float64 (stochastic actions) and float32: the fused CUDA kernel on the
    simulator gives the reference's actions and beliefs, learning included; so does the batched
    path in chunks; auto picks fused for the 25-state grid and batched for the 400-state one."""
    _need_numba_cuda()
    from randmodels import CASES

    out = _run("sim_check.py", sim=True)
    assert f"SIM OK {3 * len(CASES)}" in out
    assert "auto ok" in out and "numba off ok" in out and "batched memory ok" in out
    assert "paths ['global', 'shared']" in out
    assert "cohorts ok" in out  # model in shared memory, and per-agent (learning)
    assert "agent offset ok" in out and "worlds ok" in out and "one agent learning ok" in out
    assert "ties ok" in out
    assert int(re.search(r"launches checked (\d+)", out).group(1)) > 100  # arguments a GPU takes


@pytest.mark.parametrize("which", ["basic", pytest.param("all", marks=pytest.mark.slow)])
def test_simulator_window_kernel_equals_reference(which):
    """The fused window kernel (mmp, vmp, fpi from categorical observations) on the simulator:
    every random sequence model (``randmodels.SEQ``) equals the reference step by step, every
    buffer, agents reset mid-run, model in shared and in global memory; cohort launches equal
    the whole step; one learning agent. Each thread reads its action's matrix from B (no
    per-lane copies: ``CudaBackend.lane_matrices``). ``all`` (slow): per-agent models, float32,
    and 30 random setups (``randmodels.random_seq``)."""
    _need_numba_cuda()
    from randmodels import SEQ

    out = _run("window_sim_check.py", *(["all"] if which == "all" else []), sim=True)
    assert f"WINDOW SIM OK {len(SEQ) * (3 if which == 'all' else 1) + (30 if which == 'all' else 0)}" in out
    assert "cohorts ok" in out and "paths ['global', 'shared']" in out
    assert "one agent learning ok" in out and "grid stride ok" in out
    assert int(re.search(r"launches checked (\d+)", out).group(1)) > 50  # arguments a GPU takes


@pytest.mark.slow  # ~3 min on 2 cores: run by .ci/run's second call (-m "slow or faults_long")
def test_kernel_compiles_to_ptx():
    """sm_80 and sm_90, both dtypes, fpi and the window sweep, model in global and in shared
    memory; the two targets compile side by side (each compile is one thread)."""
    _need_numba_cuda()
    ccs = [(8, 0), (9, 0)]
    procs = [_start("ptx_check.py", *cc) for cc in ccs]
    for cc, proc in zip(ccs, procs):
        out = _finish(proc, timeout=1800)
        for dtype in ("float32", "float64"):
            for kind in ("fpi", "window"):
                for tag in ("global", "shared"):
                    assert f"PTX OK sm_{cc[0]}{cc[1]} {dtype} {kind} {tag}" in out


# -- fallbacks -------------------------------------------------------------------------------
@pytest.fixture
def fresh_probe(monkeypatch):
    """Clear the cached probe before and after, keep FA_GPU_BACKEND out of the way, and let the
    driver probe answer "a GPU is there" so that the package checks behind it are reached."""
    monkeypatch.delenv("FA_GPU_BACKEND", raising=False)
    monkeypatch.setattr(devices, "driver_reason", lambda: "")
    bcuda.unavailable_reason.cache_clear()
    yield monkeypatch
    bcuda.unavailable_reason.cache_clear()


class _FakeDriver:
    """Stands in for libcuda: ``cuInit`` returns ``init``, ``cuDeviceGetCount`` reports ``count``."""

    def __init__(self, init=0, count=1):
        self.init, self.count = init, count

    def cuInit(self, flags):
        return self.init

    def cuDeviceGetCount(self, ptr):
        ptr._obj.value = self.count
        return 0


@pytest.mark.parametrize("lib, want", [
    (None, "no NVIDIA driver/GPU found (libcuda.so.1 cannot be loaded)"),
    (_FakeDriver(init=100), "no NVIDIA driver/GPU found (cuInit failed with CUDA error 100)"),
    (_FakeDriver(count=0), "no NVIDIA driver/GPU found (the driver sees no CUDA device)"),
    (_FakeDriver(count=2), ""),
])
def test_driver_reason(monkeypatch, lib, want):
    if sys.platform == "win32":
        pytest.skip("the driver library has another name there")

    def cdll(name):
        if lib is None:
            raise OSError(f"{name}: cannot open shared object file")
        return lib

    monkeypatch.setattr(devices.ctypes, "CDLL", cdll)
    devices.driver_reason.cache_clear()
    try:
        assert devices.driver_reason() == want
    finally:
        devices.driver_reason.cache_clear()


def test_no_driver_is_the_reason_before_any_package(monkeypatch):
    """Without a driver, the reason is the driver, even with every GPU package missing: installing
    packages cannot help there."""
    monkeypatch.delenv("FA_GPU_BACKEND", raising=False)
    monkeypatch.setattr(devices, "driver_reason", lambda: "no NVIDIA driver/GPU found (test)")
    for name in ("cupy", "numba.cuda", "pynvml"):
        monkeypatch.setitem(sys.modules, name, None)
    bcuda.unavailable_reason.cache_clear()
    try:
        assert bcuda.unavailable_reason() == "no NVIDIA driver/GPU found (test)"
        eng = fa_gpu.Engine(fa_gpu.models.grid_world(side=3), 2, backend="auto")
        assert eng.backend_skipped["cuda"] == "no NVIDIA driver/GPU found (test)"
        with pytest.raises(RuntimeError, match=r"backend 'cuda' cannot run: no NVIDIA driver/GPU"):
            fa_gpu.Engine(fa_gpu.models.grid_world(side=3), 2, backend="cuda")
        assert devices.nvml_devices() == ([], "no NVIDIA driver/GPU found (test)")
    finally:
        bcuda.unavailable_reason.cache_clear()


def test_no_cupy_falls_back_with_reason(fresh_probe):
    pytest.importorskip("numba_cuda")
    fresh_probe.setitem(sys.modules, "cupy", None)  # "import cupy" raises ImportError
    reason = bcuda.unavailable_reason()
    assert reason.startswith("CuPy is not installed")
    eng = fa_gpu.Engine(fa_gpu.models.grid_world(side=3), 4, backend="auto")
    assert eng.backend == "numba" and eng.backend_skipped["cuda"] == reason
    with pytest.raises(RuntimeError, match=r"backend 'cuda' cannot run: CuPy is not installed"):
        fa_gpu.Engine(fa_gpu.models.grid_world(side=3), 4, backend="cuda")


def test_cupy_without_driver_falls_back(fresh_probe):
    pytest.importorskip("numba_cuda")

    class CUDARuntimeError(RuntimeError):
        pass

    def no_driver():
        raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver)))
    fresh_probe.setitem(sys.modules, "cupy", fake)
    assert bcuda.unavailable_reason() == ("CuPy cannot use a GPU: CUDARuntimeError: "
                                          "cudaErrorInsufficientDriver: CUDA driver version is insufficient")
    assert backends.availability()["cuda"].startswith("CuPy cannot use a GPU")


def test_real_cupy_on_this_machine_reports_why(fresh_probe):
    """With the real CuPy installed and no driver let past the probe (as on a machine whose
    driver answers but cannot serve CuPy), CuPy's own error is the reason."""
    cupy = pytest.importorskip("cupy")
    pytest.importorskip("numba_cuda")
    try:
        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present")
    reason = bcuda.unavailable_reason()
    assert reason.startswith("CuPy cannot use a GPU: CUDARuntimeError"), reason


def test_no_numba_cuda_falls_back(fresh_probe):
    fresh_probe.setitem(sys.modules, "numba.cuda", None)
    assert bcuda.unavailable_reason().startswith("numba-cuda is not importable")


def test_builtin_numba_cuda_target_is_not_enough(fresh_probe):
    """numba's deprecated built-in target also imports as numba.cuda; without the numba-cuda
    package the backend reports that package missing."""
    real = importlib.util.find_spec
    fresh_probe.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    assert bcuda.unavailable_reason() == ("numba-cuda is not importable (package numba-cuda not "
                                          "installed); pip install 'fa_gpu[gpu]'")


def test_import_never_fails_when_gpu_packages_are_broken():
    code = ("import sys; sys.modules['cupy'] = None; sys.modules['numba.cuda'] = None; "
            "sys.modules['pynvml'] = None; import fa_gpu; "
            "e = fa_gpu.Engine(fa_gpu.models.grid_world(side=3), 2, backend='auto'); "
            "print(e.backend, sorted(e.backend_skipped)); print(fa_gpu.info()['devices_reason'])")
    env = {k: v for k, v in os.environ.items() if k not in ("FA_GPU_BACKEND", "NUMBA_ENABLE_CUDASIM")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    no_driver = devices.driver_reason()
    assert out.stdout.splitlines() == ["numba ['cuda']", no_driver or
                                       "nvidia-ml-py (pynvml) is not installed; pip install 'fa_gpu[gpu]'"]


def test_forced_backend_env(fresh_probe):
    m = fa_gpu.models.grid_world(side=3)
    fresh_probe.setenv("FA_GPU_BACKEND", "numpy")
    assert fa_gpu.Engine(m, 2, backend="numba").backend == "numpy"
    fresh_probe.setenv("FA_GPU_BACKEND", "cuda")
    fresh_probe.setitem(sys.modules, "cupy", None)
    with pytest.raises(RuntimeError, match=r"backend 'cuda' \(forced by FA_GPU_BACKEND\) cannot run"):
        fa_gpu.Engine(m, 2)
    fresh_probe.setenv("FA_GPU_BACKEND", "tpu")
    with pytest.raises(ValueError, match=r"FA_GPU_BACKEND must be one of 'auto', 'cuda', 'numba', 'numpy'; got 'tpu'"):
        fa_gpu.Engine(m, 2)


def test_auto_never_picks_the_simulator(fresh_probe):
    pytest.importorskip("numba_cuda")
    fresh_probe.setattr(bcuda, "simulated", lambda: True)
    assert "simulator" in backends.availability()["cuda"]


# -- NVML and device choice ------------------------------------------------------------------
class _NVMLError(Exception):
    pass


class _NVMLError_LibraryNotFound(_NVMLError):
    pass


def _fake_pynvml(fail_init=False):
    mem = lambda total, free: types.SimpleNamespace(total=total, free=free, used=total - free)
    gpus = [("GPU-A", "00000000:3B:00.0", mem(80 << 30, 70 << 30)),
            ("GPU-B", "00000000:86:00.0", mem(80 << 30, 10 << 30))]

    def init():
        if fail_init:
            raise _NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    return types.SimpleNamespace(
        NVMLError=_NVMLError, nvmlInit=init, nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: "555.42", nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetMemoryInfo=lambda h: gpus[h][2],
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=10 * h, memory=5),
        nvmlDeviceGetName=lambda h: b"NVIDIA H200", nvmlDeviceGetUUID=lambda h: gpus[h][0],
        nvmlDeviceGetPciInfo=lambda h: types.SimpleNamespace(busId=gpus[h][1].encode()))


def test_nvml_library_missing(monkeypatch):
    monkeypatch.setattr(devices, "driver_reason", lambda: "")
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(fail_init=True))
    assert devices.nvml_devices() == ([], "NVML unavailable: NVML Shared Library Not Found")


def test_real_pynvml_without_driver():
    pynvml = pytest.importorskip("pynvml")
    devs, why = devices.nvml_devices()
    if devs:
        pytest.skip("NVML sees a GPU here")
    assert why == (devices.driver_reason() or why) and why.startswith(
        ("no NVIDIA driver/GPU found", "NVML unavailable")), why
    assert isinstance(pynvml.NVMLError_LibraryNotFound("x"), pynvml.NVMLError)


def test_nvml_figures_matched_to_cuda_numbering_by_bus_id(monkeypatch):
    """CUDA_VISIBLE_DEVICES=1: CUDA device 0 is NVML device 1; its figures must follow it."""
    monkeypatch.setattr(devices, "driver_reason", lambda: "")
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())

    class Dev:
        def __init__(self, i):
            self.pci_bus_id = "0000:86:00.0"

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    rt = types.SimpleNamespace(getDeviceCount=lambda: 1, memGetInfo=lambda: (9 << 30, 80 << 30))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=rt, Device=Dev)))
    (d,) = devices.cuda_devices()
    assert d["cuda_index"] == 0 and d["nvml_index"] == 1 and d["uuid"] == "GPU-B"
    assert d["utilization_gpu"] == 10 and d["memory_free"] == 9 << 30


def test_pick_device_and_memory_check():
    devs = [dict(cuda_index=0, memory_free=2 << 30), dict(cuda_index=1, memory_free=5 << 30)]
    assert devices.pick_device(devs) == 1
    assert devices.pick_device(devs, 0) == 0
    with pytest.raises(ValueError, match=r"device must be one of the visible CUDA devices \[0, 1\]; got 3"):
        devices.pick_device(devs, 3)
    with pytest.raises(RuntimeError, match="no CUDA device is visible"):
        devices.pick_device([])
    with pytest.raises(MemoryError, match=r"the engine needs 3\.20 GiB, device 0 has 2\.00 GiB free"):
        devices.check_fits(int(3.2 * 2 ** 30), devs[0])
    devices.check_fits(1 << 30, devs[0])


def test_gpu_check_dry_run_completes():
    """benchmarks/gpu_check.py --dry-run: simulator, tiny N, correctness table and timings."""
    _need_numba_cuda()
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "GPU CHECK OK" in proc.stdout and "grid400" in proc.stdout


def test_reference_uses_only_functions_cupy_has():
    """The batched cuda path runs fa_gpu.reference and fa_gpu.rng on CuPy: every ``xp.<name>``
    they call must exist in CuPy (it imports without a GPU)."""
    import re

    cupy = pytest.importorskip("cupy")
    root = Path(fa_gpu.__file__).parent
    names = set()
    for mod in ("reference.py", "rng.py"):
        names |= set(re.findall(r"\bxp\.(\w+)", (root / mod).read_text()))
    assert {"einsum", "tensordot", "where", "cumsum"} <= names  # the scan sees the calls
    missing = sorted(n for n in names if not hasattr(cupy, n))
    assert not missing, f"not in CuPy: {missing}"
