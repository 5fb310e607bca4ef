"""PNG summary of a trajectory store written by ``fa-gpu simulate`` (needs matplotlib and zarr).

Positions come from the recorded *observations*, which is what the store holds: in the grid
world an observation is the true cell except, with probability ``noise``, a uniformly random
cell, so the plotted shares are the observed ones (the true share at the goal is about
``(observed - noise / S) / (1 - noise)``). T-maze locations are observed exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_run"]


def _grid(fig, obs, attrs) -> str:
    side, goal = int(attrs["side"]), int(attrs["goal"])
    pos = obs[:, :, 0]                                             # (T, N) observed cells
    left, right = fig.subplots(1, 2)
    left.plot(np.arange(len(pos)), (pos == goal).mean(axis=1))
    left.set(xlabel="step", ylabel="share of agents observed at the goal", ylim=(0, 1))
    visits = np.bincount(pos.ravel(), minlength=side * side).reshape(side, side) / pos.size
    im = right.imshow(visits, cmap="viridis")
    right.plot(goal % side, goal // side, marker="*", color="red", markersize=14, linestyle="none",
               label="goal")
    right.set(title="visits (observed cells)", xlabel="column", ylabel="row")
    right.legend(loc="upper left", fontsize="small")
    fig.colorbar(im, ax=right, label="share of agent-steps")
    return f"grid world {side}x{side}; positions as observed (noise {attrs.get('noise')})"


def _tmaze(fig, obs, attrs) -> str:
    from .models import TMAZE_LOCATIONS

    loc, outcome = obs[:, :, 0], obs[:, :, 1]                      # (T, N) each
    left, right = fig.subplots(1, 2)
    steps = np.arange(len(obs))
    left.plot(steps, (outcome == 1).mean(axis=1), label="reward")
    left.plot(steps, (outcome == 2).mean(axis=1), label="loss")
    left.set(xlabel="step", ylabel="share of agents", ylim=(0, 1))
    left.legend()
    occupancy = np.stack([(loc == k).mean(axis=1) for k in range(len(TMAZE_LOCATIONS))])
    im = right.imshow(occupancy, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    right.set(title="location", xlabel="step", yticks=range(len(TMAZE_LOCATIONS)),
              yticklabels=TMAZE_LOCATIONS)
    fig.colorbar(im, ax=right, label="share of agents")
    return "T-maze"


_PLOTS = {"grid": _grid, "tmaze": _tmaze}


def plot_run(path, out=None) -> Path:
    """Write a PNG of the run stored at ``path`` to ``out`` (default ``path + ".png"``).

    Grid world: share of agents at the goal per step, and a heat map of visited cells. T-maze:
    share of reward and loss outcomes per step, and location occupancy over time. Returns the
    PNG's path. Uses matplotlib's Agg canvas directly, so no global backend is switched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .runtime.recorder import read_store

    store = read_store(path)
    attrs, obs = store["attrs"], store["obs"]                      # obs: (T, N, M) int64
    draw = _PLOTS.get(attrs.get("env"))
    if draw is None:
        raise ValueError(f"{path}: plot needs a store written by `fa-gpu simulate` (attribute env "
                         f"{' or '.join(map(repr, _PLOTS))}); got env={attrs.get('env')!r}")
    if len(obs) == 0:
        raise ValueError(f"{path}: the store holds no written steps")
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    what = draw(fig, obs, attrs)
    fig.suptitle(f"{what}: {obs.shape[1]} agents, {len(obs)} steps, backend "
                 f"{attrs.get('backend')}, seed {attrs.get('seed')}")
    out = Path(out) if out is not None else Path(str(path).rstrip("/\\") + ".png")
    fig.savefig(out, dpi=100)
    return out
