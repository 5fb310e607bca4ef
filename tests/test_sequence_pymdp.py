"""Sequence inference (mmp, vmp), categorical observations and the free energy, cross-validated
live against pymdp 1.0.4 (CPU JAX, float64).

pymdp's ``Agent`` is driven as its API asks for sequence methods: every step, the whole history
of observations (one-hot, or distributions with ``categorical_obs=True``) and the actions between
them, prior D (``Agent.update_empirical_prior`` returns D for mmp/vmp), ``return_info=True`` for
the free energy; pymdp truncates the window to ``inference_horizon`` itself. Learning (where on)
uses the current time slice: ``infer_parameters`` gets the last posterior, the current
observation and, for B, the previous step's last posterior. The trajectories are longer than the
horizon, so the window slides. pymdp's deterministic actions are fed to both sides; the qs window,
q_pi, neg_efe and vfe must agree to 1e-8 at every step.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from randmodels import Case, make_model_arrays, random_obs

jax = pytest.importorskip("jax", reason="needs the crossval extra (inferactively-pymdp)")
jax.config.update("jax_enable_x64", True)
pymdp_agent = pytest.importorskip("pymdp.agent", reason="needs inferactively-pymdp==1.0.4")
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import fa_gpu  # noqa: E402

pytestmark = pytest.mark.crossval

N = 4


def seq_case(name, S, O, U, algo, horizon, steps, **kw):
    """(Case, algo, horizon, steps, categorical)."""
    cat = kw.pop("categorical", False)
    return name, Case(name, S, O, U, **kw), algo, horizon, steps, cat


SEQ_CASES = [
    seq_case("mmp_1f_h3", [4], [3], [3], "mmp", 3, 6),
    seq_case("vmp_1f_h2", [4], [3, 2], [3], "vmp", 2, 5),
    seq_case("mmp_2f_Bdeps_h4", [3, 2], [3, 2], [2, 2], "mmp", 4, 6, B_deps=[[0], [0, 1]]),
    seq_case("mmp_h1_cat", [3, 2], [4], [2, 2], "mmp", 1, 3, categorical=True),
    seq_case("vmp_cat_learnAB", [3, 2], [3, 3], [3, 2], "vmp", 3, 5, A_deps=[[0], [0, 1]],
             kw=dict(learn_A=True, learn_B=True), counts=("pA", "pB"), categorical=True),
    seq_case("fpi_cat_vfe", [3, 3], [3, 4], [2, 3], "fpi", None, 4, categorical=True),
]
SLOW_CASES = [
    seq_case("vmp_3f_Bdeps_h4_len2", [2, 3, 2], [2, 3, 2], [2, 3, 1], "vmp", 4, 8,
             A_deps=[[0], [1], [0, 1, 2]], B_deps=[[0], [1], [2, 0]], policy_len=2),
    seq_case("mmp_learnB_Bdeps_h3", [3, 2], [3, 2], [2, 2], "mmp", 3, 7, B_deps=[[0, 1], [1]],
             kw=dict(learn_B=True), counts=("pB",)),
    seq_case("mmp_cat_len2_h5", [3, 2], [3, 2], [3, 2], "mmp", 5, 8, policy_len=2, categorical=True),
    seq_case("vmp_h1", [4], [4], [3], "vmp", 1, 4),
    seq_case("vmp_2f_Adeps_h3_len2", [3, 3], [3, 2], [2, 2], "vmp", 3, 5, A_deps=[[0], [0, 1]],
             policy_len=2),
    seq_case("mmp_3f_h5", [2, 3, 2], [3, 2], [2, 2, 1], "mmp", 5, 7, A_deps=[[0, 2], [1, 2]],
             B_deps=[[0], [1], [2, 0]]),
    seq_case("mmp_learnA_iter4", [4], [3], [3], "mmp", 2, 5, kw=dict(learn_A=True, num_iter=4),
             counts=("pA",)),
    seq_case("fpi_vfe", [4], [3, 2], [3], "fpi", None, 3),
]
ALL = SEQ_CASES + [pytest.param(*c, marks=pytest.mark.slow) for c in SLOW_CASES]


def categorical_obs(case, steps, seed):
    """float64 list of M arrays ``(steps, N, O_m)``: random distributions, some rows one-hot."""
    rng = np.random.default_rng(seed + 3)
    out = []
    for o in case.num_obs:
        x = rng.gamma(0.7, size=(steps, N, o)) + 1e-3
        x[:, 0] = np.eye(o)[rng.integers(0, o, size=steps)]
        out.append(x / x.sum(axis=-1, keepdims=True))
    return out


@functools.lru_cache(maxsize=None)
def pymdp_run(name):
    """pymdp's trajectory for one case: (inputs, per-step outputs)."""
    _, case, algo, horizon, steps, cat = next(c for c in SEQ_CASES + SLOW_CASES if c[0] == name)
    seed = 7 + sum(map(ord, name))
    arrs = make_model_arrays(case, seed)
    kw = case.kw
    learn_A, learn_B = kw.get("learn_A", False), kw.get("learn_B", False)
    J = lambda xs: None if xs is None else [jnp.asarray(x) for x in xs]
    agent = pymdp_agent.Agent(
        A=J(arrs["A"]), B=J(arrs["B"]), C=J(arrs["C"]), D=J(arrs["D"]),
        pA=J(arrs.get("pA")), pB=J(arrs.get("pB")),
        A_dependencies=arrs["A_dependencies"], B_dependencies=arrs["B_dependencies"],
        policy_len=case.policy_len, batch_size=N, action_selection="deterministic",
        num_iter=kw.get("num_iter", 16), learn_A=learn_A, learn_B=learn_B,
        inference_algo=algo, inference_horizon=horizon, categorical_obs=cat)
    M, F = len(case.num_obs), len(case.num_states)
    if cat:
        obs = categorical_obs(case, steps, seed)
        dist = obs
    else:
        idx = random_obs(case, N, steps, seed)
        obs = idx
        dist = [np.eye(o)[idx[:, :, m]] for m, o in enumerate(case.num_obs)]
    seq = algo != "fpi"

    @eqx.filter_jit
    def plan(agent, o, past, prior):
        qs, info = agent.infer_states(o, prior, past_actions=past, return_info=True)
        q_pi, G = agent.infer_policies(qs)
        return qs, info["vfe"], q_pi, G

    @eqx.filter_jit
    def learn(agent, qs, qs_prev, o, action_prev):
        if learn_B:
            beliefs_B = [jnp.concatenate([a, b], axis=1) for a, b in zip(qs_prev, qs)]
            acts = jnp.expand_dims(action_prev, 1)
        else:
            beliefs_B, acts = None, action_prev
        return agent.infer_parameters(qs, o, acts, beliefs_B=beliefs_B)

    prior_box = [agent.D]
    out, actions = [], []
    qs_prev = [jnp.expand_dims(d, 1) for d in agent.D]
    for t in range(steps):
        if seq:  # the whole history; pymdp truncates it to the horizon
            o = ([jnp.asarray(np.moveaxis(d[:t + 1], 0, 1)) for d in dist] if cat else
                 [jnp.asarray(obs[:t + 1, :, m].T) for m in range(M)])
            past = None if t == 0 else jnp.asarray(np.stack(actions, axis=1))
        else:
            o = [jnp.asarray(d[t]) if cat else jnp.asarray(obs[t, :, m]) for m, d in enumerate(dist)]
            past = None
        qs, vfe, q_pi, G = plan(agent, o, past, agent.D if seq else prior_box[0])
        last = [q[:, -1:] for q in qs]
        if learn_A or learn_B:
            cur = [jnp.asarray(d[t][:, None]) for d in dist] if cat else \
                [jnp.asarray(obs[t, :, m][:, None]) for m in range(M)]
            agent = learn(agent, last, qs_prev, cur, actions[-1] if actions else -jnp.ones((N, F), dtype=jnp.int64))
        action = agent.sample_action(q_pi)
        if not seq:
            prior_box[0] = agent.update_empirical_prior(action, qs)
        out.append(dict(qs=[np.asarray(q) for q in qs], vfe=np.asarray(vfe), q_pi=np.asarray(q_pi),
                        G=np.asarray(G), action=np.asarray(action)))
        actions.append(np.asarray(action))
        qs_prev = last
    return dict(case=case, algo=algo, horizon=horizon, steps=steps, cat=cat, arrs=arrs, obs=obs,
                dist=dist, seed=seed), out


def _close(what, t, a, b):
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8, err_msg=f"{what} differs at step {t}")


@pytest.mark.parametrize("name,case,algo,horizon,steps,cat", ALL, ids=[c[0] for c in SEQ_CASES + SLOW_CASES])
def test_reference_matches_pymdp(name, case, algo, horizon, steps, cat):
    """The reference functions alone (no engine): the window, prior D, pymdp's actions."""
    from fa_gpu import reference as ref

    inp, theirs = pymdp_run(name)
    if case.kw or algo == "fpi":
        pytest.skip("learning and fpi go through the engine test")
    arrs = inp["arrs"]
    A = [np.broadcast_to(a, (N,) + a.shape) for a in arrs["A"]]
    logA = [ref.log_stable(a) for a in A]
    D = [np.broadcast_to(d, (N,) + d.shape) for d in arrs["D"]]
    Adeps, Bdeps = arrs["A_dependencies"], arrs["B_dependencies"]
    for t in range(steps):
        lo = max(0, t - horizon + 1)
        o = [np.moveaxis(d[lo:t + 1], 0, 1) for d in inp["dist"]]
        ll = ref.obs_log_likelihoods(logA, o, Adeps)
        acts = np.stack([theirs[k]["action"] for k in range(lo, t)], axis=1) if t > lo else \
            np.zeros((N, 0, len(case.num_states)), dtype=np.int64)
        Bs = ref.select_transitions(arrs["B"], acts, Bdeps)
        qs = ref.infer_sequence(algo, ll, D, Bs, Adeps, Bdeps, 16, use_prior=algo == "mmp" or t > 0)
        for f, q in enumerate(qs):
            _close(f"qs[{f}]", t, q, theirs[t]["qs"][f])
        _close("vfe", t, ref.free_energy(qs, D, ll, Bs, Adeps, Bdeps), theirs[t]["vfe"])


def engine_for(inp, backend="numpy", dtype="float64"):
    case, arrs = inp["case"], inp["arrs"]
    model = fa_gpu.GenerativeModel(**arrs)
    return fa_gpu.Engine(model, N, backend=backend, dtype=dtype, inference_algo=inp["algo"],
                         inference_horizon=inp["horizon"], categorical_obs=inp["cat"], **case.kw)


def feed(inp, t):
    """The engine's input at step t: index obs (N, M), or M distributions (N, O_m)."""
    return [d[t] for d in inp["dist"]] if inp["cat"] else inp["obs"][t]


@pytest.mark.parametrize("name,case,algo,horizon,steps,cat", ALL, ids=[c[0] for c in SEQ_CASES + SLOW_CASES])
def test_engine_matches_pymdp(name, case, algo, horizon, steps, cat):
    """The engine (numpy backend) method by method: qs window, qs, q_pi, neg_efe, vfe, actions."""
    inp, theirs = pymdp_run(name)
    eng = engine_for(inp)
    learn = case.kw.get("learn_A") or case.kw.get("learn_B")
    for t in range(steps):
        eng.infer_states(feed(inp, t))
        q_pi, G = eng.infer_policies()
        if learn:
            eng.infer_parameters()
        ours_a = eng.sample_action()
        T = theirs[t]["qs"][0].shape[1]
        for f, (w, q) in enumerate(zip(eng.qs_window, eng.qs)):
            _close(f"qs_window[{f}]", t, w[:, w.shape[1] - T:], theirs[t]["qs"][f])
            _close(f"qs[{f}]", t, q, theirs[t]["qs"][f][:, -1])
        _close("q_pi", t, q_pi, theirs[t]["q_pi"])
        _close("neg_efe", t, G, theirs[t]["G"])
        _close("vfe", t, eng.vfe, theirs[t]["vfe"])
        np.testing.assert_array_equal(ours_a, theirs[t]["action"], err_msg=f"actions at step {t}")
        eng.update_empirical_prior(theirs[t]["action"])


@pytest.mark.parametrize("name,case,algo,horizon,steps,cat", ALL, ids=[c[0] for c in SEQ_CASES + SLOW_CASES])
def test_fused_numba_step_matches_pymdp(name, case, algo, horizon, steps, cat):
    """The numba backend's fused step (its window sweep, not the reference) against pymdp: qs
    window, q_pi, neg_efe, vfe (NaN after a fused fpi step from index observations, which leaves
    it out) and actions, whole steps in the engine's own order."""
    pytest.importorskip("numba")
    inp, theirs = pymdp_run(name)
    eng = engine_for(inp, backend="numba")
    assert eng.step_path == "fused"
    for t in range(steps):
        acts = eng.step(feed(inp, t))
        T = theirs[t]["qs"][0].shape[1]
        for f, (w, q) in enumerate(zip(eng.qs_window, eng.qs)):
            _close(f"qs_window[{f}]", t, w[:, w.shape[1] - T:], theirs[t]["qs"][f])
            _close(f"qs[{f}]", t, q, theirs[t]["qs"][f][:, -1])
        _close("q_pi", t, eng.q_pi, theirs[t]["q_pi"])
        _close("neg_efe", t, eng.neg_efe, theirs[t]["G"])
        if algo == "fpi" and not cat:  # the fused fpi step leaves the free energy out (NaN)
            assert np.isnan(eng.vfe).all()
        else:
            _close("vfe", t, eng.vfe, theirs[t]["vfe"])
        np.testing.assert_array_equal(acts, theirs[t]["action"], err_msg=f"actions at step {t}")
