"""The agent-lanes CPU kernel (``kernels.lanes``): tiles of up to ``Layout.lanes`` agents.

Every agent's numbers must not depend on its tile: N below one tile, N not a multiple of it,
cohorts cut anywhere and thread splits all give the reference's numbers, and bitwise the same
numbers as one whole step (lanes never mix; the kernel has no reassociation)."""
from __future__ import annotations

import numpy as np
import pytest

from randmodels import CASES, build, random_obs

pytest.importorskip("numba")

from fa_gpu import layout  # noqa: E402
from fa_gpu.kernels.columns import LANE_STEP, MAX_LANES, TILE_BYTES, TILE_ROWS  # noqa: E402

# single factor, multi-factor with sparse dependencies, learning (per-agent A/B), marginal/stochastic
PICK = [c for c in CASES if len(c.num_states) > 1][:3] + [CASES[0], CASES[-1]]


def _lanes(case, dtype):
    model, _ = build(case, 1, 0, backend="numpy")
    return layout.build_layout(model, itemsize=np.dtype(dtype).itemsize).lanes


def _state(eng):
    return [np.array(x) for x in (*eng.qs, *eng.prior, eng.q_pi, eng.neg_efe, eng.actions)]


@pytest.mark.parametrize("fill", ["1", "3", "L-1", "L+1", "2L+5"])
@pytest.mark.parametrize("idx", range(len(PICK)), ids=[c.name for c in PICK])
def test_any_tile_fill_matches_reference(idx, fill):
    case = PICK[idx]
    L = _lanes(case, "float64")
    n = eval(fill.replace("2L", "2*L"), {"L": L})
    _, ref = build(case, n, 11, backend="numpy", dtype="float64")
    _, fast = build(case, n, 11, backend="numba", dtype="float64")
    for t, o in enumerate(random_obs(case, n, 4, 11)):
        np.testing.assert_array_equal(ref.step(o), fast.step(o), err_msg=f"actions at step {t}")
        for x, y in zip(_state(ref), _state(fast)):
            np.testing.assert_allclose(y, x, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("idx", range(len(PICK)), ids=[c.name for c in PICK])
def test_cohorts_and_threads_are_bitwise_the_whole_step(idx, dtype):
    case, L = PICK[idx], _lanes(PICK[idx], dtype)
    n = max(9 * L + 13, 300)  # >= SERIAL_BELOW: two threads take chunks
    cuts = [0, 5, L + 2, 2 * L + 3, n]  # tiles start at other agents than in a whole step
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


@pytest.mark.parametrize("side", [3, 8, 20])
def test_tile_lanes_fit_the_budget_and_match_reference(side):
    """A tile takes the most lanes (a multiple of LANE_STEP, at most MAX_LANES) that keep it
    within TILE_BYTES, at least LANE_STEP; float64 never more than float32. The engine steps with
    them and equals the reference (N two tiles and a bit)."""
    import fa_gpu

    model = fa_gpu.models.grid_world(side, noise=0.2)
    for dtype in ("float32", "float64"):
        lay = layout.build_layout(model, itemsize=np.dtype(dtype).itemsize)
        rows, L = int(lay.tile[TILE_ROWS]), lay.lanes
        assert L % LANE_STEP == 0 and LANE_STEP <= L <= MAX_LANES
        assert L == LANE_STEP or rows * L * lay.itemsize <= TILE_BYTES
        assert L == MAX_LANES or rows * (L + LANE_STEP) * lay.itemsize > TILE_BYTES
    assert layout.build_layout(model, itemsize=8).lanes <= layout.build_layout(model, itemsize=4).lanes
    n = 2 * L + 7
    fast = fa_gpu.Engine(model, n, backend="numba", dtype="float64", action_selection="stochastic")
    ref = fa_gpu.Engine(model, n, backend="numpy", dtype="float64", action_selection="stochastic")
    assert fast.layout.lanes == L
    rng = np.random.default_rng(side)
    for t in range(3):
        o = rng.integers(0, side * side, size=(n, 1))
        np.testing.assert_array_equal(fast.step(o), ref.step(o), err_msg=f"actions at step {t}")
        np.testing.assert_allclose(fast.q_pi, ref.q_pi, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fast.qs[0], ref.qs[0], rtol=1e-10, atol=1e-12)
