"""The agent-lanes CPU kernel (``kernels.lanes``): tiles of up to ``LANES`` agents.

Every agent's numbers must not depend on its tile: N below one tile, N not a multiple of it,
cohorts cut anywhere and thread splits all give the reference's numbers, and bitwise the same
numbers as one whole step (lanes never mix; the kernel has no reassociation)."""
from __future__ import annotations

import numpy as np
import pytest

from randmodels import CASES, build, random_obs

pytest.importorskip("numba")

from fa_gpu.kernels.columns import LANES  # noqa: E402

# single factor, multi-factor with sparse dependencies, learning (per-agent A/B), marginal/stochastic
PICK = [c for c in CASES if len(c.num_states) > 1][:3] + [CASES[0], CASES[-1]]


def _state(eng):
    return [np.array(x) for x in (*eng.qs, *eng.prior, eng.q_pi, eng.neg_efe, eng.actions)]


@pytest.mark.parametrize("n", [1, 3, LANES - 1, LANES + 1, 2 * LANES + 5])
@pytest.mark.parametrize("idx", range(len(PICK)), ids=[c.name for c in PICK])
def test_any_tile_fill_matches_reference(idx, n):
    case = PICK[idx]
    _, ref = build(case, n, 11, backend="numpy", dtype="float64")
    _, fast = build(case, n, 11, backend="numba", dtype="float64")
    for t, o in enumerate(random_obs(case, n, 4, 11)):
        np.testing.assert_array_equal(ref.step(o), fast.step(o), err_msg=f"actions at step {t}")
        for x, y in zip(_state(ref), _state(fast)):
            np.testing.assert_allclose(y, x, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("idx", range(len(PICK)), ids=[c.name for c in PICK])
def test_cohorts_and_threads_are_bitwise_the_whole_step(idx, dtype):
    case, n = PICK[idx], 9 * LANES + 13  # >= SERIAL_BELOW: two threads take chunks
    cuts = [0, 5, LANES + 2, 2 * LANES + 3, n]  # tiles start at other agents than in a whole step
    _, whole = build(case, n, 5, backend="numba", dtype=dtype)
    _, parts = build(case, n, 5, backend="numba", dtype=dtype)
    _, threads = build(case, n, 5, backend="numba", dtype=dtype, num_threads=2)
    for o in random_obs(case, n, 3, 5):
        whole.step(o)
        threads.step(o)
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            parts.step(o[lo:hi], agents=(lo, hi))
        for x, y, z in zip(_state(whole), _state(parts), _state(threads)):
            np.testing.assert_array_equal(y, x)
            np.testing.assert_array_equal(z, x)
