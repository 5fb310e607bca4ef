"""`Population`: several engines (agent types: different models, sizes, backends) in one world.

Agent types are numbered globally in the order of the ``engines`` dict (see
:mod:`fa_gpu.envs.worlds`): the world keys every draw by that global index, and each engine keys
its own action draws by its own agent index, so stepping the types together gives exactly the
numbers of stepping each engine by hand against the same world.

Checkpoint format (``checkpoint_path`` is a directory; see :meth:`Population.save`):

- ``manifest.npz``: one uint8 array ``manifest``, UTF-8 JSON: ``format``
  (``"fa_gpu-population-checkpoint"``), ``version``, ``steps`` (population steps since reset),
  ``types`` (names, in global order), ``counts``, ``engines`` ({type: file}), ``world`` (file),
  ``world_class`` (module and class name);
- ``engine{i}.{token}.npz``: type i's engine, an ordinary :meth:`fa_gpu.Engine.save` file
  (``Engine.load`` reads it);
- ``world.{token}.npz``: :meth:`World.state`, one array per key.

The data files of a checkpoint are written first (each atomically, under a fresh token), then the
manifest replaces the old one atomically, then files no manifest names are deleted: after a crash
the manifest names one complete checkpoint. A checkpoint written by :meth:`Population.run` also
holds, in each engine's file, the run's state for that type (its next observations, its
recorder's position, the step reached: ``fa_gpu.runtime.checkpoint.run_state``), so
``Population.load(path, world).run(steps, resume=path, ...)`` continues the run as
``Engine.run(..., resume=...)`` does: :meth:`Population.load` reads the manifest, ``Engine.load``
for each engine and ``world.set_state`` (which validates the arrays) for the world.
"""
from __future__ import annotations

import functools
import json
import os
import re
import uuid

import numpy as np

from .engine import Engine
from .envs.worlds import World
from .runtime.checkpoint import capture, read_run, run_state, write_atomic
from .runtime.loop import RunResult, _Clock, _Host, _recorded, _run_args, _Sink

__all__ = ["Population", "CHECKPOINT_FORMAT", "read_manifest"]

CHECKPOINT_FORMAT = "fa_gpu-population-checkpoint"
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9_-]+")  # type names become file and Zarr group names


class Population:
    """Engines of several agent types stepped together in one shared :class:`fa_gpu.envs.World`.

    Parameters
    ----------
    engines : dict ``{type name: Engine}``
        Names of letters, digits, ``_`` and ``-``; distinct engines. Each engine's
        ``num_obs`` must equal the world's, and its factor 0 must have at most the world's
        ``num_actions`` actions (the world reads column 0 of the actions).
    world : World
        Reset with ``{type: engine.n_agents}`` by :meth:`reset` / :meth:`run`.
    """

    def __init__(self, engines: dict, world: World):
        if not isinstance(engines, dict) or not engines:
            raise TypeError("engines must be a non-empty dict {type name: Engine}")
        if not isinstance(world, World):
            raise TypeError(f"world must be a fa_gpu.envs.World, got {type(world).__name__}")
        for name, eng in engines.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"type names must be letters, digits, '_' or '-'; got {name!r}")
            if not isinstance(eng, Engine):
                raise TypeError(f"engines[{name!r}] must be a fa_gpu.Engine, got {type(eng).__name__}")
            if tuple(eng.config.num_obs) != tuple(world.num_obs):
                raise ValueError(f"engines[{name!r}] expects num_obs {list(eng.config.num_obs)}, the "
                                 f"world emits {list(world.num_obs)}")
            if eng.config.num_controls[0] > world.num_actions:
                raise ValueError(f"engines[{name!r}] factor 0 has {eng.config.num_controls[0]} actions, "
                                 f"the world takes {world.num_actions}")
        if len({id(e) for e in engines.values()}) != len(engines):
            raise ValueError("engines must be distinct Engine objects (one per type)")
        self.engines, self.world = dict(engines), world
        self.t = 0          # population steps since reset
        self._obs = None    # the next step's observations

    @property
    def counts(self) -> dict:
        """``{type: N_k}`` in global order."""
        return {k: e.n_agents for k, e in self.engines.items()}

    @property
    def n_agents(self) -> int:
        return sum(self.counts.values())

    def reset(self, seed=None) -> dict:
        """Reset every engine and the world (``seed``: the world's, see ``World.reset``);
        returns the first observations ``{type: int64 (N_k, M)}``."""
        for eng in self.engines.values():
            eng.reset()
        self._obs = self.world.reset(self.counts, seed)
        self.t = 0
        return self._obs

    def step(self, obs=None) -> tuple[dict, dict]:
        """One step of every engine on ``obs`` (default: the last observations), then of the
        world. Returns ``(actions, next_obs)``, dicts by type."""
        obs = self._current(obs)
        actions = self._act(obs)
        self._obs = self.world.step(actions)
        self.t += 1
        return actions, self._obs

    def _current(self, obs):
        obs = self._obs if obs is None else obs
        if obs is None:
            raise RuntimeError("call reset() first, or pass obs")
        if not isinstance(obs, dict) or set(obs) != set(self.engines):
            raise ValueError(f"obs must be a dict with one array per type {list(self.engines)}")
        return obs

    def _act(self, obs) -> dict:
        # started together: a cuda engine's kernel or a numba engine's worker runs while the
        # next engine's step is launched
        pending = {k: e.step_async(obs[k]) for k, e in self.engines.items()}
        actions = {}
        for k, p in pending.items():
            a = p.result()
            a.flags.writeable = False  # shared with host_fn, the world and the sink
            actions[k] = a
        return actions

    # -- the loop ------------------------------------------------------------------------------
    def run(self, steps: int, *, recorder=None, checkpoint_every=None, checkpoint_path=None,
            host_fn=None, progress: bool = True, pipeline: int = 1, chunk_size=None,
            reset: bool = True, obs=None, resume=None) -> RunResult:
        """Step every engine and the world ``steps`` times, like :meth:`fa_gpu.Engine.run`.

        ``recorder``: ``{type: Recorder}`` (any subset of the types; see :meth:`recorders`),
        each gets ``record(t, actions, obs)`` of its type. ``host_fn``: ``{type: fn}``, each as
        ``Engine.run``'s (type-local agent ids; its obs override the world's). Checkpoints: see
        :meth:`save`. ``reset=False`` continues from the last observations; ``obs`` (a dict)
        overrides both. ``resume``: a checkpoint directory this run wrote, on a population made
        by :meth:`load` from it, with recorders opened by ``recorders(path, resume=True)``:
        continues the run (``steps`` is its total), as ``Engine.run(..., resume=...)``. Returns
        a ``RunResult`` whose ``obs`` is ``{type: (N_k, M)}`` and whose rate counts the agents
        of all types.
        """
        steps, checkpoint_every = _run_args(steps, pipeline, checkpoint_every, checkpoint_path)
        recorder, host_fn = self._by_type(recorder, "recorder"), self._by_type(host_fn, "host_fn")
        hosts = {k: _Host(fn, self.engines[k].n_agents, self.engines[k].config.num_modalities, chunk_size)
                 for k, fn in host_fn.items()}
        first = 0
        if resume is not None:
            first = self._resume(resume, steps, recorder)
        elif reset:
            self.reset()
        if obs is not None and resume is None:
            self._obs = obs
        obs = self._current(None)
        rec_start = {k: _recorded.get(r, 0) - first for k, r in recorder.items()}
        sink = _Sink(pipeline)
        clock = _Clock(first, steps, self.n_agents, progress, "fa_gpu[population]")
        try:
            for i in range(first, steps):
                actions = self._act(obs)
                futures = {k: h.start(actions[k]) for k, h in hosts.items()}
                world_obs = self.world.step(actions)  # overlaps the host_fn chunks
                nxt = {k: hosts[k].finish(futures[k], o) if k in hosts else o for k, o in world_obs.items()}
                self.t += 1
                due = bool(checkpoint_every) and (i + 1) % checkpoint_every == 0
                ckpt = None
                if due:
                    rows = {k: rec_start[k] + i + 1 if k in recorder else 0 for k in self.engines}
                    ckpt = self._capture(run=(i + 1, steps, rows, nxt))
                if recorder or ckpt is not None:
                    sink.submit(functools.partial(self._sink_job, recorder,
                                                  {k: s + i for k, s in rec_start.items()},
                                                  actions, obs, ckpt, checkpoint_path))
                for k, r in recorder.items():
                    _recorded[r] = rec_start[k] + i + 1
                obs = self._obs = nxt
                clock.tick(i)
            sink.drain()
        finally:
            clock.close()
            if sink.pending is not None:  # an error is propagating: never leave a writer behind
                sink.pending.exception()
        return clock.result(obs)

    def _resume(self, path, steps: int, recorders: dict) -> int:
        """Set the world, the next observations and the recorders from the run checkpoint in
        ``path``; returns the step reached."""
        manifest = read_manifest(path)
        if manifest["types"] != list(self.engines):
            raise ValueError(f"{path} holds types {manifest['types']}, this population "
                             f"{list(self.engines)}")
        saved = {k: read_run(os.path.join(os.fspath(path), manifest["engines"][k]), e)
                 for k, e in self.engines.items()}
        first = {s["step"] for s in saved.values()}
        if len(first) != 1:
            raise ValueError(f"{path}: the engines' run states are of different steps {sorted(first)}")
        first = first.pop()
        if first > steps:
            raise ValueError(f"{path} was taken at step {first} of its run, past steps={steps} "
                             f"(steps is the run's total)")
        self.world.set_state(_world_state(path, manifest))
        self._obs = {k: s["obs"] for k, s in saved.items()}
        self.t = manifest["steps"]
        for k, rec in recorders.items():
            rec.rewind(saved[k]["recorded"])
            _recorded[rec] = saved[k]["recorded"]
        return first

    @classmethod
    def load(cls, path, world: World, backend: str | None = None, **options) -> "Population":
        """The population checkpointed in directory ``path``: every engine (``Engine.load``,
        ``backend`` and ``options`` as there) and ``world`` set to the saved state (the world
        object is built by the caller, like the one that was saved)."""
        manifest = read_manifest(path)
        engines = {k: Engine.load(os.path.join(os.fspath(path), manifest["engines"][k]),
                                  backend=backend, **options) for k in manifest["types"]}
        pop = cls(engines, world)
        world.set_state(_world_state(path, manifest))
        pop.t = manifest["steps"]
        return pop

    def _by_type(self, value, name: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict) or not set(value) <= set(self.engines):
            raise ValueError(f"{name} must be a dict keyed by type names {list(self.engines)}")
        return dict(value)

    @staticmethod
    def _sink_job(recorders, steps, actions, obs, ckpt, path) -> None:
        for k, rec in recorders.items():
            rec.record(steps[k], actions[k], obs[k])
        if ckpt is not None:
            _write_checkpoint(ckpt, path)

    # -- recording and checkpoints ---------------------------------------------------------------
    def recorders(self, path, *, overwrite: bool = False, resume: bool = False, **options) -> dict:
        """One :class:`fa_gpu.Recorder` per type, each a Zarr group ``path/<type>`` inside one
        root group at ``path`` (attributes ``types`` and ``counts``). ``options`` go to every
        Recorder (``chunk_steps``, ``attrs``, ...); ``resume=True`` reopens the groups of a run
        to continue (see :meth:`run`). Close them when done."""
        import zarr

        from .runtime.recorder import Recorder

        if not resume:
            try:
                zarr.open_group(path, mode="w" if overwrite else "w-", zarr_format=3,
                                attributes={"types": list(self.engines), "counts": self.counts})
            except FileExistsError as exc:
                raise FileExistsError(f"{path} already holds data; pass overwrite=True to replace it") from exc
        return {k: Recorder(os.path.join(os.fspath(path), k), e.n_agents,
                            num_modalities=e.config.num_modalities, num_factors=e.config.num_factors,
                            num_states=list(e.config.num_states), overwrite=not resume,
                            resume=resume, **options)
                for k, e in self.engines.items()}

    def _capture(self, run=None) -> dict:
        """Host copies of a checkpoint; ``run``: (step, steps, {type: recorder rows},
        {type: next obs}) of a run in progress, saved in each engine's file."""
        w = self.world
        engines = {k: capture(e, None if run is None else run_state(run[0], run[1], run[2][k],
                                                                     run[3][k], None))
                   for k, e in self.engines.items()}
        return {"engines": engines, "world": w.state(),
                "steps": self.t, "counts": self.counts,
                "world_class": f"{type(w).__module__}.{type(w).__qualname__}"}

    def save(self, path) -> None:
        """Write a checkpoint of every engine and the world into the directory ``path``
        (created if missing; format in the module docstring)."""
        _write_checkpoint(self._capture(), path)


def _write_checkpoint(ckpt: dict, path) -> None:
    """Data files under a fresh token, then the manifest (atomic replace), then stale files."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    files = {k: f"engine{i}.{token}.npz" for i, k in enumerate(ckpt["engines"])}
    for k, arrays in ckpt["engines"].items():
        write_atomic(arrays, os.path.join(path, files[k]))
    world_file = f"world.{token}.npz"
    write_atomic(ckpt["world"], os.path.join(path, world_file))
    manifest = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "steps": ckpt["steps"],
                "types": list(ckpt["engines"]), "counts": ckpt["counts"], "engines": files,
                "world": world_file, "world_class": ckpt["world_class"]}
    write_atomic({"manifest": np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)},
                 os.path.join(path, "manifest.npz"))
    keep = set(files.values()) | {world_file, "manifest.npz"}
    for name in os.listdir(path):
        if name not in keep and re.fullmatch(r"(engine\d+|world)\.[0-9a-f]{12}\.npz", name):
            os.unlink(os.path.join(path, name))


def _world_state(path, manifest) -> dict:
    """The saved world state (checked by the world's own ``set_state``)."""
    with np.load(os.path.join(os.fspath(path), manifest["world"]), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_manifest(path) -> dict:
    """The manifest of the population checkpoint in directory ``path``, validated: ValueError
    when it is not one (the files it names are checked to exist)."""
    file = os.path.join(os.fspath(path), "manifest.npz")
    try:
        with np.load(file, allow_pickle=False) as z:
            manifest = json.loads(z["manifest"].tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"{file} is not a population checkpoint manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{file} is not a population checkpoint manifest")
    if manifest.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{file}: version {manifest.get('version')}, this fa_gpu reads {CHECKPOINT_VERSION}")
    names = list(manifest.get("engines", {}).values()) + [manifest.get("world")]
    for name in names:
        if not isinstance(name, str) or not re.fullmatch(r"(engine\d+|world)\.[0-9a-f]{12}\.npz", name) \
                or not os.path.isfile(os.path.join(os.fspath(path), name)):
            raise ValueError(f"{file} names a missing or invalid file {name!r}")
    return manifest
