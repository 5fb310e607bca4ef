"""Sharding overhead: one engine with 2 threads against ``ShardedEngine(shards=2)`` with 1 thread
per shard, on this machine, in one run.

    python -m benchmarks.distributed [--n 10000,100000,1000000] [--steps 40,20,5]

Grid world 5x5 (``fa_gpu.models.grid_world(5)``, ``GridWorldEnv(5)``), policy_len 1, float32,
numba, stochastic actions. Each row times ``run(env, steps)`` and ``run(env, 2 * steps)`` after a
warm-up run (JIT and Ray actor start-up left out); the difference gives the time per step, the
rest the fixed cost of a run:

- ``one``: ``Engine(num_threads=2).run``: engine and environment in this process;
- ``in-shard``: ``ShardedEngine.run`` with the grid world as independent copies: each shard steps
  its slice of the worlds; nothing moves per step;
- ``driver``: the same world stepped here (wrapped so it cannot be sliced): per step the shards'
  actions come here and the observations go back through Ray's object store.

Columns: ms per step of each, the overhead of each sharded mode over ``one`` (ms per step), the
ratio sharded / one, and the fixed ms per run; then the bytes each mode moves per step. The load average is printed at
the start and the end (other processes on the machine move the figures).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fa_gpu  # noqa: E402
from fa_gpu.envs import GridWorldEnv  # noqa: E402

OPTS = dict(backend="numba", dtype="float32", seed=0, action_selection="stochastic", alpha=4.0)


class Driven:
    """The grid world without ``agent_offset``: ShardedEngine.run steps it in the driver."""

    def __init__(self, env):
        self.env, self.num_obs, self.num_controls = env, env.num_obs, env.num_controls

    def reset(self, n):
        return self.env.reset(n)

    def step(self, actions):
        return self.env.step(actions)


def _costs(run, steps: int) -> tuple:
    """(ms per step, ms per run): ``run(steps)`` and ``run(2 * steps)`` timed after a warm-up
    (compilation, first allocation); the slope is the step, the rest the run's fixed cost (resets,
    the environment copied to the shards, the final gather)."""
    run(1)
    times = []
    for k in (steps, 2 * steps):
        t0 = time.perf_counter()
        run(k)
        times.append(time.perf_counter() - t0)
    per = (times[1] - times[0]) / steps
    return per * 1e3, (times[0] - steps * per) * 1e3


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="10000,100000,1000000")
    p.add_argument("--steps", default="40,20,5", help="steps per N (comma list, same length)")
    args = p.parse_args(argv)
    ns = [int(float(x)) for x in args.n.split(",")]
    steps = [int(x) for x in args.steps.split(",")]
    if len(steps) != len(ns):
        p.error("--steps needs one entry per --n")

    import ray

    from fa_gpu.distributed import ShardedEngine

    print(f"load average at start: {_load()}  (1, 5, 15 min; {os.cpu_count()} CPUs)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    model = fa_gpu.models.grid_world(5, policy_len=1, dtype=np.float32)
    rows = []
    for n, t in zip(ns, steps):
        one = fa_gpu.Engine(model, n, num_threads=2, **OPTS)
        res = [_costs(lambda k: one.run(GridWorldEnv(5), k, progress=False), t)]
        del one
        sharded = ShardedEngine(model, n, shards=2, num_threads=1, **OPTS)
        res.append(_costs(lambda k: sharded.run(GridWorldEnv(5), k, progress=False), t))
        res.append(_costs(lambda k: sharded.run(Driven(GridWorldEnv(5)), k, progress=False), t))
        sharded.shutdown()
        rows.append((n, t, res))
        print(f"  N={n:,}: done", flush=True)

    print()
    print(f"{'N':>10} {'steps':>5} | ms/step: {'one 2thr':>9} {'in-shard':>9} {'driver':>9} | "
          f"overhead ms/step: {'in-shard':>9} {'driver':>9} | {'in/one':>6} {'drv/one':>7} | "
          f"ms/run: {'one':>7} {'in-shard':>9} {'driver':>9}")
    for n, t, ((a, fa), (b, fb), (c, fc)) in rows:
        print(f"{n:>10,} {t:>5} | {'':9}{a:>9.2f} {b:>9.2f} {c:>9.2f} | {'':18}{b - a:>9.2f} "
              f"{c - a:>9.2f} | {b / a:>6.2f} {c / a:>7.2f} | {'':8}{fa:>7.1f} {fb:>9.1f} {fc:>9.1f}")
    F, M = model.num_factors, model.num_modalities
    print()
    print("bytes moved per step (int64 actions (N, F) to the driver, obs (N, M) back; F=M=1 here):")
    print(f"{'N':>10} {'in-shard':>10} {'driver':>14}")
    for n, _, _ in rows:
        print(f"{n:>10,} {0:>10} {n * (F + M) * 8:>14,}")
    print("in-shard: the per-block call and its reply only (a few hundred bytes per block, not per "
          "step); checkpoints move nothing through the driver (each shard writes its own file)")
    print(f"load average at end: {_load()}")
    ray.shutdown()


if __name__ == "__main__":
    main()
