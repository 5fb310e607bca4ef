"""Run under NUMBA_ENABLE_CUDASIM=1 (a process of its own): the cuda backend's fused kernel on
Numba's CUDA simulator against the numpy reference, for the random models of tests/randmodels.py;
then the batched path (chunked, on the simulator's NumPy arrays) on the same models, and which
path ``auto`` picks. Prints one line per case and 'SIM OK <count>' at the end; any mismatch
raises."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import numpy as np  # noqa: E402
from numba import config  # noqa: E402

import fa_gpu  # noqa: E402
from fa_gpu.backends import cuda as bcuda  # noqa: E402
from fa_gpu.kernels import cuda as kcuda  # noqa: E402

import launchable  # noqa: E402

from randmodels import CASES, build, random_obs  # noqa: E402

assert config.ENABLE_CUDASIM, "run with NUMBA_ENABLE_CUDASIM=1"
launches = launchable.install(kcuda)  # every launch's arguments: passable to a real GPU
idxs = [int(a) for a in sys.argv[1:]] or range(len(CASES))
checked = 0
paths = set()
bcuda.MAX_THREADS = 3  # the batched path runs 4 agents as chunks of 3 and 1
for idx in idxs:
    case = CASES[idx]
    for dtype, tol, sel, path in (("float64", 1e-10, "stochastic", "fused"),
                                  ("float32", 1e-5, "deterministic", "fused"),
                                  ("float64", 1e-10, "stochastic", "batched")):
        _, ref = build(case, 4, 600 + idx, backend="numpy", dtype=dtype, action_selection=sel)
        _, sim = build(case, 4, 600 + idx, backend="cuda", dtype=dtype, action_selection=sel,
                       cuda_path=path)
        assert sim.backend == "cuda" and sim.step_path == path
        sb = sim._buffers  # per-agent matrices agent-innermost (coalesced), as on a GPU
        assert all(a.strides[0] == a.itemsize for k, a in sb.packed.items()
                   if a.ndim == 2 and sb.rows_of(k) and sb.spec.entries[k][2]), case.name
        if path == "fused":
            paths.add("shared" if sim._backend.shared_model_sizes(sim._buffers) else "global")
        for t, o in enumerate(random_obs(case, 4, 3, 600 + idx)):
            np.testing.assert_array_equal(ref.step(o), sim.step(o), err_msg=f"{case.name} {dtype} actions t={t}")
            pairs = [("q_pi", ref.q_pi, sim.q_pi), ("neg_efe", ref.neg_efe, sim.neg_efe)]
            pairs += [(f"qs{f}", x, y) for f, (x, y) in enumerate(zip(ref.qs, sim.qs))]
            pairs += [(f"prior{f}", x, y) for f, (x, y) in enumerate(zip(ref.prior, sim.prior))]
            for name in ("A", "B", "D", "pA", "pB"):
                if getattr(ref, name) is not None:
                    pairs += [(f"{name}{i}", x, y) for i, (x, y) in enumerate(zip(getattr(ref, name), getattr(sim, name)))]
            for name, x, y in pairs:
                np.testing.assert_allclose(y, x, rtol=tol, atol=tol, err_msg=f"{case.name} {dtype} {name} t={t}")
        checked += 1
    print(case.name, "ok", flush=True)
# cohorts (Engine.run(pipeline=2)): two half launches give the whole step's numbers
case = CASES[27]
_, whole = build(case, 6, 9, backend="numpy", action_selection="stochastic")
_, split = build(case, 6, 9, backend="cuda", action_selection="stochastic")
for o in random_obs(case, 6, 3, 9):
    expect = whole.step(o)
    got = np.concatenate([split.step_async(o[:2], agents=(0, 2)).result(), split.step(o[2:], agents=(2, 6))])
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_allclose(split.q_pi, whole.q_pi, rtol=1e-10, atol=1e-10)
print("cohorts ok")
# one agent learning: its learned A and B have one row, which the kernel writes, so the block
# must not take them for a shared read-only model
for idx in (24, 25, 26, 32, 33):
    _, ref = build(CASES[idx], 1, 5, backend="numpy", action_selection="stochastic")
    _, one = build(CASES[idx], 1, 5, backend="cuda", action_selection="stochastic")
    assert one._backend.shared_model_sizes(one._buffers) is None, CASES[idx].name
    for t, o in enumerate(random_obs(CASES[idx], 1, 4, 5)):
        np.testing.assert_array_equal(one.step(o), ref.step(o))
        for name in ("A", "B", "qs", "q_pi"):
            if getattr(ref, name) is not None:
                for x, y in zip(getattr(ref, name), getattr(one, name)):
                    np.testing.assert_allclose(y, x, rtol=1e-10, atol=1e-10, err_msg=f"{CASES[idx].name} {name} t={t}")
print("one agent learning ok")
# a shard (agent_offset) draws the whole population's numbers for its agents
_, whole = build(case, 6, 9, backend="numpy", action_selection="stochastic", alpha=0.5)
_, shard = build(case, 4, 9, backend="cuda", action_selection="stochastic", alpha=0.5, agent_offset=2)
for o in random_obs(case, 6, 3, 9):
    np.testing.assert_array_equal(shard.step(o[2:]), whole.step(o)[2:])
print("agent offset ok")
# shared worlds: a population whose engines run on the simulator sees the observations of one
# whose engines run on the reference, step by step (same seeds)
graph = fa_gpu.envs.watts_strogatz(8, 4, 0.3, seed=2)
worlds = {"foraging": (fa_gpu.models.foraging,
                       lambda: fa_gpu.envs.Foraging(5, patches=2, regrowth=[0.5, 1.5], capacity=3, seed=4)),
          "social": (fa_gpu.models.social, lambda: fa_gpu.envs.SocialNetwork(graph, seed=4))}
for name, (make_model, make_world) in worlds.items():
    pops = []
    for backend in ("numpy", "cuda"):
        eng = {k: fa_gpu.Engine(make_model(), n, backend=backend, dtype="float64",
                                action_selection="stochastic", seed=s) for k, n, s in (("a", 5, 1), ("b", 3, 2))}
        pops.append(fa_gpu.Population(eng, make_world()))
    obs = [p.reset() for p in pops]
    for _ in range(4):
        (_, o_ref), (_, o_sim) = (p.step() for p in pops)
        for k in o_ref:
            np.testing.assert_array_equal(o_sim[k], o_ref[k], err_msg=name)
print("worlds ok")
# ties: the symmetric grid world (tied policies summed in different orders) gives the
# reference's deterministic actions, full and marginal, both precisions
for dtype in ("float64", "float32"):
    for mode in ("full", "marginal"):
        envs = [fa_gpu.envs.GridWorldEnv(side=5, seed=0) for _ in range(2)]
        engines = [fa_gpu.Engine(fa_gpu.models.grid_world(5, policy_len=2), 8, backend=be, dtype=dtype,
                                 sampling_mode=mode) for be in ("numpy", "cuda")]
        obs = [e.reset(8) for e in envs]
        for t in range(4):
            acts = [eng.step(o) for eng, o in zip(engines, obs)]
            np.testing.assert_array_equal(acts[1], acts[0], err_msg=f"ties {dtype} {mode} t={t}")
            obs = [e.step(a) for e, a in zip(envs, acts)]
print("ties ok")
# auto: the 25-state grid (fits shared memory) runs fused, the 400-state grid batched
small = fa_gpu.Engine(fa_gpu.models.grid_world(5), 2, backend="cuda")
large = fa_gpu.Engine(fa_gpu.models.grid_world(20), 2, backend="cuda")
assert (small.step_path, large.step_path) == ("fused", "batched"), (small.step_path, large.step_path)
print("auto ok")
# the CPU kernels cannot compile in a simulator process: numba says so instead of failing later
why = fa_gpu.backends.availability()["numba"]
assert "NUMBA_ENABLE_CUDASIM" in why, why
assert fa_gpu.Engine(fa_gpu.models.grid_world(3), 2, backend="auto").backend == "numpy"
print("numba off ok")
# the batched path's memory estimate covers its temporaries (the simulator's arrays are NumPy's,
# so tracemalloc sees them) on every random model and the 100- and 400-state grids
import tracemalloc  # noqa: E402

bcuda.MAX_THREADS = 1 << 20
engines = [(c.name, build(c, 300, 5, backend="cuda", dtype="float32", cuda_path="batched")[1],
            next(iter(random_obs(c, 300, 1, 5)))) for c in CASES]
engines += [(f"grid{s * s}", fa_gpu.Engine(fa_gpu.models.grid_world(s), 300, backend="cuda",
                                           dtype="float32", cuda_path="batched"),
             np.zeros((300, 1), np.int64)) for s in (10, 20)]
for name, eng, o in engines:
    eng.step(o)
    tracemalloc.start()
    eng.step(o)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    budget = eng._backend.temp_bytes(eng.config, eng.layout)
    assert peak <= budget, f"{name}: batched step peaked at {peak} B, estimate {budget} B"
print("batched memory ok")
print("paths", sorted(paths))
print("launches checked", launches["launches"])
print("SIM OK", checked)
