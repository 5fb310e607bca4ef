"""Fit the polynomial coefficients of ``kernels/vmath.py``'s log (offline; prints them).

    pip install mpmath && python tools/fit_vmath.py

log(m) for m in [sqrt(1/2), sqrt(2)) is written f - f^2/2 + f^3 Q(f) with f = m - 1. Q is
fitted by weighted least squares (weights: Q's share of the whole log, so the error is relative
to log m) on 600 Chebyshev points, solved in 60-digit arithmetic (mpmath: the monomial
Vandermonde system is far too ill-conditioned for float64), then rounded to the working
precision. The accuracy of the result is checked by ``tests/test_vmath.py``.
"""
from __future__ import annotations

import mpmath as mp

mp.mp.dps = 60
LO, HI = mp.sqrt(0.5) - 1, mp.sqrt(2) - 1


def fit(degree: int, points: int = 600) -> list:
    rows, rhs = [], []
    for k in range(points):
        f = (LO + HI) / 2 + (HI - LO) / 2 * mp.cos(mp.pi * (k + mp.mpf(0.5)) / points)
        if f == 0:
            continue
        q = (mp.log1p(f) - f + f * f / 2) / f ** 3
        w = abs(f ** 3 / mp.log1p(f))
        rows.append([w * f ** j for j in range(degree + 1)])
        rhs.append(w * q)
    A, b = mp.matrix(rows), mp.matrix(rhs)
    return list(mp.lu_solve(A.T * A, A.T * b))


if __name__ == "__main__":
    import numpy as np

    for name, degree, dt in (("float32", 7, np.float32), ("float64", 19, np.float64)):
        c = fit(degree)
        print(f"{name}: ({', '.join(repr(float(dt(float(x)))) for x in c)})")
