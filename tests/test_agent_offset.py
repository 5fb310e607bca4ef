"""``Engine(agent_offset=k)``: an engine holding agents k..k+N-1 of a larger population draws
what one engine of the whole population draws for them (random draws are keyed by the agent's
global index), on every backend; the split points are arbitrary."""
from __future__ import annotations

import numpy as np
import pytest

import fa_gpu
from randmodels import CASES, build, random_obs


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("idx", [1, 8, 22])  # full sampling; marginal sampling; 3 factors
def test_slices_with_offsets_equal_one_engine(backend, idx):
    case, n, cuts = CASES[idx], 41, (0, 5, 38, 41)
    _, whole = build(case, n, 77, backend=backend, action_selection="stochastic", alpha=0.7)
    parts = [build(case, hi - lo, 77, backend=backend, action_selection="stochastic", alpha=0.7,
                   agent_offset=lo)[1] for lo, hi in zip(cuts, cuts[1:])]
    assert parts[1].config.agent_offset == 5
    for t, obs in enumerate(random_obs(case, n, 6, 77)):
        expect = whole.step(obs)
        got = np.concatenate([p.step(obs[lo:hi]) for p, lo, hi in zip(parts, cuts, cuts[1:])])
        np.testing.assert_array_equal(got, expect, err_msg=f"step {t}")
        q_pi = np.concatenate([p.q_pi for p in parts])
        if backend == "numba":  # lanes never mix: bitwise whatever the split
            np.testing.assert_array_equal(q_pi, whole.q_pi)
        else:  # NumPy's batched products may sum in another order for another N
            np.testing.assert_allclose(q_pi, whole.q_pi, rtol=1e-12, atol=1e-14)
    # the draws do depend on the offset: a slice without it draws other actions
    unkeyed = build(case, 33, 77, backend=backend, action_selection="stochastic", alpha=0.7)[1]
    keyed = build(case, 33, 77, backend=backend, action_selection="stochastic", alpha=0.7, agent_offset=5)[1]
    obs = random_obs(case, 33, 4, 78)
    assert any(np.any(unkeyed.step(o) != keyed.step(o)) for o in obs)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", 2**62])
def test_agent_offset_is_checked(bad):
    model = fa_gpu.models.grid_world(3)
    with pytest.raises(ValueError, match="agent_offset must be an integer"):
        fa_gpu.Engine(model, 4, backend="numpy", agent_offset=bad)
