"""PNG summary of a trajectory store written by ``fa-gpu simulate``.

The figures use the world's *true* hidden states, which ``simulate`` records as the store's
``true_state`` array (row t: the states after step t's actions), so the share at the goal after
the last step is exactly the figure ``simulate`` prints. The recorded observations would not do:
in the grid world an observation is a uniformly random cell with probability ``noise``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_run"]

_FACTORS = {"grid": 1, "tmaze": 2}


def _integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _grid(fig, state, attrs) -> str:
    from matplotlib.colors import LogNorm

    side, goal = int(attrs["side"]), int(attrs["goal"])
    pos = state[:, :, 0]                                           # (T, N) true cells
    steps = np.arange(1, len(pos) + 1)
    left, right = fig.subplots(1, 2)
    share = (pos == goal).mean(axis=1)
    left.plot(steps, share)
    left.annotate(f"{share[-1]:.1%} after step {steps[-1]}", (steps[-1], share[-1]),
                  xytext=(-8, -14), textcoords="offset points", ha="right")
    left.set(xlabel="step", ylabel="share of agents at the goal (true position)", ylim=(0, 1.02))
    _integer_steps(left)
    visits = np.bincount(pos.ravel(), minlength=side * side).reshape(side, side).astype(float)
    visits[visits == 0] = np.nan                                   # never visited: blank, not log(0)
    im = right.imshow(visits, cmap="viridis", norm=LogNorm())
    right.plot(goal % side, goal // side, marker="*", color="red", markersize=14, linestyle="none",
               label="goal")
    right.set(title="visits (true cells)", xlabel="column", ylabel="row",
              xticks=range(side) if side <= 10 else [], yticks=range(side) if side <= 10 else [])
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)  # off the cells
    fig.colorbar(im, ax=right, label="agent-steps in the cell (log scale)")
    return f"grid world {side}x{side}, observation noise {attrs.get('noise')}"


def _tmaze(fig, state, attrs) -> str:
    from .models import TMAZE_LOCATIONS

    loc, cond = state[:, :, 0], state[:, :, 1]                     # (T, N) each
    right_arm = cond + 1                                           # the rewarding arm's location
    in_arm = (loc == 1) | (loc == 2)
    steps = np.arange(1, len(loc) + 1)
    left, right = fig.subplots(1, 2)
    left.plot(steps, (loc == right_arm).mean(axis=1), label="rewarding arm")
    left.plot(steps, (in_arm & (loc != right_arm)).mean(axis=1), label="other arm")
    for k in (0, 3):
        left.plot(steps, (loc == k).mean(axis=1), linestyle=":", label=TMAZE_LOCATIONS[k])
    left.set(xlabel="step", ylabel="share of agents (true location)", ylim=(0, 1.02))
    left.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _integer_steps(left)
    # a trial: from the start to the first arm entered (simulate runs one trial per agent)
    entered = in_arm.any(axis=0)
    first = np.argmax(in_arm, axis=0)
    agents = np.arange(loc.shape[1])
    correct = entered & (loc[first, agents] == right_arm[first, agents])
    shares = [correct.mean(), (entered & ~correct).mean(), (~entered).mean()]
    bars = right.bar(["rewarding arm", "other arm", "no arm yet"], shares,
                     color=["tab:green", "tab:red", "tab:gray"])
    right.bar_label(bars, labels=[f"{s:.1%}" for s in shares])
    right.set(title="first arm chosen in the trial", ylabel="share of agents", ylim=(0, 1.1))
    return "T-maze"


_PLOTS = {"grid": _grid, "tmaze": _tmaze}


def _true_state(path, attrs, steps: int) -> np.ndarray:
    """The store's ``true_state`` rows ``[:steps]``, checked like any input: int64 ``(T, N, F)``."""
    import zarr

    group = zarr.open_group(path, mode="r", zarr_format=3)
    if "true_state" not in group:
        raise ValueError(f"{path}: no true_state array (written by an older `fa-gpu simulate`?); "
                         f"run simulate again")
    arr = group["true_state"]
    n, width = int(attrs["n_agents"]), _FACTORS[attrs["env"]]
    if arr.ndim != 3 or arr.shape[1:] != (n, width) or arr.dtype.kind not in "iu":
        raise ValueError(f"{path}: true_state must be integer (steps, {n}, {width}); got "
                         f"{arr.dtype} {arr.shape}")
    state = np.asarray(arr[:steps], dtype=np.int64)
    hi = [int(attrs["side"]) ** 2] if attrs["env"] == "grid" else [4, 2]
    if state.size and (state.min() < 0 or np.any(state.max(axis=(0, 1)) >= hi)):
        raise ValueError(f"{path}: true_state holds states outside [0, {hi})")
    return state


def plot_run(path, out=None) -> Path:
    """Write a PNG of the run stored at ``path`` by ``fa-gpu simulate`` to ``out`` (default
    ``path + ".png"``) and return its path.

    Grid world: the share of agents whose true position is the goal after each step, and a
    log-scale heat map of the cells visited. T-maze: the share of agents in the rewarding arm,
    the other arm, the centre and the cue after each step, and the first arm each agent chose.
    Uses matplotlib's Agg canvas directly, so no global backend is switched. Raises
    ``ValueError`` for a store ``simulate`` did not write or one without written steps.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .runtime.recorder import read_store

    store = read_store(path)
    attrs = store["attrs"]
    draw = _PLOTS.get(attrs.get("env"))
    if draw is None:
        raise ValueError(f"{path}: plot needs a store written by `fa-gpu simulate` (attribute env "
                         f"{' or '.join(map(repr, _PLOTS))}); got env={attrs.get('env')!r}")
    state = _true_state(path, attrs, store["steps_written"])
    if len(state) == 0:
        raise ValueError(f"{path}: the store holds no written steps")
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    what = draw(fig, state, attrs)
    fig.suptitle(f"{what}: {state.shape[1]:,} agents, {len(state)} steps, backend "
                 f"{attrs.get('backend')}, seed {attrs.get('seed')}")
    out = Path(out) if out is not None else Path(str(path).rstrip("/\\") + ".png")
    fig.savefig(out, dpi=100)
    return out
