"""Per-element cost of kernels/vmath.py's vexp/vlog against math.exp/math.log in a compiled loop.

    python -m benchmarks.vmath

Loops of 4,096 elements, float32 and float64, the kernels' fastmath flags; best of 2,000 calls.
"""
from __future__ import annotations

import math
import time

import numpy as np
from numba import njit

from fa_gpu.kernels import vmath
from fa_gpu.kernels.jit import FASTMATH

FLAGS = FASTMATH - {"reassoc"}


def _loop(fn):
    """A compiled loop ``out[i] = fn(x[i])`` with the kernels' flags."""
    @njit(fastmath=FLAGS)
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])
    return run


_math_log, _v_log, _math_exp, _v_exp = map(_loop, (math.log, vmath.vlog, math.exp, vmath.vexp))


def _ns(fn, x, out, reps=2000) -> float:
    fn(x, out)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn(x, out)
        best = min(best, time.perf_counter_ns() - t0)
    return best / x.shape[0]


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'':8} {'math.log':>9} {'vlog':>7} {'ratio':>6}   {'math.exp':>9} {'vexp':>7} {'ratio':>6}  (ns/element)")
    for dt in (np.float32, np.float64):
        x = rng.uniform(1e-6, 1.0, 4096).astype(dt)
        y = rng.uniform(-30.0, 0.0, 4096).astype(dt)
        out = np.empty_like(x)
        a, b = _ns(_math_log, x, out), _ns(_v_log, x, out)
        c, d = _ns(_math_exp, y, out), _ns(_v_exp, y, out)
        print(f"{dt.__name__:8} {a:9.3f} {b:7.3f} {a / b:5.1f}x   {c:9.3f} {d:7.3f} {c / d:5.1f}x")


if __name__ == "__main__":
    main()
