"""Property-based tests (hypothesis): random valid small models never give NaN, their beliefs
stay normalized and numba equals numpy; random invalid inputs, one rule at a time, always raise
ValueError/TypeError and leave the engine bitwise unchanged.

Example counts come from the hypothesis profile (tests/conftest.py): ``ci`` by default,
``--hypothesis-profile thorough`` for many more.
"""
from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import fa_gpu  # noqa: E402
from randmodels import Case, engine_kwargs, make_model_arrays, random_obs  # noqa: E402

N, STEPS = 5, 3


@st.composite
def cases(draw) -> Case:
    """A random valid small model: 1-3 factors (2-3 states, 1-3 actions), 1-3 modalities (2-4
    outcomes), random A/B dependencies, policy_len 1-2, learning and info gain on or off."""
    F, M = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    S = draw(st.lists(st.integers(2, 3), min_size=F, max_size=F))
    U = draw(st.lists(st.integers(1, 3), min_size=F, max_size=F))
    T = draw(st.integers(1, 2))
    if T == 2:  # keep the policy set small: at most 81 policies
        U = [min(u, 2) for u in U]
    A_deps = [list(draw(st.permutations(range(F))))[:draw(st.integers(1, F))] for _ in range(M)]
    B_deps = []
    for f in range(F):
        others = [g for g in draw(st.permutations(range(F))) if g != f][:draw(st.integers(0, F - 1))]
        deps = others + [f]
        B_deps.append(list(draw(st.permutations(deps))))
    counts = tuple(c for c in ("pA", "pB", "pD") if draw(st.booleans()))
    kw = dict(learn_A="pA" in counts and draw(st.booleans()),
              learn_B="pB" in counts and draw(st.booleans()),
              learn_D="pD" in counts and draw(st.booleans()),
              use_param_info_gain=bool({"pA", "pB"} & set(counts)) and draw(st.booleans()),
              action_selection=draw(st.sampled_from(["deterministic", "stochastic"])),
              sampling_mode=draw(st.sampled_from(["full", "marginal"])))
    return Case("hyp", S, draw(st.lists(st.integers(2, 4), min_size=M, max_size=M)), U,
                A_deps=A_deps, B_deps=B_deps, policy_len=T, E=draw(st.booleans()),
                per_agent_gamma=draw(st.booleans()), kw=kw, counts=counts)


def engine_of(case, seed, backend="numpy", dtype="float64"):
    model = fa_gpu.GenerativeModel(**make_model_arrays(case, seed))
    return fa_gpu.Engine(model, N, backend=backend, dtype=dtype, seed=seed,
                         **{**engine_kwargs(case, N, seed), **case.kw})


def state_of(engine) -> dict:
    """Every buffer (bytes) and the epoch: equal dicts mean a bitwise equal engine."""
    out = {k: engine._backend.to_host(v).tobytes() for k, v in engine._buffers.packed.items()
           if k != "work"}
    out["epoch"] = engine._epoch
    return out


@given(case=cases(), seed=st.integers(0, 2**32 - 1))
def test_valid_models_stay_normalized_and_backends_agree(case, seed):
    ref, fast = engine_of(case, seed), engine_of(case, seed, "numba")
    for obs in random_obs(case, N, STEPS, seed):
        a_ref, a_fast = ref.step(obs), fast.step(obs)
        np.testing.assert_array_equal(a_fast, a_ref)
        for q in (*ref.qs, ref.q_pi):
            assert np.isfinite(q).all()
            np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-10)
        for x, y in zip((*fast.qs, fast.q_pi, fast.neg_efe, *fast.prior),
                        (*ref.qs, ref.q_pi, ref.neg_efe, *ref.prior)):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-10)
        for name in ("A", "B", "D"):
            for x, y in zip(getattr(fast, name), getattr(ref, name)):
                np.testing.assert_allclose(x, y, rtol=0, atol=1e-10)


# -- invalid inputs: one rule at a time -------------------------------------------------------
def _col(data, arr, core):
    """A random column index of ``arr`` over its last ``core - 1`` axes (all but the first core axis)."""
    return tuple(data.draw(st.integers(0, n - 1)) for n in arr.shape[arr.ndim - core + 1:])


def _bad_sum(data, kw, case, name):
    arrs = kw[name]
    i = data.draw(st.integers(0, len(arrs) - 1))
    a = arrs[i]
    col = _col(data, a, a.ndim)
    a[(slice(None),) + col] *= data.draw(st.sampled_from([0.5, 0.9, 1.1, 3.0]))
    return lambda: fa_gpu.GenerativeModel(**kw)


def _bad_entry(data, kw, case, name, values):
    arrs = kw[name]
    a = arrs[data.draw(st.integers(0, len(arrs) - 1))]
    idx = tuple(data.draw(st.integers(0, n - 1)) for n in a.shape)
    a[idx] = data.draw(st.sampled_from(values))
    return lambda: fa_gpu.GenerativeModel(**kw)


def _bad_dep(data, kw, case, name):
    deps = [list(d) for d in kw[name]]
    i = data.draw(st.integers(0, len(deps) - 1))
    F = len(case.num_states)
    deps[i][data.draw(st.integers(0, len(deps[i]) - 1))] = data.draw(
        st.sampled_from([-1, F, F + 7, 0.7, True, None, "0"]))
    kw[name] = deps
    return lambda: fa_gpu.GenerativeModel(**kw)


def _dup_dep(data, kw, case, name):
    deps = [list(d) for d in kw[name]]
    i = data.draw(st.integers(0, len(deps) - 1))
    deps[i].append(deps[i][0])
    kw[name] = deps
    return lambda: fa_gpu.GenerativeModel(**kw)


def _engine_option(data, kw, case, option, values):
    model = fa_gpu.GenerativeModel(**kw)
    value = data.draw(st.sampled_from(values))
    return lambda: fa_gpu.Engine(model, N, **{option: value})


def _float32_overflow(data, kw, case):
    kw["C"][data.draw(st.integers(0, len(kw["C"]) - 1))][0] = data.draw(st.sampled_from([1e39, -1e39, 1e300]))
    model = fa_gpu.GenerativeModel(**kw)
    return lambda: fa_gpu.Engine(model, N, dtype="float32")


def _counts_underflow(data, kw, case):
    kw["pD"] = [d * 1e-300 for d in kw["D"]]
    model = fa_gpu.GenerativeModel(**kw)
    return lambda: fa_gpu.Engine(model, N, dtype="float32")


def _method(data, eng, case, kind):
    n, M, F = N, len(case.num_obs), len(case.num_states)
    obs = random_obs(case, n, 1, 0)[0]
    if kind == "obs_range":
        obs[data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, M - 1))] = data.draw(
            st.sampled_from([-1, 4, 99]))
        return lambda: eng.step(obs)
    if kind == "obs_shape":
        bad = data.draw(st.sampled_from([obs[1:], obs[:, 1:], obs[None], np.concatenate([obs, obs], 1)]))
        return lambda: eng.step(bad)
    if kind == "obs_dtype":
        return lambda: eng.infer_states(obs.astype(data.draw(st.sampled_from([np.float64, bool, np.float32]))))
    if kind == "obs_list":
        return lambda: eng.step([o for o in obs])  # N rows where M columns were meant
    if kind == "actions":
        act = np.zeros((n, F), dtype=np.int64)
        act[data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, F - 1))] = data.draw(
            st.sampled_from([-1, 3, 50]))
        return lambda: eng.update_empirical_prior(act)
    if kind == "reset":
        bad = data.draw(st.sampled_from([[n], [-1], [0.5], np.ones(n + 1, bool), [[0]]]))
        return lambda: eng.reset(bad)
    if kind == "cohort":
        lo = data.draw(st.integers(-2, n + 2))
        hi = data.draw(st.integers(-2, n + 2))
        if 0 <= lo < hi <= n:
            hi = lo  # empty: invalid
        return lambda: eng.step_async(obs[:max(hi - lo, 1)], agents=(lo, hi))
    raise AssertionError(kind)


MODEL_RULES = {
    "A sums": lambda d, kw, c: _bad_sum(d, kw, c, "A"),
    "B sums": lambda d, kw, c: _bad_sum(d, kw, c, "B"),
    "D sums": lambda d, kw, c: _bad_sum(d, kw, c, "D"),
    "A non-negative, finite": lambda d, kw, c: _bad_entry(d, kw, c, "A", [-0.1, np.nan, np.inf]),
    "B non-negative, finite": lambda d, kw, c: _bad_entry(d, kw, c, "B", [-1e-3, np.nan, -np.inf]),
    "C finite": lambda d, kw, c: _bad_entry(d, kw, c, "C", [np.nan, np.inf, -np.inf]),
    "A_dependencies indices": lambda d, kw, c: _bad_dep(d, kw, c, "A_dependencies"),
    "B_dependencies indices": lambda d, kw, c: _bad_dep(d, kw, c, "B_dependencies"),
    "A_dependencies distinct": lambda d, kw, c: _dup_dep(d, kw, c, "A_dependencies"),
    "B_dependencies distinct": lambda d, kw, c: _dup_dep(d, kw, c, "B_dependencies"),
    "policy_len": lambda d, kw, c: (lambda: fa_gpu.GenerativeModel(
        **{**kw, "policy_len": d.draw(st.sampled_from([0, -1, True, 1.5, 2.0, "2"]))})),
    "control_fac_idx": lambda d, kw, c: (lambda: fa_gpu.GenerativeModel(
        **{**kw, "control_fac_idx": d.draw(st.sampled_from([[len(c.num_states)], [-1], [0.5], [True]]))})),
    "gamma": lambda d, kw, c: _engine_option(d, kw, c, "gamma", [-1.0, np.nan, np.inf, True, "x", [1.0] * (N + 1)]),
    "alpha": lambda d, kw, c: _engine_option(d, kw, c, "alpha", [-1e-6, -np.inf, np.nan]),
    "learning rates": lambda d, kw, c: _engine_option(
        d, kw, c, d.draw(st.sampled_from(["lr_pA", "lr_pB", "lr_pD"])), [-0.5, np.nan, [1.0] * (N - 1) + [-1.0]]),
    "num_iter": lambda d, kw, c: _engine_option(d, kw, c, "num_iter", [0, -3, True, 2.5]),
    "n_agents": lambda d, kw, c: (lambda: fa_gpu.Engine(fa_gpu.GenerativeModel(**kw),
                                                        d.draw(st.sampled_from([0, -1, True, 2.0])))),
    "dtype": lambda d, kw, c: _engine_option(d, kw, c, "dtype", ["float16", "int32", object]),
    "float32 overflow": _float32_overflow,
    "float32 counts underflow": _counts_underflow,
}
METHOD_RULES = ("obs_range", "obs_shape", "obs_dtype", "obs_list", "actions", "reset", "cohort")
#: what each rule's message must name (the array, option or argument)
NAMES = {"A sums": r"^A\[\d\] columns must sum to 1", "B sums": r"^B\[\d\] columns must sum to 1",
         "D sums": r"^D\[\d\] entries must sum to 1", "A non-negative, finite": r"^A\[\d\] must be",
         "B non-negative, finite": r"^B\[\d\] must be", "C finite": r"^C\[\d\] must be finite",
         "A_dependencies indices": r"^A_dependencies\[\d\]\[\d\] = ",
         "B_dependencies indices": r"^B_dependencies\[\d\]\[\d\] = ",
         "A_dependencies distinct": r"^A_dependencies\[\d\] = .* repeats a factor",
         "B_dependencies distinct": r"^B_dependencies\[\d\] = .* repeats a factor",
         "policy_len": r"^policy_len must be a positive integer", "control_fac_idx": r"^control_fac_idx\[0\] = ",
         "gamma": r"^gamma must", "alpha": r"^alpha must", "learning rates": r"^lr_p[ABD] must",
         "num_iter": r"^num_iter must", "n_agents": r"^n_agents must", "dtype": r"^dtype must",
         "float32 overflow": r"^C\[\d\] entry .* overflows to -?inf in float32",
         "float32 counts underflow": r"^Dirichlet counts pD\[\d\] entry .* underflows to 0 in float32",
         "obs_range": r"^obs for agent \d, modality \d is", "obs_shape": r"^obs must have shape",
         "obs_dtype": r"^obs must be integer", "obs_list": r"^obs must be an \(5, \d\) integer array",
         "actions": r"^action for agent \d, factor \d is", "reset": r"agents", "cohort": r"^agents="}


@pytest.mark.parametrize("rule", sorted(MODEL_RULES) + list(METHOD_RULES))
@settings(max_examples=max(2, settings().max_examples // 5))  # every rule, a fifth of the profile each
@given(case=cases(), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_invalid_inputs_raise_and_change_nothing(rule, case, seed, data):
    eng = engine_of(case, seed)
    for obs in random_obs(case, N, 2, seed):
        eng.step(obs)
    before = state_of(eng)
    if rule in MODEL_RULES:
        call = MODEL_RULES[rule](data, make_model_arrays(case, seed), case)
    else:
        call = _method(data, eng, case, rule)
    with pytest.raises((ValueError, TypeError), match=NAMES[rule]):
        call()
    assert state_of(eng) == before, rule
