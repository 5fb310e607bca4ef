"""Engine behaviour beyond the pymdp cross-validation: randomness, learning of D, reset, views."""
from __future__ import annotations

import numpy as np
import pytest

import fa_gpu
from fa_gpu import reference as ref
from fa_gpu import rng
from randmodels import CASES, build, make_model_arrays, random_obs


def test_rng_is_a_pure_function_of_the_key():
    agents = np.arange(1000)
    a = rng.uniform(5, agents, 3, 0)
    np.testing.assert_array_equal(a, rng.uniform(5, agents, 3, 0))
    assert np.all((a >= 0) & (a < 1))
    # every key component changes the draw
    for other in (rng.uniform(6, agents, 3, 0), rng.uniform(5, agents, 4, 0), rng.uniform(5, agents, 3, 1),
                  rng.uniform(5, agents + 1, 3, 0)):
        assert np.mean(a == other) < 0.01
    # scalar and broadcast calls agree
    assert rng.uniform(5, 17, 3, 0) == a[17]


def test_rng_uniformity():
    u = rng.uniform(1, np.arange(200_000), np.arange(200_000) % 7, 2)
    hist, _ = np.histogram(u, bins=20, range=(0, 1))
    expected = len(u) / 20
    chi2 = np.sum((hist - expected) ** 2 / expected)
    assert chi2 < 45  # 19 dof: p ~ 0.0007
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01


def _stochastic_engine(sampling_mode, n, alpha, seed=3):
    case = CASES[9]  # 2 factors, 3 x 2 actions
    return build(case, n, seed, sampling_mode=sampling_mode, action_selection="stochastic", alpha=alpha)


@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_stochastic_full_frequencies_follow_q_pi(alpha):
    n = 30_000
    model, eng = _stochastic_engine("full", n, alpha)
    eng.infer_states(np.zeros((n, 1), dtype=np.int64))
    q_pi, _ = eng.infer_policies()
    assert np.allclose(q_pi, q_pi[0])  # same obs and prior: every agent has the same q_pi
    acts = eng.sample_action()
    p = ref.softmax(alpha * ref.log_stable(q_pi[0]))
    first = model.policies[:, 0, :]
    for a0 in range(3):
        for a1 in range(2):
            expect = p[(first[:, 0] == a0) & (first[:, 1] == a1)].sum()
            freq = np.mean((acts[:, 0] == a0) & (acts[:, 1] == a1))
            assert abs(freq - expect) < 5 * np.sqrt(expect * (1 - expect) / n) + 1e-3, (a0, a1, freq, expect)


def test_stochastic_marginal_frequencies_follow_marginals():
    n, alpha = 30_000, 1.7
    model, eng = _stochastic_engine("marginal", n, alpha)
    eng.infer_states(np.ones((n, 1), dtype=np.int64))
    q_pi, _ = eng.infer_policies()
    acts = eng.sample_action()
    for f, nu in enumerate(model.num_controls):
        marg = np.array([q_pi[0][model.policies[:, 0, f] == a].sum() for a in range(nu)])
        p = ref.softmax(alpha * ref.log_stable(marg))
        freq = np.bincount(acts[:, f], minlength=nu) / n
        assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-3), (f, freq, p)


def test_stochastic_actions_depend_on_seed_only():
    case = CASES[1]
    obs = random_obs(case, 64, 6, 0)
    runs = []
    for seed in (11, 11, 12):
        _, e = build(case, 64, seed, action_selection="stochastic")
        runs.append(np.stack([e.step(o) for o in obs]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.mean(runs[0] != runs[2]) > 0.1


def test_step_equals_the_methods_in_pymdp_order():
    case = CASES[32]  # learning A and B, param info gain, policy_len 2
    obs = random_obs(case, 6, 5, 1)
    _, a = build(case, 6, 1)
    _, b = build(case, 6, 1)
    for o in obs:
        act = a.step(o)
        b.infer_states(o)
        b.infer_policies()
        b.infer_parameters()
        np.testing.assert_array_equal(act, b.sample_action())
        b.update_empirical_prior(act)
        for x, y in zip(a.qs + a.prior + a.pA + a.pB, b.qs + b.prior + b.pA + b.pB):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.t, np.full(6, 5))


def test_learn_D_on_first_step_only():
    case = CASES[9]
    arrs = make_model_arrays(case, 4)
    arrs["pD"] = [np.array([1.0, 2.0, 0.5]), np.array([0.3, 0.9])]
    model = fa_gpu.GenerativeModel(**arrs)
    n, lr = 3, np.array([0.5, 1.0, 2.0])
    eng = fa_gpu.Engine(model, n, backend="numpy", dtype="float64", learn_D=True, lr_pD=lr)
    obs = random_obs(case, n, 3, 4)
    eng.step(obs[0])
    qs0 = eng.qs
    for f in range(2):
        expect_pD = arrs["pD"][f][None, :] + lr[:, None] * qs0[f]
        np.testing.assert_allclose(eng.pD[f], expect_pD, rtol=1e-12)
        np.testing.assert_allclose(eng.D[f], expect_pD / expect_pD.sum(1, keepdims=True), rtol=1e-12)
    before = eng.pD
    eng.step(obs[1])
    eng.step(obs[2])
    for f in range(2):
        np.testing.assert_array_equal(eng.pD[f], before[f])  # only the first step after reset learns
    eng.reset([1])
    eng.step(obs[0])
    D_after = eng.D
    np.testing.assert_array_equal(eng.pD[0][[0, 2]], before[0][[0, 2]])
    assert not np.allclose(eng.pD[0][1], before[0][1])
    # a reset agent starts from its learned D
    eng.reset([1])
    np.testing.assert_allclose(eng.prior[0][1], D_after[0][1])


def test_reset_subset_restores_prior_and_clock():
    case = CASES[3]
    _, e = build(case, 5, 2)
    obs = random_obs(case, 5, 3, 2)
    for o in obs:
        e.step(o)
    prior_before = e.prior
    e.reset(np.array([False, True, False, True, False]))
    D = e.D
    for f in range(len(D)):
        np.testing.assert_array_equal(e.prior[f][[1, 3]], np.broadcast_to(D[f], (2, D[f].shape[-1])))
        np.testing.assert_array_equal(e.prior[f][[0, 2, 4]], prior_before[f][[0, 2, 4]])
    np.testing.assert_array_equal(e.t, [3, 0, 3, 0, 3])


def test_views_are_read_only_copies():
    _, e = build(CASES[0], 3, 0)
    e.step(np.array([[0], [1], [2]]))
    qs = e.qs
    with pytest.raises(ValueError):
        qs[0][0, 0] = 1.0
    q = e.q_pi
    e.step(np.array([[2], [2], [2]]))
    assert not np.array_equal(q, e.q_pi)  # the earlier copy did not change under us


def test_per_agent_model_equals_separate_engines():
    """Agents with their own A behave exactly as engines built for each one alone."""
    case = CASES[12]
    n = 3
    per = [make_model_arrays(case, 50 + i) for i in range(n)]
    arrs = dict(per[0])
    arrs["A"] = [np.stack([p["A"][m] for p in per]) for m in range(len(case.num_obs))]
    batched = fa_gpu.Engine(fa_gpu.GenerativeModel(**arrs), n, backend="numpy", dtype="float64")
    obs = random_obs(case, n, 4, 9)
    singles = []
    for i in range(n):
        a = dict(per[0])
        a["A"] = per[i]["A"]
        singles.append(fa_gpu.Engine(fa_gpu.GenerativeModel(**a), 1, backend="numpy", dtype="float64"))
    for o in obs:
        acts = batched.step(o)
        for i, s in enumerate(singles):
            np.testing.assert_array_equal(acts[i], s.step(o[i:i + 1])[0])
            np.testing.assert_allclose(batched.q_pi[i], s.q_pi[0], rtol=1e-12, atol=1e-15)


def test_float32_engine_keeps_float32():
    _, e = build(CASES[5], 4, 0, dtype="float32")
    e.step(random_obs(CASES[5], 4, 1, 0)[0])
    assert e.qs[0].dtype == np.float32 and e.q_pi.dtype == np.float32 and e.actions.dtype == np.int64


def test_digamma_against_known_values():
    # psi(1) = -euler_gamma, psi(n+1) = psi(n) + 1/n, psi(1/2 + 1) = 2 - euler_gamma - 2 ln 2
    g = 0.5772156649015329
    x = np.array([1.0, 2.0, 5.0, 1.5, 37.25])
    h = np.cumsum(1.0 / np.arange(1, 40))
    expect = np.array([-g, 1 - g, h[3] - g, 2 - g - 2 * np.log(2), np.nan])
    got = ref.digamma(x)
    np.testing.assert_allclose(got[:4], expect[:4], rtol=0, atol=1e-14)
    # recurrence at a non-integer far point
    np.testing.assert_allclose(ref.digamma(np.array([38.25]))[0] - got[4], 1 / 37.25, atol=1e-14)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_step_async_equals_step(backend):
    """Large N runs the step on a worker thread; results equal the synchronous step."""
    case = CASES[9]
    n = 1500
    obs = random_obs(case, n, 3, 5)
    _, a = build(case, n, 5, backend=backend)
    _, b = build(case, n, 5, backend=backend)
    for o in obs:
        pending = b.step_async(o)
        expect = a.step(o)
        np.testing.assert_array_equal(pending.result(), expect)
        assert pending.done()
        np.testing.assert_array_equal(b.q_pi, a.q_pi)
    # a second step_async waits for the first; reading a property waits too
    b.step_async(obs[0])
    b.step_async(obs[1])
    assert b.t[0] == 5 and b._epoch % 2 == 0
    np.testing.assert_array_equal(b.actions_device, b.actions)  # numpy arrays on CPU backends
    assert b.qs_device.shape == (n, sum(case.num_states))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("idx", [9, 27, 33], ids=[CASES[i].name for i in (9, 27, 33)])
def test_cohort_steps_equal_whole_steps(backend, idx):
    """Stepping agents in two cohorts (as Engine.run(pipeline=2) does) gives the numbers of
    whole steps: same stochastic actions, beliefs and learned counts."""
    case = CASES[idx]
    n, h = 600, 250
    obs = random_obs(case, n, 4, 8)
    _, whole = build(case, n, 8, backend=backend, action_selection="stochastic")
    _, split = build(case, n, 8, backend=backend, action_selection="stochastic")
    for o in obs:
        expect = whole.step(o)
        pa = split.step_async(o[:h], agents=(0, h))
        a = pa.result()
        b = split.step(o[h:], agents=(h, n))
        np.testing.assert_array_equal(np.concatenate([a, b]), expect)
    for x, y in zip(whole.qs + whole.prior + [whole.q_pi, whole.t], split.qs + split.prior + [split.q_pi, split.t]):
        np.testing.assert_array_equal(x, y)
    if whole.pA is not None:
        for x, y in zip(whole.pA + whole.pB, split.pA + split.pB):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=r"agents=\(lo, hi\) must satisfy 0 <= lo < hi <= 600; got \(5, 5\)"):
        split.step(obs[0][:0], agents=(5, 5))
    with pytest.raises(ValueError, match=r"obs must have shape \(n_agents, num_modalities\) = \(10, "):
        split.step(obs[0], agents=(0, 10))


@pytest.mark.parametrize("keep", [None, 0, 1, 2])
def test_shared_contraction_equals_per_agent(keep):
    """A shared tensor (no agent axis, one matrix product) contracts to the same numbers as the
    same tensor broadcast to every agent."""
    g = np.random.default_rng(3)
    T = g.random((4, 5, 3))
    vecs = [g.random((6, d)) for i, d in enumerate(T.shape) if i != keep]
    got = ref.contract(T, vecs, keep=keep)
    want = ref.contract(np.broadcast_to(T, (6,) + T.shape), vecs, keep=keep)
    assert got.shape == ((6,) if keep is None else (6, T.shape[keep]))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


def test_shared_B_with_per_agent_actions():
    """expected_state with a shared B and each agent's own action (one product per action)."""
    g = np.random.default_rng(4)
    B = [g.random((4, 4, 3, 3)), g.random((3, 3, 2))]
    deps = [(0, 1), (1,)]
    qs = [g.random((7, 4)), g.random((7, 3))]
    actions = np.stack([g.integers(0, 3, 7), g.integers(0, 2, 7)], axis=1)
    got = ref.expected_state(qs, B, actions, deps)
    want = ref.expected_state(qs, [np.broadcast_to(b, (7,) + b.shape) for b in B], actions, deps)
    for x, y in zip(got, want):
        np.testing.assert_allclose(x, y, rtol=1e-13, atol=0)
    # and agent by agent, written out
    for n in range(7):
        np.testing.assert_allclose(got[1][n], B[1][..., actions[n, 1]] @ qs[1][n], rtol=1e-13)
    # an action no agent takes contributes nothing
    actions[:, 1] = 1
    got = ref.expected_state(qs, B, actions, deps)
    np.testing.assert_allclose(got[1], qs[1] @ B[1][..., 1].T, rtol=1e-13)


def test_shared_log_likelihoods_gather_by_outcome():
    g = np.random.default_rng(5)
    logA = [g.random((5, 4, 3)), g.random((2, 3))]
    obs = np.stack([g.integers(0, 5, 6), g.integers(0, 2, 6)], axis=1)
    ll = ref.log_likelihoods(logA, obs, [(0, 1), (1,)])
    for n in range(6):
        np.testing.assert_array_equal(ll[0][n], logA[0][obs[n, 0]])
        np.testing.assert_array_equal(ll[1][n], logA[1][obs[n, 1]])


def test_cuda_path_is_checked_and_step_path_reported():
    model = fa_gpu.models.grid_world(3)
    with pytest.raises(ValueError, match="cuda_path must be one of 'auto', 'fused', 'batched'; got 'gemm'"):
        fa_gpu.Engine(model, 2, cuda_path="gemm")
    assert fa_gpu.Engine(model, 2, backend="numpy").step_path == "reference"
    assert fa_gpu.Engine(model, 2, backend="numba").step_path == "fused"
