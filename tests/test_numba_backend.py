"""The fused Numba CPU kernel equals the reference (numpy backend) on every random model."""
from __future__ import annotations

import numpy as np
import pytest

from randmodels import CASES, Case, build, random_obs

pytest.importorskip("numba")

STEPS = 6


def _compare(case, n, seed, dtype, tol, **kw):
    _, ref = build(case, n, seed, backend="numpy", dtype=dtype, **kw)
    _, fast = build(case, n, seed, backend="numba", dtype=dtype, **kw)
    assert fast.backend == "numba"
    for t, o in enumerate(random_obs(case, n, STEPS, seed)):
        a, b = ref.step(o), fast.step(o)
        np.testing.assert_array_equal(a, b, err_msg=f"actions at step {t}")
        pairs = [("q_pi", ref.q_pi, fast.q_pi), ("neg_efe", ref.neg_efe, fast.neg_efe)]
        pairs += [(f"qs[{f}]", x, y) for f, (x, y) in enumerate(zip(ref.qs, fast.qs))]
        pairs += [(f"prior[{f}]", x, y) for f, (x, y) in enumerate(zip(ref.prior, fast.prior))]
        for name in ("A", "B", "D", "pA", "pB", "pD"):
            xs, ys = getattr(ref, name), getattr(fast, name)
            if xs is not None:
                pairs += [(f"{name}[{i}]", x, y) for i, (x, y) in enumerate(zip(xs, ys))]
        for name, x, y in pairs:
            np.testing.assert_allclose(y, x, rtol=tol, atol=tol, err_msg=f"{name} at step {t}")
        np.testing.assert_array_equal(ref.t, fast.t)


@pytest.mark.parametrize("idx", range(len(CASES)), ids=[c.name for c in CASES])
def test_float64_deterministic(idx):
    _compare(CASES[idx], 5, 200 + idx, "float64", 1e-10)


@pytest.mark.parametrize("idx", range(len(CASES)), ids=[c.name for c in CASES])
def test_float64_stochastic_same_actions(idx):
    _compare(CASES[idx], 7, 300 + idx, "float64", 1e-10, action_selection="stochastic")


@pytest.mark.parametrize("idx", range(0, len(CASES), 2), ids=[c.name for c in CASES[::2]])
def test_float32(idx):
    _compare(CASES[idx], 5, 400 + idx, "float32", 1e-5)


@pytest.mark.parametrize("idx", [1, 12, 27, 32, 33], ids=[CASES[i].name for i in [1, 12, 27, 32, 33]])
def test_parallel_path_many_agents(idx):
    """N above the serial threshold: agents split over threads in chunks."""
    _compare(CASES[idx], 300, 500 + idx, "float64", 1e-10, action_selection="stochastic")


def test_one_hot_transitions_used_and_exact():
    """A deterministic (one-hot) B takes the scatter path and still equals the reference."""
    import fa_gpu

    rng = np.random.default_rng(5)
    S, U, O = 6, 3, 4
    B = np.zeros((S, S, U))
    for u in range(U):
        B[rng.integers(0, S, size=S), np.arange(S), u] = 1.0  # random deterministic moves
    A = rng.dirichlet(np.ones(O), size=S).T
    model = fa_gpu.GenerativeModel([A], [B], C=[rng.normal(size=O)], policy_len=2)
    eng = fa_gpu.Engine(model, 3, backend="numba", dtype="float64")
    assert eng.layout.B_meta[0, -1] >= 0  # B_NEXT offset: the one-hot shortcut is on
    ref = fa_gpu.Engine(model, 3, backend="numpy", dtype="float64")
    for o in rng.integers(0, O, size=(5, 3, 1)):
        np.testing.assert_array_equal(eng.step(o), ref.step(o))
        np.testing.assert_allclose(eng.q_pi, ref.q_pi, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(eng.prior[0], ref.prior[0], rtol=1e-12, atol=1e-14)


def test_num_threads_from_topology_and_override(monkeypatch):
    from fa_gpu.backends.numba import NumbaBackend
    from fa_gpu.runtime.topology import pool_sizes

    assert NumbaBackend().num_threads == pool_sizes().compute_threads
    assert NumbaBackend(num_threads=1).num_threads == 1
    monkeypatch.setenv("FA_GPU_NUM_THREADS", "1")
    assert NumbaBackend().num_threads == 1


def test_stale_kernel_caches_are_pruned(tmp_path):
    """Compiled code of earlier kernel sources is removed; the current one and others stay."""
    from fa_gpu.kernels import jit

    for name in ("numba-aaaa", "numba-bbbb", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.nbi").write_bytes(b"1")
    assert jit.prune_stale_caches(tmp_path, keep="numba-bbbb") == ["numba-aaaa"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["numba-bbbb", "other"]
    assert jit.prune_stale_caches(tmp_path / "missing") == []


def test_modalities_sharing_dependencies_are_summed_once():
    """The layout groups modalities by dependency list for the fixed-point iteration: each
    group's log-likelihoods are summed into one scratch block and contracted once per sweep."""
    from fa_gpu import layout
    from fa_gpu.kernels.columns import A_LEAD, A_LL

    case = Case("grouped", [3, 2], [4, 2, 3, 5], [2, 2], A_deps=[[0, 1], [1], [0, 1], [1]])
    model, fast = build(case, 40, seed=11, backend="numba")
    lay = layout.build_layout(model)
    assert lay.A_meta[:, A_LEAD].tolist() == [0, 1, 0, 1]
    assert lay.A_meta[:, A_LL].tolist() == [0, 6, 0, 6] and lay.sizes["LL"] == 8
    _, ref = build(case, 40, seed=11, backend="numpy")
    for o in random_obs(case, 40, 4, seed=11):
        np.testing.assert_array_equal(fast.step(o), ref.step(o))
        for x, y in zip(fast.qs, ref.qs):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
