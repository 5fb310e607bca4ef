"""Shared worlds: what the world's own step costs next to the engine's, rates at scale, and the
ideal-free-distribution demonstration. Prints tables; asserts nothing.

    python benchmarks/worlds.py            # the issue's sizes (N = 1e5 and 1e6; minutes)
    python benchmarks/worlds.py --quick    # small sizes, seconds

Targets (issue 13, numba float32): the world step <= 25% of the whole step at N = 1e5 for both
worlds; Foraging 64x64 with 1e5 agents >= 500k agent-steps/s; SocialNetwork 1e6 agents < 2 s
per step.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fa_gpu
from fa_gpu import envs, models


def timed_steps(engine, world, steps: int, warmup: int = 2):
    """Mean seconds per step of the engine and of the world, after ``warmup`` steps."""
    obs = world.reset(engine.n_agents)
    t_eng = t_world = 0.0
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        a = engine.step(obs)
        t1 = time.perf_counter()
        obs = world.step(a)
        t2 = time.perf_counter()
        if i >= warmup:
            t_eng, t_world = t_eng + t1 - t0, t_world + t2 - t1
    return t_eng / steps, t_world / steps


def row(name, n, t_eng, t_world):
    total = t_eng + t_world
    print(f"{name:<34} {n:>9,} {t_eng * 1e3:>10.1f} {t_world * 1e3:>10.1f} "
          f"{100 * t_world / total:>7.1f}% {n / total:>14,.0f}")


def ideal_free(n: int, steps: int, backend: str, figure=None) -> None:
    """Agents on a 16x16 grid with 4 patches of unequal regrowth: occupancy vs regrowth (and,
    with ``figure``, a PNG of the agents on each patch over time and the two shares)."""
    rates = np.array([0.25, 0.5, 1.0, 2.0])
    world = envs.Foraging(16, patches=[(3, 3), (3, 12), (12, 3), (12, 12)], regrowth=rates,
                          capacity=20, seed=1)
    eng = fa_gpu.Engine(models.foraging(), n, backend=backend, action_selection="stochastic", seed=1)
    obs = world.reset(n)
    occ, intake, food = np.zeros(4), np.zeros(4), np.zeros(4)
    series = np.zeros((steps, 4))
    half = steps // 2
    for t in range(steps):
        a = eng.step(obs)
        at = world.positions.copy()
        obs = world.step(a)
        series[t] = world.occupancy()[world.patch_cells]
        if t >= half:
            occ += world.occupancy()[world.patch_cells]
            ate = obs[:, 2] == 1
            intake += np.bincount(at[ate], minlength=256)[world.patch_cells]
            food += world.food[world.patch_cells]
    k = steps - half
    print(f"\nIdeal free distribution: {n} agents, 16x16 grid, {steps} steps (averages over the last {k})")
    print(f"{'patch':>5} {'regrowth':>9} {'share of regrowth':>18} {'agents on patch':>16} "
          f"{'share of agents on patches':>27} {'intake/step':>12} {'food left':>10}")
    for p in range(4):
        print(f"{p:>5} {rates[p]:>9.2f} {rates[p] / rates.sum():>18.3f} {occ[p] / k:>16.1f} "
              f"{occ[p] / occ.sum():>27.3f} {intake[p] / k:>12.2f} {food[p] / k:>10.1f}")
    print(f"agents on any patch cell: {occ.sum() / k:.1f} of {n} "
          f"({100 * occ.sum() / k / n:.1f}%); total intake {intake.sum() / k:.2f}/step "
          f"of {rates.sum():.2f} regrowing")
    if figure is not None:
        _ideal_free_figure(figure, rates, series, occ, n, steps, half)


def _ideal_free_figure(path, rates, series, occ, n, steps, half) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    w = max(1, steps // 25)
    kernel = np.ones(w) / w
    for p, r in enumerate(rates):
        ax0.plot(np.arange(w, steps + 1), np.convolve(series[:, p], kernel, mode="valid"),
                 label=f"patch {p} (regrowth {r:g}/step)")
    ax0.axvline(half, color="0.6", lw=0.8, ls="--")
    ax0.set(xlabel="step", ylabel=f"agents on the patch cell (mean of {w} steps)",
            title=f"{n:,} foragers, 16x16 grid, 4 patches")
    ax0.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    x = np.arange(len(rates))
    ax1.bar(x - 0.2, rates / rates.sum(), 0.4, label="share of regrowth (ideal free)")
    ax1.bar(x + 0.2, occ / occ.sum(), 0.4, label="share of agents on patches (measured)")
    ax1.set(xticks=x, xticklabels=[f"patch {p}\n{r:g}/step" for p, r in enumerate(rates)],
            ylabel="share", title=f"steps {half + 1}..{steps}: undermatching")
    ax1.legend(loc="upper left", fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--figure", default=None, help="also draw the ideal-free-distribution run "
                                                   "to this PNG")
    args = ap.parse_args()
    big, huge, steps = (5_000, 20_000, 3) if args.quick else (100_000, 1_000_000, 5)
    be = args.backend
    print(f"backend {be}, float32; mean ms per step after 2 warm-up steps")
    print(f"{'world':<34} {'agents':>9} {'engine ms':>10} {'world ms':>10} {'world %':>8} {'agent-steps/s':>14}")

    eng = fa_gpu.Engine(models.foraging(), big, backend=be, action_selection="stochastic")
    row("Foraging 64x64, 8 patches", big, *timed_steps(eng, envs.Foraging(64, 8, 0.5, 10, seed=1), steps))
    eng = fa_gpu.Engine(models.social(), big, backend=be)
    row("SocialNetwork Watts-Strogatz k=10", big,
        *timed_steps(eng, envs.SocialNetwork(envs.watts_strogatz(big, 10, 0.1, seed=1), seed=1), steps))
    t0 = time.perf_counter()
    graph = envs.barabasi_albert(huge, 5, seed=1)
    t_graph = time.perf_counter() - t0
    eng = fa_gpu.Engine(models.social(), huge, backend=be)
    row("SocialNetwork Barabasi-Albert m=5", huge,
        *timed_steps(eng, envs.SocialNetwork(graph, seed=1), max(2, steps // 2)))
    print(f"(building the {huge:,}-node Barabasi-Albert graph, {graph.nnz:,} entries: {t_graph:.1f} s)")

    ideal_free(500 if args.quick else 4000, 100 if args.quick else 600, be, args.figure)


if __name__ == "__main__":
    main()
