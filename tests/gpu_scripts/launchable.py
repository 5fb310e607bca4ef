"""For the simulator checks: every argument the cuda backend launches a kernel with must be one
numba-cuda's launcher can pass to a real GPU (``numba.cuda.dispatcher._Kernel._prepare_args``:
arrays, integers, floats, booleans, and tuples of them; no None). The simulator runs kernels as
Python and passes anything, so :func:`install` wraps the kernel factory with this check."""
import numba
from numba import types

#: the scalar types numba-cuda's launcher converts (besides arrays and tuples of these)
SCALARS = (types.Integer, types.Float, types.Boolean)


def check(value, where: str) -> None:
    ty = numba.typeof(value)
    if isinstance(ty, types.BaseTuple):
        for i, v in enumerate(value):
            check(v, f"{where}[{i}]")
    elif not isinstance(ty, (types.Array, *SCALARS)):
        raise TypeError(f"kernel argument {where} of type {ty} cannot be passed to a GPU kernel")


def install(kcuda) -> dict:
    """Wrap ``kcuda.step_kernel`` so that every launch checks its arguments; returns the count
    of checked launches (key "launches")."""
    real, seen = kcuda.step_kernel, {"launches": 0}

    def step_kernel(*key):
        kernel = real(*key)

        class Checked:
            def __getitem__(self, config):
                launch = kernel[config]

                def run(*args):
                    for i, a in enumerate(args):
                        check(a, f"#{i}")
                    seen["launches"] += 1
                    return launch(*args)
                return run
        return Checked()

    kcuda.step_kernel = step_kernel
    return seen
