"""The ``fa-gpu`` command (also ``python -m fa_gpu``): simulate, info, bench, plot.

- ``simulate``: N agents in the grid world (or T-maze) for T steps on the best backend; prints
  the backend (and why others were skipped) and the throughput, records actions and
  observations to a Zarr store.
- ``info``: backends and why not, NVIDIA driver and devices, CPU topology, host pool sizes.
- ``bench``: ``benchmarks/compare.py`` of a source checkout, with the remaining arguments.
- ``plot RUN``: PNG summary of a ``simulate`` store.

``main(argv)`` returns the exit status: 0 success, 1 missing prerequisite, 2 usage error.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import fa_gpu

_REPO_ROOT = Path(__file__).resolve().parent.parent  # benchmarks/ lives here in a source checkout
# Stochastic selection: a deterministic agent beyond its planning horizon sees every policy as
# equal and stays put forever. With policy_len 2 the default run (10,000 agents x 100 steps) takes
# ~20 s on two numba cores (half of it compilation) and ~94% of grid agents reach the goal;
# policy_len 3 steps ~5x slower.
_ALPHA = 4.0
_NOISE = 0.1  # grid world: probability that an observation is a uniformly random cell


def _int_at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its "invalid ... value" message
    return parse


def _err(msg: str) -> None:
    print(f"fa-gpu: {msg}", file=sys.stderr)


def _simulate(args) -> int:
    from .envs import GridWorldEnv, TMazeEnv

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        _err(f"{out} already exists; pass --overwrite to replace it")
        return 2
    try:
        recorder_cls = fa_gpu.Recorder
    except ImportError as exc:
        _err(f"simulate records with zarr, which is missing ({exc}); pip install 'fa_gpu[runtime]'")
        return 1
    if args.env == "grid":
        env = GridWorldEnv(args.side, noise=_NOISE, seed=args.seed)
        model = fa_gpu.models.grid_world(args.side, noise=_NOISE, goal=env.goal,
                                         policy_len=args.policy_len)
        attrs = dict(side=env.side, goal=env.goal, noise=_NOISE)
        what = f"grid world {args.side}x{args.side} (goal cell {env.goal})"
    else:
        env = TMazeEnv(seed=args.seed)
        model = fa_gpu.models.tmaze(policy_len=args.policy_len)
        attrs = dict(side=None, goal=None)
        what = "T-maze"
    engine = fa_gpu.Engine(model, args.agents, backend=args.backend, dtype=args.dtype,
                           seed=args.seed, action_selection="stochastic", alpha=_ALPHA)
    print(f"backend: {engine.backend}")
    for name, why in engine.backend_skipped.items():
        print(f"  skipped {name}: {why}")
    print(f"{what}, policy_len {args.policy_len}, {args.agents:,} agents, {args.steps} steps, "
          f"seed {args.seed}, {args.dtype}", flush=True)
    attrs.update(env=args.env, backend=engine.backend, seed=args.seed, policy_len=args.policy_len)
    try:
        rec = recorder_cls(out, args.agents, num_modalities=model.num_modalities,
                           num_factors=model.num_factors, overwrite=args.overwrite, attrs=attrs)
    except FileExistsError as exc:  # --overwrite of something that is not our store
        _err(str(exc))
        return 2
    with rec:
        result = engine.run(env, args.steps, recorder=rec, progress=not args.no_progress)
    print(f"{result.steps} steps x {args.agents:,} agents in {result.seconds:.2f} s: "
          f"{result.agent_steps_per_s:,.0f} agent-steps/s")
    if result.steps > 1:
        rest = result.seconds - result.first_step_seconds
        print(f"  first step {result.first_step_seconds:.2f} s (includes one-time JIT compilation); "
              f"steps 2..{result.steps}: {(result.steps - 1) * args.agents / rest:,.0f} "
              f"agent-steps/s")
    if args.env == "grid":
        print(f"at the goal after the last step: {env.at_goal.mean():.1%} of agents")
    else:
        print(f"in the rewarding arm after the last step: {env.at_rewarding_arm.mean():.1%} of agents")
    print(f"trajectory store: {out}  (fa-gpu plot {out})")
    return 0


def _info(args) -> int:
    from . import devices

    info = devices.info()
    print(f"fa_gpu {fa_gpu.__version__}")
    print("backends (auto picks the first usable, in this order):")
    for name, why in info["backends"].items():
        print(f"  {name:6s} {'usable' if not why else 'unusable: ' + why}")
    if info["devices"]:
        print(f"NVIDIA driver {info['driver_version']}:")
        for d in info["devices"]:
            print(f"  GPU {d['nvml_index']}: {d['name']}, {d['memory_free'] / 2**30:.1f} of "
                  f"{d['memory_total'] / 2**30:.1f} GiB free, bus {d['pci_bus_id']}")
    else:
        print(f"NVIDIA devices: none (no NVIDIA driver or GPU: {info['devices_reason']})")
    print(f"CPU: {info['cpu']}")
    pools = info["pools"]
    print(f"host pools: {pools['compute_threads']} compute threads, {pools['io_threads']} I/O threads")
    return 0


def _import_compare():
    """``benchmarks.compare``, or None when this is not a source checkout."""
    for attempt in range(2):
        try:
            return importlib.import_module("benchmarks.compare")
        except ModuleNotFoundError as exc:
            if exc.name not in ("benchmarks", "benchmarks.compare"):
                raise  # the benchmark exists but needs something missing: say so
            if attempt or not (_REPO_ROOT / "benchmarks").is_dir():
                return None
            sys.path.insert(0, str(_REPO_ROOT))  # benchmarks/ is not installed with the package
    return None


def _bench(args, extra) -> int:
    compare = _import_compare()
    if compare is None:
        _err(f"the benchmarks are not installed with fa_gpu; run `fa-gpu bench` from a source "
             f"checkout (benchmarks/compare.py next to the fa_gpu package; looked in {_REPO_ROOT})")
        return 1
    rc = compare.main(extra)
    return rc if isinstance(rc, int) else 0


def _plot(args) -> int:
    from .plot import plot_run

    try:
        out = plot_run(args.run, args.out)
    except (ValueError, FileNotFoundError) as exc:
        _err(str(exc))
        return 2
    print(f"wrote {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fa-gpu", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="run agents in a built-in world, record, report throughput")
    s.add_argument("--env", choices=("grid", "tmaze"), default="grid")
    s.add_argument("--side", type=_int_at_least(2), default=5, help="grid side (default 5)")
    s.add_argument("--agents", type=_int_at_least(1), default=10_000, help="number of agents (default 10000)")
    s.add_argument("--steps", type=_int_at_least(0), default=100, help="steps (default 100)")
    s.add_argument("--policy-len", type=_int_at_least(1), default=2, help="planning horizon (default 2)")
    s.add_argument("--backend", default="auto", choices=("auto", "cuda", "numba", "numpy"))
    s.add_argument("--seed", type=_int_at_least(0), default=0)
    s.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    s.add_argument("--output", default="fa_gpu_run.zarr", help="Zarr store (default fa_gpu_run.zarr)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --output store (only one fa-gpu wrote)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_simulate)

    sub.add_parser("info", help="backends, devices, CPU topology, pools").set_defaults(func=_info)
    sub.add_parser("bench", help="benchmarks/compare.py of a source checkout (extra args passed on)",
                   add_help=False).set_defaults(func=_bench)

    pl = sub.add_parser("plot", help="PNG of a `simulate` store")
    pl.add_argument("run", help="store written by `fa-gpu simulate`")
    pl.add_argument("--out", help="PNG path (default RUN.png)")
    pl.set_defaults(func=_plot)
    return p


def main(argv=None) -> int:
    """Run the ``fa-gpu`` command with ``argv`` (default ``sys.argv[1:]``); returns the status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.func is _bench:
        return _bench(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.func(args)
