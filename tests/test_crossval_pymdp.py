"""Cross-validation against pymdp 1.0.4 (live, CPU JAX, float64).

Each case runs an 8-step trajectory for N=5 agents with different random observations. pymdp's
deterministic actions are fed to both sides, so the trajectories stay aligned; qs, q_pi, neg_efe
(and learned pA/pB) are compared every step, and our deterministic actions must equal pymdp's.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from randmodels import CASES, build, engine_kwargs, make_model_arrays, random_obs

jax = pytest.importorskip("jax", reason="needs the crossval extra (inferactively-pymdp)")
jax.config.update("jax_enable_x64", True)
pymdp_agent = pytest.importorskip("pymdp.agent", reason="needs inferactively-pymdp==1.0.4")
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

pytestmark = pytest.mark.crossval

N, T = 5, 8


@functools.lru_cache(maxsize=None)
def pymdp_trajectory(idx: int):
    """Run pymdp on CASES[idx]; returns (observations, per-step dicts of numpy arrays, the agent
    as built, before any step)."""
    case, seed = CASES[idx], 100 + idx
    arrs = make_model_arrays(case, seed)
    kw = engine_kwargs(case, N, seed)
    learn_A, learn_B = kw.get("learn_A", False), kw.get("learn_B", False)
    J = lambda xs: None if xs is None else [jnp.asarray(x) for x in xs]
    agent = pymdp_agent.Agent(
        A=J(arrs["A"]), B=J(arrs["B"]), C=J(arrs["C"]), D=J(arrs["D"]),
        E=jnp.asarray(arrs["E"]) if "E" in arrs else None,
        pA=J(arrs.get("pA")), pB=J(arrs.get("pB")),
        A_dependencies=arrs["A_dependencies"], B_dependencies=arrs["B_dependencies"],
        policy_len=case.policy_len, batch_size=N,
        gamma=jnp.asarray(kw.get("gamma", 1.0)), alpha=jnp.asarray(kw.get("alpha", 1.0)),
        use_utility=kw.get("use_utility", True),
        use_states_info_gain=kw.get("use_states_info_gain", True),
        use_param_info_gain=kw.get("use_param_info_gain", False),
        sampling_mode=kw.get("sampling_mode", "full"), action_selection="deterministic",
        num_iter=kw.get("num_iter", 16), learn_A=learn_A, learn_B=learn_B)
    agent0 = agent
    obs_all = random_obs(case, N, T, seed)

    @eqx.filter_jit
    def plan(agent, obs, prior):
        qs = agent.infer_states(obs, prior)
        q_pi, G = agent.infer_policies(qs)
        return qs, q_pi, G

    @eqx.filter_jit
    def learn(agent, qs, qs_prev, obs, action_prev):
        if learn_B:
            beliefs_B = [jnp.concatenate([a, b], axis=1) for a, b in zip(qs_prev, qs)]
            acts = jnp.expand_dims(action_prev, 1)
        else:
            beliefs_B, acts = None, action_prev
        return agent.infer_parameters(qs, [o[:, None] for o in obs], acts, beliefs_B=beliefs_B,
                                      lr_pA=kw.get("lr_pA", 1.0), lr_pB=kw.get("lr_pB", 1.0))

    @eqx.filter_jit
    def act(agent, q_pi, qs):
        action = agent.sample_action(q_pi)
        return action, agent.update_empirical_prior(action, qs)

    prior, qs_prev = agent.D, [jnp.expand_dims(d, 1) for d in agent.D]
    action_prev = -jnp.ones((N, len(case.num_states)), dtype=jnp.int64)
    out = []
    for t in range(T):
        obs = [jnp.asarray(obs_all[t, :, m]) for m in range(len(case.num_obs))]
        qs, q_pi, G = plan(agent, obs, prior)
        if learn_A or learn_B:
            agent = learn(agent, qs, qs_prev, obs, action_prev)
        action, prior = act(agent, q_pi, qs)
        out.append(dict(
            qs=[np.asarray(q[:, -1]) for q in qs], q_pi=np.asarray(q_pi), G=np.asarray(G),
            action=np.asarray(action),
            pA=None if not learn_A else [np.asarray(x) for x in agent.pA],
            pB=None if not learn_B else [np.asarray(x) for x in agent.pB]))
        qs_prev, action_prev = qs, action
    return obs_all, out, agent0


def run_ours(idx: int, dtype: str, backend: str = "numpy", from_agent: bool = False):
    """Our engine on the same case, fed pymdp's actions; yields (ours, theirs) per step.
    ``from_agent``: the engine is ``Engine.from_pymdp(agent)`` of pymdp's own agent (only the
    learning rates, which pymdp takes per call, passed on) instead of built from the case."""
    case, seed = CASES[idx], 100 + idx
    obs_all, theirs, agent = pymdp_trajectory(idx)
    if from_agent:
        import fa_gpu
        lr = {k: v for k, v in case.kw.items() if k.startswith("lr_")}
        eng = fa_gpu.Engine.from_pymdp(agent, backend=backend, dtype=dtype, seed=seed, **lr)
    else:
        _, eng = build(case, N, seed, backend=backend, dtype=dtype)
    for t in range(T):
        eng.infer_states(obs_all[t])
        eng.infer_policies()
        eng.infer_parameters()
        ours = dict(qs=eng.qs, q_pi=eng.q_pi, G=eng.neg_efe, action=eng.sample_action(),
                    pA=eng.pA, pB=eng.pB)
        yield t, ours, theirs[t]
        eng.update_empirical_prior(theirs[t]["action"])


def _close(name, t, a, b, tol):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{name} differs at step {t}")


#: cases whose agents use non-default pymdp options (per-agent gamma and alpha, no utility, no
#: state info gain, marginal sampling, learning with learning rates, parameter info gain,
#: num_iter, policy_len)
OPTION_CASES = [i for i, c in enumerate(CASES) if c.kw or c.per_agent_gamma or c.policy_len > 1]


@pytest.mark.parametrize("idx", range(len(CASES)), ids=[c.name for c in CASES])
def test_float64_matches_pymdp(idx):
    _check_float64(idx, from_agent=False)


@pytest.mark.parametrize("idx", OPTION_CASES, ids=[CASES[i].name for i in OPTION_CASES])
def test_engine_from_pymdp_agent_matches_pymdp(idx):
    """``Engine.from_pymdp(agent)`` alone carries the agent's options: pymdp's numbers."""
    _check_float64(idx, from_agent=True)


def _check_float64(idx, from_agent):
    learn = CASES[idx].kw
    for t, ours, theirs in run_ours(idx, "float64", from_agent=from_agent):
        for f, (a, b) in enumerate(zip(ours["qs"], theirs["qs"])):
            _close(f"qs[{f}]", t, a, b, 1e-8)
        _close("q_pi", t, ours["q_pi"], theirs["q_pi"], 1e-8)
        _close("neg_efe", t, ours["G"], theirs["G"], 1e-8)
        np.testing.assert_array_equal(ours["action"], theirs["action"], err_msg=f"actions at step {t}")
        for key in ("pA", "pB"):
            if learn.get("learn_" + key[1]):
                for i, (a, b) in enumerate(zip(ours[key], theirs[key])):
                    _close(f"{key}[{i}]", t, a, b, 1e-8)


@pytest.mark.parametrize("idx", range(0, len(CASES), 3), ids=[c.name for c in CASES[::3]])
def test_float32_matches_pymdp(idx):
    for t, ours, theirs in run_ours(idx, "float32"):
        for f, (a, b) in enumerate(zip(ours["qs"], theirs["qs"])):
            _close(f"qs[{f}]", t, a, b, 1e-4)
        _close("q_pi", t, ours["q_pi"], theirs["q_pi"], 1e-4)
        _close("neg_efe", t, ours["G"], theirs["G"], 1e-4)


def test_from_pymdp_agent_roundtrip():
    """GenerativeModel.from_pymdp gives the same arrays, dependencies and policies."""
    case, seed = CASES[21], 121
    arrs = make_model_arrays(case, seed)
    J = lambda xs: [jnp.asarray(x) for x in xs]
    agent = pymdp_agent.Agent(A=J(arrs["A"]), B=J(arrs["B"]), C=J(arrs["C"]), D=J(arrs["D"]),
                              A_dependencies=arrs["A_dependencies"],
                              B_dependencies=arrs["B_dependencies"], batch_size=3)
    import fa_gpu
    m = fa_gpu.GenerativeModel.from_pymdp(agent)
    assert m.batch_size is None
    for ours, theirs in zip(m.A + m.B + m.C + m.D, arrs["A"] + arrs["B"] + arrs["C"] + arrs["D"]):
        np.testing.assert_array_equal(ours, theirs)
    assert m.A_dependencies == arrs["A_dependencies"] and m.B_dependencies == arrs["B_dependencies"]
    np.testing.assert_array_equal(m.policies, np.asarray(agent.policies.policy_arr))


@pytest.mark.parametrize("option, value", [
    ("learn_C", True), ("learn_D", True), ("learn_E", True), ("learning_mode", "offline"),
    ("inference_algo", "ovf")])
def test_engine_from_pymdp_refuses_what_it_cannot_honour(option, value):
    """An option fa_gpu would silently not run is a ValueError that names it and the way out."""
    import fa_gpu
    case, seed = CASES[9], 109
    arrs = make_model_arrays(case, seed)
    J = lambda xs: [jnp.asarray(x) for x in xs]
    agent = pymdp_agent.Agent(A=J(arrs["A"]), B=J(arrs["B"]), C=J(arrs["C"]), D=J(arrs["D"]),
                              batch_size=2, **{option: value})
    with pytest.raises(ValueError, match=rf"{option}={value!r}: .*build the agent with|{option}={value!r}: .*pass"):
        fa_gpu.Engine.from_pymdp(agent, backend="numpy")


@pytest.mark.parametrize("algo", ["mmp", "vmp"])
def test_engine_from_pymdp_carries_sequence_options(algo):
    """inference_algo, inference_horizon, num_iter and categorical_obs come from the agent; an
    mmp/vmp agent without a horizon needs one passed (the window lives in fixed buffers)."""
    import fa_gpu
    case, seed = CASES[9], 109
    arrs = make_model_arrays(case, seed)
    J = lambda xs: [jnp.asarray(x) for x in xs]
    kw = dict(A=J(arrs["A"]), B=J(arrs["B"]), C=J(arrs["C"]), D=J(arrs["D"]), batch_size=2,
              inference_algo=algo, num_iter=3)
    agent = pymdp_agent.Agent(**kw, inference_horizon=4, categorical_obs=True)
    eng = fa_gpu.Engine.from_pymdp(agent, backend="numpy")
    c = eng.config
    assert (c.inference_algo, c.inference_horizon, c.num_iter, c.categorical_obs) == (algo, 4, 3, True)
    agent = pymdp_agent.Agent(**kw)
    with pytest.raises(ValueError, match=f"inference_algo='{algo}' needs an inference_horizon"):
        fa_gpu.Engine.from_pymdp(agent, backend="numpy")
    assert fa_gpu.Engine.from_pymdp(agent, backend="numpy", inference_horizon=2).config.inference_horizon == 2


def test_engine_from_pymdp_defaults_from_the_agent():
    """N from batch_size, dtype from the agent's arrays, per-agent gamma kept per agent; an
    override wins."""
    import fa_gpu
    case, seed = CASES[9], 109
    arrs = make_model_arrays(case, seed)
    gamma = np.array([0.5, 2.0, 3.0])
    agent = pymdp_agent.Agent(A=[jnp.asarray(a, jnp.float32) for a in arrs["A"]],
                              B=[jnp.asarray(b, jnp.float32) for b in arrs["B"]], batch_size=3,
                              gamma=jnp.asarray(gamma), alpha=2.5, num_iter=5)
    eng = fa_gpu.Engine.from_pymdp(agent, backend="numpy")
    assert eng.n_agents == 3 and eng.config.dtype == np.float32 and eng.config.num_iter == 5
    np.testing.assert_array_equal(eng.gamma, gamma.astype(np.float32))
    np.testing.assert_array_equal(eng.alpha, np.full(3, 2.5, np.float32))
    eng = fa_gpu.Engine.from_pymdp(agent, backend="numpy", dtype="float64", num_iter=2, gamma=1.5)
    assert eng.config.dtype == np.float64 and eng.config.num_iter == 2
    np.testing.assert_array_equal(eng.gamma, np.full(3, 1.5))
    with pytest.raises(ValueError, match="agent.gamma has 3 values but the engine has 4 agents"):
        fa_gpu.Engine.from_pymdp(agent, n_agents=4, backend="numpy")
