"""Run under NUMBA_ENABLE_CUDASIM=1 (a process of its own): the cuda backend's fused window kernel
(``kernels.window.window_agent_step``: mmp, vmp, fpi from categorical observations) on Numba's
CUDA simulator against the numpy reference, on the random sequence models of tests/randmodels.py,
as tests/test_sequence.py checks numba: every buffer after every step, agents reset mid-run.
argv: ``all`` adds per-agent models, float32 and 30 random setups (``randmodels.random_seq``).
Prints one line per case, 'one agent learning ok', 'grid stride ok', 'cohorts ok', the model
placements met (global, shared), the launches whose arguments were checked (``launchable``) and
'WINDOW SIM OK <count>' at the end; any mismatch raises."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import numpy as np  # noqa: E402
from numba import config  # noqa: E402

from fa_gpu.backends import cuda as bcuda  # noqa: E402
from fa_gpu.kernels import cuda as kcuda  # noqa: E402

import launchable  # noqa: E402
from randmodels import SEQ, SEQ_IDS, build_seq, inputs, random_seq  # noqa: E402
from test_sequence import assert_same, full_state  # noqa: E402
from test_sequence import run_against_reference as run  # noqa: E402

assert config.ENABLE_CUDASIM, "run with NUMBA_ENABLE_CUDASIM=1"
launches = launchable.install(kcuda)  # every launch's arguments: passable to a real GPU
every = sys.argv[1:] == ["all"]
checked, paths = 0, set()
for (case, kw), name in zip(SEQ, SEQ_IDS):
    eng = run(case, kw, 5, 21, False, backend="cuda")
    assert eng.step_path == "fused" and eng.layout.window_sel_rows == 0, name  # B read in place
    paths.add("shared" if eng._backend.shared_model_sizes(eng._buffers) else "global")
    checked += 1
    if every:
        run(case, kw, 6, 22, True, backend="cuda")
        run(case, kw, 5, 23, False, tol=2e-5, dtype="float32", backend="cuda")
        checked += 2
    print(name, "ok", flush=True)
if every:
    for seed in range(30):  # random small setups (randmodels.random_seq), 1-8 agents
        case, kw, n, per_agent = random_seq(seed, max_n=8)
        run(case, kw, n, seed, per_agent, backend="cuda")
        checked += 1
    print("random setups ok", flush=True)
# one agent learning (A, B, D: per-agent groups of one row, written by the kernel)
for i in (7, 8, 10):
    case, kw = SEQ[i]
    ref, one = (build_seq(case, 1, 27, b, False, **kw) for b in ("numpy", "cuda"))
    assert one._backend.shared_model_sizes(one._buffers) is None, SEQ_IDS[i]
    for t, o in enumerate(inputs(case, kw, 27, 1, kw.get("inference_horizon", 1) + 3)):
        np.testing.assert_array_equal(one.step(o), ref.step(o))
        assert_same(full_state(ref), full_state(one), 1e-10, f"{SEQ_IDS[i]} one agent at step {t}")
print("one agent learning ok")
# a launch of 3 threads for 8 agents: each thread's tile serves several agents in turn
bcuda.MAX_THREADS = 3
for i in (3, 7, 9):
    eng = run(*SEQ[i], 8, 33, i == 7, backend="cuda")
    assert eng._backend.launch_shape(8) == (1, 3)
print("grid stride ok")
# cohorts (one launch per agent range) give the whole step's numbers
case, kw = SEQ[8]
whole = build_seq(case, 7, 31, "cuda", False, **kw)
cut = build_seq(case, 7, 31, "cuda", False, **kw)
for t, o in enumerate(inputs(case, kw, 31, n=7, steps=kw["inference_horizon"] + 3)):
    whole.step(o)
    for lo, hi in ((0, 2), (2, 7)):
        cut.step([x[lo:hi] for x in o] if isinstance(o, list) else o[lo:hi], agents=(lo, hi))
    assert_same(full_state(whole), full_state(cut), 0, f"cohorts at step {t}")
    assert np.all(np.isfinite(whole.vfe))
print("cohorts ok")
print("paths", sorted(paths))
print("launches checked", launches["launches"])
print("WINDOW SIM OK", checked)
