"""Hostile input (issue 11, input half): memory estimates before allocating, dependency indices,
validation in the engine's dtype, no aliasing of the caller's arrays, sign rules of the scalar
options, obs/reset/run checks. Every rejected call leaves the engine bitwise unchanged."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import fa_gpu
from fa_gpu import cli
from fa_gpu.runtime import topology
from randmodels import CASES, build, make_model_arrays, random_obs


def base(case_idx=14, seed=7):
    """A valid 2-factor model with B_dependencies [[0], [0, 1]] (random arrays)."""
    return make_model_arrays(CASES[case_idx], seed)


def state_of(engine) -> dict:
    """Every buffer of the engine (bytes) and its epoch: equal dicts mean bitwise equal state."""
    out = {k: engine._backend.to_host(v).tobytes() for k, v in engine._buffers.packed.items()
           if k != "work"}
    out["epoch"] = engine._epoch
    return out


# -- item 5: memory before allocating ---------------------------------------------------------
def test_policy_enumeration_checks_memory_before_allocating(monkeypatch):
    monkeypatch.setattr(topology, "host_memory_available", lambda: (1 << 30, "test"))
    with pytest.raises(MemoryError, match=r"enumerating 244,140,625 policies needs 25\.47 GiB of "
                                          r"host memory, 1\.00 GiB are available \(test\)"):
        fa_gpu.construct_policies([5], 12, max_policies=None)
    kw = make_model_arrays(CASES[0], 1)  # 3 actions
    kw["policy_len"] = 20
    with pytest.raises(MemoryError, match=r"enumerating 3,486,784,401 policies needs"):
        fa_gpu.GenerativeModel(**kw, max_policies=None)
    # a horizon no memory could hold is refused without computing the number
    with pytest.raises(ValueError, match=r"3 actions over policy_len=1000000000 make more than 2\*\*256"):
        fa_gpu.construct_policies([3], 10**9, max_policies=None)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_huge_population_is_a_memory_error(backend):
    model = fa_gpu.GenerativeModel(**make_model_arrays(CASES[2], 0))
    with pytest.raises(MemoryError, match=r"needs [0-9.]+ GiB of host memory, [0-9.]+ GiB are available"):
        fa_gpu.Engine(model, 10**12, backend=backend)


@pytest.mark.parametrize("args, pattern", [
    (["--agents", str(10**12), "--backend", "numpy"], r"MemoryError: the engine needs [0-9.]+ GiB"),
    (["--policy-len", "12"], r"ValueError: 5 actions over policy_len=12 make 244,140,625 policies, "
                             r"above max_policies"),
    (["--side", "100000"], r"MemoryError: grid_world\(side=100000\) needs [0-9.]+ GiB of host memory"),
])
def test_simulate_options_too_big_are_usage_errors(tmp_path, capsys, args, pattern):
    out = str(tmp_path / "run.zarr")
    assert cli.main(["simulate", "--steps", "1", "--output", out, "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fa-gpu: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(pattern, err), err
    assert not (tmp_path / "run.zarr").exists()


# -- items 6 and 12: dependency indices, integer options --------------------------------------
@pytest.mark.parametrize("which", ["A_dependencies", "B_dependencies"])
@pytest.mark.parametrize("entry, pattern", [
    (-1, r"\[1\]\[0\] = -1 is outside the factor indices \[0, 2\)"),
    (2, r"\[1\]\[0\] = 2 is outside the factor indices \[0, 2\)"),
    (0.7, r"\[1\]\[0\] = 0\.7 is not a factor index \(an integer in \[0, 2\)\)"),
    (1.0, r"\[1\]\[0\] = 1\.0 is not a factor index"),
    (True, r"\[1\]\[0\] = True is not a factor index"),
    (np.True_, r"\[1\]\[0\] = (np\.)?True_? is not a factor index"),
])
def test_dependency_entries_are_factor_indices(which, entry, pattern):
    kw = base()
    deps = [list(d) for d in kw[which]]
    deps[1] = [entry, 1] if which == "B_dependencies" else [entry]
    kw[which] = deps
    with pytest.raises(ValueError, match=which + pattern):
        fa_gpu.GenerativeModel(**kw)


def test_dependency_rules_name_array_index_and_rule():
    kw = base()
    with pytest.raises(ValueError, match=r"B_dependencies\[1\] = \[1, 1\] repeats a factor \(1\)"):
        fa_gpu.GenerativeModel(**{**kw, "B_dependencies": [[0], [1, 1]]})
    with pytest.raises(ValueError, match=r"A_dependencies\[0\] must be a list of factor indices, got 0"):
        fa_gpu.GenerativeModel(**{**kw, "A_dependencies": [0, [1]]})
    with pytest.raises(ValueError, match=r"control_fac_idx\[0\] = 0\.5 is not a factor index"):
        fa_gpu.GenerativeModel(**{**kw, "control_fac_idx": [0.5]})
    with pytest.raises(ValueError, match=r"control_fac_idx = \[0, 0\] repeats a factor \(0\)"):
        fa_gpu.GenerativeModel(**{**kw, "control_fac_idx": [0, 0]})


@pytest.mark.parametrize("name, value", [("policy_len", True), ("policy_len", 2.0), ("policy_len", -1),
                                         ("max_policies", True), ("max_policies", 0), ("max_policies", 1.5)])
def test_integer_options_reject_bools_and_floats(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {value!r}"):
        fa_gpu.GenerativeModel(**{**base(), name: value})


# -- item 8: checked in the engine's dtype ----------------------------------------------------
@pytest.mark.parametrize("change, pattern", [
    (lambda kw: kw["C"][0].__setitem__(1, 1e39), r"C\[0\] entry \(1,\) is 1e\+39, which overflows to inf in float32"),
    (lambda kw: kw.__setitem__("pA", [a * 1e39 for a in kw["A"]]),
     r"pA\[0\] entry \(0, 0, 0\) is [0-9.e+]+, which overflows to inf in float32"),
    (lambda kw: kw.__setitem__("pB", [b * 1e-300 for b in kw["B"]]),
     r"Dirichlet counts pB\[0\] entry \(0, 0, 0\) is [0-9.e-]+, which underflows to 0 in float32"),
])
def test_model_is_checked_in_the_engine_dtype(change, pattern):
    kw = base()
    change(kw)
    model = fa_gpu.GenerativeModel(**kw)  # fine in float64...
    fa_gpu.Engine(model, 3, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ...and an error, not a RuntimeWarning, in float32
        with pytest.raises(ValueError, match=pattern):
            fa_gpu.Engine(model, 3, dtype="float32")


@pytest.mark.parametrize("option", ["gamma", "alpha", "lr_pA"])
def test_scalar_overflowing_float32_is_rejected(option):
    model = fa_gpu.GenerativeModel(**base())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"{option} must be finite; got 1e\+39 \(it overflows to inf in float32\)"):
            fa_gpu.Engine(model, 3, dtype="float32", **{option: 1e39})
        with pytest.raises(ValueError, match=rf"{option} must be finite; agent 1 has 1e\+39 \(it overflows"):
            fa_gpu.Engine(model, 3, dtype="float32", **{option: [1.0, 1e39, 1.0]})
    fa_gpu.Engine(model, 3, dtype="float64", **{option: 1e39})


def test_float16_inputs_use_a_float16_tolerance():
    kw = base()
    rng = np.random.default_rng(3)
    # columns normalized in float16: their sums miss 1 by float16 rounding (up to ~1e-3)
    A16 = []
    for a in kw["A"]:
        x = rng.uniform(0.01, 1.0, size=(40,) + a.shape[1:]).astype(np.float16)
        A16.append(x / x.sum(axis=0, keepdims=True, dtype=np.float16))
    sums = [np.abs(a.astype(np.float64).sum(axis=0) - 1).max() for a in A16]
    assert max(sums) > 1e-4  # the old float32-sized tolerance would refuse them
    model = fa_gpu.GenerativeModel(**{**kw, "A": A16, "C": None})
    for dt in ("float32", "float64"):
        fa_gpu.Engine(model, 2, dtype=dt)  # the coarser of input and engine dtype decides
    bad = [a.copy() for a in A16]
    bad[0][0, 1, 0] += np.float16(0.1)
    with pytest.raises(ValueError, match=r"A\[0\] columns must sum to 1; column \(1, 0\) sums to 1\.1"):
        fa_gpu.GenerativeModel(**{**kw, "A": bad, "C": None})


# -- item 10: the caller's arrays are copied --------------------------------------------------
def test_editing_the_callers_arrays_never_reaches_an_engine():
    case = CASES[26]  # two factors, A and B learning: every array kind
    kw = make_model_arrays(case, 5)
    pristine = {k: ([a.copy() for a in v] if isinstance(v, list) and v and isinstance(v[0], np.ndarray) else v)
                for k, v in kw.items()}
    model = fa_gpu.GenerativeModel(**kw)
    eng = fa_gpu.Engine(model, 6, dtype="float64", **case.kw)
    for k in ("A", "B", "C", "D"):
        for a in kw[k]:
            a[...] = np.nan  # in place, after the model (and one engine) were built
    late = fa_gpu.Engine(model, 6, dtype="float64", **case.kw)  # built after the edit
    ref = fa_gpu.Engine(fa_gpu.GenerativeModel(**pristine), 6, dtype="float64", **case.kw)
    for obs in random_obs(case, 6, 4, 5):
        acts = [e.step(obs) for e in (eng, late, ref)]
        assert all(np.array_equal(a, acts[2]) for a in acts)
    assert state_of(eng) == state_of(late) == state_of(ref)
    assert not any(np.isnan(q).any() for q in eng.qs) and not np.isnan(eng.q_pi).any()
    with pytest.raises(ValueError, match="read-only"):
        model.A[0][...] = 0.5  # the model's own copies are frozen


# -- item 11: sign rules of the scalar options ------------------------------------------------
@pytest.mark.parametrize("option", ["gamma", "alpha", "lr_pA", "lr_pB", "lr_pD"])
@pytest.mark.parametrize("value, pattern", [(-0.5, r"must be >= 0; got -0\.5"),
                                            ([1.0, 2.0, -1e-9], r"must be >= 0; agent 2 has -1e-09"),
                                            (np.nan, r"must be finite; got nan"),
                                            (-np.inf, r"must be finite; got -inf"),
                                            (True, r"must be a number or an array of 3 numbers, got True")])
def test_rates_and_precisions_must_be_finite_and_non_negative(option, value, pattern):
    model = fa_gpu.GenerativeModel(**make_model_arrays(CASES[26], 0))
    exc = TypeError if value is True else ValueError
    with pytest.raises(exc, match=f"{option} {pattern}"):
        fa_gpu.Engine(model, 3, **{option: value})
    fa_gpu.Engine(model, 3, **{option: 0.0})  # zero is allowed: uniform / no learning


# -- item 12: obs, reset ---------------------------------------------------------------------
def test_rejected_obs_leave_the_engine_bitwise_unchanged():
    case = CASES[3]  # 1 factor, 2 modalities (3 and 5 outcomes)
    _, eng = build(case, 6, 2)
    eng.step(random_obs(case, 6, 1, 2)[0])
    before = state_of(eng)
    bad = [
        ([[0, 1]] * 6, ValueError, r"obs must be an \(6, 2\) integer array \(n_agents, num_modalities\) "
                                   r"or a list of 2 integer arrays of shape \(6,\) \(one per modality\); got a list of 6"),
        (np.zeros((6, 2)), TypeError, r"obs must be integer outcome indices, got dtype float64"),
        (np.full((6, 2), 1.5), TypeError, r"obs must be integer outcome indices"),
        (np.zeros((6, 2), dtype=bool), TypeError, r"obs must be integer outcome indices, got dtype bool"),
        (np.array([[0, 0]] * 5 + [[0, 5]]), ValueError, r"obs for agent 5, modality 1 is 5, outside \[0, 5\)"),
        (np.array([[0, 0]] * 5 + [[-1, 0]]), ValueError, r"obs for agent 5, modality 0 is -1, outside \[0, 3\)"),
        (np.zeros((5, 2), dtype=int), ValueError, r"obs must have shape \(n_agents, num_modalities\) = \(6, 2\); got \(5, 2\)"),
        ([np.zeros(6, int), np.zeros(5, int)], ValueError, r"obs\[1\] must have shape \(6,\)"),
    ]
    for obs, exc, pattern in bad:
        for call in (eng.step, eng.infer_states, eng.step_async):
            with pytest.raises(exc, match=pattern):
                call(obs)
            assert state_of(eng) == before


def test_reset_of_no_agents_is_a_no_op():
    case = CASES[3]
    _, eng = build(case, 6, 2)
    eng.step(random_obs(case, 6, 1, 2)[0])
    before = state_of(eng)
    for empty in ([], (), np.array([], dtype=np.int64)):
        eng.reset(empty)
        assert state_of(eng) == before
    with pytest.raises(TypeError, match="agents must be None, a 1-D array of agent indices"):
        eng.reset([0.5])
    assert state_of(eng) == before


# -- item 13: Engine.run checks its env and recorder before the first step --------------------
def test_run_refuses_an_env_of_another_shape():
    from fa_gpu.envs import GridWorldEnv, TMazeEnv

    eng = fa_gpu.Engine(fa_gpu.models.grid_world(5), 4)
    before = state_of(eng)
    with pytest.raises(ValueError, match=r"GridWorldEnv has num_obs \[16\], the engine's model has num_obs \[25\]"):
        eng.run(GridWorldEnv(4), 3, progress=False)
    with pytest.raises(ValueError, match=r"TMazeEnv has num_obs \[4, 3, 2\], the engine's model has num_obs \[25\]"):
        eng.run(TMazeEnv(), 3, progress=False)
    assert state_of(eng) == before
    assert eng.run(GridWorldEnv(5), 2, progress=False).steps == 2


def test_run_refuses_a_recorder_it_cannot_fill_before_stepping(tmp_path):
    pytest.importorskip("zarr")
    from fa_gpu.envs import GridWorldEnv
    from fa_gpu.runtime.recorder import read_store

    eng = fa_gpu.Engine(fa_gpu.models.grid_world(3), 4)
    before = state_of(eng)
    cases = [
        (dict(n_agents=4, record_beliefs=True, num_states=[8]),
         r"made for beliefs over num_states=\[8\], this engine has num_states=\[9\]"),
        (dict(n_agents=5), r"the recorder was made for n_agents=5, this engine has n_agents=4"),
        (dict(n_agents=4, num_factors=2), r"made for num_factors=2, this engine has num_factors=1"),
    ]
    for i, (kw, pattern) in enumerate(cases):
        kw = {"num_modalities": 1, "num_factors": 1, **kw}
        rec = fa_gpu.Recorder(tmp_path / f"r{i}.zarr", kw.pop("n_agents"), **kw)
        with pytest.raises(ValueError, match=pattern):
            eng.run(GridWorldEnv(3), 3, recorder=rec, progress=False)
        assert state_of(eng) == before and rec.steps_written == 0
        assert read_store(tmp_path / f"r{i}.zarr")["attrs"]["complete"] is False
        rec.close()


def test_run_records_beliefs(tmp_path):
    """A recorder with record_beliefs gets each step's posterior from Engine.run (it used to
    fail with 'qs must be a sequence ... got None' after the whole compile)."""
    pytest.importorskip("zarr")
    from fa_gpu.envs import GridWorldEnv

    def engine():
        return fa_gpu.Engine(fa_gpu.models.grid_world(3, noise=0.3), 6, backend="numpy",
                             dtype="float64", action_selection="stochastic", seed=2)
    eng, ref = engine(), engine()
    with eng.recorder(tmp_path / "b.zarr", beliefs=True) as rec:
        eng.run(GridWorldEnv(3, noise=0.3, seed=4), 4, recorder=rec, progress=False)
    env, seen = GridWorldEnv(3, noise=0.3, seed=4), []
    obs = env.reset(6)
    for _ in range(4):  # the same steps by hand
        actions = ref.step(obs)
        seen.append(ref.qs[0])
        obs = env.step(actions)
    got = fa_gpu.read_store(tmp_path / "b.zarr")["qs_0"]
    assert got.shape == (4, 6, 9) and len({g.tobytes() for g in got}) == 4
    np.testing.assert_array_equal(got, np.stack(seen))


# -- device arrays (a CuPy world's observations) ----------------------------------------------
class FakeDeviceArray:
    """Stands in for a CuPy array: ``__cuda_array_interface__`` and ``.get()``, and, as CuPy,
    refuses the implicit conversion that ``np.asarray`` would make."""

    def __init__(self, a):
        self._a = np.array(a)
        self.__cuda_array_interface__ = {"shape": self._a.shape, "typestr": self._a.dtype.str}
        self.shape, self.dtype = self._a.shape, self._a.dtype

    def get(self):
        return self._a.copy()

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")


class DeviceWorld:
    """A world whose observations are device arrays: ``reset``/``step`` of ``inner``, wrapped."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def reset(self, *args, **kwargs):
        return FakeDeviceArray(self.inner.reset(*args, **kwargs))

    def step(self, actions):
        return FakeDeviceArray(self.inner.step(actions))


def test_device_array_observations_are_checked_on_a_host_copy():
    """Device arrays as observations (one array, a list of per-modality columns, categorical
    distributions) give the numbers of the same host arrays; a bad one is refused by name;
    ``Engine.run`` takes a world whose observations are device arrays."""
    case = CASES[14]
    obs = random_obs(case, 6, 2, 3)
    _, host_eng = build(case, 6, 3)
    _, dev_eng = build(case, 6, 3)
    for o in obs:
        np.testing.assert_array_equal(dev_eng.step(FakeDeviceArray(o)), host_eng.step(o))
    cols = [FakeDeviceArray(obs[0][:, m]) for m in range(obs.shape[2])]
    np.testing.assert_array_equal(dev_eng.step(cols), host_eng.step(obs[0]))
    bad = obs[0].copy()
    bad[2, 1] = 99
    with pytest.raises(ValueError, match=r"obs for agent 2, modality 1 is 99"):
        dev_eng.step(FakeDeviceArray(bad))
    _, cat_host = build(case, 6, 3, categorical_obs=True)
    _, cat_dev = build(case, 6, 3, categorical_obs=True)
    dist = [np.eye(o)[obs[0][:, m]] * 0.5 + 0.5 / o for m, o in enumerate(case.num_obs)]
    np.testing.assert_array_equal(cat_dev.step([FakeDeviceArray(d) for d in dist]), cat_host.step(dist))
    model = fa_gpu.models.grid_world(3)
    runs = [fa_gpu.Engine(model, 4, backend="numpy", seed=5).run(w, 3, progress=False)
            for w in (fa_gpu.envs.GridWorldEnv(side=3, seed=1), DeviceWorld(fa_gpu.envs.GridWorldEnv(side=3, seed=1)))]
    np.testing.assert_array_equal(runs[1].obs, runs[0].obs)
