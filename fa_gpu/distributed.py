"""Agents sharded over a Ray cluster, with the `Engine`'s interface and one engine's numbers.

:class:`ShardedEngine` splits N agents into K contiguous ranges ``[lo_k, hi_k)`` and gives each
to a Ray actor holding an :class:`fa_gpu.Engine` of ``hi_k - lo_k`` agents built with
``agent_offset=lo_k``. Random draws are keyed by (seed, global agent index, step, draw), in the
engine and in the built-in environments, so a sharded run gives bit for bit the actions and
beliefs of one engine on the same backend, whatever K.

What moves per step: a step with observations from the driver sends each shard its ``(n_k, M)``
slice and gets ``(n_k, F)`` actions back (numpy arrays through Ray's object store). In
:meth:`ShardedEngine.run` with an independent-copy environment nothing moves per step: each shard
steps its own slice of the worlds (``env.reset(n_k, seed, agent_offset=lo_k)``), and the driver
only hears from the shards at checkpoints and at the end. A shared world (``fa_gpu.envs``'
multi-agent worlds) is stepped by the driver: the shards' actions go to it, the observations
come back, and each shard starts its next step as soon as its own slice arrives.

Checkpoints (:meth:`ShardedEngine.save`, ``run(checkpoint_every=...)``) are a directory: one
engine checkpoint per shard (``fa_gpu.runtime.checkpoint`` format) and a ``manifest.json`` that
names them. The manifest is replaced atomically after every shard file of a generation is
written, so it only ever names complete files; files of older generations are then removed.

A lost worker is not a lost run: actors are created with ``max_restarts``; when one dies inside
:meth:`ShardedEngine.run` (its process killed), Ray restarts it, every shard reloads the last
checkpoint, and the run continues from there, ending in the state of an uninterrupted run.

Needs the ``distributed`` extra (``pip install 'fa_gpu[distributed]'``: Ray).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["ShardedEngine", "shard_bounds"]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "fa_gpu-sharded-checkpoint"
#: how often Ray restarts a dead shard actor before giving up
MAX_RESTARTS = 3


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
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
        raise ValueError(f"shards must be a positive integer, got {shards!r}")
    if shards > n_agents:
        raise ValueError(f"shards={shards} is more than n_agents={n_agents}")
    units = -(-n_agents // quantum)
    if shards > units:
        raise ValueError(f"{shards} shards of whole {quantum}-agent chunks need n_agents >= "
                         f"{(shards - 1) * quantum + 1}; got {n_agents}")
    cuts = [min(n_agents, round(k * units / shards) * quantum) for k in range(shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


class _Shard:
    """One shard: an Engine of agents ``lo..hi-1`` (Ray actor body; plain methods)."""

    def __init__(self, model, lo: int, hi: int, options: dict):
        from .engine import Engine

        self.lo, self.hi = lo, hi
        self.engine = Engine(model, hi - lo, agent_offset=lo, **options)

    def pid(self) -> int:
        return os.getpid()

    def backend(self) -> str:
        return self.engine.backend

    def step(self, obs):
        return self.engine.step(obs)

    def get(self, name: str):
        return getattr(self.engine, name)

    def reset(self, agents):
        self.engine.reset(agents)

    def snapshot(self) -> dict:
        return self.engine.snapshot()

    def save(self, path: str) -> None:
        self.engine.save(path)

    def load(self, path: str, options: dict) -> None:
        from .engine import Engine

        engine = Engine.load(path, **options)
        if engine.config.agent_offset != self.lo or engine.n_agents != self.hi - self.lo:
            raise ValueError(f"{path} holds agents {engine.config.agent_offset}.."
                             f"{engine.config.agent_offset + engine.n_agents - 1}, this shard "
                             f"{self.lo}..{self.hi - 1}")
        self.engine = engine


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
    **engine_options
        Any other :class:`fa_gpu.Engine` argument (``dtype``, ``seed``, ``gamma``, ...,
        ``num_threads`` per shard), the same for every shard.

    Reads gather the shards' arrays on the driver: ``qs``, ``prior`` (lists of ``(N, S_f)``),
    ``q_pi``, ``neg_efe`` ``(N, P)``, ``actions`` ``(N, F)``, ``t`` ``(N,)``.
    """

    def __init__(self, model, n_agents: int, shards: int = 2, backend: str = "auto", address=None,
                 **engine_options):
        from .model import GenerativeModel

        ray = _ray()
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model must be a fa_gpu.GenerativeModel, got {type(model).__name__}")
        if model.batch_size is not None:
            raise ValueError("ShardedEngine needs a model shared by all agents; this one has "
                             f"per-agent arrays for {model.batch_size} agents")
        if isinstance(n_agents, bool) or not isinstance(n_agents, (int, np.integer)) or n_agents < 1:
            raise ValueError(f"n_agents must be a positive integer, got {n_agents!r}")
        if "agent_offset" in engine_options:
            raise TypeError("agent_offset is set per shard by ShardedEngine")
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.model, self.n_agents = model, int(n_agents)
        self.bounds = shard_bounds(self.n_agents, shards)
        self._options = dict(engine_options, backend=backend)
        actor = ray.remote(num_gpus=1 if backend == "cuda" else 0, num_cpus=0,
                           max_restarts=MAX_RESTARTS)(_Shard)
        self._actors = [actor.remote(model, lo, hi, self._options) for lo, hi in self.bounds]
        self.backend = ray.get(self._actors[0].backend.remote())

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
        idx = np.asarray(agents)
        if idx.dtype == bool:
            if idx.shape != (self.n_agents,):
                raise ValueError(f"a boolean agents mask must have shape ({self.n_agents},); got {idx.shape}")
            idx = np.flatnonzero(idx)
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
            raise TypeError("agents must be None, a 1-D array of agent indices, or a boolean mask")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_agents):
            raise ValueError(f"agents indices must be in [0, {self.n_agents})")
        ray.get([a.reset.remote(idx[(idx >= lo) & (idx < hi)] - lo)
                 for a, (lo, hi) in zip(self._actors, self.bounds)])

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
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        old = _read_manifest(path, missing_ok=True)
        gen = 0 if old is None else old["generation"] + 1
        files = [f"shard-{k:04d}-g{gen}.ckpt" for k in range(len(self._actors))]
        _ray().get([a.save.remote(str(path / f)) for a, f in zip(self._actors, files)])
        manifest = {"format": MANIFEST_FORMAT, "generation": gen, "n_agents": self.n_agents,
                    "bounds": self.bounds, "files": files, "time": time.time()}
        tmp = path / f".{MANIFEST}.tmp"
        with open(tmp, "w") as fh:
            json.dump(manifest, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path / MANIFEST)
        for stale in path.glob("shard-*.ckpt"):
            if stale.name not in files:
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
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.model, self.n_agents = first.model, manifest["n_agents"]
        self.bounds = [tuple(b) for b in manifest["bounds"]]
        self._options = dict(options, backend=first.backend if backend is None else backend)
        actor = ray.remote(num_gpus=1 if self._options["backend"] == "cuda" else 0, num_cpus=0,
                           max_restarts=MAX_RESTARTS)(_Shard)
        self._actors = [actor.remote(self.model, lo, hi, self._options) for lo, hi in self.bounds]
        ray.get([a.load.remote(str(path / f), options) for a, f in zip(self._actors, manifest["files"])])
        self.backend = ray.get(self._actors[0].backend.remote())
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
          and isinstance(m.get("files"), list) and isinstance(m.get("bounds"), list)
          and len(m["files"]) == len(m["bounds"]) >= 1)
    if not ok:
        raise ValueError(f"{f} is not a valid {MANIFEST_FORMAT} manifest")
    for name in m["files"]:
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise ValueError(f"{f}: bad shard file name {name!r}")
    cuts = [0] + [b[1] for b in m["bounds"]]
    if [b[0] for b in m["bounds"]] != cuts[:-1] or cuts[-1] != m["n_agents"] or any(
            hi <= lo for lo, hi in m["bounds"]):
        raise ValueError(f"{f}: shard bounds {m['bounds']} do not cover 0..{m['n_agents'] - 1} in order")
    return m
