"""Worlds shared by many agents of several *types*: the interface and the helpers worlds share.

A world holds every agent of every type in one set of arrays. Agent types are named at
``reset``; their agents are numbered globally in the order the types are given (type 0's agents
first), and every random draw an agent makes is keyed by that *global index*, so a type's
observations do not depend on how the population is split into types or engines.

Interface (subclasses fill in ``_reset``, ``_step``, ``_state``, ``_set_state``)::

    obs = world.reset({"explorer": 300, "guardian": 200}, seed)  # {type: int64 (N_k, M)}
    obs = world.step({"explorer": a0, "guardian": a1})           # actions int (N_k, F_k)
    s = world.state(); world.set_state(s)                        # checkpoints: {name: array}

A *single-type* call works like the independent environments of :mod:`fa_gpu.envs`, so
``Engine.run(world, steps)`` runs unchanged: ``reset(n, seed=None)`` (an int) returns one array
``(n, M)`` and then ``step(actions)`` takes one array ``(n, F)``.

Actions: the world reads column 0 of each type's actions (its ``num_actions`` world actions);
further columns belong to the agents' own model factors (e.g. a belief factor with a single
action) and are ignored. Observations are int64 ``(N_k, M)`` on the world's array module ``xp``
(NumPy, or CuPy: they never leave the device); every type sees the same ``num_obs``.

Randomness is counter-based (:func:`fa_gpu.rng.uniform`): an agent's draw is keyed by
``(seed, global agent index, step, draw)`` and a site's (a grid cell, a patch, the hidden state
of a network) by ``(seed, SITE_KEY - site, step, draw)``: site keys count down from the top of
the 64-bit range, so they never meet an agent index. ``step`` is 0 for ``reset`` and ``t`` for
the ``t``-th ``step`` after it.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import rng
from ..devices import to_host

__all__ = ["World", "SITE_KEY", "array_module"]

#: Key of site 0's draws; site ``j`` uses ``SITE_KEY - j`` (agents use ``0, 1, ...``).
SITE_KEY = 2**64 - 1
_SINGLE = "agents"  # the type name of a single-type reset(n)


def array_module(xp):
    """``numpy`` for None/"numpy", ``cupy`` for "cupy", or the module given."""
    if xp is None or xp == "numpy":
        return np
    if xp == "cupy":
        import cupy
        return cupy
    if not hasattr(xp, "asarray") or not hasattr(xp, "bincount"):
        raise TypeError(f"xp must be 'numpy', 'cupy' or an array module, got {xp!r}")
    return xp


def check_int(value, name: str, low: int = 0, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high)`` (``high`` None: unbounded), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
            high is not None and value >= high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_real(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def host(x) -> np.ndarray:
    """A NumPy copy of ``x`` (NumPy or CuPy)."""
    return np.array(to_host(x))


class World:
    """Base class: the type bookkeeping, action checks, keyed draws and state checks.

    Subclasses set ``num_obs`` (tuple of int, one per modality) and ``num_actions`` (int) and
    implement ``_reset(n) -> obs (N, M)``, ``_step(a (N,)) -> obs (N, M)``, ``_state() -> dict``
    and ``_set_state(dict)`` (validate everything before assigning anything). The base class
    owns ``seed``, ``t`` (steps since reset) and the type counts.
    """

    num_obs: tuple
    num_actions: int

    def __init__(self, seed: int, xp):
        self.xp = array_module(xp)
        self.seed = check_int(seed, "seed", 0, 2**64)
        self.t = 0
        self.counts: dict | None = None  # {type: N_k} since reset, in global order
        self._single = False

    # -- the public interface ----------------------------------------------------------------
    @property
    def n(self) -> int | None:
        """Agents of all types since the last ``reset`` (None before)."""
        return None if self.counts is None else sum(self.counts.values())

    @property
    def num_modalities(self) -> int:
        return len(self.num_obs)

    @property
    def offsets(self) -> dict:
        """``{type: (lo, hi)}``: each type's range of global agent indices."""
        out, lo = {}, 0
        for name, k in self._require().items():
            out[name] = (lo, lo + k)
            lo += k
        return out

    def reset(self, counts, seed=None):
        """Place ``counts`` agents (``{type: N_k}``, or one int for a single type) and return
        their first observations: ``{type: int64 (N_k, M)}`` (one array for an int).
        ``seed`` (if given) replaces the world's seed."""
        single = not isinstance(counts, dict)
        parsed = {_SINGLE: counts} if single else dict(counts)
        if not parsed:
            raise ValueError("counts must name at least one agent type")
        for name, k in parsed.items():
            if not isinstance(name, str):
                raise TypeError(f"counts keys must be type names (str), got {name!r}")
            check_int(k, f"counts[{name!r}]" if not single else "n", 1)
        seed = self.seed if seed is None else check_int(seed, "seed", 0, 2**64)
        self.seed, self.t, self._single = seed, 0, single
        self.counts = {name: int(k) for name, k in parsed.items()}
        return self._split(self._reset(self.n))

    def step(self, actions):
        """Apply every type's actions (``{type: int (N_k, F_k)}``, F_k >= 1, column 0 in
        ``[0, num_actions)``; one array after a single-type reset) and return the next
        observations in the same form. A rejected call changes nothing."""
        a = self._gather(actions)
        self.t += 1
        try:
            return self._split(self._step(a))
        except BaseException:
            self.t -= 1
            raise

    def state(self) -> dict:
        """Everything needed to continue the world: ``{name: NumPy array}`` (copies), with
        ``seed``, ``t``, ``types`` (str ``(K,)``) and ``counts`` int64 ``(K,)`` besides the
        world's own arrays (see the subclass)."""
        names = list(self._require())
        out = {"seed": np.array(self.seed, dtype=np.uint64), "t": np.array(self.t, dtype=np.int64),
               "types": np.array(names, dtype=str), "single": np.array(self._single),
               "counts": np.array([self.counts[k] for k in names], dtype=np.int64)}
        out.update({k: host(v) for k, v in self._state().items()})
        return out

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`state` returned (e.g. read back from a file: every array is
        checked like user input; a rejected state leaves the world unchanged)."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        types = self._field(state, "types", None, "U")
        counts = self._field(state, "counts", (types.size,), "i")
        if types.size == 0 or len(set(types.tolist())) != types.size:
            raise ValueError("state['types'] must hold distinct type names, at least one")
        if (counts < 1).any():
            raise ValueError("state['counts'] must be positive")
        single = bool(self._field(state, "single", (), "b"))
        if single and types.tolist() != [_SINGLE]:
            raise ValueError(f"state['single'] is set but types are {types.tolist()}")
        t = int(self._field(state, "t", (), "i"))
        if t < 0:
            raise ValueError(f"state['t'] must be >= 0, got {t}")
        seed = int(self._field(state, "seed", (), "u"))
        own = self._set_state(state, int(counts.sum()))  # validates, returns an apply callback
        self.seed, self.t, self._single = seed, t, single
        self.counts = dict(zip(types.tolist(), (int(k) for k in counts)))
        own()

    # -- helpers for subclasses --------------------------------------------------------------
    @staticmethod
    def _field(state: dict, name: str, shape, kinds: str) -> np.ndarray:
        """``state[name]`` as a NumPy array of the given shape (None: any 1-D) and dtype kind."""
        if name not in state:
            raise ValueError(f"state is missing {name!r}")
        arr = host(state[name])
        if (shape is None and arr.ndim != 1) or (shape is not None and arr.shape != tuple(shape)):
            raise ValueError(f"state[{name!r}] must have shape {shape or '(K,)'}, got {arr.shape}")
        if arr.dtype.kind not in kinds and not (kinds == "u" and arr.dtype.kind == "i" and (arr >= 0).all()):
            raise ValueError(f"state[{name!r}] must have dtype kind {kinds!r}, got {arr.dtype}")
        return arr

    def agent_uniform(self, draw: int, step=None):
        """float64 ``(N,)`` uniforms of every agent for ``draw`` at ``step`` (default ``t``)."""
        xp = self.xp
        return rng.uniform(self.seed, xp.arange(self.n, dtype=xp.uint64), self.t if step is None else step,
                           draw, xp)

    def site_uniform(self, sites, draw: int):
        """float64 uniforms of sites ``sites`` (int array) for ``draw`` at step ``t``."""
        xp = self.xp
        keys = xp.uint64(SITE_KEY) - xp.asarray(sites).astype(xp.uint64)
        return rng.uniform(self.seed, keys, self.t, draw, xp)

    def _require(self) -> dict:
        if self.counts is None:
            raise RuntimeError(f"{type(self).__name__}: call reset() before step() or state()")
        return self.counts

    def _gather(self, actions):
        """Column 0 of every type's actions, concatenated in global order: int64 ``(N,)`` on xp."""
        counts, xp = self._require(), self.xp
        if self._single:
            if isinstance(actions, dict):
                raise TypeError("this world was reset with one int: step() takes one actions array")
            actions = {_SINGLE: actions}
        elif not isinstance(actions, dict) or set(actions) != set(counts):
            got = sorted(actions) if isinstance(actions, dict) else type(actions).__name__
            raise ValueError(f"actions must be a dict with one array per type {list(counts)}; got {got}")
        cols = []
        for name, k in counts.items():
            label = "actions" if self._single else f"actions[{name!r}]"
            a = xp.asarray(actions[name])
            if a.ndim != 2 or a.shape[0] != k or a.shape[1] < 1:
                raise ValueError(f"{label} must have shape ({k}, F) with F >= 1; got {tuple(a.shape)}")
            if a.dtype.kind not in "iu":
                raise TypeError(f"{label} must be integers, got dtype {a.dtype}")
            col = a[:, 0].astype(xp.int64)
            bad = (col < 0) | (col >= self.num_actions)
            if bool(bad.any()):
                i = int(xp.argmax(bad))
                raise ValueError(f"{label}[{i}, 0] is {int(col[i])}, outside the world's actions "
                                 f"[0, {self.num_actions})")
            cols.append(col)
        return cols[0] if len(cols) == 1 else xp.concatenate(cols)

    def _split(self, obs):
        if self._single:
            return obs
        return {name: obs[lo:hi] for name, (lo, hi) in self.offsets.items()}
