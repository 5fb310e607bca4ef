"""The ``fa-gpu`` command (also ``python -m fa_gpu``): simulate, info, bench, plot.

- ``simulate``: N agents in the grid world (or T-maze, or the shared worlds foraging and
  social) for T steps on the best backend (``--shards K``: over K Ray actors); prints the backend (and why others were skipped), the
  throughput and a one-line outcome, records actions and observations to a Zarr store with what
  the plots need about the world (see :class:`_Traced`).
- ``info``: backends and why not, NVIDIA driver and devices, CPU topology, host pool sizes, and
  the Ray cluster's nodes, CPUs and GPUs (``--address`` or ``RAY_ADDRESS``).
- ``bench``: fa_gpu's speed against pymdp 1.0.4 (agent-steps/s, ratio), by
  ``benchmarks/compare.py`` of a source checkout, with the remaining arguments.
- ``plot RUN``: PNG summary of a ``simulate`` store; ``--animate OUT.gif``: a GIF of a
  foraging run's grid.

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


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text}")
    return value


_probability.__name__ = "number"


def _err(msg: str) -> int:
    """Report a usage or environment error as one line; returns the exit status, 2."""
    print(f"fa-gpu: {msg}", file=sys.stderr)
    return 2


class _UsageError(Exception):
    pass


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help; an option whose default depends on another says so itself."""

    def _get_help_string(self, action):
        return action.help if "(default: " in (action.help or "") else super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``fa-gpu: ...``, exit status 2 from :func:`main`) instead of
    the usage block, and every option's default in its help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise _UsageError(f"{self.prog[len('fa-gpu '):] + ': ' if ' ' in self.prog else ''}"
                          f"{message} (see {self.prog} --help)")


class _Series:
    """One extra array of the ``simulate`` store, ``name`` ``(rows,) + shape`` of ``dtype``:
    ``read(env)`` gives a row; rows are buffered and written in blocks of ``block`` rows on the
    calling thread (chunks of at most ~4 MiB). ``every`` and ``at_reset`` say when a row is
    taken: after every ``every``-th step, and (``at_reset``) once after the reset."""

    def __init__(self, group, name, read, shape, dtype, dims, every=1, at_reset=False, block=64,
                 resume=False):
        self.name, self.read, self.every, self.at_reset = name, read, every, at_reset
        shape, itemsize = tuple(shape), np.dtype(dtype).itemsize
        inner = tuple(shape[1:])
        lead = (max(1, min(shape[0], (4 << 20) // (block * int(np.prod(inner)) * itemsize)))
                if shape else None)
        if resume:  # the array of the run being resumed: truncated by set_state
            self._array = group.get(name)
            if self._array is None or tuple(self._array.shape[1:]) != shape or self._array.dtype != dtype:
                raise ValueError(f"the store has no {name} array of rows {shape} {np.dtype(dtype)} "
                                 f"to resume (was it written by this command?)")
        else:
            self._array = group.create_array(name, shape=(0,) + shape, dtype=dtype,
                                             chunks=(block,) + ((lead,) + inner if shape else ()),
                                             dimension_names=dims)
        self._buf = np.empty((block,) + shape, dtype=dtype)
        self._rows = 0

    @property
    def written(self) -> int:
        return self._array.shape[0]

    def truncate(self, rows: int) -> None:
        """Drop rows past ``rows`` (a resumed run writes them again) and what is buffered."""
        if not 0 <= rows <= self._array.shape[0]:
            raise ValueError(f"{self.name}: cannot resume at row {rows}: the store holds "
                             f"{self._array.shape[0]}")
        self._array.resize((rows,) + self._array.shape[1:])
        self._rows = 0

    def add(self, env, engine) -> None:
        self._buf[self._rows] = self.read(env, engine)
        self._rows += 1
        if self._rows == len(self._buf):
            self.flush()

    def flush(self) -> None:
        t = self._array.shape[0]
        self._array.resize((t + self._rows,) + self._array.shape[1:])
        self._array[t:] = self._buf[:self._rows]
        self._rows = 0


class _Traced:
    """The world of ``simulate``, writing into the store (beside the Recorder's actions and obs)
    the :class:`_Series` the summary and ``fa-gpu plot`` need. A per-step series' row t is the
    world after step t's actions (the recorder's ``obs`` row t is what the agents saw *before*
    step t), so its last row is what ``simulate`` reports."""

    def __init__(self, env, engine, path, specs: dict, resume: bool = False):
        """``specs``: ``{name: (read(env, engine) -> row, shape, dtype, dims[, every,
        at_reset])}``; ``resume``: continue the store's arrays (see :meth:`set_state`)."""
        import zarr

        self.env, self.engine, self._t = env, engine, 0
        for attr in ("num_obs", "num_controls"):  # declared by the world: Engine.run checks them
            if hasattr(env, attr):
                setattr(self, attr, getattr(env, attr))
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        self._series = [_Series(group, name, *spec, resume=resume) for name, spec in specs.items()]

    def state(self) -> dict:
        """The world's ``state()`` and this wrapper's step and rows per array (its buffered rows
        written first), so a resumed run continues the arrays where the checkpoint was taken."""
        self.flush()
        out = dict(self.env.state(), _traced_t=np.int64(self._t))
        out.update({f"_rows_{s.name}": np.int64(s.written) for s in self._series})
        return out

    def set_state(self, state: dict) -> None:
        state = dict(state)
        try:
            t = int(state.pop("_traced_t"))
            rows = {s.name: int(state.pop(f"_rows_{s.name}")) for s in self._series}
        except KeyError as exc:
            raise ValueError(f"the checkpoint's environment state lacks {exc.args[0]}: it was not "
                             f"written by fa-gpu simulate") from None
        self.env.set_state(state)
        for s in self._series:
            s.truncate(rows[s.name])
        self._t = t

    def reset(self, n, seed=None):
        obs = self.env.reset(n, seed)
        self._t = 0
        for s in self._series:
            if s.at_reset:
                s.add(self.env, self.engine)
        return obs

    def step(self, actions):
        obs = self.env.step(actions)
        self._t += 1
        for s in self._series:
            if self._t % s.every == 0:
                s.add(self.env, self.engine)
        return obs

    def flush(self) -> None:
        for s in self._series:
            s.flush()


# Foraging frames (food and agents per cell, int32) are kept every k steps, k the smallest that
# keeps both grids of the whole run under this many bytes: a 64x64 grid fits ~3,000 frames.
_FRAME_BYTES = 100_000_000
_STATS = ("consensus", "polarization", "accuracy")  # columns of the social world's posts/beliefs


def frame_every(side: int, steps: int) -> int:
    """The step interval k of the foraging frames (after 0, k, 2k, ... steps): the smallest
    k >= 1 with ``(steps // k + 1) * 2 * side**2 * 4 <= _FRAME_BYTES`` (at least one frame)."""
    most = max(1, _FRAME_BYTES // (2 * side * side * 4))
    return steps // most + 1


def _regrowth(text: str) -> list:
    try:
        rates = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, got {text!r}") from None
    if not all(np.isfinite(rates)) or min(rates) < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative numbers, got {text!r}")
    return rates


def _build_grid(args):
    from .envs import GridWorldEnv

    env = GridWorldEnv(args.side, noise=_NOISE, seed=args.seed)
    model = fa_gpu.models.grid_world(args.side, noise=_NOISE, goal=env.goal, policy_len=args.policy_len)
    attrs = dict(side=env.side, goal=env.goal, noise=_NOISE, true_state=_TRUE_STATE)
    return env, model, attrs, f"grid world {args.side}x{args.side} (goal cell {env.goal})", \
        _true_state(args, env)


def _build_tmaze(args):
    from .envs import TMazeEnv

    env = TMazeEnv(seed=args.seed)
    return env, fa_gpu.models.tmaze(policy_len=args.policy_len), dict(side=None, goal=None, true_state=_TRUE_STATE), \
        "T-maze", _true_state(args, env)


_TRUE_STATE = "row t: the world's hidden states after step t's actions"


def _true_state(args, env) -> dict:
    """The series of the independent worlds: their true hidden states, int64 (N, F) a step."""
    return {"true_state": (lambda w, e: w.true_state, (args.agents, len(env.num_states)), np.int64,
                           ("step", "agent", "factor"))}


def _build_foraging(args):
    from .envs import Foraging

    P = args.patches
    rates = args.regrowth if args.regrowth is not None else [2 * (k + 1) / P for k in range(P)]
    if len(rates) != P:
        raise _UsageError(f"simulate: --regrowth has {len(rates)} rates for --patches {P}")
    if max(rates) > args.capacity:
        raise _UsageError(f"simulate: --regrowth rates must be at most --capacity {args.capacity}, "
                          f"got {max(rates):g}")
    if P > args.side ** 2:
        raise _UsageError(f"simulate: --patches {P} exceeds the {args.side ** 2} cells of the grid")
    env = Foraging(args.side, P, rates, args.capacity, seed=args.seed)
    model = fa_gpu.models.foraging(policy_len=args.policy_len)
    cells = env.patch_cells
    k = frame_every(args.side, args.steps)
    grid = (args.side, args.side)
    specs = {
        "patch_food": (lambda w, e: w.food[cells], (P,), np.int64, ("step", "patch")),
        "patch_agents": (lambda w, e: w.occupancy()[cells], (P,), np.int64, ("step", "patch")),
        "food_grid": (lambda w, e: w.food.reshape(grid), grid, np.int32, ("frame", "row", "col"),
                      k, True),
        "occupancy_grid": (lambda w, e: w.occupancy().reshape(grid), grid, np.int32,
                           ("frame", "row", "col"), k, True),
    }
    attrs = dict(side=args.side, patch_cells=[int(c) for c in cells], regrowth=[float(r) for r in rates],
                 capacity=args.capacity, frame_every=k,
                 patch_food="row t: food units in each patch after step t",
                 patch_agents="row t: agents on each patch cell after step t",
                 frames=f"food_grid and occupancy_grid frame i: the grids after i * {k} steps "
                        f"(frame 0: after the reset)")
    what = (f"foraging {args.side}x{args.side}, {P} patches (regrowth "
            f"{', '.join(f'{r:g}' for r in rates)}; capacity {args.capacity})")
    return env, model, attrs, what, specs


def _build_social(args):
    from .envs import SocialNetwork, barabasi_albert, watts_strogatz
    from .envs.social import consensus_polarization

    d = args.degree
    if d % 2 or d >= args.agents:
        raise _UsageError(f"simulate: --degree must be even and below --agents {args.agents}, got {d}")
    graph = (watts_strogatz(args.agents, d, args.rewire, seed=args.seed) if args.graph == "ws"
             else barabasi_albert(args.agents, d // 2, seed=args.seed))
    env = SocialNetwork(graph, num_states=args.states, cue_accuracy=args.cue_accuracy,
                        volatility=args.volatility, seed=args.seed)
    model = fa_gpu.models.social(args.states, cue_accuracy=args.cue_accuracy,
                                 volatility=args.volatility, policy_len=args.policy_len)

    def beliefs(world, engine):  # the beliefs about the world state that chose this step's posts
        q = engine.qs[1]
        return (*consensus_polarization(q), float((np.argmax(q, axis=1) == world.truth).mean()))

    specs = {"truth": (lambda w, e: w.truth, (), np.int64, ("step",)),
             "posts": (lambda w, e: w.history[-1][1:], (3,), np.float64, ("step", "stat")),
             "beliefs": (beliefs, (3,), np.float64, ("step", "stat"))}
    attrs = dict(graph=args.graph, degree=d, rewire=args.rewire if args.graph == "ws" else None,
                 hidden_states=args.states, cue_accuracy=args.cue_accuracy, volatility=args.volatility,
                 stats=list(_STATS), truth="row t: the hidden state after step t",
                 posts="row t: consensus, polarization and accuracy (share posting the hidden state) "
                       "of the posts of step t",
                 beliefs="row t: the same of the agents' beliefs about the world state (factor 1) "
                         "that chose the posts of step t; consensus of the beliefs' modes")
    kind = (f"Watts-Strogatz (degree {d}, rewiring {args.rewire:g})" if args.graph == "ws"
            else f"Barabasi-Albert ({d // 2} edges per node)")
    what = (f"social network, {kind}, {args.states} states, cue accuracy {args.cue_accuracy:g}, "
            f"volatility {args.volatility:g}")
    return env, model, attrs, what, specs


def _build(args):
    """(env, store attrs, description, engine, extra store series) of a ``simulate`` command;
    with ``--resume``, the engine is the checkpoint's."""
    if args.policy_len is None:
        args.policy_len = 2 if args.env in ("grid", "tmaze") else 1
    if args.side is None:
        args.side = 16 if args.env == "foraging" else 5
    env, model, attrs, what, specs = _BUILDERS[args.env](args)
    if args.resume is not None:
        engine = fa_gpu.Engine.load(args.resume, backend=None if args.backend == "auto" else args.backend)
        if engine.n_agents != args.agents or engine.config.seed != args.seed:
            raise ValueError(f"{args.resume} holds {engine.n_agents:,} agents with seed "
                             f"{engine.config.seed}: resume with the options of the run it "
                             f"checkpointed (--agents, --seed, ...)")
    elif args.shards is None:
        engine = fa_gpu.Engine(model, args.agents, backend=args.backend, dtype=args.dtype,
                               seed=args.seed, **_SELECTION[args.env])
    else:
        # The CLI steps the world in the driver even for independent copies: the store's world
        # series (and the summary) read it every step. ShardedEngine.run in a script steps
        # independent copies inside the shards instead.
        engine = _distributed().ShardedEngine(model, args.agents, shards=args.shards, backend=args.backend,
                                              address=args.address, dtype=args.dtype, seed=args.seed,
                                              **_SELECTION[args.env])
    return env, attrs, what, engine, specs


_NO_RAY = "needs Ray, which is not installed: pip install 'fa_gpu[distributed]'"


def _distributed():
    """``fa_gpu.distributed``; ``_UsageError`` (one line) when Ray is missing."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise _UsageError(f"--shards {_NO_RAY}") from None
    from . import distributed
    return distributed


_BUILDERS = {"grid": _build_grid, "tmaze": _build_tmaze, "foraging": _build_foraging,
             "social": _build_social}
# Foraging: the egocentric model sees the four moves as equal, so deterministic selection would
# always move "up"; stochastic selection at the engine's default precision (alpha 1, as the
# README's ideal-free-distribution run) makes a random walk between patches. Social: an agent
# posts what it believes most likely (deterministic), so consensus can form.
_SELECTION = {"grid": dict(action_selection="stochastic", alpha=_ALPHA),
              "tmaze": dict(action_selection="stochastic", alpha=_ALPHA),
              "foraging": dict(action_selection="stochastic"), "social": {}}


def _simulate(args) -> int:
    if args.address is not None and args.shards is None:
        return _err("simulate: --address needs --shards")
    if args.shards is not None and (args.resume is not None or args.checkpoint_every is not None):
        return _err("simulate: --shards runs without --checkpoint-every/--resume here; for "
                    "recoverable sharded runs use ShardedEngine.run(..., checkpoint_every=...) "
                    "in a script")
    out = Path(args.output)
    if args.resume is not None and args.overwrite:
        return _err("--resume continues the run's store; it cannot be combined with --overwrite")
    if args.resume is None and out.exists() and not args.overwrite:
        return _err(f"{out} already exists; pass --overwrite to replace it (or --resume "
                    f"CHECKPOINT to continue the run that wrote it)")
    if args.checkpoint is None and args.checkpoint_every is not None:
        args.checkpoint = f"{out}.ckpt"
    try:  # backend cannot run, FA_GPU_BACKEND, too many agents, policies or cells: an error
        env, attrs, what, engine, specs = _build(args)  # before anything big is allocated
    except _UsageError as exc:
        return _err(str(exc))
    except (RuntimeError, ValueError, MemoryError, ConnectionError) as exc:
        return _err(str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}")
    shards = "" if args.shards is None else f", {args.shards} Ray shards"
    print(f"backend: {engine.backend}{shards}")
    for name, why in getattr(engine, "backend_skipped", {}).items():
        print(f"  skipped {name}: {why}")
    print(f"{what}, policy_len {args.policy_len}, {args.agents:,} agents, {args.steps} steps, "
          f"seed {args.seed}, {args.dtype}", flush=True)
    attrs.update(env=args.env, backend=engine.backend, seed=args.seed, policy_len=args.policy_len)
    resume = args.resume is not None
    try:
        rec = engine.recorder(out, overwrite=args.overwrite, attrs=attrs,
                              **({"resume": True} if resume else {}))  # (sharded runs never resume here)
        world = _Traced(env, engine, out, specs, resume=resume)
    except FileExistsError as exc:  # --overwrite of something that is not our store
        return _err(str(exc))
    except ValueError as exc:  # --resume of a store this run did not write
        return _err(str(exc))
    except OSError as exc:
        return _err(f"cannot write the store {out}: {exc}")
    with rec:
        try:
            if args.shards is None:
                result = engine.run(world, args.steps, recorder=rec, progress=not args.no_progress,
                                    checkpoint_every=args.checkpoint_every,
                                    checkpoint_path=args.checkpoint, resume=args.resume)
            else:
                result = engine.run(world, args.steps, recorder=rec, progress=not args.no_progress)
        except ValueError as exc:  # the checkpoint does not continue this command's run
            if not resume:
                raise
            return _err(str(exc))
        finally:
            if args.shards is not None:
                engine.shutdown()
        world.flush()
    print(f"{result.steps} steps x {args.agents:,} agents in {result.seconds:.2f} s: "
          f"{result.agent_steps_per_s:,.0f} agent-steps/s")
    if result.steps > 1:
        rest = result.seconds - result.first_step_seconds
        print(f"  first step {result.first_step_seconds:.2f} s (includes one-time JIT compilation); "
              f"steps 2..{result.steps}: {(result.steps - 1) * args.agents / rest:,.0f} "
              f"agent-steps/s")
    print(_SUMMARY[args.env](env, out))
    print(f"trajectory store: {out}  (fa-gpu plot {out})")
    return 0


def _foraging_summary(env, out) -> str:
    from .plot import foraging_shares

    import zarr

    on = float(env.occupancy()[env.patch_cells].sum()) / env.n
    line = f"on patch cells after the last step: {on:.1%} of agents"
    counts = zarr.open_group(out, mode="r")["patch_agents"][:]
    if len(counts):
        (lo, hi), shares = foraging_shares(counts)
        rates = np.asarray(env.regrowth)
        pairs = ", ".join(f"{a:.3f}/{r:.3f}" for a, r in zip(shares, rates / rates.sum()))
        line += f"; per patch, share of agents on patches / share of regrowth (steps {lo}..{hi}): {pairs}"
    return line


def _social_summary(env, out) -> str:
    import zarr

    group = zarr.open_group(out, mode="r")
    if group["posts"].shape[0] == 0:
        return "no posts yet (0 steps)"
    (pc, pp, pa), (bc, bp, _) = group["posts"][-1], group["beliefs"][-1]
    return (f"after the last step: posts consensus {pc:.3f}, polarization {pp:.3f} (beliefs "
            f"{bc:.3f}, {bp:.3f}); {pa:.1%} post the hidden state")


_SUMMARY = {
    "grid": lambda env, out: f"at the goal after the last step: {env.at_goal.mean():.1%} of agents",
    "tmaze": lambda env, out: (f"in the rewarding arm after the last step: "
                               f"{env.at_rewarding_arm.mean():.1%} of agents"),
    "foraging": _foraging_summary, "social": _social_summary}


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
    print(_ray_cluster(args.address))
    return 0


def _ray_cluster(address) -> str:
    """Lines on the Ray cluster at ``address`` (or ``RAY_ADDRESS``, or the one this process is
    connected to): nodes, CPUs, GPUs; else one line saying why not."""
    import os

    try:
        import ray
    except ImportError:
        return "Ray cluster: Ray is not installed (pip install 'fa_gpu[distributed]')"
    address = address or os.environ.get("RAY_ADDRESS")
    connected = ray.is_initialized()
    if not connected and not address:
        return "Ray cluster: not connected (pass --address ADDR, or set RAY_ADDRESS)"
    if not connected:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            return f"Ray cluster: cannot connect to {address} ({type(exc).__name__}: {exc})"
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    finally:
        if not connected:
            ray.shutdown()
    total = {k: sum(n["Resources"].get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
    lines = [f"Ray cluster{' at ' + address if address else ''}: {len(nodes)} nodes, "
             f"{total['CPU']:g} CPUs, {total['GPU']:g} GPUs"]
    lines += [f"  node {n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPUs, "
              f"{n['Resources'].get('GPU', 0):g} GPUs" for n in nodes]
    return "\n".join(lines)


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
    from .plot import animate_run, plot_run

    try:
        out = plot_run(args.run, args.out)
        print(f"wrote {out}")
        if args.animate:
            gif, frames = animate_run(args.run, args.animate, args.max_frames, args.fps)
            print(f"wrote {gif} ({frames} frames)")
    except (ValueError, OSError) as exc:  # not a simulate store, missing, unreadable, unwritable
        return _err(str(exc))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fa-gpu", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="run agents in a built-in world, record, report throughput")
    s.add_argument("--env", choices=("grid", "tmaze", "foraging", "social"), default="grid",
                   help="world: grid (a side x side grid, goal in the far corner, noisy position "
                        "readings), tmaze (the classic T-maze with a cue), foraging (all agents on "
                        "one grid with food patches that deplete and regrow) or social (agents on a "
                        "graph inferring a hidden state from cues and their neighbours' posts)")
    s.add_argument("--side", type=_int_at_least(2), help="grid side (grid, foraging) "
                   "(default: 5 for grid, 16 for foraging)")
    s.add_argument("--agents", type=_int_at_least(1), default=10_000, help="number of agents")
    s.add_argument("--steps", type=_int_at_least(0), default=100, help="steps")
    s.add_argument("--policy-len", type=_int_at_least(1), help="planning horizon "
                   "(default: 2 for grid and tmaze, 1 for foraging and social)")
    s.add_argument("--backend", default="auto", choices=("auto", "cuda", "numba", "numpy"),
                   help="where the step runs; auto takes the first usable of cuda > numba > numpy")
    s.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the agents' action draws and of the world")
    s.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="float type of beliefs and parameters")
    s.add_argument("--output", default="fa_gpu_run.zarr", help="Zarr store to write")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --output store (only a store fa-gpu wrote)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--checkpoint-every", type=_int_at_least(1), metavar="K",
                   help="checkpoint the run every K steps (engine, world, next observations, "
                        "store position), so --resume can continue it after a crash "
                        "(default: no checkpoints)")
    s.add_argument("--checkpoint", metavar="PATH",
                   help="checkpoint file (default: OUTPUT.ckpt with --checkpoint-every)")
    s.add_argument("--resume", metavar="PATH",
                   help="continue the run checkpointed at PATH: repeat the command that started "
                        "it and add --resume; --steps is the run's total (default: a new run)")
    s.add_argument("--shards", type=_int_at_least(1),
                   help="split the agents over this many Ray actors (fa_gpu.distributed; same "
                        "numbers as one engine; needs the distributed extra) (default: one engine)")
    s.add_argument("--address", help="--shards: Ray cluster to join (default: RAY_ADDRESS, or a "
                                     "new local Ray instance)")
    f = s.add_argument_group("foraging")
    f.add_argument("--patches", type=_int_at_least(1), default=4,
                   help="food patches, at distinct cells drawn with --seed")
    f.add_argument("--regrowth", type=_regrowth, help="expected units each patch regrows a step, "
                   "comma separated, one per patch (default: unequal rates 2k/P for patch "
                   "k = 1..P, e.g. 0.5,1,1.5,2)")
    f.add_argument("--capacity", type=_int_at_least(1), default=20, help="food units of a full patch")
    g = s.add_argument_group("social")
    g.add_argument("--graph", choices=("ws", "ba"), default="ws",
                   help="ws: Watts-Strogatz small world; ba: Barabasi-Albert scale-free")
    g.add_argument("--degree", type=_int_at_least(2), default=10,
                   help="even; ws: links per node; ba: twice the edges each new node adds")
    g.add_argument("--rewire", type=_probability, default=0.1, help="ws: rewiring probability")
    g.add_argument("--states", type=_int_at_least(2), default=2,
                   help="hidden states (and things to post)")
    g.add_argument("--cue-accuracy", type=_probability, default=0.7,
                   help="probability that an agent's private cue is the hidden state")
    g.add_argument("--volatility", type=_probability, default=0.0,
                   help="probability a step that the hidden state jumps")
    s.set_defaults(func=_simulate)

    i = sub.add_parser("info", help="backends, devices, CPU topology, pools, Ray cluster")
    i.add_argument("--address", help="Ray cluster to describe (default: RAY_ADDRESS)")
    i.set_defaults(func=_info)
    sub.add_parser("bench", add_help=False,
                   help="time fa_gpu against pymdp 1.0.4 (agent-steps/s and ratio); source "
                        "checkout only; `fa-gpu bench --help` lists its options, --targets adds "
                        "the project's targets").set_defaults(func=_bench)

    pl = sub.add_parser("plot", help="PNG of a `simulate` store (and a GIF of a foraging run)")
    pl.add_argument("run", help="store written by `fa-gpu simulate`")
    pl.add_argument("--out", help="PNG path (default: RUN.png)")
    pl.add_argument("--animate", metavar="OUT.gif",
                    help="foraging runs: also write a GIF of food and agents per cell over time")
    pl.add_argument("--max-frames", type=_int_at_least(1), default=100,
                    help="--animate: at most this many frames (every m-th recorded grid)")
    pl.add_argument("--fps", type=_int_at_least(1), default=8, help="--animate: frames a second")
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
