"""Sequence inference (mmp, vmp), categorical observations and the free energy in the engine:
numba's fused kernel (its window sweep, ``kernels.window``) equals numpy (1e-10, float64) step by
step on random models, with windows of different lengths in one tile; cohorts equal whole steps,
reset and checkpoints cover the window, bad categorical observations are refused by name."""
from __future__ import annotations

import numpy as np
import pytest

import fa_gpu
from randmodels import SEQ, SEQ_IDS, Case, build, build_seq, inputs, random_obs, random_seq

N, STEPS = 6, 6
CASES = [
    (Case("mmp_2f_Bdeps", [3, 2], [3, 2], [2, 2], B_deps=[[0], [0, 1]]), dict(inference_algo="mmp", inference_horizon=3)),
    (Case("vmp_3f_Adeps", [2, 3, 2], [3, 2], [2, 2, 1], A_deps=[[0, 2], [1, 2]], policy_len=2),
     dict(inference_algo="vmp", inference_horizon=4, action_selection="stochastic")),
    (Case("vmp_learnAB", [3, 2], [3, 3], [3, 2], A_deps=[[0], [0, 1]], counts=("pA", "pB")),
     dict(inference_algo="vmp", inference_horizon=2, learn_A=True, learn_B=True, categorical_obs=True)),
    (Case("fpi_cat", [3, 3], [3, 4], [2, 3]), dict(categorical_obs=True)),
]
IDS = [c.name for c, _ in CASES]


def state(eng):
    return dict(qs=eng.qs, qs_window=eng.qs_window, q_pi=eng.q_pi, neg_efe=eng.neg_efe, vfe=eng.vfe,
                prior=eng.prior, actions=eng.actions, pA=eng.pA, pB=eng.pB, t=eng.t)


def assert_same(a, b, tol, what):
    for k in a:
        if a[k] is None:
            continue
        xs, ys = (a[k], b[k]) if isinstance(a[k], list) else ([a[k]], [b[k]])
        for i, (x, y) in enumerate(zip(xs, ys)):
            np.testing.assert_allclose(y, x, rtol=tol, atol=tol, err_msg=f"{k}[{i}] {what}")


@pytest.mark.parametrize("case,kw", CASES, ids=IDS)
def test_numba_equals_numpy(case, kw):
    pytest.importorskip("numba")
    _, ref = build(case, N, 11, backend="numpy", **kw)
    _, fast = build(case, N, 11, backend="numba", **kw)
    assert fast.step_path == "fused"
    for t, o in enumerate(inputs(case, kw, 11, N, STEPS)):
        np.testing.assert_array_equal(ref.step(o), fast.step(o), err_msg=f"actions at step {t}")
        assert_same(state(ref), state(fast), 1e-10, f"at step {t}")
        assert np.all(np.isfinite(ref.vfe))


@pytest.mark.parametrize("case,kw", CASES[:3], ids=IDS[:3])
def test_cohorts_reset_and_checkpoint(case, kw, tmp_path):
    """Two cohorts step what a whole step does; a checkpoint resumes bit-identically; reset of
    some agents starts their window afresh (as a new engine's)."""
    _, whole = build(case, N, 5, **kw)
    _, split = build(case, N, 5, **kw)
    obs = inputs(case, kw, 5, N, 8)
    for t, o in enumerate(obs[:4]):
        whole.step(o)
        lo = [x[:2] for x in o] if isinstance(o, list) else o[:2]
        hi = [x[2:] for x in o] if isinstance(o, list) else o[2:]
        split.step(lo, agents=(0, 2))
        split.step(hi, agents=(2, N))
        assert_same(state(whole), state(split), 0, f"cohorts at step {t}")
    whole.save(tmp_path / "c.npz")
    back = fa_gpu.Engine.load(tmp_path / "c.npz")
    for o in obs[4:]:
        whole.step(o), back.step(o)
        assert_same(state(whole), state(back), 0, "after load")
    snap = whole.snapshot()
    for x, y in zip(snap["qs_window"], whole.qs_window):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(snap["vfe"], whole.vfe)
    # reset agents 1 and 4: they continue as fresh agents of a new engine given the same inputs
    whole.reset([1, 4])
    _, fresh = build(case, N, 5, **kw)
    if whole.pA is not None or whole.pB is not None:
        return  # learned parameters are kept by reset: a fresh engine differs
    for t, o in enumerate(obs[:5]):
        whole.step(o), fresh.step(o)
        for f in range(len(case.num_states)):
            np.testing.assert_allclose(whole.qs_window[f][[1, 4]], fresh.qs_window[f][[1, 4]], rtol=0, atol=1e-12)
        np.testing.assert_allclose(whole.vfe[[1, 4]], fresh.vfe[[1, 4]], rtol=0, atol=1e-12)


def test_window_slots_before_the_first_step_hold_D_and_prior_is_D():
    case, kw = CASES[0]
    model, eng = build(case, N, 3, **kw)
    eng.step(random_obs(case, N, 1, 3)[0])
    for f, w in enumerate(eng.qs_window):
        assert w.shape == (N, 3, case.num_states[f])
        np.testing.assert_array_equal(w[:, :2], np.broadcast_to(model.D[f], (N, 2, case.num_states[f])))
        np.testing.assert_array_equal(w[:, 2], eng.qs[f])
        np.testing.assert_array_equal(eng.prior[f], np.broadcast_to(model.D[f], (N, case.num_states[f])))


def test_bad_options_and_categorical_obs_are_refused_by_name():
    case, kw = CASES[3]
    model, eng = build(case, N, 1, **kw)
    good = inputs(case, kw, 1, N, 1)[0]
    before = state(eng)
    bad = [x.copy() for x in good]
    bad[1][2, 0] += 0.1
    with pytest.raises(ValueError, match=r"obs\[1\] rows must sum to 1; agent 2's"):
        eng.step(bad)
    bad = [x.copy() for x in good]
    bad[0][3] = [1.5, -0.5, 0.0]
    with pytest.raises(ValueError, match=r"obs\[0\] must be finite and >= 0; agent 3, outcome 1"):
        eng.infer_states(bad)
    with pytest.raises(ValueError, match=r"obs\[0\] must have shape \(6, 3\)"):
        eng.step([good[0][:, :2], good[1]])
    with pytest.raises(ValueError, match="list of 2 arrays"):
        eng.step(np.zeros((N, 2), dtype=np.int64))
    assert_same(before, state(eng), 0, "after a refused call")
    with pytest.raises(ValueError, match="inference_algo='mmp' needs an inference_horizon"):
        fa_gpu.Engine(model, N, backend="numpy", inference_algo="mmp")
    with pytest.raises(ValueError, match="inference_horizon must be None or a positive integer"):
        fa_gpu.Engine(model, N, backend="numpy", inference_algo="vmp", inference_horizon=0)
    with pytest.raises(ValueError, match="inference_algo must be one of"):
        fa_gpu.Engine(model, N, backend="numpy", inference_algo="ovf")


# -- the fused window sweep against the reference, on random models ----------------------------
def full_state(eng):
    out = state(eng)
    for k in ("A", "B", "D", "pD"):
        out[k] = getattr(eng, k)
    for k in ("qs_prev", "obs_window", "act_window"):
        x = eng._buffers.packed[k]
        out[k] = None if eng._buffers.obs_window is None and k == "obs_window" else np.array(x)
    return out


def run_against_reference(case, kw, n, seed, per_agent, tol=1e-10, dtype="float64", backend="numba"):
    """Step a numpy and a ``backend`` engine (numba; cuda on the simulator:
    ``gpu_scripts/window_sim_check.py``) together for longer than the window; agents 1, 3 and the
    last are reset after steps 2 and 6 (their windows restart while their tile-mates' are full).
    Every buffer is compared after every step."""
    ref = build_seq(case, n, seed, "numpy", per_agent, dtype, **kw)
    fast = build_seq(case, n, seed, backend, per_agent, dtype, **kw)
    assert fast.step_path == "fused"
    steps = kw.get("inference_horizon", 1) + 6
    cohort = [1, 3, n - 1] if n > 3 else [n - 1]
    for t, o in enumerate(inputs(case, kw, seed, n=n, steps=steps)):
        np.testing.assert_array_equal(ref.step(o), fast.step(o), err_msg=f"actions at step {t}")
        assert_same(full_state(ref), full_state(fast), tol, f"at step {t}")
        assert np.all(np.isfinite(fast.vfe))
        if t in (2, 6):
            ref.reset(cohort), fast.reset(cohort)
    return fast


@pytest.mark.parametrize("n,per_agent", [(5, False), (37, True)], ids=["N5_shared", "N37_per_agent"])
@pytest.mark.parametrize("case,kw", SEQ, ids=SEQ_IDS)
def test_fused_window_equals_reference(case, kw, n, per_agent):
    pytest.importorskip("numba")
    fast = run_against_reference(case, kw, n, 21, per_agent)
    if kw.get("inference_horizon", 1) > 1:  # small models: per-lane transition matrices
        assert fast.layout.window_sel_rows > 0


@pytest.mark.parametrize("seed", [*range(10), *(pytest.param(s, marks=pytest.mark.slow) for s in range(10, 90))])
def test_fused_window_random_models(seed):
    """Random small setups (``randmodels.random_seq``: 1-3 factors, dependencies, policy_len 1-2,
    mmp/vmp with horizons 1-5 or fpi from categorical observations, learning, 1-80 agents, shared
    or per-agent): the fused kernel equals the reference, every buffer, a cohort reset mid-run."""
    pytest.importorskip("numba")
    case, kw, n, per_agent = random_seq(seed)
    run_against_reference(case, kw, n, seed, per_agent)


@pytest.mark.parametrize("case,kw", [SEQ[i] for i in (2, 4, 5, 7)], ids=[SEQ_IDS[i] for i in (2, 4, 5, 7)])
def test_fused_window_without_per_lane_matrices(case, kw, monkeypatch):
    """A model too large for the per-lane transition matrices: the sweep takes each action's
    product from B (shared, or each agent's own) and each lane keeps its own."""
    pytest.importorskip("numba")
    from fa_gpu import layout

    monkeypatch.setattr(layout, "SEL_MAX_BYTES", 0)
    for n, per_agent in ((37, False), (6, True)):
        fast = run_against_reference(case, kw, n, 23, per_agent)
        assert fast.layout.window_sel_rows == 0


@pytest.mark.parametrize("case,kw", [SEQ[i] for i in (3, 7, 8)], ids=[SEQ_IDS[i] for i in (3, 7, 8)])
def test_fused_window_float32(case, kw):
    pytest.importorskip("numba")
    run_against_reference(case, kw, 35, 25, False, tol=2e-5, dtype="float32")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case,kw", SEQ, ids=SEQ_IDS)
def test_fused_window_more_seeds(case, kw, seed):
    pytest.importorskip("numba")
    run_against_reference(case, kw, 70, 100 + seed, seed % 2 == 1)


@pytest.mark.parametrize("case,kw,dtype", [(*SEQ[3], "float64"), (*SEQ[7], "float64"), (*SEQ[8], "float32")],
                         ids=[SEQ_IDS[3], SEQ_IDS[7], SEQ_IDS[8] + "_float32"])
def test_fused_window_cohorts_and_threads_are_bitwise_the_whole_step(case, kw, dtype):
    """The window sweep's numbers do not depend on the tile an agent runs in: cohorts cut inside
    a tile, two threads taking chunks (N above the serial threshold) and one thread agree
    bitwise, with windows of different lengths side by side (a reset cohort)."""
    pytest.importorskip("numba")
    from fa_gpu.backends.numba import SERIAL_BELOW

    n = SERIAL_BELOW + 45
    one = build_seq(case, n, 31, "numba", False, dtype, num_threads=1, **kw)
    two = build_seq(case, n, 31, "numba", False, dtype, num_threads=2, **kw)
    cut = build_seq(case, n, 31, "numba", False, dtype, num_threads=1, **kw)
    for t, o in enumerate(inputs(case, kw, 31, n=n, steps=kw["inference_horizon"] + 4)):
        one.step(o), two.step(o)
        for lo, hi in ((0, 13), (13, 200), (200, n)):
            cut.step([x[lo:hi] for x in o] if isinstance(o, list) else o[lo:hi], agents=(lo, hi))
        for other in (two, cut):
            assert_same(full_state(one), full_state(other), 0, f"at step {t}")
        if t == 1:
            for e in (one, two, cut):
                e.reset(np.arange(5, n, 7))
