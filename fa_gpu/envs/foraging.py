"""`Foraging`: agents of every type on one shared grid, competing for food patches that deplete
when eaten and regrow."""
from __future__ import annotations

import numpy as np

from ..models import FORAGING_ACTIONS, grid_moves
from .worlds import World, check_int, check_real, host

__all__ = ["Foraging"]

# draw ids of the counter-based generator (see fa_gpu.envs.worlds)
_D_START, _D_EAT, _D_POS_NOISE, _D_POS_CELL = 0, 1, 2, 3
_D_REGROW = 0  # site draw of a patch
EAT = FORAGING_ACTIONS.index("eat")


class Foraging(World):
    """N agents on one ``side x side`` grid with food patches (cell ``row * side + col``).

    Parameters
    ----------
    side : int >= 2
    patches : int or sequence of cells
        How many patch cells to place at distinct cells drawn with ``seed``
        (``numpy.random.default_rng(seed).choice``), or the cells themselves (flat indices or
        ``(row, col)`` pairs, distinct). Only patch cells ever hold food.
    regrowth : float or ``(P,)`` floats in ``[0, capacity]``
        Expected food units a patch regains per step: ``floor(r)`` units plus one more with
        probability ``r - floor(r)`` (a site draw of the patch), never above ``capacity``.
    capacity : int >= 1
        Units a patch holds when full (every patch starts full).
    seed : int
        Key of every draw; also places ``patches`` when it is an int.
    high : int, optional
        Food level "high" from this many units (default ``ceil(capacity / 2)``).
    observe_position : bool
        Add the noisy position modality (``side**2`` outcomes). Off by default: an egocentric
        model such as :func:`fa_gpu.models.foraging` has no use for it, and a ``side**2``-outcome
        modality makes every agent's expected free energy cost ``O(side**2)``.
    position_noise : float in [0, 1]
        With this probability the position observation is a uniformly random cell.
    xp : "numpy", "cupy" or an array module

    One step (all agents at once; actions :data:`fa_gpu.models.FORAGING_ACTIONS`: stay, up, down,
    left, right, eat; a move into the border stays put, "eat" stays):

    1. *eating*: each agent that eats asks its cell for one unit. A cell with ``F`` units and
       ``k`` eaters feeds ``min(F, k)`` of them: all when ``F >= k``, else the ``F`` with the
       lowest draw ``u(seed, agent, t, 1)`` (a fair lottery; ties by agent index). The cell
       loses the units it gave. Agents that did not eat, or lost the lottery, are not fed.
    2. *moving*: every other agent moves (simultaneously; cells hold any number of agents).
    3. *regrowth* of every patch (after eating, capped at ``capacity``).
    4. *observations* at the new cells.

    Observations int64 ``(N, M)``, modalities in order:

    - 0 food: 0 none (0 units), 1 low (``0 < F < high``), 2 high (``F >= high``) in the own cell;
    - 1 crowding: other agents in the own cell and its 4 neighbours: 0, 1, 2 (2 or more);
    - 2 fed: 1 when the agent ate a unit this step (0 after reset);
    - 3 position (only with ``observe_position``): the own cell with probability
      ``1 - position_noise``, else the uniform draw ``floor(u * side**2)``.

    Agents start at uniformly random cells (draw ``u(seed, agent, 0, 0)``).

    Attributes (on ``xp``): ``positions`` int64 ``(N,)``, ``food`` int64 ``(side**2,)``,
    ``fed`` int64 ``(N,)``; ``patch_cells`` int64 ``(P,)``, ``regrowth`` float64 ``(P,)``.
    """

    num_actions = len(FORAGING_ACTIONS)

    def __init__(self, side: int = 64, patches=8, regrowth=0.5, capacity: int = 10, seed: int = 0,
                 *, high: int | None = None, observe_position: bool = False,
                 position_noise: float = 0.1, xp="numpy"):
        super().__init__(seed, xp)
        self.side = check_int(side, "side", 2)
        S = self.side ** 2
        self.capacity = check_int(capacity, "capacity", 1)
        self.high = -(-self.capacity // 2) if high is None else check_int(high, "high", 1, self.capacity + 1)
        self.position_noise = check_real(position_noise, "position_noise", 0.0, 1.0)
        self.observe_position = bool(observe_position)
        if isinstance(patches, (int, np.integer)) and not isinstance(patches, bool):
            P = check_int(patches, "patches", 1, S + 1)
            cells = np.random.default_rng(self.seed).choice(S, P, replace=False)
        else:
            cells = self._cells(patches)
        rate = np.asarray(regrowth, dtype=np.float64)
        if rate.shape not in ((), cells.shape) or not np.all((rate >= 0) & (rate <= self.capacity)):
            raise ValueError(f"regrowth must be a number or {len(cells)} numbers in [0, capacity="
                             f"{self.capacity}], got {regrowth!r}")
        xp = self.xp
        self.num_obs = (3, 3, 2) + ((S,) if self.observe_position else ())
        self.patch_cells = xp.asarray(cells, dtype=xp.int64)
        self.regrowth = xp.asarray(np.broadcast_to(rate, cells.shape), dtype=xp.float64)
        self._moves = xp.asarray(np.concatenate([grid_moves(self.side),
                                                 np.arange(S)[:, None]], axis=1))  # eat: stay
        self.positions = self.food = self.fed = None

    def _cells(self, patches) -> np.ndarray:
        S, side = self.side ** 2, self.side
        arr = np.asarray(patches)
        if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 2):
            raise ValueError("patches must be an int count, cell indices (P,) or (row, col) pairs (P, 2)")
        if arr.ndim == 2:
            if ((arr < 0) | (arr >= side)).any():
                raise ValueError(f"patches (row, col) must lie in [0, {side})")
            arr = arr[:, 0] * side + arr[:, 1]
        if arr.size == 0 or ((arr < 0) | (arr >= S)).any() or np.unique(arr).size != arr.size:
            raise ValueError(f"patches must be distinct cells in [0, {S}), at least one")
        return arr.astype(np.int64)

    # -- dynamics ------------------------------------------------------------------------------
    def _reset(self, n: int):
        xp, S = self.xp, self.side ** 2
        self.positions = xp.minimum((self.agent_uniform(_D_START) * S).astype(xp.int64), S - 1)
        self.food = xp.zeros(S, dtype=xp.int64)
        self.food[self.patch_cells] = self.capacity
        self.fed = xp.zeros(n, dtype=xp.int64)
        return self._observe()

    def _step(self, a):
        xp, S = self.xp, self.side ** 2
        eaters = xp.flatnonzero(a == EAT)
        cell = self.positions[eaters]
        # lottery order inside each cell: by cell, then draw, then agent index
        u = self.agent_uniform(_D_EAT)[eaters]
        order = xp.lexsort(xp.stack([eaters.astype(xp.float64), u, cell.astype(xp.float64)]))
        sorted_cell = cell[order]
        rank = xp.arange(eaters.size) - xp.searchsorted(sorted_cell, sorted_cell, side="left")
        fed = xp.zeros_like(self.fed)
        fed[eaters[order]] = (rank < self.food[sorted_cell]).astype(xp.int64)
        self.food -= xp.minimum(self.food, xp.bincount(cell, minlength=S))
        self.positions = self._moves[self.positions, a]
        self.fed = fed
        r = self.regrowth
        whole = xp.floor(r)
        gain = whole + (self.site_uniform(self.patch_cells, _D_REGROW) < r - whole)
        cells = self.patch_cells
        self.food[cells] = xp.minimum(self.food[cells] + gain.astype(xp.int64), self.capacity)
        return self._observe()

    def occupancy(self):
        """Agents per cell, int64 ``(side**2,)``."""
        return self.xp.bincount(self.positions, minlength=self.side ** 2)

    def neighbourhood_counts(self):
        """Agents in each cell plus its 4 neighbours, int64 ``(side**2,)``."""
        occ = self.occupancy().reshape(self.side, self.side)
        nb = occ.copy()
        nb[1:] += occ[:-1]
        nb[:-1] += occ[1:]
        nb[:, 1:] += occ[:, :-1]
        nb[:, :-1] += occ[:, 1:]
        return nb.reshape(-1)

    def _observe(self):
        xp, pos = self.xp, self.positions
        f = self.food[pos]
        level = (f > 0).astype(xp.int64) + (f >= self.high)
        crowd = xp.minimum(self.neighbourhood_counts()[pos] - 1, 2)
        cols = [level, crowd, self.fed]
        if self.observe_position:
            S = self.side ** 2
            noisy = self.agent_uniform(_D_POS_NOISE) < self.position_noise
            rand = xp.minimum((self.agent_uniform(_D_POS_CELL) * S).astype(xp.int64), S - 1)
            cols.append(xp.where(noisy, rand, pos))
        return xp.stack(cols, axis=1)

    # -- checkpoints ---------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"positions": self.positions, "food": self.food, "fed": self.fed}

    def _set_state(self, state: dict, n: int):
        S = self.side ** 2
        pos = self._field(state, "positions", (n,), "iu")
        food = self._field(state, "food", (S,), "iu")
        fed = self._field(state, "fed", (n,), "iu")
        if ((pos < 0) | (pos >= S)).any():
            raise ValueError(f"state['positions'] must be cells in [0, {S})")
        if ((food < 0) | (food > self.capacity)).any():
            raise ValueError(f"state['food'] must lie in [0, capacity={self.capacity}]")
        patch = np.zeros(S, dtype=bool)
        patch[host(self.patch_cells)] = True
        if (food[~patch] != 0).any():
            raise ValueError("state['food'] must be 0 outside the patch cells")
        if ((fed != 0) & (fed != 1)).any():
            raise ValueError("state['fed'] must be 0 or 1")
        xp = self.xp

        def apply():
            self.positions = xp.asarray(pos, dtype=xp.int64)
            self.food = xp.asarray(food, dtype=xp.int64)
            self.fed = xp.asarray(fed, dtype=xp.int64)
        return apply
