"""kernels/vmath.py: vectorizable exp and log against NumPy, compiled and as Python (the CUDA
simulator's path), over the ranges the kernels meet, with the edge values."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from fa_gpu.kernels import vmath
from fa_gpu.kernels.jit import MINVAL


@njit
def _log_all(x, out):
    for i in range(x.shape[0]):
        out[i] = vmath.vlog(x[i])


@njit
def _exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = vmath.vexp(x[i])


def _ulps(got, x64, fn, dt):
    want = fn(x64)
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(dt)).astype(np.float64)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_log_within_two_ulp(dt):
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.exp(rng.uniform(np.log(MINVAL), 0.0, 100_000)),   # probabilities, floored at MINVAL
        np.exp(rng.uniform(0.0, np.log(1e6), 50_000)),       # counts, totals, digamma arguments
        rng.uniform(0.6, 1.6, 50_000),                       # around 1, both sides of sqrt(2)
        [MINVAL, 0.5, 1.0, np.sqrt(0.5), np.sqrt(2.0), 2.0, 12.0, np.finfo(dt).tiny, 1e30]]).astype(dt)
    out = np.empty_like(x)
    _log_all(x, out)
    u = _ulps(out, x.astype(np.float64), np.log, dt)
    assert u.max() <= 2.0, (x[np.argmax(u)], u.max())
    assert out[np.flatnonzero(x == 1)[0]] == 0
    py = np.array([vmath.vlog(v) for v in x[:2000]], dtype=dt)  # the simulator's Python path
    assert _ulps(py, x[:2000].astype(np.float64), np.log, dt).max() <= 2.0


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_exp_within_two_ulp_and_edges(dt):
    rng = np.random.default_rng(1)
    hi = float(np.log(np.finfo(dt).max)) - 0.01
    lo = float(np.log(np.finfo(dt).tiny)) + 0.01
    x = np.concatenate([rng.uniform(-40.0, 0.0, 100_000),  # softmax: v - max
                        rng.uniform(lo, hi, 100_000), [0.0, -0.0, 1.0, -1.0, 0.5, lo, hi]]).astype(dt)
    out = np.empty_like(x)
    _exp_all(x, out)
    u = _ulps(out, x.astype(np.float64), np.exp, dt)
    assert u.max() <= 2.0, (x[np.argmax(u)], u.max())
    assert out[np.flatnonzero(x == 0)[0]] == 1
    edges = np.array([-1e4, 1e4, np.nan, -np.inf, np.inf], dtype=dt)
    got = np.empty_like(edges)
    _exp_all(edges, got)
    assert got[0] == 0 and got[1] == np.inf and np.isnan(got[2]) and got[3] == 0 and got[4] == np.inf
    py = np.array([vmath.vexp(v) for v in x[:2000]], dtype=dt)
    assert _ulps(py, x[:2000].astype(np.float64), np.exp, dt).max() <= 2.0


def test_precision_is_kept_and_loops_vectorize():
    """float32 in, float32 out (no float64 detour), and a loop of them is SIMD code."""
    x32 = np.linspace(0.1, 2.0, 4096, dtype=np.float32)
    out = np.empty_like(x32)
    _log_all(x32, out)
    _exp_all(x32, out)
    import re

    for fn in (_log_all, _exp_all):
        for sig in fn.signatures:  # packed (SIMD) multiplies, on whatever vector width this CPU has
            assert re.search(r"\b(v?mulp[sd]|vfn?m(add|sub)\d+p[sd])\b", fn.inspect_asm(sig)), (fn, sig)
    assert type(vmath.vlog(np.float32(2.0))) is np.float32
    assert type(vmath.vexp(np.float32(2.0))) is np.float32


def test_bit_views_round_trip():
    for v in (1.0, -2.5, 3.0e-30, 7.0e30):
        assert vmath.f32_from(vmath.i32_bits(np.float32(v))) == np.float32(v)
        assert vmath.f64_from(vmath.i64_bits(v)) == v
    assert vmath.i32_bits(np.float32(1.0)) == 0x3F800000
    assert vmath.i64_bits(1.0) == 0x3FF0000000000000
