"""The fused Numba CPU kernel equals the reference (numpy backend) on every random model."""
from __future__ import annotations

import numpy as np
import pytest

from fa_gpu.kernels.columns import B_NEXT
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
    assert eng.layout.B_meta[0, B_NEXT] >= 0  # B_NEXT offset: the one-hot shortcut is on
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


def _plan_product(plan, M, x):
    """M @ x computed the way a product plan says (the kernel's order of terms)."""
    R = M.shape[0]
    nb = plan[0]
    bases = plan[1:1 + 2 * nb]
    starts = plan[1 + 2 * nb:2 + 2 * nb + R]
    entries = plan[2 + 2 * nb + R:]
    out = np.full(R, sum((M[r, j] * x[j] for j, r in zip(bases[::2], bases[1::2])), 0.0))
    for o in range(R):
        for e in range(starts[o], starts[o + 1]):
            j, r = entries[2 * e], entries[2 * e + 1]
            out[o] += (M[o, j] - (M[r, j] if r >= 0 else 0.0)) * x[j]
    return out


def test_product_plans_reproduce_their_matrix():
    """A plan is kept for noisy identities and sparse blocks, not for dense random ones, and the
    plan's product equals M @ x on random x (every row)."""
    from fa_gpu import layout

    rng = np.random.default_rng(8)
    S = 30
    noisy = 0.85 * np.eye(S) + 0.15 / S
    sparse = np.where(rng.random((S, S)) < 0.08, rng.random((S, S)), 0.0)
    sparse[0, :] += 1.0  # no zero column
    mixed = noisy.copy()
    mixed[:, :5] = rng.dirichlet(np.ones(S), size=5).T  # five dense columns, no base
    for M in (noisy, sparse / sparse.sum(0), mixed):
        plan = layout.product_plan(M)
        assert plan is not None
        x = rng.random(S)
        np.testing.assert_allclose(_plan_product(plan, M, x), M @ x, rtol=1e-13, atol=0)
    assert layout.product_plan(rng.dirichlet(np.ones(S), size=S).T) is None
    assert layout.product_plan(np.array([[1.0, -0.5], [0.0, 1.5]])) is None


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 2e-5)])
def test_planned_products_equal_the_reference(dtype, tol):
    """Shared noisy-identity and sparse A and a shared noisy (not one-hot) B, two factors with
    A over both: the fused kernel's planned products equal the reference, every element; with
    a per-agent A (no plan used) too. N = 45 is not a multiple of the tile."""
    import fa_gpu

    rng = np.random.default_rng(21)
    S0, S1, n = 9, 2, 45
    A0 = 0.8 * np.eye(S0) + 0.2 / S0  # noisy identity over factor 0
    O1 = 8
    A1 = np.zeros((O1, S0, S1))  # sparse, over both factors: mostly one-hot columns
    A1[rng.integers(0, O1, size=(S0, S1)), np.arange(S0)[:, None], np.arange(S1)[None, :]] = 1.0
    A1 += rng.dirichlet(np.ones(O1), size=(S0, S1)).transpose(2, 0, 1) * (rng.random((1, S0, S1)) < 0.15)
    A1 /= A1.sum(0, keepdims=True)
    B0 = np.stack([0.9 * np.roll(np.eye(S0), u, axis=0) + 0.1 / S0 for u in range(3)], axis=-1)
    B1 = np.stack([np.eye(S1), np.eye(S1)[::-1]], axis=-1)
    C = [rng.normal(size=S0), rng.normal(size=O1)]
    model = fa_gpu.GenerativeModel([A0, A1], [B0, B1], C=C, A_dependencies=[[0], [0, 1]], policy_len=2)
    lay = fa_gpu.layout.build_layout(model)
    from fa_gpu.kernels.columns import A_SP, B_SP

    assert (lay.A_meta[:, A_SP] >= 0).all() and lay.B_meta[0, B_SP] >= 0  # the plans are used
    per_agent = fa_gpu.GenerativeModel([np.broadcast_to(A0, (n,) + A0.shape).copy(), A1], [B0, B1], C=C,
                                       A_dependencies=[[0], [0, 1]], policy_len=2)
    for m in (model, per_agent):
        fast = fa_gpu.Engine(m, n, backend="numba", dtype=dtype, action_selection="stochastic", seed=3)
        ref = fa_gpu.Engine(m, n, backend="numpy", dtype=dtype, action_selection="stochastic", seed=3)
        for t in range(6):
            o = np.stack([rng.integers(0, S0, size=n), rng.integers(0, O1, size=n)], axis=1)
            np.testing.assert_array_equal(fast.step(o), ref.step(o), err_msg=f"actions at step {t}")
            np.testing.assert_allclose(fast.neg_efe, ref.neg_efe, rtol=tol, atol=tol)
            np.testing.assert_allclose(fast.q_pi, ref.q_pi, rtol=tol, atol=tol)
            for x, y in zip(fast.qs + fast.prior, ref.qs + ref.prior):
                np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


def test_learned_A_has_no_plan_even_for_one_agent():
    """A learned A changes every step: no product plan is built for it, also when N = 1 (its one
    row per agent is then one row, as a shared A's). The fused kernel equals the reference."""
    import fa_gpu

    S = 16
    A = 0.8 * np.eye(S) + 0.2 / S  # would get a plan if it were never learned
    B = np.stack([np.roll(np.eye(S), u, axis=0) for u in range(3)], axis=-1)
    model = fa_gpu.GenerativeModel([A], [B], C=[np.linspace(-1, 1, S)], pA=[np.ones((S, S))])
    from fa_gpu.kernels.columns import A_SP

    assert fa_gpu.layout.build_layout(model).A_meta[0, A_SP] >= 0
    rng = np.random.default_rng(4)
    for n in (1, 3):
        fast = fa_gpu.Engine(model, n, backend="numba", dtype="float64", learn_A=True)
        ref = fa_gpu.Engine(model, n, backend="numpy", dtype="float64", learn_A=True)
        assert fast.layout.A_meta[0, A_SP] == -1
        for t in range(4):
            o = rng.integers(0, S, size=(n, 1))
            np.testing.assert_array_equal(fast.step(o), ref.step(o), err_msg=f"actions at step {t}")
            np.testing.assert_allclose(fast.neg_efe, ref.neg_efe, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(fast.A[0], ref.A[0], rtol=1e-10, atol=1e-12)
