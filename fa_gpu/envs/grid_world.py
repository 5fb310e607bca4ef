"""`GridWorldEnv`: n agents on the noisy grid of :func:`fa_gpu.models.grid_world`."""
from __future__ import annotations

import numpy as np

from .. import models
from . import GenerativeProcess

__all__ = ["GridWorldEnv"]


class GridWorldEnv(GenerativeProcess):
    """n independent ``side x side`` grids, each with one agent.

    One factor (cell ``row * side + col``), 5 actions (:data:`fa_gpu.models.GRID_ACTIONS`:
    stay, up, down, left, right; walls stop a move), one modality: the observed cell, the true
    one with probability ``1 - noise + noise / side**2``, otherwise uniformly random.

    Parameters
    ----------
    side, noise, goal :
        As in :func:`fa_gpu.models.grid_world` (goal defaults to the last cell).
    start : int, ``(row, col)`` or ``"uniform"``
        Start cell of every agent, or a uniformly random cell per agent.
    seed : int
        Key of the counter-based draws (``reset(n, seed)`` replaces it); also draws a ``"random"`` goal.

    ``reset(n) -> obs`` and ``step(actions) -> obs`` use int64 ``(n, 1)`` observations and int
    ``(n, 1)`` actions; ``true_state`` is int64 ``(n, 1)``.
    """

    def __init__(self, side: int = 5, *, noise: float = 0.1, goal=None, start=0, seed: int = 0):
        model = models.grid_world(side, noise=noise, goal=goal, start=start, seed=seed)
        super().__init__(model, seed=seed)
        self.side, self.goal = model.side, model.goal

    @property
    def positions(self) -> np.ndarray:
        """``(row, col)`` of every agent, int64 ``(n, 2)``."""
        s = self.true_state[:, 0]
        return np.stack([s // self.side, s % self.side], axis=1)

    @property
    def at_goal(self) -> np.ndarray:
        """Whether each agent is on the goal cell, bool ``(n,)``; ``at_goal.mean()`` is the share."""
        return self.true_state[:, 0] == self.goal
