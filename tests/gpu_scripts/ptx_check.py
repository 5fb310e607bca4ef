"""Compile the fused CUDA step kernel to PTX for one compute capability (argv: major minor),
without a GPU, for float32 and float64 engines, fpi and the window sweep (mmp/vmp), with the arguments laid out as the cuda backend
allocates them (``schema.allocate`` with the backend's ``agent_innermost``: per-agent buffers
column-major, so the kernel is typed with Fortran-layout arrays whose agent stride is one element,
known at compile time). Prints 'PTX OK sm_XY <dtype> <fpi|window> <global|shared> <bytes>'."""
import os
import sys
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import cuda, types  # noqa: E402

cc = (int(sys.argv[1]), int(sys.argv[2]))
# Device functions are compiled for "the current device"; there is none here: name the target.
import numba.cuda.dispatcher as _disp  # noqa: E402

_disp.get_current_device = lambda: SimpleNamespace(compute_capability=cc)

from randmodels import CASES, Case, build  # noqa: E402

from fa_gpu import schema  # noqa: E402
from fa_gpu.backends.cuda import CudaBackend  # noqa: E402
from fa_gpu.kernels import cuda as kcuda  # noqa: E402

# the cuda backend's allocation on host arrays (no device here): its layout flags, NumPy arrays
host_cuda = SimpleNamespace(xp=np, agent_innermost=CudaBackend.agent_innermost,
                            asarray=lambda x, dtype=None: np.array(x, dtype=dtype),
                            empty_work=CudaBackend.empty_work.__get__(SimpleNamespace(xp=np)))

# fpi: the learning model (per-agent parameters, global memory) and a shared model (shared
# memory); the window sweep: mmp with learning (global) and vmp with a three-parent factor (shared)
MMP = (Case("mmp_learn", [3, 2], [3, 3], [3, 2], A_deps=[[0], [0, 1]], counts=("pA", "pB", "pD"),
            kw=dict(learn_A=True, learn_B=True, learn_D=True)), dict(inference_algo="mmp", inference_horizon=3))
VMP = (Case("vmp_3parents", [2, 2, 3], [2, 3], [2, 1, 2], A_deps=[[0, 1], [2]], B_deps=[[0, 1, 2], [1], [2]]),
       dict(inference_algo="vmp", inference_horizon=4, categorical_obs=True))
RUNS = [("fpi", CASES[33], {}, False), ("fpi", CASES[21], {}, True),
        ("window", *MMP, False), ("window", *VMP, True)]
for dtype in ("float32", "float64"):
    for kind, case, kw, shared in RUNS:
        _, eng = build(case, 40, 0, backend="numpy", dtype=dtype, **kw)
        cfg, lay = eng.config, eng.layout
        scratch = CudaBackend.scratch_size(lay)
        spec = schema.shapes(cfg, lay, eng._spec.per_agent, work_rows=64, pad_work=False, scratch=scratch)
        b = schema.Bound(schema.allocate(host_cuda, spec, cfg, lay), spec, cfg, lay)
        bundles = (b.bundle("state"), b.bundle("model"), b.bundle("tables"))
        for name, arr in b.packed.items():  # every per-agent matrix: agent stride one element
            if arr.ndim == 2 and b.rows_of(name) and spec.entries[name][2]:
                assert numba.typeof(arr).layout == "F" and arr.strides[0] == arr.itemsize, name
        assert numba.typeof(b.packed["work"]).layout == "F"
        window = (numba.typeof(b.bundle("window")),) if kind == "window" else ()
        sig = tuple(numba.typeof(x) for x in bundles) + (types.uint64, numba.typeof(b.packed["work"]),
                                                         *window, types.int64, types.int64)
        sizes = kcuda.shared_model_sizes(bundles[1], spec.per_agent)
        assert (sizes is not None) == shared
        ptx, _ = cuda.compile_ptx(kcuda.step_kernel_py(sizes, np.dtype(dtype), schema.ModelBundle, kind == "window"),
                                  sig, cc=cc)
        target = f".target sm_{cc[0]}{cc[1]}"
        assert target in ptx, target
        assert ".entry" in ptx and (".shared" in ptx) == shared and "extern .func" not in ptx
        tag = "shared" if shared else "global"
        if len(sys.argv) > 3:
            open(f"{sys.argv[3]}_{dtype}_{kind}_{tag}.ptx", "w").write(ptx)
        print(f"PTX OK sm_{cc[0]}{cc[1]} {dtype} {kind} {tag} {len(ptx)}", flush=True)
