"""PNG summary (and, for foraging, a GIF) of a trajectory store written by ``fa-gpu simulate``.

The figures use what ``simulate`` records about the *world* beside the agents' actions and
observations (row t of each: the world after step t's actions), so the last row is exactly the
figure ``simulate`` prints: ``true_state`` of the grid world and T-maze (the recorded
observations would not do: in the grid world an observation is a uniformly random cell with
probability ``noise``); ``patch_agents``, ``patch_food`` and the ``food_grid`` /
``occupancy_grid`` frames of foraging; ``posts``, ``beliefs`` and ``truth`` of the social
network. Every array read is checked like user input (shape, dtype, range).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_run", "animate_run", "foraging_shares"]


def _integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _grid(fig, read, attrs) -> str:
    from matplotlib.colors import LogNorm

    side, goal = int(attrs["side"]), int(attrs["goal"])
    state = read("true_state", (read.n, 1), 0, side * side)
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


def _tmaze(fig, read, attrs) -> str:
    from .models import TMAZE_LOCATIONS

    state = read("true_state", (read.n, 2), 0, 4)
    if np.any(state[:, :, 1] >= 2):
        raise ValueError(f"{read.path}: true_state holds reward conditions outside [0, 2)")
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


def foraging_shares(patch_agents) -> tuple[tuple[int, int], np.ndarray]:
    """``((first, last), shares)``: steps ``first..last`` (1-based, the run's second half, all
    of it for one step) and each patch's share of the agents on patch cells over them, float64
    ``(P,)`` (NaN when no agent stood on a patch then), from ``patch_agents`` int ``(T, P)``
    (row t: agents on each patch after step t + 1), T >= 1."""
    T = len(patch_agents)
    total = np.asarray(patch_agents[T // 2:], dtype=np.float64).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (T // 2 + 1, T), total / total.sum()


def _smooth(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over ``w`` rows (fewer at the start) of ``x`` ``(T, ...)``."""
    c = np.cumsum(np.concatenate([np.zeros((1,) + x.shape[1:]), x]), axis=0)
    lo = np.maximum(np.arange(1, len(x) + 1) - w, 0)
    return (c[1:] - c[lo]) / (np.arange(1, len(x) + 1) - lo)[:, None]


def _foraging(fig, read, attrs) -> str:
    from matplotlib.patches import Patch

    rates = np.asarray(attrs["regrowth"], dtype=np.float64)
    P, cap = len(rates), int(attrs["capacity"])
    agents = read("patch_agents", (P,), 0, read.n + 1)            # (T, P)
    food = read("patch_food", (P,), 0, cap + 1)
    T = len(agents)
    steps = np.arange(1, T + 1)
    w = max(1, T // 25)
    axes = fig.subplot_mosaic([["agents", "shares"], ["food", "shares"]], width_ratios=[2, 1])
    for p in range(P):
        kw = dict(color=f"C{p}", label=f"patch {p}: regrowth {rates[p]:g}")
        axes["agents"].plot(steps, _smooth(agents[:, [p]].astype(float), w)[:, 0], **kw)
        axes["food"].plot(steps, food[:, p], **kw)
    axes["agents"].set(ylabel="agents on the patch cell" + (f"\n(mean of {w} steps)" if w > 1 else ""))
    axes["agents"].set_ylim(bottom=0)
    axes["food"].set(xlabel="step", ylabel="food units in the patch", ylim=(-0.02 * cap, 1.02 * cap))
    for k in ("agents", "food"):
        _integer_steps(axes[k])
    axes["agents"].legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False)
    (lo, hi), shares = foraging_shares(agents)
    x = np.arange(P)
    bars = axes["shares"]
    bars.bar(x - 0.2, rates / rates.sum(), 0.4, color="tab:gray")
    bars.bar(x + 0.2, shares, 0.4, color=[f"C{p}" for p in range(P)], edgecolor="black")
    on = agents[lo - 1:].sum(axis=1).mean() / read.n
    bars.set(xticks=x, xlabel="patch", ylabel="share",
             title=f"steps {lo}..{hi}: {on:.1%} of agents\non patch cells, shared among patches")
    bars.legend(handles=[Patch(color="tab:gray", label="share of regrowth"),
                         Patch(facecolor="white", edgecolor="black",
                               label="share of agents on patches\n(colour of the patch)")],
                loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return f"foraging {attrs['side']}x{attrs['side']}, capacity {cap}"


def _social(fig, read, attrs) -> str:
    posts = read("posts", (3,), 0.0, 1.0)                         # (T, 3): consensus, polarization, accuracy
    beliefs = read("beliefs", (3,), 0.0, 1.0)
    steps = np.arange(1, len(posts) + 1)
    left, right = fig.subplots(1, 2)
    left.plot(steps, posts[:, 0], color="tab:blue", label="consensus of posts")
    left.plot(steps, beliefs[:, 0], color="tab:blue", linestyle="--", label="consensus of beliefs")
    left.plot(steps, posts[:, 2], color="tab:green", linestyle=":", label="posting the hidden state")
    left.set(xlabel="step", ylabel="share of agents", ylim=(0, 1.02),
             title="consensus: share holding the commonest view")
    right.plot(steps, posts[:, 1], color="tab:red", label="polarization of posts")
    right.plot(steps, beliefs[:, 1], color="tab:red", linestyle="--", label="polarization of beliefs")
    right.set(xlabel="step", ylabel="polarization (0: one view, 1: equal camps)", ylim=(0, 1.02),
              title="polarization")
    for ax in (left, right):
        _integer_steps(ax)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False, ncols=2)
    graph = "Watts-Strogatz" if attrs["graph"] == "ws" else "Barabasi-Albert"
    return (f"social network ({graph}, degree {attrs['degree']}), {attrs['hidden_states']} states, "
            f"cue accuracy {attrs['cue_accuracy']:g}, volatility {attrs['volatility']:g}")


_PLOTS = {"grid": _grid, "tmaze": _tmaze, "foraging": _foraging, "social": _social}


class _Reader:
    """The store's extra arrays, checked like any input: ``read(name, tail, lo, hi)`` is rows
    ``[:rows]`` of array ``name`` of shape ``(rows, *tail)`` with values in ``[lo, hi)`` (float
    arrays: ``[lo, hi]``), as int64 or float64; ``rows`` defaults to the written steps."""

    def __init__(self, path, attrs, steps: int):
        import zarr

        self.path, self.steps, self.n = path, steps, int(attrs["n_agents"])
        self.group = zarr.open_group(path, mode="r", zarr_format=3)

    def __call__(self, name, tail, lo, hi, rows=None) -> np.ndarray:
        path = self.path
        if name not in self.group:
            raise ValueError(f"{path}: no {name} array (written by an older `fa-gpu simulate`?); "
                             f"run simulate again")
        arr = self.group[name]
        rows = self.steps if rows is None else rows
        floats = isinstance(lo, float)
        kinds = "f" if floats else "iu"
        if arr.ndim != 1 + len(tail) or tuple(arr.shape[1:]) != tuple(tail) or arr.shape[0] < rows \
                or arr.dtype.kind not in kinds:
            raise ValueError(f"{path}: {name} must be {'float' if floats else 'integer'} "
                             f"({rows}+, {', '.join(map(str, tail))}); got {arr.dtype} {arr.shape}")
        data = np.asarray(arr[:rows], dtype=np.float64 if floats else np.int64)
        hi_ok = (data <= hi) if floats else (data < hi)
        if data.size and not np.all((data >= lo) & hi_ok):
            raise ValueError(f"{path}: {name} holds values outside [{lo}, {hi}{']' if floats else ')'}")
        return data


def _frames(read, attrs):
    """``(steps (F,), food (F, side, side), agents (F, side, side))`` of a foraging store."""
    side, every = int(attrs["side"]), int(attrs["frame_every"])
    if every < 1:
        raise ValueError(f"{read.path}: frame_every must be >= 1, got {every}")
    rows = read.steps // every + 1
    food = read("food_grid", (side, side), 0, int(attrs["capacity"]) + 1, rows)
    agents = read("occupancy_grid", (side, side), 0, read.n + 1, rows)
    return np.arange(rows) * every, food, agents


def _open(path):
    """(attrs, reader) of a ``simulate`` store; ValueError for another store or no steps."""
    from .runtime.recorder import read_store

    store = read_store(path)
    attrs = store["attrs"]
    if attrs.get("env") not in _PLOTS:
        raise ValueError(f"{path}: plot needs a store written by `fa-gpu simulate` (attribute env "
                         f"{' or '.join(map(repr, _PLOTS))}); got env={attrs.get('env')!r}")
    if store["steps_written"] == 0:
        raise ValueError(f"{path}: the store holds no written steps")
    return attrs, _Reader(path, attrs, store["steps_written"])


def _figure(size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_run(path, out=None) -> Path:
    """Write a PNG of the run stored at ``path`` by ``fa-gpu simulate`` to ``out`` (default
    ``path + ".png"``) and return its path.

    Grid world: the share of agents whose true position is the goal after each step, and a
    log-scale heat map of the cells visited. T-maze: the share of agents in the rewarding arm,
    the other arm, the centre and the cue after each step, and the first arm each agent chose.
    Foraging: agents on each patch cell (a trailing mean over T/25 steps) and the food in it
    after each step, and each patch's share of the agents on patches over the second half of
    the run next to its share of the regrowth (the ideal free distribution would match them).
    Social: consensus and polarization of the posts and of the beliefs, and the share posting
    the hidden state, after each step.
    Uses matplotlib's Agg canvas directly, so no global backend is switched. Raises
    ``ValueError`` for a store ``simulate`` did not write or one without written steps.
    """
    attrs, read = _open(path)
    fig = _figure((12, 6.5) if attrs["env"] == "foraging" else (11, 4.5))
    what = _PLOTS[attrs["env"]](fig, read, attrs)
    sep = "\n" if len(what) > 60 else ": "  # a long world description gets its own line
    fig.suptitle(f"{what}{sep}{read.n:,} agents, {read.steps} steps, backend "
                 f"{attrs.get('backend')}, seed {attrs.get('seed')}")
    out = Path(out) if out is not None else Path(str(path).rstrip("/\\") + ".png")
    fig.savefig(out, dpi=100)
    return out


def animate_run(path, out, max_frames: int = 100, fps: int = 8) -> tuple[Path, int]:
    """Write a GIF of the foraging grid stored at ``path`` by ``fa-gpu simulate --env
    foraging`` to ``out`` and return ``(out, frames)``: food units and agents in each cell
    after the recorded steps (the store keeps both grids every ``frame_every`` steps), at most
    ``max_frames`` frames (every m-th recorded one, m as small as that allows), ``fps`` a
    second. Patch cells are outlined. Uses matplotlib.animation's Pillow writer (Pillow comes
    with matplotlib). Raises ``ValueError`` for a store without a foraging run."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.patches import Rectangle

    for name, value, low in (("max_frames", max_frames, 1), ("fps", fps, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    attrs, read = _open(path)
    if attrs["env"] != "foraging":
        raise ValueError(f"{path}: --animate needs a foraging run (env 'foraging'); got env "
                         f"{attrs['env']!r}")
    steps, food, agents = _frames(read, attrs)
    pick = np.arange(0, len(steps), -(-len(steps) // max_frames))
    side, cap = int(attrs["side"]), int(attrs["capacity"])
    fig = _figure((9, 4.2))
    left, right = fig.subplots(1, 2)
    im_food = left.imshow(food[0], cmap="YlGn", vmin=0, vmax=cap)
    im_agents = right.imshow(agents[0], cmap="magma", vmin=0, vmax=max(1, int(agents[pick].max())))
    fig.colorbar(im_food, ax=left, label="food units")
    fig.colorbar(im_agents, ax=right, label="agents in the cell")
    for ax, title in ((left, "food"), (right, "agents")):
        ax.set(title=title, xticks=[], yticks=[])
        for c in attrs["patch_cells"]:
            r, col = divmod(int(c), side)
            ax.add_patch(Rectangle((col - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="tab:blue", lw=1.5))
    head = fig.suptitle("")

    def draw(i):
        im_food.set_data(food[i])
        im_agents.set_data(agents[i])
        head.set_text(f"foraging {side}x{side}, {read.n:,} agents: after step {steps[i]}")
        return im_food, im_agents, head

    out = Path(out)
    FuncAnimation(fig, draw, frames=pick, blit=False).save(out, writer=PillowWriter(fps=fps), dpi=80)
    return out, len(pick)
