"""Ready-made models (`fa_gpu.models`) and the vectorized environments (`fa_gpu.envs`)."""
from __future__ import annotations

import time

import numpy as np
import pytest

import fa_gpu
from fa_gpu import envs, models


def _binom_tol(p, n, k=5.0):
    """k standard errors of a frequency with probability p over n draws (plus a floor)."""
    return k * np.sqrt(p * (1 - p) / n) + 1e-3


def _independent_move(cell, action, side):
    """The grid dynamics written out by hand: stay, up, down, left, right; walls stop a move."""
    r, c = divmod(int(cell), side)
    dr, dc = {0: (0, 0), 1: (-1, 0), 2: (1, 0), 3: (0, -1), 4: (0, 1)}[int(action)]
    if 0 <= r + dr < side and 0 <= c + dc < side:
        r, c = r + dr, c + dc
    return r * side + c


# -- grid world model --------------------------------------------------------------------------
@pytest.mark.parametrize("side,noise,dtype", [(3, 0.1, np.float64), (5, 0.3, np.float32)])
def test_grid_model_arrays(side, noise, dtype):
    S = side * side
    m = models.grid_world(side, noise=noise, reward=2.5, dtype=dtype)
    assert isinstance(m, fa_gpu.GenerativeModel)
    assert (m.num_states, m.num_obs, m.num_controls) == ([S], [S], [5])
    A, B, C, D = m.A[0], m.B[0], m.C[0], m.D[0]
    assert A.shape == (S, S) and B.shape == (S, S, 5) and C.shape == D.shape == (S,)
    assert all(x.dtype == dtype for x in (A, B, C, D))
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(A.sum(axis=0), 1.0, atol=tol)
    assert not np.allclose(A, np.eye(S))
    np.testing.assert_allclose(np.diag(A), 1 - noise + noise / S, rtol=1e-6)
    np.testing.assert_allclose(A[~np.eye(S, dtype=bool)], noise / S, rtol=1e-6)
    assert set(np.unique(B)) == {0.0, 1.0}
    np.testing.assert_array_equal(B.sum(axis=0), 1.0)
    expect_C = np.zeros(S)
    expect_C[S - 1] = 2.5
    np.testing.assert_array_equal(C, expect_C)
    np.testing.assert_array_equal(D, np.eye(S)[0])
    assert m.goal == S - 1 and m.side == side


def test_grid_model_options():
    m = models.grid_world(4, goal=(1, 2), start="uniform")
    assert m.goal == 6 and np.argmax(m.C[0]) == 6
    np.testing.assert_allclose(m.D[0], 1 / 16)
    m = models.grid_world(4, goal=3, start=(3, 0))
    np.testing.assert_array_equal(m.D[0], np.eye(16)[12])
    assert models.grid_world(4, policy_len=2).policies.shape == (25, 2, 1)
    # "random" cells come from the seed
    assert models.grid_world(6, goal="random", seed=3).goal == models.grid_world(6, goal="random", seed=3).goal
    assert np.allclose(models.grid_world(3, noise=0.0).A[0], np.eye(9))  # allowed, but not the default


def test_grid_transitions_match_hand_written_moves():
    side = 5
    B = models.grid_world(side).B[0]
    for s in range(side * side):
        for a in range(5):
            np.testing.assert_array_equal(B[:, s, a], np.eye(side * side)[_independent_move(s, a, side)])


def test_grid_400_states_builds_fast():
    t0 = time.perf_counter()
    m = models.grid_world(20)
    assert time.perf_counter() - t0 < 2.0
    assert m.num_states == [400] and m.A[0].shape == (400, 400) and m.B[0].shape == (400, 400, 5)
    np.testing.assert_allclose(m.A[0].sum(axis=0), 1.0, atol=1e-12)
    assert m.C[0][399] == 4.0 and m.C[0].sum() == 4.0


# -- grid world environment --------------------------------------------------------------------
def test_grid_env_dynamics_every_element():
    side, n = 4, 2000
    env = envs.GridWorldEnv(side, start="uniform", seed=5)
    env.reset(n)
    rng = np.random.default_rng(1)
    assert len(np.unique(env.true_state[:, 0])) == side * side  # random positions, walls included
    for _ in range(5):
        before = env.true_state[:, 0].copy()
        act = rng.integers(5, size=(n, 1))
        env.step(act)
        expect = [_independent_move(s, a, side) for s, a in zip(before, act[:, 0])]
        np.testing.assert_array_equal(env.true_state[:, 0], expect)
    rc = env.positions
    assert rc.shape == (n, 2) and rc.dtype == np.int64
    np.testing.assert_array_equal(rc[:, 0] * side + rc[:, 1], env.true_state[:, 0])
    np.testing.assert_array_equal(env.at_goal, env.true_state[:, 0] == side * side - 1)


def test_grid_env_observation_noise_statistics():
    side, noise, n = 5, 0.2, 200_000
    S = side * side
    env = envs.GridWorldEnv(side, noise=noise, start=7, seed=2)
    obs = env.reset(n)
    assert obs.shape == (n, 1) and obs.dtype == np.int64 and env.num_obs == [S]
    p_true = 1 - noise + noise / S
    assert abs(np.mean(obs[:, 0] == 7) - p_true) < _binom_tol(p_true, n)
    # the wrong reports are spread evenly over the other cells
    freq = np.bincount(obs[:, 0], minlength=S) / n
    assert np.all(np.abs(np.delete(freq, 7) - noise / S) < _binom_tol(noise / S, n))
    # after moves the observations follow the new positions
    obs = env.step(np.full((n, 1), 2))  # down: 7 -> 12
    assert abs(np.mean(obs[:, 0] == 12) - p_true) < _binom_tol(p_true, n)


# -- T-maze model ------------------------------------------------------------------------------
def test_tmaze_model_arrays():
    cv, p = 0.9, 0.8
    m = models.tmaze(cue_validity=cv, reward_prob=p, reward=2.0, punishment=-5.0)
    assert (m.num_states, m.num_obs, m.num_controls) == ([4, 2], [4, 3, 2], [4, 1])
    assert m.A_dependencies == [[0], [0, 1], [0, 1]] and m.control_fac_idx == [0]
    A_loc, A_rew, A_cue = m.A
    assert A_loc.shape == (4, 4) and A_rew.shape == (3, 4, 2) and A_cue.shape == (2, 4, 2)
    for a in m.A:
        np.testing.assert_allclose(a.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(A_loc, np.eye(4))
    for cond in range(2):
        for loc in (0, 3):
            np.testing.assert_array_equal(A_rew[:, loc, cond], [1, 0, 0])
        good, bad = cond + 1, 2 - cond
        np.testing.assert_allclose(A_rew[:, good, cond], [0, p, 1 - p])
        np.testing.assert_allclose(A_rew[:, bad, cond], [0, 1 - p, p])
        np.testing.assert_allclose(A_cue[cond, 3, cond], cv)
        for loc in range(3):
            np.testing.assert_allclose(A_cue[:, loc, cond], 0.5)
    B_loc, B_cond = m.B
    for a in range(4):
        np.testing.assert_array_equal(B_loc[:, :, a], np.eye(4)[:, [a] * 4])  # arms not absorbing
    np.testing.assert_array_equal(B_cond, np.eye(2)[:, :, None])
    np.testing.assert_array_equal(m.C[1], [0, 2.0, -5.0])
    assert not m.C[0].any() and not m.C[2].any()
    np.testing.assert_array_equal(m.D[0], [1, 0, 0, 0])
    np.testing.assert_array_equal(m.D[1], [0.5, 0.5])
    assert models.tmaze(dtype=np.float32).A[1].dtype == np.float32


# -- T-maze environment ------------------------------------------------------------------------
def test_tmaze_env_moves_to_every_location():
    env = envs.TMazeEnv(seed=1)
    obs = env.reset(300)
    assert obs.shape == (300, 3) and env.true_state.shape == (300, 2)
    np.testing.assert_array_equal(env.location, 0)
    assert abs(env.condition.mean() - 0.5) < 0.15
    cond = env.condition.copy()
    for a in (3, 1, 2, 0, 2, 3):  # every location, from every other one
        obs = env.step(np.stack([np.full(300, a), np.zeros(300, int)], axis=1))
        np.testing.assert_array_equal(env.location, a)
        np.testing.assert_array_equal(obs[:, 0], a)  # location is observed exactly
        np.testing.assert_array_equal(env.condition, cond)


@pytest.mark.parametrize("arm", [1, 2])
def test_tmaze_reward_frequencies(arm):
    n, p = 100_000, 0.8
    env = envs.TMazeEnv(reward_prob=p, seed=arm)
    obs = env.reset(n)
    np.testing.assert_array_equal(obs[:, 1], 0)  # centre: no outcome
    obs = env.step(np.stack([np.full(n, arm), np.zeros(n, int)], axis=1))
    for cond in range(2):
        r = obs[env.condition == cond, 1]
        p_reward = p if arm == cond + 1 else 1 - p
        assert not np.any(r == 0)
        assert abs(np.mean(r == 1) - p_reward) < _binom_tol(p_reward, len(r))
    assert np.array_equal(env.at_rewarding_arm, env.condition + 1 == arm)


def test_tmaze_cue_validity():
    n, cv = 100_000, 0.7
    env = envs.TMazeEnv(cue_validity=cv, seed=4)
    obs = env.reset(n)
    assert abs(np.mean(obs[:, 2] == env.condition) - 0.5) < _binom_tol(0.5, n)  # centre: uninformative
    obs = env.step(np.tile([3, 0], (n, 1)))
    assert abs(np.mean(obs[:, 2] == env.condition) - cv) < _binom_tol(cv, n)
    np.testing.assert_array_equal(obs[:, 1], 0)  # no reward outcome at the cue


# -- generic process ---------------------------------------------------------------------------
def test_process_samples_a_random_model_with_zeros():
    rng = np.random.default_rng(0)
    A = rng.gamma(1.0, size=(5, 3, 2)) * (rng.random((5, 3, 2)) > 0.4)
    A[0] += 1e-3  # every column keeps some mass
    A /= A.sum(axis=0)
    B0 = np.eye(3)[:, :, None]
    B1 = np.eye(2)[:, :, None]
    model = fa_gpu.GenerativeModel(A=[A], B=[B0, B1], D=[np.eye(3)[2], np.array([0.25, 0.75])])
    n = 200_000
    proc = envs.GenerativeProcess(model, seed=3)
    obs = proc.reset(n)[:, 0]
    np.testing.assert_array_equal(proc.true_state[:, 0], 2)
    assert abs(proc.true_state[:, 1].mean() - 0.75) < _binom_tol(0.75, n)
    for s1 in range(2):
        o = obs[proc.true_state[:, 1] == s1]
        freq = np.bincount(o, minlength=5) / len(o)
        col = A[:, 2, s1]
        assert np.all(freq[col == 0] == 0)  # impossible outcomes never drawn
        assert np.all(np.abs(freq - col) < _binom_tol(col, len(o)))


# -- determinism -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda s: envs.GridWorldEnv(4, start="uniform", seed=s),
                                  lambda s: envs.TMazeEnv(seed=s)])
def test_same_seed_same_trajectory(make):
    def run(env, seed=None):
        n = 500
        out = [env.reset(n, seed)]
        acts = np.random.default_rng(9).integers(0, np.array(env.num_controls), size=(6, n, len(env.num_controls)))
        for a in acts:
            out.append(env.step(a))
            out.append(env.true_state)
        return np.concatenate(out, axis=1)

    a, b, c = run(make(7)), run(make(7)), run(make(8))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.05
    env = make(8)
    run(env)
    np.testing.assert_array_equal(run(env, seed=7), a)  # reset(n, seed) re-seeds


# -- errors ------------------------------------------------------------------------------------
def test_env_errors():
    env = envs.GridWorldEnv(3)
    with pytest.raises(RuntimeError, match=r"reset\(n\) before step"):
        env.step(np.zeros((2, 1), int))
    with pytest.raises(RuntimeError, match="reset"):
        env.true_state
    with pytest.raises(ValueError, match="n must be a positive integer"):
        env.reset(0)
    env.reset(4)
    with pytest.raises(ValueError, match=r"shape \(n, num_factors\) = \(4, 1\); got \(4,\)"):
        env.step(np.zeros(4, int))
    with pytest.raises(ValueError, match=r"agent 2, factor 0 is 5, outside \[0, 5\)"):
        env.step(np.array([[0], [1], [5], [0]]))
    with pytest.raises(ValueError, match="agent 0, factor 0 is -1"):
        env.step(np.full((4, 1), -1))
    with pytest.raises(TypeError, match="actions must be integers"):
        env.step(np.zeros((4, 1)))
    tm = envs.TMazeEnv()
    tm.reset(3)
    with pytest.raises(ValueError, match=r"agent 1, factor 1 is 1, outside \[0, 1\)"):
        tm.step(np.array([[0, 0], [1, 1], [2, 0]]))
    with pytest.raises(TypeError, match="GenerativeModel"):
        envs.GenerativeProcess("grid")


@pytest.mark.parametrize("call,err,match", [
    (lambda: models.grid_world(1), ValueError, "side must be an integer >= 2"),
    (lambda: models.grid_world(4, noise=1.5), ValueError, r"noise must be a probability in \[0, 1\]"),
    (lambda: models.grid_world(4, goal=16), ValueError, r"goal must be a cell index in \[0, 16\)"),
    (lambda: models.grid_world(4, goal=(0, 4)), ValueError, "goal .row, col. must lie"),
    (lambda: models.grid_world(4, goal="uniform"), ValueError, "goal must be a cell index"),
    (lambda: models.grid_world(4, start="middle"), ValueError, "start must be a cell index"),
    (lambda: models.grid_world(4, reward=np.inf), ValueError, "reward must be a finite number"),
    (lambda: models.grid_world(4, dtype=np.int32), ValueError, "dtype must be 'float32' or 'float64', got int32"),
    (lambda: models.tmaze(cue_validity=1.2), ValueError, "cue_validity must be a probability"),
    (lambda: models.tmaze(reward_prob=-0.1), ValueError, "reward_prob must be a probability"),
    (lambda: models.tmaze(punishment=np.nan), ValueError, "punishment must be a finite number"),
])
def test_model_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()


# -- end to end with the engine ----------------------------------------------------------------
def _run_grid(model, n, steps, seed, **engine_kw):
    """Engine and GridWorldEnv(side=4, start 0) in the loop; returns the env after ``steps``."""
    engine = fa_gpu.Engine(model, n, backend="numpy", dtype="float64", seed=seed, **engine_kw)
    env = envs.GridWorldEnv(4, start=0, seed=seed)
    obs = env.reset(n)
    for _ in range(steps):
        obs = env.step(engine.step(obs))
    return env


def test_end_to_end_grid_long_horizon_reaches_goal():
    """The goal (cell 15) is 6 moves from the start and the reward is sparse, so the agents need
    a 6-step horizon to see it. All 5**6 policies are too many for a fast test; straight two-leg
    paths (a1 k times, then a2) are a 105-policy set that still holds every shortest path."""
    base = models.grid_world(4)
    H = 6
    legs = sorted({(a1,) * k + (a2,) * (H - k) for a1 in range(5) for a2 in range(5) for k in range(H + 1)})
    model = fa_gpu.GenerativeModel(A=base.A, B=base.B, C=base.C, D=base.D,
                                   policies=np.array(legs)[:, :, None])
    env = _run_grid(model, 64, 15, seed=0)
    share = env.at_goal.mean()
    print(f"grid side=4, two-leg horizon-6 policies, deterministic: share at goal {share:.3f}")
    assert share > 0.5
    assert share >= 0.95  # deterministic agents that know where they are all get there


def test_end_to_end_grid_exhaustive_policies():
    """All 125 three-step policies: out of sight of the goal every policy ties, so a stochastic
    agent wanders until the goal is within 3 moves, then heads there and stays."""
    model = models.grid_world(4, policy_len=3)
    env = _run_grid(model, 64, 15, seed=1, action_selection="stochastic", alpha=4.0)
    share = env.at_goal.mean()
    print(f"grid side=4, policy_len=3, stochastic alpha=4: share at goal {share:.3f}")
    assert share > 0.5


def test_end_to_end_tmaze():
    n = 256
    model = models.tmaze(policy_len=2)
    engine = fa_gpu.Engine(model, n, backend="numpy", dtype="float64")
    env = envs.TMazeEnv(seed=0)
    obs = env.reset(n)
    visited = np.zeros(n, bool)
    for _ in range(4):
        actions = engine.step(obs)
        assert actions.shape == (n, 2) and actions.dtype == np.int64
        assert np.all((actions[:, 0] >= 0) & (actions[:, 0] < 4)) and np.all(actions[:, 1] == 0)
        obs = env.step(actions)
        visited |= env.location != 0
    share = env.at_rewarding_arm.mean()
    print(f"T-maze policy_len=2: visited cue/arm {visited.mean():.3f}, at rewarding arm {share:.3f}")
    assert visited.mean() > 0.9
    assert share > 0.8


# -- counter-based draws: slices, state() / set_state() -----------------------------------------
@pytest.mark.parametrize("make", [lambda: envs.GridWorldEnv(4, start="uniform", noise=0.3, seed=5),
                                  lambda: envs.TMazeEnv(cue_validity=0.8, seed=5)])
def test_slices_of_worlds_equal_one_process(make):
    """The worlds of agents lo..hi-1 (reset with agent_offset=lo) see what they see inside one
    process of all agents: draws are keyed by the agent's global index."""
    n, cuts = 57, (0, 20, 21, 57)
    whole, parts = make(), [make() for _ in cuts[1:]]
    obs = whole.reset(n, seed=11)
    got = [p.reset(hi - lo, seed=11, agent_offset=lo) for p, lo, hi in zip(parts, cuts, cuts[1:])]
    np.testing.assert_array_equal(np.concatenate(got), obs)
    acts = np.random.default_rng(2).integers(0, np.array(whole.num_controls), size=(5, n, len(whole.num_controls)))
    for a in acts:
        obs = whole.step(a)
        got = [p.step(a[lo:hi]) for p, lo, hi in zip(parts, cuts, cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(got), obs)
        np.testing.assert_array_equal(np.concatenate([p.true_state for p in parts]), whole.true_state)


def test_state_and_set_state_continue_a_process():
    env = envs.GridWorldEnv(5, start="uniform", noise=0.4, seed=2)
    env.reset(300)
    acts = np.random.default_rng(4).integers(0, 5, size=(6, 300, 1))
    for a in acts[:3]:
        env.step(a)
    saved = env.state()
    rest = [env.step(a) for a in acts[3:]]
    other = envs.GridWorldEnv(5, start="uniform", noise=0.4, seed=99)  # the seed comes from the state
    other.set_state(saved)
    np.testing.assert_array_equal(np.stack([other.step(a) for a in acts[3:]]), np.stack(rest))
    np.testing.assert_array_equal(other.true_state, env.true_state)
    saved["true_state"][:] = -7  # state() handed out copies
    assert env.true_state.min() >= 0


def test_set_state_is_checked_and_changes_nothing_on_error():
    env = envs.TMazeEnv(seed=1)
    env.reset(10)
    good = env.state()
    before = env.state()
    bad = [("keys", {k: v for k, v in good.items() if k != "clock"}, "keys"),
           ("type", [1, 2], "dict"),
           ("float states", dict(good, true_state=good["true_state"].astype(float)), "integer array"),
           ("shape", dict(good, true_state=good["true_state"][:, :1]), r"shape \(n, 2\)"),
           ("range", dict(good, true_state=good["true_state"] + 4), r"true_state\[:, 0\] must lie in \[0, 4\)"),
           ("negative clock", dict(good, clock=np.int64(-1)), "clock must be an integer"),
           ("float seed", dict(good, seed=1.5), "seed must be an integer")]
    for what, state, msg in bad:
        with pytest.raises(ValueError, match=msg):
            env.set_state(state)
        after = env.state()
        for k in before:
            np.testing.assert_array_equal(after[k], before[k], err_msg=what)


def test_env_and_engine_draws_are_independent_for_one_seed():
    """Same seed for the world and the engine: the world's draws use other draw indices."""
    from fa_gpu import rng
    n = 100_000
    u_env = rng.uniform(0, np.arange(n), 0, envs.ENV_DRAW)
    u_engine = rng.uniform(0, np.arange(n), 0, 0)
    assert not np.any(u_env == u_engine) and abs(np.corrcoef(u_env, u_engine)[0, 1]) < 0.02
