"""Runtime benchmark: what concurrent readers and blocking host work cost the step loop.

    python -m benchmarks.runtime [--n 10000] [--steps 30] [--backend numba]

1. Snapshot readers: step throughput alone, then with 4 threads calling ``engine.snapshot()``
   continuously; prints the ratio (target: drop <= 10%).
2. I/O-bound host work: a host_fn that sleeps 1 ms per chunk of 100 agents, with
   ``Engine.run(pipeline=2)``; prints the step time against
   1.25 x max(kernel time, host time / I/O threads) (target: at or below it).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fa_gpu  # noqa: E402
from fa_gpu.runtime.topology import pool_sizes  # noqa: E402


def _steps_per_s(engine, obs, steps) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.step(obs)
    return steps / (time.perf_counter() - t0)


def readers(engine, obs, steps: int) -> dict:
    engine.step(obs)  # compile
    alone = statistics.median(_steps_per_s(engine, obs, steps) for _ in range(3))
    stop, counts = threading.Event(), [0] * 4

    def read(k):
        while not stop.is_set():
            snap = engine.snapshot()
            assert len(set(snap["t"].tolist())) == 1  # one step's arrays
            counts[k] += 1

    threads = [threading.Thread(target=read, args=(k,), daemon=True) for k in range(4)]
    for th in threads:
        th.start()
    try:
        busy = statistics.median(_steps_per_s(engine, obs, steps) for _ in range(3))
    finally:
        stop.set()
        for th in threads:
            th.join()
    return dict(steps_per_s_alone=alone, steps_per_s_with_readers=busy, ratio=busy / alone,
                snapshots=sum(counts))


def host_io(engine, obs, steps: int) -> dict:
    n = engine.n_agents
    io = pool_sizes().io_threads
    chunk = 100

    def host_fn(ids, actions):
        time.sleep(0.001)
        return (ids[:, None] + actions[:, :1]) % engine.config.num_obs[0]

    engine.step(obs)
    kernel = statistics.median(_timed(lambda: engine.step(obs)) for _ in range(steps))
    host = (n // chunk) * 0.001 / io
    res = engine.run(None, steps, host_fn=host_fn, obs=obs, reset=False, progress=False,
                     pipeline=2, chunk_size=chunk)
    step = (res.seconds - res.first_step_seconds) / max(1, steps - 1)
    bound = 1.25 * max(kernel, host)
    return dict(kernel_ms=kernel * 1e3, host_ms_over_io_threads=host * 1e3, io_threads=io,
                step_ms=step * 1e3, bound_ms=bound * 1e3, met=step <= bound)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--backend", default="numba")
    args = ap.parse_args(argv)
    model = fa_gpu.models.grid_world(side=5)
    engine = fa_gpu.Engine(model, args.n, backend=args.backend, dtype="float32")
    obs = np.random.default_rng(0).integers(0, 25, size=(args.n, 1))
    print(f"runtime benchmark: grid 25 states, N={args.n}, backend={engine.backend}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    r = readers(engine, obs, args.steps)
    print(f"snapshot readers: {r['steps_per_s_alone']:.1f} steps/s alone, "
          f"{r['steps_per_s_with_readers']:.1f} with 4 readers ({r['snapshots']} snapshots): "
          f"ratio {r['ratio']:.2f} (target >= 0.90: {'met' if r['ratio'] >= 0.9 else 'not met'})")
    h = host_io(engine, obs, args.steps)
    print(f"I/O-bound host_fn, pipeline=2: step {h['step_ms']:.1f} ms; kernel {h['kernel_ms']:.1f} ms, "
          f"host {h['host_ms_over_io_threads']:.1f} ms over {h['io_threads']} I/O threads; "
          f"bound 1.25 x max = {h['bound_ms']:.1f} ms ({'met' if h['met'] else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
