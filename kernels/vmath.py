"""``exp`` and ``log`` that LLVM can vectorize: range reduction, a polynomial, and the exponent
built or read through the float's bits. This numba's llvmlite has no SVML, so ``math.exp`` and
``math.log`` in a loop stay one libm call per element and keep the loop scalar; these are
straight-line arithmetic (no call, no branch, no division), so a loop of them becomes AVX-512
code, and they compile for CUDA too.

``vexp(x)``: x = k ln2 + r, |r| <= ln2 / 2; e^r by its Taylor polynomial (degree 7 in float32,
13 in float64: truncation below half an ulp); times 2^k made from k's bits. Below the smallest
normal result it returns 0, above the largest inf, NaN for NaN.

``vlog(x)``, x positive, normal and finite (callers clip at ``MINVAL`` first): x = 2^e m with m
in [sqrt(1/2), sqrt(2)), f = m - 1, log x = e ln2 + f - f^2/2 + f^3 Q(f), Q fitted by
``tools/fit_vmath.py``. Accuracy against NumPy over the ranges the kernels meet:
``tests/test_vmath.py``.

Each works in the precision of its argument (float32 stays float32). Measured (tests/test_vmath.py,
compiled without ``reassoc``): log within 1.2 ulp (float32) and 1 ulp (float64) of the correctly
rounded value on [MINVAL, 1e6], exp within 1.7 and 2 ulp on its normal range. A caller compiled
with ``reassoc`` (today's kernels, for their dot products) lets LLVM fold the two-part ln2 of the
exp reduction into one constant: exp on [-50, 0] then errs by up to 3 ulp (float32) and 16 ulp
(float64), and by about |x|/ln2 ulp beyond; log is unaffected (2 ulp). The agent-lanes kernel
(``kernels.lanes``, ``kernels.window``), whose loops run across agents and need no
reassociation, calls them. The overloads here are CPU-only: numba-cuda's lowering cannot compile
the closures below, so ``kernels.cuda`` maps both to libdevice's ``log``/``exp`` for the GPU
(``numba.cuda.extending.overload(..., target="cuda")``).
"""
from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from .jit import device_jit


_LN2_HI, _LN2_LO = 0.693145751953125, 1.4286068203094173e-06  # ln2 = HI + LO, HI exact in 16 bits
_LOG2E = 1.4426950408889634
_SQRT2 = 1.4142135623730951

_Q32 = (0.3333335518836975, -0.2500085234642029, 0.19999825954437256, -0.16621370613574982,
        0.14227114617824554, -0.13202103972434998, 0.1262032687664032, -0.07362867891788483)
_Q64 = (0.33333333333333476, -0.24999999999998818, 0.1999999999994066, -0.1666666666694277,
        0.14285714294284182, -0.12499999979190687, 0.11111110496276622, -0.10000000526509671,
        0.09090934101466559, -0.08333341616520101, 0.07691701071242968, -0.07142070651280437,
        0.06675368417905574, -0.06269123483873851, 0.05815394712074233, -0.053297673861835766,
        0.05430710150468241, -0.0627535230833139, 0.056581049562776875, -0.02393988351793053)
_E32 = tuple(1.0 / math.factorial(k) for k in range(8))
_E64 = tuple(1.0 / math.factorial(k) for k in range(14))


# -- bits ------------------------------------------------------------------------------------
@intrinsic
def _bitcast(typingctx, value, target):
    """``value`` reinterpreted as the type of ``target`` (same width): an LLVM bitcast."""
    to = target

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(to))
    return to(value, target), codegen


def _view(x, dtype):
    return np.asarray(x).view(dtype)[()]


def i32_bits(x):
    """The int32 with the bits of float32 ``x``."""
    return _view(np.float32(x), np.int32)


def i64_bits(x):
    """The int64 with the bits of float64 ``x``."""
    return _view(np.float64(x), np.int64)


def f32_from(i):
    """The float32 whose bits are int32 ``i``."""
    return _view(np.int32(i), np.float32)


def f64_from(i):
    """The float64 whose bits are int64 ``i``."""
    return _view(np.int64(i), np.float64)


for _py, _src, _dst in ((i32_bits, types.float32, types.int32), (i64_bits, types.float64, types.int64),
                        (f32_from, types.int32, types.float32), (f64_from, types.int64, types.float64)):
    def _register(src=_src, dst=_dst, py=_py):
        @overload(py)
        def _impl(x):
            return lambda x: _bitcast(src(x), dst(0))
    _register()


# -- the functions, one pair per precision --------------------------------------------------
# Polynomials by Estrin's scheme with constant tuple indices: straight-line code (a Horner loop
# over the coefficients is not unrolled by LLVM beyond ~8 terms, and a loop left in the body keeps
# the loop around it from vectorizing), with more independent multiplies than Horner.
@device_jit(inline=True)
def _estrin8(c, x):
    """c[0] + c[1] x + ... + c[7] x^7."""
    x2 = x * x
    return ((c[0] + c[1] * x) + (c[2] + c[3] * x) * x2) + (
        (c[4] + c[5] * x) + (c[6] + c[7] * x) * x2) * (x2 * x2)


@device_jit(inline=True)
def _estrin16(c, x):
    """c[0] + ... + c[15] x^15."""
    x2 = x * x
    x4 = x2 * x2
    lo = ((c[0] + c[1] * x) + (c[2] + c[3] * x) * x2) + ((c[4] + c[5] * x) + (c[6] + c[7] * x) * x2) * x4
    hi = ((c[8] + c[9] * x) + (c[10] + c[11] * x) * x2) + ((c[12] + c[13] * x) + (c[14] + c[15] * x) * x2) * x4
    return lo + hi * (x4 * x4)


@device_jit(inline=True)
def _estrin24(c, x):
    """c[0] + ... + c[23] x^23."""
    x2 = x * x
    x4 = x2 * x2
    x8 = x4 * x4
    a = ((c[0] + c[1] * x) + (c[2] + c[3] * x) * x2) + ((c[4] + c[5] * x) + (c[6] + c[7] * x) * x2) * x4
    b = ((c[8] + c[9] * x) + (c[10] + c[11] * x) * x2) + ((c[12] + c[13] * x) + (c[14] + c[15] * x) * x2) * x4
    d = ((c[16] + c[17] * x) + (c[18] + c[19] * x) * x2) + ((c[20] + c[21] * x) + (c[22] + c[23] * x) * x2) * x4
    return a + (b + d * x8) * x8


_ESTRIN = {8: _estrin8, 16: _estrin16, 24: _estrin24}


def _padded(coeffs, ft) -> tuple:
    """Coefficients in ``ft`` with zeros up to the next length an Estrin function takes."""
    size = min(k for k in _ESTRIN if k >= len(coeffs))
    return tuple(ft(v) for v in coeffs) + (ft(0.0),) * (size - len(coeffs))


def _make(ft, it, to_bits, from_bits, q, c, mbits, bias):
    """(vlog, vexp) for float type ``ft`` (see the module docstring)."""
    emask, mmask, one = (1 << (it(0).itemsize * 8 - 1 - mbits)) - 1, (1 << mbits) - 1, bias << mbits
    q, c = _padded(q, ft), _padded(c, ft)
    poly_q, poly_c = _ESTRIN[len(q)], _ESTRIN[len(c)]
    hi, lo, log2e, sqrt2 = ft(_LN2_HI), ft(_LN2_LO), ft(_LOG2E), ft(_SQRT2)
    half, unit, zero, inf = ft(0.5), ft(1.0), ft(0.0), ft(math.inf)
    kmin, kmax = ft(1 - bias), ft(bias + 1)  # 2^k = 2^(k//2) 2^(k - k//2), both factors normal
    xmin, xmax = ft((1 - bias) * math.log(2)), ft(math.log(np.finfo(ft).max))

    def vlog(x):
        i = to_bits(x)
        e = ((i >> mbits) & emask) - bias
        m = from_bits((i & mmask) | one)
        big = ft(m > sqrt2)  # 0 or 1, no branch: m halved and e raised above sqrt(2), exactly
        m = m * (unit - half * big)
        ef = ft(e) + big
        f = m - unit
        f2 = f * f
        return ef * hi + (f - half * f2 + f2 * f * poly_q(q, f) + ef * lo)

    def vexp(x):
        k = ft(math.floor(x * log2e + half))
        k = kmax if k > kmax else k
        k = kmin if k < kmin else k
        r = (x - k * hi) - k * lo
        acc = poly_c(c, r)
        half_k = int(k) >> 1
        out = acc * from_bits(it(half_k + bias) << mbits) * from_bits(it(int(k) - half_k + bias) << mbits)
        if x > xmax:
            out = inf
        if x < xmin:
            out = zero
        if x != x:
            out = x
        return out

    return vlog, vexp


_log32, _exp32 = _make(np.float32, np.int32, i32_bits, f32_from, _Q32, _E32, 23, 127)
_log64, _exp64 = _make(np.float64, np.int64, i64_bits, f64_from, _Q64, _E64, 52, 1023)


def vlog(x):
    """log of a positive, normal, finite ``x`` in its precision (module docstring)."""
    return _log32(x) if np.asarray(x).dtype == np.float32 else _log64(np.float64(x))


def vexp(x):
    """e^x in the precision of ``x`` (module docstring)."""
    return _exp32(x) if np.asarray(x).dtype == np.float32 else _exp64(np.float64(x))


# CPU only (see the module docstring for the GPU)
@overload(vlog, target="cpu", inline="always")
def _vlog(x):
    if isinstance(x, types.Float):
        return _log32 if x.bitwidth == 32 else _log64


@overload(vexp, target="cpu", inline="always")
def _vexp(x):
    if isinstance(x, types.Float):
        return _exp32 if x.bitwidth == 32 else _exp64
