"""Agents sharded over a Ray cluster, with the `Engine`'s interface and one engine's numbers.

:class:`ShardedEngine` splits N agents into K contiguous ranges ``[lo_k, hi_k)`` and gives each
to a Ray actor holding an :class:`fa_gpu.Engine` of ``hi_k - lo_k`` agents built with
``agent_offset=lo_k``. Random draws are keyed by (seed, global agent index, step, draw), in the
engine and in the built-in environments, so a sharded run gives bit for bit the actions and
beliefs of one engine on the same backend, whatever K.

What moves per step: a step with observations from the driver sends each shard its ``(n_k, M)``
slice and gets ``(n_k, F)`` actions back (numpy arrays through Ray's object store). In
:meth:`ShardedEngine.run` with an independent-copy environment nothing moves per step: each shard
steps its own slice of the worlds (``env.reset(n_k, agent_offset=lo_k)`` on its copy of the
environment), and the driver only hears from the shards at checkpoints and at the end. A shared world (``fa_gpu.envs``'
multi-agent worlds) is stepped by the driver: the shards' actions go to it, the observations
come back, and each shard starts its next step as soon as its own slice arrives.

Checkpoints (:meth:`ShardedEngine.save`, ``run(checkpoint_every=...)``) are a directory: one
engine checkpoint per shard (``shard-KKKK-gG.ckpt``, ``fa_gpu.runtime.checkpoint`` format) and a
``manifest.json`` that names them. A generation written by ``run`` also holds the run state: per
shard ``shard-KKKK-gG.run.npz`` (its environment slice's ``state()`` as ``env.<key>`` and its
next ``obs``) or, for a world stepped by the driver, ``world-gG.npz`` (``world.<key>`` and
``obs``), and the manifest's ``run`` record (``id`` of the run, ``step`` reached, ``store_step``:
the store row the run continues at, ``files``, ``world``). The manifest is replaced atomically
after every file of a generation is written, so it only ever names complete files; files of
other generations (older ones, or the debris of a save that died) are then removed.

Recording (``run(recorder=...)``) goes to one Zarr store in :class:`fa_gpu.Recorder`'s layout
(:class:`fa_gpu.runtime.recorder.ShardedStore`), chunked by ``chunk_agents`` agents, with the
shard boundaries on chunk boundaries: each shard writes its own rows and chunks; the driver
resizes the arrays and moves ``steps_written`` after every block all shards have written.

A lost worker is not a lost run: actors are created with ``max_restarts``; when one dies inside
:meth:`ShardedEngine.run` (its process killed), Ray restarts it, every shard reloads the last
checkpoint, and the run continues from there, ending in the state of an uninterrupted run.

Needs the ``distributed`` extra (``pip install 'fa_gpu[distributed]'``: Ray).
"""
from __future__ import annotations

import inspect
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np

from .model import agent_indices, positive_int

__all__ = ["ShardedEngine", "ShardLost", "shard_bounds"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "fa_gpu-sharded-checkpoint"
#: how often Ray restarts a dead shard actor before giving up
MAX_RESTARTS = 3
#: seconds run() waits for Ray to bring a lost shard back
RESTART_TIMEOUT = 60
#: default agents per store chunk (ShardedEngine's chunk_agents): 4096 x 64 steps of an int64
#: column is 2 MiB, a Recorder-sized chunk
CHUNK_AGENTS = 4096


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("fa_gpu.distributed needs Ray: pip install 'fa_gpu[distributed]'") from None
    return ray


def shard_bounds(n_agents: int, shards: int, quantum: int = 1) -> list:
    """Contiguous ranges ``[(lo, hi), ...]`` of K shards covering ``range(n_agents)``, as even as
    possible, inner boundaries on multiples of ``quantum`` (so a store chunked by ``quantum``
    agents never has two shards writing one chunk). Every range is non-empty."""
    shards = positive_int(shards, "shards")
    if shards > n_agents:
        raise ValueError(f"shards={shards} is more than n_agents={n_agents}")
    units = -(-n_agents // quantum)
    if shards > units:
        raise ValueError(f"{shards} shards of whole {quantum}-agent chunks need n_agents >= "
                         f"{(shards - 1) * quantum + 1}; got {n_agents}")
    cuts = [min(n_agents, round(k * units / shards) * quantum) for k in range(shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class ShardLost(RuntimeError):
    """A shard actor was restarted by Ray (its process died) and lost its run state."""


class _Rows:
    """A shard's buffer of store rows: ``chunk_steps`` steps of its agents' actions and obs,
    written to the :class:`~fa_gpu.runtime.recorder.ShardedStore` when full or flushed."""

    def __init__(self, store, lo: int, n: int, F: int, M: int, chunk_steps: int):
        self.store, self.lo = store, lo
        self.actions = np.empty((chunk_steps, n, F), np.int64)
        self.obs = np.empty((chunk_steps, n, M), np.int64)
        self.t0, self.k = 0, 0

    def add(self, t: int, actions, obs) -> None:
        if self.t0 + self.k != t:
            self.flush()
            self.t0 = t
        self.actions[self.k], self.obs[self.k] = actions, obs
        self.k += 1
        if self.k == len(self.actions):
            self.flush()

    def flush(self) -> None:
        if self.k:
            self.store.write(self.t0, self.lo, self.actions[:self.k], self.obs[:self.k])
        self.t0, self.k = self.t0 + self.k, 0


class _Shard:
    """One shard: an Engine of agents ``lo..hi-1`` (Ray actor body; plain methods), and during
    :meth:`ShardedEngine.run` its run state: its environment slice (independent copies), the
    next observations and its store rows. Ray restarts a killed actor by calling ``__init__``
    again, so a restarted shard has no run state, and says so (:class:`ShardLost`)."""

    def __init__(self, model, lo: int, hi: int, options: dict):
        from .engine import Engine

        self.lo, self.hi = lo, hi
        self.engine = Engine(model, hi - lo, agent_offset=lo, **options)
        self.running = False
        self.env = self.obs = self.rows = None

    def pid(self) -> int:
        return os.getpid()

    def describe(self) -> tuple:
        """(backend name, float dtype name) of this shard's engine."""
        return self.engine.backend, np.dtype(self.engine.config.dtype).name

    def step(self, obs):
        return self.engine.step(obs)

    def get(self, name: str):
        return getattr(self.engine, name)

    def reset(self, agents):
        self.engine.reset(agents)

    def snapshot(self) -> dict:
        return self.engine.snapshot()

    def save(self, path: str, run_path: str | None = None) -> None:
        """The engine to ``path``; with ``run_path``, the run state too (``obs`` and the
        environment's ``state()`` as ``env.<key>``), both files atomically."""
        from .runtime.checkpoint import write_atomic

        if run_path is not None:
            self._require_run(True)
        self.engine.save(path)
        if run_path is not None:
            run = {f"env.{k}": v for k, v in self.env.state().items()}
            write_atomic(dict(run, obs=self.obs), run_path)

    def load(self, path: str, options: dict, run_path: str | None = None) -> None:
        """An engine from ``path`` (checked to be this shard's agents) and, with ``run_path``, the
        run state: every array checked like user input before anything changes."""
        from .engine import Engine

        engine = Engine.load(path, **options)
        if engine.config.agent_offset != self.lo or engine.n_agents != self.hi - self.lo:
            raise ValueError(f"{path} holds agents {engine.config.agent_offset}.."
                             f"{engine.config.agent_offset + engine.n_agents - 1}, this shard "
                             f"{self.lo}..{self.hi - 1}")
        if run_path is not None:
            self._require_run(True)
            with np.load(run_path, allow_pickle=False) as f:
                run = {k: f[k] for k in f.files}
            obs = run.pop("obs", None)
            M = engine.config.num_modalities
            if obs is None or obs.dtype.kind not in "iu" or obs.shape != (self.hi - self.lo, M):
                raise ValueError(f"{run_path}: obs must be integers of shape ({self.hi - self.lo}, {M})")
            if not all(k.startswith("env.") for k in run):
                raise ValueError(f"{run_path}: unexpected members {sorted(run)}")
            env_state = {k[4:]: v for k, v in run.items()}
            if int(env_state.get("agent_offset", self.lo)) != self.lo:
                raise ValueError(f"{run_path}: environment slice of agent {env_state['agent_offset']}, "
                                 f"this shard starts at {self.lo}")
            self.env.set_state(env_state)
            self.obs = obs.astype(np.int64)
        self.engine = engine
        if self.rows is not None:
            self.rows.k = 0  # rows after the checkpoint are stepped, and written, again

    # -- ShardedEngine.run ---------------------------------------------------------------
    def start(self, env, store, chunk_steps: int) -> None:
        """Begin a run: reset the engine; ``env`` (a copy of an independent-copy environment,
        or None when the driver steps the world) starts this shard's slice of the worlds;
        ``store``: path of the ShardedStore to write rows to, or None."""
        from .runtime.recorder import ShardedStore

        self.engine.reset()
        self.env = env
        self.obs = None if env is None else np.asarray(env.reset(self.hi - self.lo, agent_offset=self.lo))
        cfg = self.engine.config
        self.rows = None if store is None else _Rows(ShardedStore(store), self.lo, self.hi - self.lo,
                                                     cfg.num_factors, cfg.num_modalities, chunk_steps)
        self.running = True

    def run_block(self, steps: int, t: int) -> None:
        """``steps`` steps of engine and environment slice; store rows from ``t`` on."""
        self._require_run(True)
        for i in range(steps):
            actions = self.engine.step(self.obs)
            if self.rows is not None:
                self.rows.add(t + i, actions, self.obs)
            self.obs = self.env.step(actions)
        self.flush()

    def step_row(self, obs, t: int):
        """One step with the driver's observations (shared world); store row ``t``."""
        self._require_run(False)
        actions = self.engine.step(obs)
        if self.rows is not None:
            self.rows.add(t, actions, obs)
        return actions

    def flush(self) -> None:
        if self.rows is not None:
            self.rows.flush()

    def next_obs(self):
        self._require_run(True)
        return self.obs

    def _require_run(self, with_env: bool) -> None:
        if not self.running or (with_env and self.env is None):
            raise ShardLost(f"shard {self.lo}..{self.hi - 1} has no run state (its actor restarted, "
                            f"or run() did not start it)")


class ShardedEngine:
    """N agents in K contiguous shards, one Ray actor (holding an :class:`fa_gpu.Engine`) each.

    Parameters
    ----------
    model : GenerativeModel
        Shared arrays only (per-agent arrays would have to be cut per shard; not supported).
    n_agents : int
        N, all shards together.
    shards : int
        K, the number of actors; shard k holds agents ``bounds[k] = (lo_k, hi_k)``.
    backend : str
        Each shard's Engine backend (``"auto"``: the best where the actor runs). On ``"cuda"``
        every actor asks Ray for one GPU.
    address : str, optional
        Ray cluster to connect to (``ray.init(address=...)``); None: the running Ray instance, or a
        new local one.
    chunk_agents : int, optional
        Agents per chunk of a store :meth:`run` records to; the inner shard boundaries fall on its
        multiples, so no two shards write one chunk. Default ``min(4096, N // 4K)`` (at least 1:
        shards within a quarter of a shard of even).
    **engine_options
        Any other :class:`fa_gpu.Engine` argument (``dtype``, ``seed``, ``gamma``, ...,
        ``num_threads`` per shard), the same for every shard.

    Reads gather the shards' arrays on the driver: ``qs``, ``prior`` (lists of ``(N, S_f)``),
    ``q_pi``, ``neg_efe`` ``(N, P)``, ``actions`` ``(N, F)``, ``t`` ``(N,)``.
    """

    def __init__(self, model, n_agents: int, shards: int = 2, backend: str = "auto", address=None,
                 chunk_agents=None, **engine_options):
        from .model import GenerativeModel

        _ray()
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model must be a fa_gpu.GenerativeModel, got {type(model).__name__}")
        if model.batch_size is not None:
            raise ValueError("ShardedEngine needs a model shared by all agents; this one has "
                             f"per-agent arrays for {model.batch_size} agents")
        positive_int(n_agents, "n_agents")
        if "agent_offset" in engine_options:
            raise TypeError("agent_offset is set per shard by ShardedEngine")
        if chunk_agents is None:
            chunk_agents = max(1, min(CHUNK_AGENTS, int(n_agents) // (4 * max(1, int(shards)))))
        bounds = shard_bounds(int(n_agents), shards, quantum=positive_int(chunk_agents, "chunk_agents"))
        self._start(model, int(n_agents), bounds, int(chunk_agents), dict(engine_options, backend=backend),
                    address)

    def _start(self, model, n_agents, bounds, chunk_agents, options, address) -> None:
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.model, self.n_agents, self.bounds = model, n_agents, bounds
        self.chunk_agents, self._options = chunk_agents, options
        actor = ray.remote(num_gpus=1 if options["backend"] == "cuda" else 0, num_cpus=0,
                           max_restarts=MAX_RESTARTS)(_Shard)
        self._actors = [actor.remote(model, lo, hi, options) for lo, hi in bounds]
        self.backend, self._dtype = ray.get(self._actors[0].describe.remote())

    # -- the step ------------------------------------------------------------------------
    def step(self, obs) -> np.ndarray:
        """One step of every agent: ``obs`` int ``(N, M)`` -> actions ``(N, F)`` int64."""
        obs = np.asarray(obs)
        if obs.ndim != 2 or obs.shape[0] != self.n_agents:
            raise ValueError(f"obs must have shape (N={self.n_agents}, M); got {obs.shape}")
        return self._gather([a.step.remote(obs[lo:hi]) for a, (lo, hi) in zip(self._actors, self.bounds)])

    def reset(self, agents=None) -> None:
        """As :meth:`fa_gpu.Engine.reset`: all agents, or global indices / a boolean mask."""
        ray = _ray()
        if agents is None:
            ray.get([a.reset.remote(None) for a in self._actors])
            return
        idx = agent_indices(agents, self.n_agents)
        ray.get([a.reset.remote(idx[(idx >= lo) & (idx < hi)] - lo)
                 for a, (lo, hi) in zip(self._actors, self.bounds)])

    # -- the simulation loop ---------------------------------------------------------------
    def recorder(self, path, **options):
        """A :class:`~fa_gpu.runtime.recorder.ShardedStore` at ``path`` for this engine (N agents,
        its modalities and factors, ``chunk_agents`` agents a chunk): a :class:`fa_gpu.Recorder`'s
        layout that :func:`fa_gpu.read_store` reads. ``options``: ``chunk_steps``,
        ``overwrite``, ``attrs``. Pass it to :meth:`run` as ``recorder=`` (runs append after
        its ``steps_written``) and ``close()`` it at the end. Shards open it by path: on
        several machines it must be on a file system they all see."""
        from .runtime.recorder import ShardedStore

        cfg = self.model
        return ShardedStore.create(path, self.n_agents, self.chunk_agents, num_modalities=cfg.num_modalities,
                                   num_factors=cfg.num_factors, num_states=list(cfg.num_states),
                                   dtype=self._dtype, **options)

    def run(self, env, steps: int, *, recorder=None, checkpoint_every=None, checkpoint_path=None,
            progress: bool = True, chunk_steps: int = 64):
        """Step every shard and ``env`` together for ``steps`` steps, from a reset (engines:
        :meth:`reset`; the environment: ``reset(N)``), as :meth:`fa_gpu.Engine.run` does.

        ``env``, two kinds:

        - *independent copies*, an environment whose ``reset`` takes ``agent_offset`` (every
          :class:`fa_gpu.envs.GenerativeProcess`: grid world, T-maze): each shard gets a copy
          (pickled to it) and steps its slice ``env.reset(n_k, agent_offset=lo_k)`` itself, so
          nothing moves per step; the driver hears from the shards after every block of
          ``checkpoint_every`` steps (or once). The ``env`` object here is not stepped.
        - anything else with ``reset(n)`` / ``step(actions)`` (a shared
          :class:`fa_gpu.envs.World`, single type) is stepped here: per step the shards'
          actions come in (``ray.wait``, copied as each shard finishes), the world steps, and each
          shard gets its ``(n_k, M)`` observation slice and starts its next step.

        ``recorder``: a path (a new store, refused if something is there; marked complete at the
        end) or a :meth:`recorder` store; each shard writes its agents' rows (actions and that
        step's input obs, as ``Engine.run`` records), ``steps_written`` moves after every block.

        ``checkpoint_every=k, checkpoint_path=DIR``: at the start and after every k steps, every
        shard saves its engine and run state (environment slice, next obs; a shared world and its
        obs are saved here) as one generation of ``DIR`` (see :meth:`save`). If a shard's process
        dies, Ray restarts the actor, every shard reloads the last generation (store rows after it
        are written again) and the run goes on: the result equals an uninterrupted run. Without
        checkpoints a lost shard ends the run with the error.

        Returns :class:`fa_gpu.runtime.loop.RunResult` (``first_step_seconds``: step 0, run by
        itself, with the shards' start).
        """
        from .engine import check_world
        from .runtime.loop import _Clock, _run_args

        ray = _ray()
        steps, checkpoint_every = _run_args(steps, 1, checkpoint_every, checkpoint_path)
        check_world(env, self.model)
        inside = "agent_offset" in inspect.signature(env.reset).parameters
        store, own_store = recorder, False
        if recorder is not None and not hasattr(recorder, "mark_written"):
            store, own_store = self.recorder(recorder, chunk_steps=chunk_steps), True
        if store is not None:
            made = store.made_for
            if (made["n_agents"], made["num_modalities"], made["num_factors"]) != (
                    self.n_agents, self.model.num_modalities, self.model.num_factors):
                raise ValueError(f"the recorder was made for {made}, this engine has n_agents="
                                 f"{self.n_agents}, {self.model.num_modalities} modalities, "
                                 f"{self.model.num_factors} factors")
            store.resize(store.steps_written + steps)
        loop = _Run(self, env if inside else None, None if inside else env, store, steps,
                    checkpoint_every, None if checkpoint_path is None else Path(checkpoint_path),
                    chunk_steps)
        clock = _Clock(0, steps, self.n_agents, progress, f"fa_gpu[{self.backend} x{len(self._actors)}]")
        try:
            loop.start()
            while loop.done < steps:
                before = loop.done
                try:
                    loop.block()
                except (ray.exceptions.RayActorError, ShardLost) as exc:
                    loop.recover(exc)
                    continue
                clock.tick(before, loop.done - before)
            result = clock.result(loop.final_obs())
        finally:
            clock.close()
        if own_store:
            store.close()
        return result

    # -- reads -----------------------------------------------------------------------------
    def _gather(self, refs):
        parts = _ray().get(refs)
        if isinstance(parts[0], list):
            return [np.concatenate(p) for p in zip(*parts)]
        return np.concatenate(parts)

    def _read(self, name):
        return self._gather([a.get.remote(name) for a in self._actors])

    qs = property(lambda self: self._read("qs"), doc="Posterior, F x (N, S_f).")
    prior = property(lambda self: self._read("prior"), doc="Empirical prior, F x (N, S_f).")
    q_pi = property(lambda self: self._read("q_pi"), doc="Policy posterior (N, P).")
    neg_efe = property(lambda self: self._read("neg_efe"), doc="Negative EFE (N, P).")
    actions = property(lambda self: self._read("actions"), doc="Last actions (N, F) int64.")
    t = property(lambda self: self._read("t"), doc="Steps since each agent's reset, (N,) int64.")

    def snapshot(self) -> dict:
        """Every shard's :meth:`fa_gpu.Engine.snapshot`, joined along the agent axis (each shard's
        copy is of one step; shards are stepped together, so between steps all are the same step)."""
        snaps = _ray().get([a.snapshot.remote() for a in self._actors])
        out = {}
        for k, v in snaps[0].items():
            if isinstance(v, list):
                out[k] = [np.concatenate([s[k][f] for s in snaps]) for f in range(len(v))]
            elif isinstance(v, np.ndarray) and v.ndim >= 1:
                out[k] = np.concatenate([s[k] for s in snaps])
            else:
                out[k] = [s[k] for s in snaps]
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, path) -> None:
        """All shards to directory ``path`` atomically as a whole (module docstring)."""
        self._save(Path(path))

    def _save(self, path: Path, run: dict | None = None, world: dict | None = None) -> None:
        """One generation: every shard's engine (and, with ``run``, its run state: ``run`` is the
        manifest's record of the run, ``{"id", "step", "store_step"}``); ``world``: the arrays of
        a driver-stepped world and its obs. The manifest is replaced last."""
        from .runtime.checkpoint import write_atomic

        path.mkdir(parents=True, exist_ok=True)
        old = _read_manifest(path, missing_ok=True)
        gen = 0 if old is None else old["generation"] + 1
        K = len(self._actors)
        files = [f"shard-{k:04d}-g{gen}.ckpt" for k in range(K)]
        run_files = None
        if run is not None and world is None:
            run_files = [f"shard-{k:04d}-g{gen}.run.npz" for k in range(K)]
        refs = [a.save.remote(str(path / f), None if run_files is None else str(path / r))
                for a, f, r in zip(self._actors, files, run_files or [None] * K)]
        manifest = {"format": MANIFEST_FORMAT, "generation": gen, "n_agents": self.n_agents,
                    "bounds": self.bounds, "chunk_agents": self.chunk_agents, "files": files,
                    "time": time.time()}
        if run is not None:
            manifest["run"] = dict(run, files=run_files)
            if world is not None:
                manifest["run"]["world"] = f"world-g{gen}.npz"
                write_atomic(world, path / manifest["run"]["world"])
        _ray().get(refs)
        tmp = path / f".{MANIFEST}.tmp"
        with open(tmp, "w") as fh:
            json.dump(manifest, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path / MANIFEST)
        named = set(files) | set(run_files or ()) | {manifest.get("run", {}).get("world")}
        for stale in list(path.glob("shard-*")) + list(path.glob("world-*")):
            if stale.name not in named:
                stale.unlink(missing_ok=True)

    @classmethod
    def load(cls, path, backend: str | None = None, address=None, **options) -> "ShardedEngine":
        """A ShardedEngine restored from :meth:`save` (same shards); ``options``: where each shard
        runs (``num_threads``, ``device``, ``cuda_path``)."""
        from .runtime.checkpoint import load as load_engine

        path = Path(path)
        manifest = _read_manifest(path)
        first = load_engine(path / manifest["files"][0], backend=backend, **options)
        self = cls.__new__(cls)
        self._start(first.model, manifest["n_agents"], [tuple(b) for b in manifest["bounds"]],
                    manifest["chunk_agents"],
                    dict(options, backend=first.backend if backend is None else backend), address)
        _ray().get([a.load.remote(str(path / f), options) for a, f in zip(self._actors, manifest["files"])])
        return self

    def shutdown(self) -> None:
        """Stop the shard actors (the Ray instance stays up)."""
        ray = _ray()
        for a in self._actors:
            ray.kill(a)
        self._actors = []

    def __repr__(self) -> str:
        return (f"ShardedEngine(n_agents={self.n_agents}, shards={len(self.bounds)}, "
                f"backend={self.backend!r})")


class _Run:
    """The state of one :meth:`ShardedEngine.run` on the driver: steps done, the shared world's
    next obs, the store, and the checkpoints it recovers from."""

    def __init__(self, sharded, env, world, store, steps, every, ckpt_dir, chunk_steps):
        self.s, self.env, self.world, self.store = sharded, env, world, store
        self.steps, self.every, self.dir, self.chunk_steps = steps, every, ckpt_dir, chunk_steps
        self.id = uuid.uuid4().hex  # a manifest of another run is never recovered from
        self.store0 = 0 if store is None else store.steps_written
        self.done, self.obs, self.recoveries = 0, None, 0

    def _start_shards(self) -> None:
        path = None if self.store is None else self.store.path
        _ray().get([a.start.remote(self.env, path, self.chunk_steps) for a in self.s._actors])

    def start(self) -> None:
        self._start_shards()
        if self.world is not None:
            self.obs = _host(self.world.reset(self.s.n_agents))
        if self.every is not None:
            self.checkpoint()

    def block(self) -> None:
        """Step 0 alone, then up to the next multiple of ``checkpoint_every`` (or the end); then
        the store mark and, at a multiple, the checkpoint."""
        ray, actors = _ray(), self.s._actors
        n = self.steps - self.done
        if self.every is not None:
            n = min(n, self.every - self.done % self.every)
        if self.done == 0:
            n = min(n, 1)  # step 0 alone: RunResult.first_step_seconds, as Engine.run reports it
        t = self.store0 + self.done
        if self.world is None:
            ray.get([a.run_block.remote(n, t) for a in actors])
        else:
            obs = self.obs
            actions = np.empty((self.s.n_agents, self.s.model.num_factors), np.int64)
            for i in range(n):
                refs = {a.step_row.remote(obs[lo:hi], t + i): (lo, hi)
                        for a, (lo, hi) in zip(actors, self.s.bounds)}
                while refs:  # copy each shard's actions as soon as they are there
                    ready, _ = ray.wait(list(refs), num_returns=1)
                    lo, hi = refs.pop(ready[0])
                    actions[lo:hi] = ray.get(ready[0])
                obs = _host(self.world.step(actions))
            ray.get([a.flush.remote() for a in actors])
            self.obs = obs
        self.done += n
        if self.store is not None:
            self.store.mark_written(self.store0 + self.done)
        if self.every is not None and self.done % self.every == 0:
            self.checkpoint()

    def checkpoint(self) -> None:
        run = {"id": self.id, "step": self.done, "store_step": self.store0 + self.done}
        world = None
        if self.world is not None:
            world = {f"world.{k}": v for k, v in self.world.state().items()}
            world["obs"] = self.obs
        self.s._save(self.dir, run, world)

    def recover(self, exc: BaseException) -> None:
        """Wait for Ray to restart the lost shard, then every shard back to the last checkpoint."""
        ray = _ray()
        self.recoveries += 1
        manifest = None if self.dir is None else _read_manifest(self.dir, missing_ok=True)
        run = None if manifest is None else manifest.get("run")
        if run is None or run.get("id") != self.id or self.recoveries > MAX_RESTARTS:
            raise exc
        deadline = time.monotonic() + RESTART_TIMEOUT
        for a in self.s._actors:
            while True:
                try:
                    ray.get(a.pid.remote(), timeout=5)
                    break
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"a shard actor did not come back within {RESTART_TIMEOUT} s "
                                           f"after {exc!r}") from exc
                    time.sleep(0.2)
        self._start_shards()
        opts = {k: v for k, v in self.s._options.items() if k in ("num_threads", "device", "cuda_path")}
        run_files = run["files"] or [None] * len(self.s._actors)
        ray.get([a.load.remote(str(self.dir / f), opts, None if r is None else str(self.dir / r))
                 for a, f, r in zip(self.s._actors, manifest["files"], run_files)])
        if self.world is not None:
            with np.load(self.dir / run["world"], allow_pickle=False) as f:
                saved = {k: f[k] for k in f.files}
            obs = saved.pop("obs", None)
            if obs is None or obs.dtype.kind not in "iu" or obs.shape != (self.s.n_agents, self.s.model.num_modalities):
                raise ValueError(f"{run['world']}: obs must be integers of shape "
                                 f"({self.s.n_agents}, {self.s.model.num_modalities})")
            self.world.set_state({k[6:]: v for k, v in saved.items() if k.startswith("world.")})
            self.obs = obs.astype(np.int64)
        self.done = int(run["step"])

    def final_obs(self) -> np.ndarray:
        if self.world is not None:
            return self.obs
        return self.s._gather([a.next_obs.remote() for a in self.s._actors])


def _host(x) -> np.ndarray:
    """A NumPy int64 copy of observations from a world on NumPy or CuPy."""
    return np.array(x.get() if hasattr(x, "get") else x, dtype=np.int64)


def _read_manifest(path: Path, missing_ok: bool = False):
    f = path / MANIFEST
    if not f.exists():
        if missing_ok:
            return None
        raise ValueError(f"{path} is not a sharded fa_gpu checkpoint (no {MANIFEST})")
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{f}: unreadable manifest ({exc})") from None
    ok = (isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT
          and isinstance(m.get("generation"), int) and isinstance(m.get("n_agents"), int)
          and isinstance(m.get("chunk_agents"), int) and m["chunk_agents"] >= 1
          and isinstance(m.get("files"), list) and isinstance(m.get("bounds"), list)
          and len(m["files"]) == len(m["bounds"]) >= 1)
    if not ok:
        raise ValueError(f"{f} is not a valid {MANIFEST_FORMAT} manifest")
    run = m.get("run")
    names = list(m["files"])
    if run is not None:
        if not (isinstance(run, dict) and isinstance(run.get("step"), int) and run["step"] >= 0
                and isinstance(run.get("files"), (list, type(None)))
                and (run["files"] is None or len(run["files"]) == len(m["files"]))):
            raise ValueError(f"{f}: bad run record {run!r}")
        names += (run["files"] or []) + ([run["world"]] if "world" in run else [])
    for name in names:
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise ValueError(f"{f}: bad shard file name {name!r}")
    cuts = [0] + [b[1] for b in m["bounds"]]
    if [b[0] for b in m["bounds"]] != cuts[:-1] or cuts[-1] != m["n_agents"] or any(
            hi <= lo for lo, hi in m["bounds"]):
        raise ValueError(f"{f}: shard bounds {m['bounds']} do not cover 0..{m['n_agents'] - 1} in order")
    return m
