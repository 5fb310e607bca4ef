"""Deterministic selection breaks ties the same way everywhere: the lowest policy (action) index
among those within TIE_RTOL (relative) of the maximum, in the reference, the numba kernel and the
CUDA kernel (the simulator check runs the same grid-world case), and as pymdp on its exact ties."""
from __future__ import annotations

import numpy as np
import pytest

import fa_gpu
from fa_gpu import reference as ref
from fa_gpu.envs import GridWorldEnv
from fa_gpu.kernels import jit


def test_tolerances_agree_between_reference_and_kernels():
    assert ref.TIE_RTOL == jit.TIE_RTOL


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_first_max_rule_in_reference_and_kernel(dtype):
    from fa_gpu.kernels.agent import first_max

    tol = ref.TIE_RTOL[dtype]
    rows = np.array([[0.3, 0.3 * (1 + tol / 4), 0.2, 0.1],    # within: the first
                     [0.2, 0.3, 0.3 * (1 + 8 * tol), 0.1],    # beyond: the larger
                     [0.1, 0.2, 0.25, 0.25 * (1 - tol / 4)],  # the max comes first
                     [0.25, 0.25, 0.25, 0.25]], dtype=dtype)
    want = [0, 2, 2, 0]
    np.testing.assert_array_equal(ref.first_max(rows), want)
    assert [first_max(rows, r, 0, 4) for r in range(4)] == want
    assert first_max(rows, 1, 2, 4) == 0  # a sub-range is indexed from its start


def _grid_run(backend, dtype, steps=6, n=200, policy_len=2, mode="full"):
    model = fa_gpu.models.grid_world(5, policy_len=policy_len)
    eng = fa_gpu.Engine(model, n, backend=backend, dtype=dtype, sampling_mode=mode)
    env = GridWorldEnv(side=5, seed=0)
    obs, out = env.reset(n), []
    for _ in range(steps):
        act = eng.step(obs)
        out.append(act)
        obs = env.step(act)
    return np.stack(out), eng


@pytest.mark.parametrize("mode", ["full", "marginal"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_grid_world_ties_same_actions_on_every_backend(dtype, mode):
    """The stock grid world is symmetric (moves that lead to equally good cells tie exactly);
    numpy and numba sum those values in different orders, yet choose the same actions."""
    a, eng = _grid_run("numpy", dtype, mode=mode)
    b, _ = _grid_run("numba", dtype, mode=mode)
    np.testing.assert_array_equal(a, b)
    # ties do occur here: the chosen policy is not the unique maximum of q_pi for some agents
    q = eng.q_pi
    close = q >= q.max(axis=1, keepdims=True) * (1 - ref.TIE_RTOL[dtype])
    assert (close.sum(axis=1) > 1).any()


def test_duplicated_policies_choose_the_first():
    """Every policy listed twice, the later copy of the best one first in the list of its
    first action: the lowest index among the exact ties is chosen, on both backends."""
    rng = np.random.default_rng(0)
    A = [rng.dirichlet(np.ones(4), size=5).T]
    B = [np.stack([rng.dirichlet(np.ones(5), size=5).T for _ in range(3)], axis=-1)]
    pols = fa_gpu.construct_policies([3], 2)
    dup = np.concatenate([pols, pols[::-1]])  # policy p and its copy at 2P - 1 - p
    model = fa_gpu.GenerativeModel(A, B, C=[rng.normal(size=4)], policies=dup)
    obs = rng.integers(0, 4, size=(40, 1))
    for dtype in ("float32", "float64"):
        for backend in ("numpy", "numba"):
            eng = fa_gpu.Engine(model, 40, backend=backend, dtype=dtype)
            act = eng.step(obs)
            best = np.argmax(eng.q_pi[:, :9], axis=1)  # the unique best among the originals
            np.testing.assert_array_equal(act[:, 0], dup[best, 0, 0])
            np.testing.assert_allclose(eng.q_pi[:, :9], eng.q_pi[:, 9:][:, ::-1], rtol=1e-6)


@pytest.mark.crossval
def test_grid_world_ties_against_pymdp():
    """pymdp takes the first maximum of its q_pi as computed, so on mathematically tied policies
    its choice is decided by rounding noise (the grid world far from the goal: its G values
    differ by ~3e-16). Fed pymdp's actions, we choose, for every agent and step, the first policy
    within the tolerance of pymdp's own maximum: pymdp's choice wherever it is a clear one
    (float64, reference; the kernels equal the reference in the test above)."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    agent_mod = pytest.importorskip("pymdp.agent")
    import jax.numpy as jnp

    n, steps, tol = 50, 8, ref.TIE_RTOL["float64"]
    model = fa_gpu.models.grid_world(5, policy_len=2, start="uniform")
    J = lambda xs: [jnp.asarray(x) for x in xs]
    agent = agent_mod.Agent(A=J(model.A), B=J(model.B), C=J(model.C), D=J(model.D), policy_len=2,
                            batch_size=n, action_selection="deterministic")
    eng = fa_gpu.Engine(model, n, backend="numpy", dtype="float64")
    env = GridWorldEnv(side=5, seed=0, start="uniform")
    obs, prior = env.reset(n), agent.D
    first = model.policies[:, 0, 0]
    tied = clear = 0
    for t in range(steps):
        qs = agent.infer_states([jnp.asarray(obs[:, 0])], prior)
        q_pi, _ = agent.infer_policies(qs)
        act = np.asarray(agent.sample_action(q_pi))
        prior = agent.update_empirical_prior(jnp.asarray(act), qs)
        eng.infer_states(obs)
        ours = eng.infer_policies()[0]
        np.testing.assert_allclose(ours, np.asarray(q_pi), rtol=1e-10, atol=1e-13)
        mine = eng.sample_action()[:, 0]
        q = np.asarray(q_pi)
        near = q >= q.max(axis=1, keepdims=True) * (1 - tol)
        np.testing.assert_array_equal(mine, first[np.argmax(near, axis=1)], err_msg=f"step {t}")
        unique = near.sum(axis=1) == 1
        np.testing.assert_array_equal(mine[unique], act[unique, 0], err_msg=f"step {t}")
        tied, clear = tied + int((~unique).sum()), clear + int(unique.sum())
        eng.update_empirical_prior(act)
        obs = env.step(act)
    assert tied and clear  # both kinds of decision were made
