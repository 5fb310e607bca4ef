"""GPU check: correctness of the cuda backend against the reference, then timings.

    python benchmarks/gpu_check.py               # on a machine with an NVIDIA GPU
    python benchmarks/gpu_check.py --dry-run     # anywhere: Numba's CUDA simulator, tiny N

1. Correctness: random models (multi-factor, dependencies, learning; float64 and float32),
   trajectories on the cuda backend (fused kernel and batched CuPy path) vs the numpy
   reference: max |difference| and equal actions; then the random sequence models of
   tests/randmodels.py (mmp, vmp, categorical observations; the fused window kernel), vfe
   and the whole window included.
2. Timing: the grid world with 25 states (policy_len 1 and 3) and 400 states (policy_len 1), and
   the T-maze with mmp over a 3-step window (policy_len 2), at N = 1e4, 1e5, 1e6, 4e6, on the
   fused and the batched path where both make sense:
   agent-steps/s, ms/step, achieved bandwidth and FLOP rate (estimated from the model's sizes)
   against the card's peaks, and pymdp 1.0.4 on JAX-GPU when both are importable and JAX sees a
   GPU.
3. Crossover: numba on the host's cores vs the fused cuda kernel at small N (grid25, policy_len
   1), the N above which ``cuda`` wins.
Prints the tables; ``--json PATH`` also writes the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (memory bandwidth bytes/s, fp32 non-tensor FLOP/s) by device name fragment; public spec sheets
PEAKS = {"H200": (4.8e12, 67e12), "H100": (3.35e12, 67e12), "A100": (2.0e12, 19.5e12),
         "L40S": (0.864e12, 91.6e12), "A10": (0.6e12, 31.2e12), "T4": (0.32e12, 8.1e12)}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="Numba's CUDA simulator, tiny N (no GPU needed)")
    ap.add_argument("--n", default="1e4,1e5,1e6,4e6", help="agent counts for the timings")
    ap.add_argument("--crossover-n", default="1e2,1e3,1e4,1e5", help="agent counts for numba vs cuda")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per cell (median)")
    ap.add_argument("--skip-pymdp", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--quick", action="store_true",
                    help="only the timed fused cells of grid25 (policy_len 1) and tmaze_mmp, their "
                         "correctness against numpy (float32), no crossover: two kernels to compile")
    return ap.parse_args(argv)


def compare_steps(ref, gpu, inputs, window: bool = False, reset=None) -> tuple[float, bool]:
    """Step ``ref`` (numpy) and ``gpu`` (cuda) on the same ``inputs``: the largest relative
    difference of q_pi, neg_efe and qs (``window``: vfe and qs_window too) over the steps, and
    whether the actions were equal at every step; ``reset``: agents both reset after step 2."""
    import numpy as np

    err, same = 0.0, True
    for t, o in enumerate(inputs):
        same &= bool(np.array_equal(ref.step(o), gpu.step(o)))
        xs = [ref.q_pi, ref.neg_efe] + ref.qs
        ys = [gpu.q_pi, gpu.neg_efe] + gpu.qs
        if window:
            xs += [ref.vfe] + (ref.qs_window or [])
            ys += [gpu.vfe] + (gpu.qs_window or [])
        for x, y in zip(xs, ys):
            err = max(err, float(np.max(np.abs(x - y) / (1 + np.abs(x)))))
        if t == 2 and reset is not None:
            ref.reset(reset), gpu.reset(reset)
    return err, same


def correctness(dry: bool) -> list[dict]:
    """cuda vs numpy on random models: one row per (case, dtype)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from randmodels import CASES, build, random_obs

    rows = []
    # Each shared model of its own size is a kernel of its own (its shared-memory shapes are
    # compile-time constants); every per-agent (learning) model shares one. So: three shared
    # models (1 factor; B dependencies; 3 factors) and all the learning ones, to keep the
    # kernels compiled on the card (each ~10-20 s) to a few.
    idxs = [0, 9, 21, 33] if dry else [0, 14, 21, 24, 25, 26, 27, 28, 29, 32, 33]
    n, steps = (4, 2) if dry else (256, 8)
    runs = (("fused", "float64", 1e-10), ("fused", "float32", 1e-5), ("batched", "float64", 1e-10),
            ("batched", "float32", 1e-5))
    for idx in idxs:
        case = CASES[idx]
        for path, dtype, tol in runs:
            _, ref = build(case, n, 700 + idx, backend="numpy", dtype=dtype, action_selection="stochastic")
            _, gpu = build(case, n, 700 + idx, backend="cuda", dtype=dtype, action_selection="stochastic",
                           cuda_path=path)
            err, same = compare_steps(ref, gpu, random_obs(case, n, steps, 700 + idx))
            rows.append(dict(case=case.name, path=path, dtype=dtype, max_rel_err=err,
                             actions_equal=same, ok=same and err <= tol))
    rows += window_correctness(dry)
    return rows


def window_correctness(dry: bool) -> list[dict]:
    """The fused window kernel vs numpy on the sequence models of tests/randmodels.py (a
    cohort reset mid-run): one row per (case, dtype)."""
    import numpy as np

    from randmodels import SEQ, build_seq, inputs

    rows = []
    n = 4 if dry else 256
    # two shared models (B dependencies; three parents) and the learning ones (one kernel)
    for case, kw in SEQ[:2] if dry else [SEQ[i] for i in (3, 5, 7, 8, 10)]:
        for dtype, tol in (("float64", 1e-10), ("float32", 1e-4)):
            ref, gpu = (build_seq(case, n, 41, b, False, dtype, **kw) for b in ("numpy", "cuda"))
            err, same = compare_steps(ref, gpu, inputs(case, kw, 41, n=n, steps=kw.get("inference_horizon", 1) + 4),
                                      window=True, reset=np.arange(1, n, 3))
            same &= gpu.step_path == "fused"
            rows.append(dict(case=case.name, path="window", dtype=dtype, max_rel_err=err,
                             actions_equal=same, ok=same and err <= tol))
    return rows


def quick_cells():
    """(name, model, engine options): the cells ``--quick`` checks and times."""
    import fa_gpu

    return [("grid25", fa_gpu.models.grid_world(side=5), {}),
            ("tmaze_mmp", fa_gpu.models.tmaze(policy_len=2), dict(inference_algo="mmp", inference_horizon=3))]


def quick_correctness(dry: bool) -> list[dict]:
    """The fused float32 kernel of each quick cell vs numpy, N agents over 6 steps (a cohort reset
    after step 2): the timed kernels themselves."""
    import numpy as np

    import fa_gpu

    n, rows = (4 if dry else 1000), []
    for name, model, kw in quick_cells():
        ref, gpu = (fa_gpu.Engine(model, n, backend=b, dtype="float32", seed=3, **kw) for b in ("numpy", "cuda"))
        rng = np.random.default_rng(1)
        obs = [np.stack([rng.integers(0, o, size=n) for o in model.num_obs], axis=1) for _ in range(6)]
        err, same = compare_steps(ref, gpu, obs, reset=np.arange(0, n, 3))
        same &= gpu.step_path == "fused"
        rows.append(dict(case=name, path="fused", dtype="float32", max_rel_err=err, actions_equal=same,
                         ok=same and err <= 1e-4))
    return rows


def flops_bytes(model, itemsize: int) -> tuple[float, float]:
    """Rough per-agent-step FLOPs and state bytes moved, for the rate columns."""
    S, P, T = sum(model.num_states), model.num_policies, model.policy_len
    nodes = sum(len({tuple(p[:t + 1].ravel()) for p in model.policies}) for t in range(T))
    per_node = sum(2 * o * S for o in model.num_obs) + 2 * S + 6 * sum(model.num_obs)
    flops = nodes * per_node + 10 * S + 5 * P
    state = (3 * S + 2 * P) * itemsize + 8 * (len(model.num_obs) + 2 * len(model.num_states) + 1)
    return float(flops), float(2 * state)  # state read and written


def time_engine(engine, obs, repeats: int):
    import numpy as np

    for _ in range(3):  # compile, warm up, fill a window
        engine.step(obs)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.step(obs)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def time_pymdp(model, n: int, repeats: int):
    """Seconds per step of pymdp 1.0.4 (JAX) batched over n agents, or None if unavailable.
    The jitted step is the one ``benchmarks.compare`` times on the CPU."""
    try:
        import jax

        from benchmarks.compare import PymdpRunner
        runner = PymdpRunner()
    except ImportError:
        return None
    if not any(d.platform == "gpu" for d in jax.devices()):
        return None
    agent = runner.agent(model, n)
    obs = [jax.numpy.zeros(n, dtype=jax.numpy.int32) for _ in model.num_obs]
    prior = agent.D
    jax.block_until_ready(runner.step(agent, obs, prior))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(runner.step(agent, obs, prior))
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def timings(dry: bool, ns: list[int], repeats: int, skip_pymdp: bool, quick: bool = False) -> list[dict]:
    import numpy as np

    import fa_gpu

    eng0 = fa_gpu.Engine(fa_gpu.models.grid_world(side=3), 1, backend="cuda")
    card = (eng0._backend.device_info or {}).get("name", "simulator" if dry else "unknown")
    peak = next((v for k, v in PEAKS.items() if k in card), None)
    tmaze_mmp = dict(inference_algo="mmp", inference_horizon=3)
    cells = [("grid25", fa_gpu.models.grid_world(side=5), {}, ("fused", "batched")),
             ("grid25", fa_gpu.models.grid_world(side=5, policy_len=3), {}, ("fused",)),
             ("grid400", fa_gpu.models.grid_world(side=20), {}, ("fused", "batched")),
             ("tmaze_mmp", fa_gpu.models.tmaze(policy_len=2), tmaze_mmp, ("fused", "batched"))]
    if quick:
        cells = [(name, model, kw, ("fused",)) for name, model, kw in quick_cells()]
    rows = []
    for name, model, kw, paths in cells:
        L = model.policy_len
        for n, path in ((n, path) for n in ns for path in paths):
            try:
                eng = fa_gpu.Engine(model, n, backend="cuda", dtype="float32", cuda_path=path, **kw)
            except MemoryError as exc:
                rows.append(dict(model=name, policy_len=L, n=n, path=path, error=str(exc)))
                continue
            rng = np.random.default_rng(0)
            obs = np.stack([rng.integers(0, o, size=n) for o in model.num_obs], axis=1)
            sec = time_engine(eng, obs, 1 if dry else repeats)
            fl, by = flops_bytes(model, 4)
            row = dict(model=name, policy_len=L, n=n, path=path, card=card, ms_per_step=sec * 1e3,
                       agent_steps_per_s=n / sec, gbytes_per_s=n * by / sec / 1e9,
                       gflops=n * fl / sec / 1e9)
            if peak:
                row.update(bw_of_peak=row["gbytes_per_s"] * 1e9 / peak[0], flops_of_peak=row["gflops"] * 1e9 / peak[1])
            if not (dry or skip_pymdp or kw) and n <= 1_000_000 and path == paths[0]:
                ps = time_pymdp(model, n, repeats)
                if ps:
                    row.update(pymdp_agent_steps_per_s=n / ps, ratio_to_pymdp=ps / sec)
            rows.append(row)
            del eng
    return rows


def crossover(dry: bool, ns: list[int], repeats: int) -> list[dict]:
    """numba (all host cores) vs the fused cuda kernel on grid25, policy_len 1, at small N. The
    dry run has numpy stand in for numba, which cannot compile under the simulator."""
    import numpy as np

    import fa_gpu

    model = fa_gpu.models.grid_world(side=5)
    cpu = "numpy" if dry else "numba"
    rows = []
    for n in ns:
        obs = np.random.default_rng(0).integers(0, 25, size=(n, 1))
        sec = {b: time_engine(fa_gpu.Engine(model, n, backend=b, dtype="float32"), obs,
                              1 if dry else repeats) for b in (cpu, "cuda")}
        rows.append(dict(n=n, cpu=cpu, cpu_ms=sec[cpu] * 1e3, cuda_ms=sec["cuda"] * 1e3,
                         cuda_speedup=sec[cpu] / sec["cuda"]))
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        # the simulator must be on before numba is imported: re-run this script with it
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        os.execv(sys.executable, [sys.executable, __file__] + (argv if argv is not None else sys.argv[1:]))
    sys.path.insert(0, str(ROOT))
    from fa_gpu.backends.cuda import unavailable_reason

    why = unavailable_reason()  # under the simulator: only numba-cuda is needed
    if why:
        print(f"gpu_check: the cuda backend cannot run here: {why}", file=sys.stderr)
        return 2
    ns = [2] if args.dry_run else [int(float(x)) for x in args.n.split(",")]
    cross_ns = [2] if args.dry_run else [int(float(x)) for x in args.crossover_n.split(",")]
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"fa_gpu GPU check  {started}  {platform.node()}  {'(dry run: CUDA simulator)' if args.dry_run else ''}")
    t0 = time.perf_counter()
    check = quick_correctness(args.dry_run) if args.quick else correctness(args.dry_run)
    took = time.perf_counter() - t0
    print("\ncorrectness: cuda backend vs numpy reference (stochastic actions, same seed)")
    print(f"{'case':<22}{'path':<9}{'dtype':<9}{'max rel err':>12}  actions")
    for r in check:
        print(f"{r['case']:<22}{r['path']:<9}{r['dtype']:<9}{r['max_rel_err']:>12.2e}  "
              f"{'equal' if r['actions_equal'] else 'DIFFER'}")
    from fa_gpu.kernels import cuda as kcuda
    print(f"correctness took {took:.0f} s, compiles included: "
          f"{kcuda.step_kernel.cache_info().currsize} fused kernel variants (dtype, fpi or window, "
          "shared-model size), each compiled once per argument layout")
    rows = timings(args.dry_run, ns, args.repeats, args.skip_pymdp, args.quick)
    print("\ntimings (float32, synchronized; fused: one kernel per step, batched: cuBLAS products)")
    print(f"{'model':<9}{'L':>2}{'N':>10}{'path':>9}{'ms/step':>10}{'agent-steps/s':>16}{'GB/s':>9}"
          f"{'GFLOP/s':>9}{'%bw':>6}{'%flop':>7}{'pymdp/s':>12}{'ratio':>7}")
    for r in rows:
        head = f"{r['model']:<9}{r['policy_len']:>2}{r['n']:>10}{r['path']:>9}"
        if "error" in r:
            print(f"{head}  {r['error']}")
            continue
        pct = lambda k: f"{100 * r[k]:.1f}" if k in r else "-"
        pym = f"{r['pymdp_agent_steps_per_s']:.3g}" if "pymdp_agent_steps_per_s" in r else "-"
        rat = f"{r['ratio_to_pymdp']:.1f}" if "ratio_to_pymdp" in r else "-"
        print(f"{head}{r['ms_per_step']:>10.3f}{r['agent_steps_per_s']:>16.4g}"
              f"{r['gbytes_per_s']:>9.1f}{r['gflops']:>9.1f}{pct('bw_of_peak'):>6}{pct('flops_of_peak'):>7}{pym:>12}{rat:>7}")
    cross = [] if args.quick else crossover(args.dry_run, cross_ns, args.repeats)
    if cross:
        print(f"\ncrossover: {cross[0]['cpu']} ({os.cpu_count()} host CPUs) vs fused cuda, grid25 policy_len 1, float32")
        print(f"{'N':>10}{'cpu ms':>10}{'cuda ms':>10}{'cuda speedup':>14}")
        for r in cross:
            print(f"{r['n']:>10}{r['cpu_ms']:>10.3f}{r['cuda_ms']:>10.3f}{r['cuda_speedup']:>14.2f}")
    ok = all(r["ok"] for r in check)
    print("\nGPU CHECK", "OK" if ok else "FAILED")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(started=started, dry_run=args.dry_run,
                                                   correctness=check, timings=rows,
                                                   crossover=cross), indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
