"""The ``fa-gpu`` command (also ``python -m fa_gpu``): simulate, info, bench, plot.

- ``simulate``: N agents in the grid world (or T-maze) for T steps on the best backend; prints
  the backend (and why others were skipped) and the throughput, records actions and
  observations to a Zarr store.
- ``info``: backends and why not, NVIDIA driver and devices, CPU topology, host pool sizes.
- ``bench``: fa_gpu's speed against pymdp 1.0.4 (agent-steps/s, ratio), by
  ``benchmarks/compare.py`` of a source checkout, with the remaining arguments.
- ``plot RUN``: PNG summary of a ``simulate`` store.

``main(argv)`` returns the exit status: 0 success, 2 a usage or environment error, reported as one
line ``fa-gpu: ...`` on stderr (no traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

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


def _err(msg: str) -> int:
    """Report a usage or environment error as one line; returns the exit status, 2."""
    print(f"fa-gpu: {msg}", file=sys.stderr)
    return 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``fa-gpu: ...``, exit status 2 from :func:`main`) instead of
    the usage block, and every option's default in its help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise _UsageError(f"{self.prog[len('fa-gpu '):] + ': ' if ' ' in self.prog else ''}"
                          f"{message} (see {self.prog} --help)")


class _TrueStates:
    """The world of ``simulate``, writing its true hidden states to the store as array
    ``true_state`` (steps, N, F) int64: row t holds the states after step t's actions, so its
    last row is what ``simulate`` reports (the recorder's ``obs`` row t is what the agents saw
    *before* step t). Written in blocks of ``chunk_steps`` rows on the calling thread."""

    def __init__(self, env, path, n: int, chunk_steps: int = 64):
        import zarr

        self.env = env
        width = len(env.num_states)
        agents = max(1, min(n, (4 << 20) // (chunk_steps * width * 8)))
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        self._array = group.create_array("true_state", shape=(0, n, width), dtype=np.int64,
                                         chunks=(chunk_steps, agents, width),
                                         dimension_names=("step", "agent", "factor"))
        self._buf = np.empty((chunk_steps, n, width), dtype=np.int64)
        self._rows = 0

    def reset(self, n, seed=None):
        return self.env.reset(n, seed)

    def step(self, actions):
        obs = self.env.step(actions)
        self._buf[self._rows] = self.env.true_state
        self._rows += 1
        if self._rows == len(self._buf):
            self.flush()
        return obs

    def flush(self) -> None:
        t = self._array.shape[0]
        self._array.resize((t + self._rows,) + self._array.shape[1:])
        self._array[t:] = self._buf[:self._rows]
        self._rows = 0


def _build(args):
    """(env, model, store attrs, description, engine) of a ``simulate`` command."""
    from .envs import GridWorldEnv, TMazeEnv

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
    return env, model, attrs, what, engine


def _simulate(args) -> int:
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        return _err(f"{out} already exists; pass --overwrite to replace it")
    try:  # backend cannot run, FA_GPU_BACKEND, too many agents, policies or cells: an error
        env, model, attrs, what, engine = _build(args)  # before anything big is allocated
    except (RuntimeError, ValueError, MemoryError) as exc:
        return _err(str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}")
    print(f"backend: {engine.backend}")
    for name, why in engine.backend_skipped.items():
        print(f"  skipped {name}: {why}")
    print(f"{what}, policy_len {args.policy_len}, {args.agents:,} agents, {args.steps} steps, "
          f"seed {args.seed}, {args.dtype}", flush=True)
    attrs.update(env=args.env, backend=engine.backend, seed=args.seed, policy_len=args.policy_len,
                 true_state="row t: the world's hidden states after step t's actions")
    try:
        rec = engine.recorder(out, overwrite=args.overwrite, attrs=attrs)
        world = _TrueStates(env, out, args.agents)
    except OSError as exc:
        return _err(f"cannot write the store {out}: {exc}")
    with rec:
        result = engine.run(world, args.steps, recorder=rec, progress=not args.no_progress)
        world.flush()
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
        print(f"NVIDIA devices: none ({info['devices_reason']})")
    print(f"CPU: {info['cpu']}")
    pools = info["pools"]
    print(f"host pools: {pools['compute_threads']} compute threads, {pools['io_threads']} I/O threads")
    return 0


def _import_compare():
    """``benchmarks.compare``, or None when this is not a source checkout. Raises
    ``ModuleNotFoundError`` when it is there but needs a package that is missing."""
    for attempt in range(2):
        try:
            return importlib.import_module("benchmarks.compare")
        except ModuleNotFoundError as exc:
            if exc.name not in ("benchmarks", "benchmarks.compare"):
                raise
            if attempt or not (_REPO_ROOT / "benchmarks").is_dir():
                return None
            sys.path.insert(0, str(_REPO_ROOT))  # benchmarks/ is not installed with the package
    return None


def _bench(args, extra) -> int:
    # The comparison stays in benchmarks/ (a source checkout's script, also run on its own as
    # `python -m benchmarks.compare`): it is a measurement harness, not part of the library.
    try:
        compare = _import_compare()
    except ModuleNotFoundError as exc:
        return _err(f"bench needs {exc.name!r}, which is missing: {exc}")
    if compare is None:
        return _err(f"bench is available only in a source checkout of fa_gpu (benchmarks/compare.py "
                    f"is not installed with the package; looked in {_REPO_ROOT})")
    try:
        compare.main(extra, prog="fa-gpu bench")
    except SystemExit as exc:  # its own argparse: --help (0) or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    return 0


def _plot(args) -> int:
    from .plot import plot_run

    try:
        out = plot_run(args.run, args.out)
    except (ValueError, OSError) as exc:  # not a simulate store, missing, unreadable, unwritable
        return _err(str(exc))
    print(f"wrote {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fa-gpu", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="run agents in a built-in world, record, report throughput")
    s.add_argument("--env", choices=("grid", "tmaze"), default="grid",
                   help="world: grid (a side x side grid, goal in the far corner, noisy position "
                        "readings) or tmaze (the classic T-maze with a cue)")
    s.add_argument("--side", type=_int_at_least(2), default=5, help="grid side")
    s.add_argument("--agents", type=_int_at_least(1), default=10_000, help="number of agents")
    s.add_argument("--steps", type=_int_at_least(0), default=100, help="steps")
    s.add_argument("--policy-len", type=_int_at_least(1), default=2, help="planning horizon")
    s.add_argument("--backend", default="auto", choices=("auto", "cuda", "numba", "numpy"),
                   help="where the step runs; auto takes the first usable of cuda > numba > numpy")
    s.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the agents' action draws and of the world")
    s.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="float type of beliefs and parameters")
    s.add_argument("--output", default="fa_gpu_run.zarr", help="Zarr store to write")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=_simulate)

    sub.add_parser("info", help="backends, devices, CPU topology, pools").set_defaults(func=_info)
    sub.add_parser("bench", add_help=False,
                   help="time fa_gpu against pymdp 1.0.4 (agent-steps/s and ratio); source "
                        "checkout only; `fa-gpu bench --help` lists its options, --targets adds "
                        "the project's targets").set_defaults(func=_bench)

    pl = sub.add_parser("plot", help="PNG of a `simulate` store")
    pl.add_argument("run", help="store written by `fa-gpu simulate`")
    pl.add_argument("--out", help="PNG path (default: RUN.png)")
    pl.set_defaults(func=_plot)
    return p


def main(argv=None) -> int:
    """Run the ``fa-gpu`` command with ``argv`` (default ``sys.argv[1:]``); returns the status:
    0, or 2 after a one-line ``fa-gpu: ...`` error on stderr. ``--help`` exits (SystemExit 0)."""
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.func is not _bench and extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except _UsageError as exc:
        return _err(str(exc))
    if args.func is _bench:
        return _bench(args, extra)
    return args.func(args)
