"""Vectorized generative processes (environments): n independent worlds stepped together.

A process holds the true hidden states of n agents' worlds, ``state`` ``(n, F)`` int64, and
samples from a :class:`fa_gpu.GenerativeModel`'s own arrays: ``s_0 ~ D``, ``s' ~ B[f][:, s, u]``,
``o_m ~ A[m][:, s]``. Pure NumPy, no per-agent Python loop; it plugs into the engine as::

    obs = env.reset(n)
    for _ in range(T):
        obs = env.step(engine.step(obs))

Randomness comes from one ``numpy.random.Generator`` per process; ``reset(n, seed)`` re-seeds it.

Shared multi-agent worlds (every agent's observation may depend on the others'; several agent
types in one world; NumPy or CuPy) follow :class:`World` (:mod:`fa_gpu.envs.worlds`):
:class:`Foraging` and :class:`SocialNetwork`.
"""
from __future__ import annotations

import numpy as np

from ..model import GenerativeModel, check_actions

__all__ = ["GenerativeProcess", "GridWorldEnv", "TMazeEnv", "World", "Foraging", "SocialNetwork",
           "watts_strogatz", "barabasi_albert", "consensus_polarization"]


class _Sampler:
    """Inverse-CDF draws from every column of a conditional distribution at once.

    ``P`` ``(K, *cols)``: a distribution over K outcomes (axis 0) per column. Each column's CDF
    is shifted by its flat column index ``c`` into ``[c, c + 1]``, so one sorted float64 array
    covers all columns and a single ``searchsorted`` draws for n agents in different columns:
    O(n log(K * cols)) time and O(n) memory, whatever K is.
    """

    def __init__(self, P: np.ndarray):
        P = np.asarray(P, dtype=np.float64)
        self.K, self.shape = P.shape[0], P.shape[1:]
        cols = P.reshape(self.K, -1).T                      # (C, K)
        cdf = np.cumsum(cols, axis=1)
        cdf /= cdf[:, -1:]
        cdf[:, -1] = 1.0                                    # no draw can fall past the last outcome
        self._flat = (cdf + np.arange(len(cols))[:, None]).ravel()
        # rounding of c + u can land on the top edge: map that to the column's last possible outcome
        self._last = self.K - 1 - np.argmax(cols[:, ::-1] > 0, axis=1)

    def sample(self, index: tuple, u: np.ndarray) -> np.ndarray:
        """Outcomes int64 ``(n,)`` for columns ``index`` (tuple of ``(n,)`` ints) and uniforms ``u``."""
        col = np.ravel_multi_index(index, self.shape) if self.shape else np.zeros(len(u), np.int64)
        k = np.searchsorted(self._flat, col + u, side="right") - col * self.K
        return np.minimum(k, self._last[col]).astype(np.int64)


class GenerativeProcess:
    """The world described by a generative model, for n agents at once.

    Parameters
    ----------
    model : GenerativeModel
        Shared arrays only (no per-agent axis). Its ``A``, ``B``, ``D`` drive the process.
    seed : int
        Seed of the ``numpy.random.Generator``.

    Attributes
    ----------
    model : GenerativeModel
    num_obs, num_states, num_controls : list of int
    n : int or None
        Number of worlds since the last ``reset`` (None before).
    """

    def __init__(self, model: GenerativeModel, seed: int = 0):
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model must be a fa_gpu.GenerativeModel, got {type(model).__name__}")
        if model.batch_size is not None:
            raise ValueError("a generative process needs shared model arrays; this model has "
                             f"per-agent arrays for {model.batch_size} agents")
        self.model = model
        self.num_obs = list(model.num_obs)
        self.num_states = list(model.num_states)
        self.num_controls = list(model.num_controls)
        self._A = [_Sampler(a) for a in model.A]
        self._B = [_Sampler(b) for b in model.B]
        self._D = [_Sampler(d) for d in model.D]
        self._rng = np.random.default_rng(seed)
        self._state: np.ndarray | None = None

    @property
    def n(self):
        return None if self._state is None else self._state.shape[0]

    @property
    def state(self) -> np.ndarray:
        """True hidden states, int64 ``(n, F)`` (a read-only view)."""
        s = self._require().view()
        s.flags.writeable = False
        return s

    def reset(self, n: int, seed=None) -> np.ndarray:
        """Start n worlds from ``D``; ``seed`` (if given) re-seeds the generator first, otherwise
        the stream continues. Returns the first observations, int64 ``(n, M)``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        u = self._rng.random((int(n), len(self._D)))
        self._state = np.stack([d.sample((), u[:, f]) for f, d in enumerate(self._D)], axis=1)
        return self._observe()

    def step(self, actions) -> np.ndarray:
        """Apply ``actions`` int ``(n, F)`` (as returned by ``Engine.step``; uncontrolled factors
        take action 0) to every world. Returns the new observations, int64 ``(n, M)``."""
        s = self._require()
        act = check_actions(actions, self.num_controls, s.shape[0], "n")
        u = self._rng.random(s.shape)
        # all factors move from the same old state (a synchronous update, as B_dependencies assume)
        self._state = np.stack(
            [b.sample(tuple(s[:, d] for d in self.model.B_dependencies[f]) + (act[:, f],), u[:, f])
             for f, b in enumerate(self._B)], axis=1)
        return self._observe()

    def _observe(self) -> np.ndarray:
        s = self._state
        u = self._rng.random((s.shape[0], len(self._A)))
        return np.stack([a.sample(tuple(s[:, d] for d in self.model.A_dependencies[m]), u[:, m])
                         for m, a in enumerate(self._A)], axis=1)

    def _require(self) -> np.ndarray:
        if self._state is None:
            raise RuntimeError(f"{type(self).__name__}: call reset(n) before step() or reading the state")
        return self._state


# The concrete environments subclass GenerativeProcess, so they are imported after it.
from .grid_world import GridWorldEnv  # noqa: E402
from .tmaze import TMazeEnv  # noqa: E402
from .worlds import World  # noqa: E402
from .foraging import Foraging  # noqa: E402
from .social import SocialNetwork, barabasi_albert, consensus_polarization, watts_strogatz  # noqa: E402
