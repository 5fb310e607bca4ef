"""`TMazeEnv`: n agents in the classic T-maze of :func:`fa_gpu.models.tmaze`."""
from __future__ import annotations

import numpy as np

from .. import models
from . import GenerativeProcess

__all__ = ["TMazeEnv"]


class TMazeEnv(GenerativeProcess):
    """n independent T-mazes; each draws its reward condition at ``reset`` (50/50, from ``D``).

    Factors: 0 location (centre, right arm, left arm, cue; action a moves to location a, arms not
    absorbing), 1 reward condition (reward on right / left; fixed, its only action is 0).
    Modalities: 0 location, 1 reward outcome (none, reward, loss), 2 cue (cue right, cue left).
    See :func:`fa_gpu.models.tmaze` for the probabilities.

    ``reset(n) -> obs`` int64 ``(n, 3)``; ``step(actions)`` takes int ``(n, 2)`` (as from
    ``Engine.step``) and returns int64 ``(n, 3)``; ``true_state`` is int64 ``(n, 2)``.
    """

    def __init__(self, *, cue_validity: float = 0.95, reward_prob: float = 0.98, seed: int = 0):
        super().__init__(models.tmaze(cue_validity=cue_validity, reward_prob=reward_prob), seed=seed)

    @property
    def location(self) -> np.ndarray:
        """Location of every agent, int64 ``(n,)`` (index into ``models.TMAZE_LOCATIONS``)."""
        return self.true_state[:, 0]

    @property
    def condition(self) -> np.ndarray:
        """Reward condition of every maze, int64 ``(n,)``; its rewarding arm is ``condition + 1``."""
        return self.true_state[:, 1]

    @property
    def at_rewarding_arm(self) -> np.ndarray:
        """Whether each agent stands in its maze's rewarding arm, bool ``(n,)``."""
        return self.location == self.condition + 1
