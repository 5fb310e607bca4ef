"""The buffer schema: every engine buffer declared once, and allocation, views, the memory
estimate, checkpoints, cohorts and kernel bundles generated from it; memory refused up front."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fa_gpu
from fa_gpu import schema
from fa_gpu.runtime import topology

from randmodels import CASES, build, make_model_arrays, engine_kwargs, random_obs

N = 4000  # above the numba backend's serial threshold: one scratch row per thread; large enough
# that the Python objects around the buffers (views, dicts: ~15 KB) are not what is measured


def _learn_D_model(seed=3):
    rng = np.random.default_rng(seed)
    A = [rng.dirichlet(np.ones(3), size=4).T]
    B = [np.stack([rng.dirichlet(np.ones(4), size=4).T for _ in range(2)], axis=-1)]
    D = [rng.dirichlet(np.ones(4))]
    return fa_gpu.GenerativeModel(A, B, C=[rng.normal(size=3)], D=D, pD=[D[0] * 4 + 0.3])


def _traced_construction(model, n, **kw):
    """(engine, bytes the construction left allocated, as tracemalloc sees them)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    eng = fa_gpu.Engine(model, n, **kw)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return eng, held


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_estimate_matches_the_allocation_on_every_random_model(backend):
    """estimate_bytes() minus the step's temporaries is within 5% of what constructing the
    engine really left allocated (tracemalloc), on every random model, both dtypes."""
    cases = [(c.name, fa_gpu.GenerativeModel(**make_model_arrays(c, 7)), engine_kwargs(c, N, 7))
             for c in CASES]
    cases.append(("learnD", _learn_D_model(), dict(learn_D=True)))
    fa_gpu.Engine(cases[0][1], 2, backend=backend)  # one-time imports and caches are not the engine's
    for i, (name, model, kw) in enumerate(cases):
        dtype = ("float32", "float64")[i % 2]
        eng, held = _traced_construction(model, N, backend=backend, dtype=dtype, **kw)
        buffers = eng.estimate_bytes() - eng._backend.temp_bytes(eng.config, eng.layout)
        assert buffers == eng._spec.nbytes()
        assert abs(buffers - held) <= 0.05 * held, (name, dtype, buffers, held)
        assert buffers == sum(a.nbytes for a in eng._buffers.packed.values()), name


def test_numpy_step_temporaries_within_the_estimate():
    """The reference step's traced peak stays within temp_bytes (what the memory check adds)."""
    for case in CASES[::3]:
        _, eng = build(case, 300, 5, backend="numpy", dtype="float32")
        obs = random_obs(case, 300, 2, 5)
        eng.step(obs[0])
        tracemalloc.start()
        eng.step(obs[1])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= eng._backend.temp_bytes(eng.config, eng.layout), case.name


def test_every_buffer_is_declared_once_and_viewed_in_place():
    case = next(c for c in CASES if c.name == "paraminfo_learn")
    _, eng = build(case, 9, 1, backend="numpy")
    b = eng._buffers
    names = [x.name for x in schema.BUFFERS]
    assert len(names) == len(set(names)) and list(b.packed) == names
    bundled = sum((list(cls._fields) for cls in schema.BUNDLES.values()), [])
    # outside the kernels' bundles: the scratch only (the windows of sequence inference and the
    # free energy travel in the state bundle: the window sweep reads and writes them)
    unbundled = ["work"]
    assert sorted(bundled + unbundled) == sorted(names)
    for kind, cls in schema.BUNDLES.items():
        assert all(getattr(b.bundle(kind), k) is b.packed[k] for k in cls._fields)
    # the pymdp-layout views are views of the packed buffers, nothing copied
    for name in ("A", "logA", "H_A", "C", "B", "D", "pA", "pB", "wA", "wB", "qs", "prior", "qs_prev"):
        for v in getattr(b, name):
            assert np.shares_memory(v, b.packed[name]), name
    assert all(np.shares_memory(getattr(b, k), b.packed["lr"]) for k in schema.LR_NAMES)
    # absent optional buffers: None as views, a placeholder for the kernels
    _, plain = build(CASES[0], 4, 1)
    assert plain._buffers.pA is None and plain._buffers.packed["pA"].shape == (1, 1)
    assert "pA" not in schema.checkpointed(plain._buffers.spec)


def test_checkpoint_holds_exactly_the_schema_buffers(tmp_path):
    case = next(c for c in CASES if c.name == "learnAB_lr")
    _, eng = build(case, 5, 2, backend="numpy")
    eng.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as z:
        stored = sorted(k.split(".", 1)[1] for k in z.files if k.startswith(("params.", "state.")))
    assert stored == sorted(schema.checkpointed(eng._buffers.spec))
    assert "work" not in stored and "A_meta" not in stored and "pA" in stored


def test_cohort_views_are_rows_of_the_engine_buffers():
    case = next(c for c in CASES if c.name == "learnAB_2f")
    _, eng = build(case, 10, 4, backend="numpy")
    b = eng._buffers
    sub = b.cohort(3, 7)
    assert sub.qs[1].shape == (4, case.num_states[1]) and np.shares_memory(sub.qs[1], b.packed["qs"])
    assert sub.A[0].shape[0] == 4 and sub.gamma.shape == (4,)  # learned A is per-agent
    assert sub.packed["A_meta"] is b.packed["A_meta"]  # shared: as is
    sub.t[...] = 99
    np.testing.assert_array_equal(eng.t, [0, 0, 0, 99, 99, 99, 99, 0, 0, 0])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_memory_refused_before_allocation(backend, monkeypatch):
    """200M agents do not fit in this machine's memory: MemoryError naming both figures, at
    once, on the CPU backends too."""
    model = fa_gpu.models.grid_world(5)
    with pytest.raises(MemoryError, match=r"the engine needs [0-9.]+ GiB of host memory, [0-9.]+ GiB are available"):
        fa_gpu.Engine(model, 200_000_000, backend=backend)
    monkeypatch.setattr(topology, "host_memory_available", lambda: (1 << 20, "test"))
    with pytest.raises(MemoryError, match=r"needs 0\.\d+ GiB of host memory, 0\.00 GiB are available \(test\)"):
        fa_gpu.Engine(model, 20_000, backend=backend)


def test_host_memory_reads_cgroup_limits(tmp_path):
    """The lowest of MemAvailable and every cgroup level's limit minus usage (v2 and v1)."""
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable:    8000000 kB\n")
    (proc / "self" / "cgroup").write_text("4:memory:/jobs/a\n0::/jobs/a\n")
    v2 = sys_ / "fs" / "cgroup" / "jobs" / "a"
    v2.mkdir(parents=True)
    (v2 / "memory.max").write_text("3000000000\n")
    (v2 / "memory.current").write_text("1000000000\n")
    assert topology.host_memory_available(sys_, proc) == (2_000_000_000, str(v2 / "memory.max"))
    (v2 / "memory.stat").write_text("anon 1\ninactive_file 400000000\nactive_file 9\n")
    assert topology.host_memory_available(sys_, proc)[0] == 2_400_000_000  # page cache given back
    (v2 / "memory.stat").unlink()
    (v2 / "memory.max").write_text("max\n")  # unlimited: MemAvailable decides
    assert topology.host_memory_available(sys_, proc) == (8_192_000_000, "MemAvailable")
    v1 = sys_ / "fs" / "cgroup" / "memory" / "jobs" / "a"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("1500000000\n")
    (v1 / "memory.usage_in_bytes").write_text("500000000\n")
    assert topology.host_memory_available(sys_, proc)[0] == 1_000_000_000
    assert topology.host_memory_available(tmp_path / "x", tmp_path / "y") == (None, "unknown")


def test_policy_set_bounded_before_enumeration():
    B = [np.full((2, 2, 5), 0.5)]
    A = [np.full((2, 2), 0.5)]
    with pytest.raises(ValueError, match=r"5 actions over policy_len=12 make 244,140,625 policies, above max_policies=1,000,000"):
        fa_gpu.GenerativeModel(A, B, policy_len=12)
    with pytest.raises(ValueError, match=r"above max_policies=100"):
        fa_gpu.GenerativeModel(A, B, policy_len=3, max_policies=100)
    assert fa_gpu.GenerativeModel(A, B, policy_len=3, max_policies=None).num_policies == 125
    with pytest.raises(ValueError, match=r"policies holds 125 policies, above max_policies=10"):
        fa_gpu.GenerativeModel(A, B, policies=fa_gpu.construct_policies([5], 3), max_policies=10)


def test_policies_enumerated_in_pymdp_order():
    import itertools

    for nc, T in (([3], 2), ([2, 3, 1], 2), ([4, 2], 1), ([1], 3), ([2, 2, 2], 3)):
        want = np.array(list(itertools.product(*[range(u) for u in nc * T]))).reshape(-1, T, len(nc))
        np.testing.assert_array_equal(fa_gpu.construct_policies(nc, T), want)
