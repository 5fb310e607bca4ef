"""Compile the fused CUDA step kernel to PTX for one compute capability (argv: major minor),
without a GPU, for float32 and float64 engines. Prints 'PTX OK sm_XY <bytes>' per dtype."""
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

from randmodels import CASES, build  # noqa: E402

from fa_gpu import schema  # noqa: E402
from fa_gpu.kernels import cuda as kcuda  # noqa: E402

# the learning model (per-agent parameters, global memory) and a shared model (shared memory)
for dtype in ("float32", "float64"):
    for case, shared in ((CASES[33], False), (CASES[21], True)):
        _, eng = build(case, 4, 0, backend="numpy", dtype=dtype)
        b = eng._buffers
        # the cuda backend's scratch: column-major, unpadded rows
        work = np.empty((2, schema.widths(eng.config, eng.layout, pad_work=False)["scratch"]),
                        dtype=dtype, order="F")
        bundles = (b.bundle("state"), b.bundle("model"), b.bundle("tables"))
        sig = tuple(numba.typeof(x) for x in bundles) + (types.uint64, numba.typeof(work), types.int64, types.int64)
        sizes = kcuda.shared_model_sizes(bundles[1])
        assert (sizes is not None) == shared
        ptx, _ = cuda.compile_ptx(kcuda.step_kernel_py(sizes, np.dtype(dtype), schema.ModelBundle), sig, cc=cc)
        target = f".target sm_{cc[0]}{cc[1]}"
        assert target in ptx, target
        assert ".entry" in ptx and (".shared" in ptx) == shared and "extern .func" not in ptx
        tag = "shared" if shared else "global"
        if len(sys.argv) > 3:
            open(f"{sys.argv[3]}_{dtype}_{tag}.ptx", "w").write(ptx)
        print(f"PTX OK sm_{cc[0]}{cc[1]} {dtype} {tag} {len(ptx)}", flush=True)
