"""Start-up benchmark: wall time of a new process to its first numba step, cold and warm cache,
beside the numpy backend, and how the step scales with threads.

    python -m benchmarks.startup [--n 10000] [--repeats 3] [--scaling-n 100000,400000]

1. Start-up. Each row is a fresh interpreter (``python -c``) that imports fa_gpu, builds
   ``Engine(grid_world(5), N, backend=..., dtype="float32")`` and steps once; the time is the
   whole process, interpreter start included. "cold" points ``NUMBA_CACHE_DIR`` at an empty
   directory (so every kernel compiles); "warm" runs again on that directory. Targets: warm
   <= 2 s, cold <= 25 s, and the cold run says on stderr that it compiles.
2. Scaling: steps per second of one engine with 1 and with k threads (the compute pool), for
   large N, and the N=1 step time. Targets: k=2 vs 1 >= 90% of 2x at N >= 100k; N=1 <= 10 us.
3. Memory estimate: ``Engine.estimate_bytes()`` (less the step's temporaries) against what
   constructing the engine left allocated (tracemalloc), on every random model of the test suite
   (``tests/randmodels.py``), numba backend, N=4000. Target: within 5%.

Other work on the machine skews every figure: the load average is printed first.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import numpy as np, fa_gpu
n = {n}
eng = fa_gpu.Engine(fa_gpu.models.grid_world(5), n, backend={backend!r}, dtype="float32")
eng.step(np.zeros((n, 1), dtype=np.int64))
"""


def first_step_process(n: int, backend: str, cache_dir: str) -> tuple[float, str]:
    """(wall seconds of a new process to its first step, its stderr)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env.pop("FA_GPU_BACKEND", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(n=n, backend=backend)], env=env,
                          capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return wall, proc.stderr.strip()


def startup(n: int, repeats: int) -> list:
    rows = []
    with tempfile.TemporaryDirectory(prefix="fa_gpu-cold-") as cache:
        wall, err = first_step_process(n, "numba", cache)
        rows.append(("numba, cold cache", wall, err.splitlines()[0] if err else ""))
        for _ in range(repeats):
            wall, err = first_step_process(n, "numba", cache)
            rows.append(("numba, warm cache", wall, err))
        for _ in range(repeats):
            rows.append(("numpy", *first_step_process(n, "numpy", cache)))
    return rows


def _rate(eng, obs, seconds: float) -> float:
    """Agent-steps per second of ``eng.step(obs)`` over about ``seconds``."""
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        eng.step(obs)
        steps += 1
    return steps * obs.shape[0] / (time.perf_counter() - t0)


def scaling(ns, threads: int, rounds: int = 5) -> tuple[list, float]:
    """Rows ``(N, rate with 1 thread, rate with threads, efficiency)``, each rate the best of
    ``rounds`` 0.5 s runs taken alternately (so a burst of other load hits both alike), and the
    N=1 step time in microseconds (the best of three medians of 5,000 steps, after warm-up)."""
    import numpy as np

    import fa_gpu

    model = fa_gpu.models.grid_world(5)
    rows = []
    for n in ns:
        obs = np.random.default_rng(0).integers(0, 25, size=(n, 1))
        engines = [fa_gpu.Engine(model, n, backend="numba", dtype="float32", num_threads=k)
                   for k in (1, threads)]
        best = [0.0, 0.0]
        for _ in range(rounds):
            for i, eng in enumerate(engines):
                best[i] = max(best[i], _rate(eng, obs, 0.5))
        rows.append((n, best[0], best[1], best[1] / best[0] / threads))
        del engines
    eng = fa_gpu.Engine(model, 1, backend="numba", dtype="float32")
    obs = np.zeros((1, 1), dtype=np.int64)
    medians = []
    for r in range(4):
        ts = []
        for _ in range(5000):
            t0 = time.perf_counter_ns()
            eng.step(obs)
            ts.append(time.perf_counter_ns() - t0)
        if r:  # the first round is warm-up (the first thousands of steps run slower here)
            medians.append(sorted(ts)[len(ts) // 2] / 1e3)
    return rows, min(medians)


def memory_accuracy(n: int = 4000) -> list:
    """Rows ``(model, estimate, traced)`` in bytes, as ``tests/test_schema.py`` checks them."""
    import tracemalloc

    import fa_gpu

    sys.path.insert(0, str(ROOT / "tests"))
    from randmodels import CASES, engine_kwargs, make_model_arrays

    rows = []
    fa_gpu.Engine(fa_gpu.models.grid_world(3), 2, backend="numba")  # one-time imports
    for i, case in enumerate(CASES):
        model = fa_gpu.GenerativeModel(**make_model_arrays(case, 7))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        eng = fa_gpu.Engine(model, n, backend="numba", dtype=("float32", "float64")[i % 2],
                            **engine_kwargs(case, n, 7))
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        rows.append((case.name, eng.estimate_bytes() - eng._backend.temp_bytes(eng.config, eng.layout), held))
        del eng
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="agents of the start-up engine")
    ap.add_argument("--repeats", type=int, default=3, help="warm and numpy runs each")
    ap.add_argument("--scaling-n", default="100000,400000", help="comma-separated N for scaling")
    args = ap.parse_args(argv)
    from fa_gpu.runtime.topology import pool_sizes

    print(f"load average at start (1/5/15 min): {os.getloadavg()}; python {sys.version.split()[0]}")
    print(f"\n1. new process to first step: Engine(grid_world(5), {args.n:,}, dtype='float32'), "
          "interpreter start included")
    rows = startup(args.n, args.repeats)
    for label, wall, note in rows:
        print(f"  {label:<20} {wall:7.2f} s" + (f"   stderr: {note}" if note else ""))
    warm = min(w for lab, w, _ in rows if lab == "numba, warm cache")
    cold = rows[0][1]
    print(f"  warm {warm:.2f} s (target <= 2 s: {'met' if warm <= 2 else 'NOT met'}); "
          f"cold {cold:.2f} s (target <= 25 s: {'met' if cold <= 25 else 'NOT met'})")
    k = pool_sizes().compute_threads
    ns = [int(x) for x in args.scaling_n.split(",") if x]
    print(f"\n2. numba step, grid_world(5) float32: 1 thread vs {k} (agent-steps/s)")
    srows, one = scaling(ns, max(k, 1))
    for n, r1, rk, eff in srows:
        print(f"  N={n:>9,}  1 thread {r1:12,.0f}  {k} threads {rk:12,.0f}  "
              f"speed-up {rk / r1:.2f}x = {eff:.0%} of {k}x (target >= 90%)")
    print(f"  N=1 step: {one:.1f} us median (target <= 10 us)")
    mem = memory_accuracy()
    errs = [(est - held) / held for _, est, held in mem]
    worst = max(range(len(mem)), key=lambda i: abs(errs[i]))
    print(f"\n3. memory estimate vs tracemalloc, {len(mem)} random models, numba, N=4,000: "
          f"worst {errs[worst]:+.2%} ({mem[worst][0]}: {mem[worst][1]:,} B estimated, "
          f"{mem[worst][2]:,} B allocated), mean |error| {sum(map(abs, errs)) / len(errs):.2%} "
          "(target within 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
