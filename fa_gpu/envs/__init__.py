"""Vectorized generative processes (environments): n independent worlds stepped together.

A process holds the true hidden states of n agents' worlds, ``state`` ``(n, F)`` int64, and
samples from a :class:`fa_gpu.GenerativeModel`'s own arrays: ``s_0 ~ D``, ``s' ~ B[f][:, s, u]``,
``o_m ~ A[m][:, s]``. Pure NumPy, no per-agent Python loop; it plugs into the engine as::

    obs = env.reset(n)
    for _ in range(T):
        obs = env.step(engine.step(obs))

Randomness is counter-based, like the engine's action draws (:mod:`fa_gpu.rng`): every draw is
keyed by (seed, the agent's global index, the process's step counter, a draw index), so a world's
trajectory does not depend on how many worlds are stepped together: the worlds of agents
``lo..hi-1`` (``reset(n, seed, agent_offset=lo)``) see exactly what they see inside one process of
all agents. The process's whole randomness state is its seed and step counter, which
:meth:`GenerativeProcess.state` returns with the true hidden states (for checkpoints and resumed
runs).

The interface an environment offers ``Engine.run``: ``reset(n) -> obs`` and ``step(actions) ->
obs`` (int ``(n, M)``), and, declared so a model of another world is refused before the first
step, ``num_obs`` (M outcome counts) and ``num_controls`` (F action counts): ``Engine.run``
raises a ValueError naming both when they differ from the model's. An environment of your own
that leaves them out is not checked.

Shared multi-agent worlds (every agent's observation may depend on the others'; several agent
types in one world; NumPy or CuPy) follow :class:`World` (:mod:`fa_gpu.envs.worlds`):
:class:`Foraging` and :class:`SocialNetwork`.
"""
from __future__ import annotations

import numpy as np

from .. import rng
from ..model import GenerativeModel, check_actions

__all__ = ["GenerativeProcess", "GridWorldEnv", "TMazeEnv", "ENV_DRAW", "World", "Foraging", "SocialNetwork",
           "watts_strogatz", "barabasi_albert", "consensus_polarization"]


#: first draw index of a process's draws: the engine's action draws, with the same kind of key,
#: use draw indices 0..F-1, so an environment and an engine given the same seed stay independent
ENV_DRAW = 1 << 32


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


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
    seed : int in [0, 2**64)
        Key of the counter-based draws (``reset(n, seed)`` replaces it).

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
        self._seed = _seed(seed)
        self._offset = 0
        self._clock = 0  # steps drawn so far (reset included): the counter of the draws
        self._state: np.ndarray | None = None

    @property
    def n(self):
        return None if self._state is None else self._state.shape[0]

    @property
    def true_state(self) -> np.ndarray:
        """True hidden states, int64 ``(n, F)`` (a read-only view)."""
        s = self._require().view()
        s.flags.writeable = False
        return s

    def reset(self, n: int, seed=None, agent_offset: int = 0) -> np.ndarray:
        """Start n worlds from ``D``; ``seed`` (if given) replaces the key of the draws and
        restarts their counter, otherwise the draws go on from where they are. ``agent_offset``:
        global index of world 0 (these are the worlds of agents ``agent_offset..+n-1`` of a larger
        population). Returns the first observations, int64 ``(n, M)``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if (isinstance(agent_offset, bool) or not isinstance(agent_offset, (int, np.integer))
                or not 0 <= agent_offset <= 2**62):
            raise ValueError(f"agent_offset must be an integer in [0, 2**62], got {agent_offset!r}")
        if seed is not None:
            self._seed, self._clock = _seed(seed), 0
        self._offset = int(agent_offset)
        u = self._uniforms(int(n), len(self._D))
        self._state = np.stack([d.sample((), u[:, f]) for f, d in enumerate(self._D)], axis=1)
        return self._observe()

    def step(self, actions) -> np.ndarray:
        """Apply ``actions`` int ``(n, F)`` (as returned by ``Engine.step``; uncontrolled factors
        take action 0) to every world. Returns the new observations, int64 ``(n, M)``."""
        s = self._require()
        act = check_actions(actions, self.num_controls, s.shape[0], "n")
        u = self._uniforms(s.shape[0], s.shape[1])
        # all factors move from the same old state (a synchronous update, as B_dependencies assume)
        self._state = np.stack(
            [b.sample(tuple(s[:, d] for d in self.model.B_dependencies[f]) + (act[:, f],), u[:, f])
             for f, b in enumerate(self._B)], axis=1)
        return self._observe()

    def state(self) -> dict:
        """Everything needed to continue this process (copies): ``true_state`` int64 ``(n, F)``,
        ``seed``, ``clock`` (draws counter), ``agent_offset``. :meth:`set_state` takes it back."""
        return {"true_state": self._require().copy(), "seed": np.uint64(self._seed),
                "clock": np.int64(self._clock), "agent_offset": np.int64(self._offset)}

    def set_state(self, state: dict) -> None:
        """Continue from :meth:`state`'s dict (e.g. read back from a checkpoint). Checked like
        user input: the keys, an integer ``(n, F)`` ``true_state`` within ``num_states``, a seed in
        [0, 2**64), a non-negative clock and offset; on error nothing changes."""
        if not isinstance(state, dict) or set(state) != {"true_state", "seed", "clock", "agent_offset"}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError("set_state needs a dict with keys agent_offset, clock, seed, true_state "
                             f"(from state()); got {got}")
        ts = np.asarray(state["true_state"])
        F = len(self.num_states)
        if ts.dtype.kind not in "iu" or ts.ndim != 2 or ts.shape[1] != F or ts.shape[0] < 1:
            raise ValueError(f"true_state must be an integer array of shape (n, {F}); got "
                             f"{ts.dtype} {ts.shape}")
        for f, S in enumerate(self.num_states):
            if ts[:, f].min() < 0 or ts[:, f].max() >= S:
                raise ValueError(f"true_state[:, {f}] must lie in [0, {S}); got values in "
                                 f"[{ts[:, f].min()}, {ts[:, f].max()}]")
        scalars = {}
        for k, hi in (("seed", 2**64), ("clock", 2**62), ("agent_offset", 2**62)):
            v = np.asarray(state[k])
            if v.shape != () or v.dtype.kind not in "iu" or not 0 <= int(v) < hi:
                raise ValueError(f"{k} must be an integer in [0, {hi}); got {state[k]!r}")
            scalars[k] = int(v)
        self._state = ts.astype(np.int64)
        self._seed, self._clock, self._offset = scalars["seed"], scalars["clock"], scalars["agent_offset"]

    def _uniforms(self, n: int, k: int) -> np.ndarray:
        """float64 ``(n, k)``: the next draw of k uniforms for each of the n worlds (keyed by the
        seed, the world's global index, the clock and ``ENV_DRAW + j``); the clock moves on."""
        agents = np.arange(self._offset, self._offset + n, dtype=np.uint64)[:, None]
        u = rng.uniform(self._seed, agents, self._clock, ENV_DRAW + np.arange(k, dtype=np.uint64)[None, :])
        self._clock += 1
        return u

    def _observe(self) -> np.ndarray:
        s = self._state
        u = self._uniforms(s.shape[0], len(self._A))
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
