"""`fa-gpu simulate --env foraging|social` and `fa-gpu plot` (and `--animate`) for them, end to end
at small N: the store against the world replayed by hand, the printed summary against the store."""
from __future__ import annotations


import numpy as np
import pytest

from fa_gpu import cli, envs, read_store
from fa_gpu.envs.social import consensus_polarization
from fa_gpu.plot import foraging_shares

PNG = b"\x89PNG\r\n\x1a\n"


def _one_line_error(capsys, text):
    err = capsys.readouterr().err
    assert err.startswith("fa-gpu: ") and err.count("\n") == 1 and text in err, err


def _group(path):
    import zarr
    return zarr.open_group(path, mode="r")


def test_foraging_store_replays_and_summary_agrees(tmp_path, capsys):
    from PIL import Image

    run = str(tmp_path / "f.zarr")
    rates = [1.0, 0.5, 2.0]
    assert cli.main(["simulate", "--env", "foraging", "--side", "5", "--patches", "3", "--regrowth",
                     "1,0.5,2", "--capacity", "4", "--agents", "60", "--steps", "9", "--seed", "3",
                     "--backend", "numpy", "--output", run, "--no-progress"]) == 0
    out = capsys.readouterr().out
    store, g = read_store(run), _group(run)
    attrs = store["attrs"]
    assert attrs["env"] == "foraging" and attrs["regrowth"] == rates and attrs["frame_every"] == 1
    actions = store["actions"]
    assert actions.shape == (9, 60, 1) and store["obs"].shape == (9, 60, 3)
    # the world replayed by hand with the recorded actions gives every recorded row
    w = envs.Foraging(5, 3, rates, 4, seed=3)
    assert attrs["patch_cells"] == w.patch_cells.tolist()
    obs = w.reset(60)
    food, occ = [w.food.reshape(5, 5).copy()], [w.occupancy().reshape(5, 5)]
    for t in range(9):
        np.testing.assert_array_equal(store["obs"][t], obs)
        obs = w.step(actions[t])
        np.testing.assert_array_equal(g["patch_food"][t], w.food[w.patch_cells])
        np.testing.assert_array_equal(g["patch_agents"][t], w.occupancy()[w.patch_cells])
        food.append(w.food.reshape(5, 5).copy())  # the world updates food in place
        occ.append(w.occupancy().reshape(5, 5))
    np.testing.assert_array_equal(g["food_grid"][:], food)      # frame 0: after the reset
    np.testing.assert_array_equal(g["occupancy_grid"][:], occ)
    # the summary is the store's
    agents = g["patch_agents"][:]
    (lo, hi), shares = foraging_shares(agents)
    assert (lo, hi) == (5, 9)
    np.testing.assert_allclose(shares, agents[4:].sum(0) / agents[4:].sum())
    pairs = ", ".join(f"{a:.3f}/{r:.3f}" for a, r in zip(shares, np.array(rates) / 3.5))
    assert (f"on patch cells after the last step: {agents[-1].sum() / 60:.1%} of agents; per patch, "
            f"share of agents on patches / share of regrowth (steps 5..9): {pairs}") in out

    assert cli.main(["plot", run, "--animate", str(tmp_path / "f.gif"), "--max-frames", "4"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "f.zarr.png").read_bytes()[:8] == PNG
    with Image.open(tmp_path / "f.gif") as gif:                # 10 frames, every 3rd: 0, 3, 6, 9
        assert gif.n_frames == 4 and gif.size[0] > 100
    assert "(4 frames)" in out


def test_social_store_and_summary_agree(tmp_path, capsys):
    run = str(tmp_path / "s.zarr")
    assert cli.main(["simulate", "--env", "social", "--graph", "ba", "--degree", "4", "--states", "3",
                     "--volatility", "0.2", "--agents", "50", "--steps", "6", "--backend", "numpy",
                     "--output", run, "--no-progress"]) == 0
    out = capsys.readouterr().out
    store, g = read_store(run), _group(run)
    assert store["actions"].shape == (6, 50, 2) and store["attrs"]["hidden_states"] == 3
    posts, beliefs, truth = g["posts"][:], g["beliefs"][:], g["truth"][:]
    assert posts.shape == beliefs.shape == (6, 3) and truth.shape == (6,)
    for t in range(6):  # the posts' figures are those of the recorded actions
        a = store["actions"][t, :, 0]
        np.testing.assert_allclose(posts[t, :2], consensus_polarization(np.eye(3)[a]))
        assert posts[t, 2] == pytest.approx((a == truth[t]).mean())
    assert np.all((beliefs >= 0) & (beliefs <= 1))
    pc, pp, pa = posts[-1]
    bc, bp, _ = beliefs[-1]
    assert (f"after the last step: posts consensus {pc:.3f}, polarization {pp:.3f} (beliefs "
            f"{bc:.3f}, {bp:.3f}); {pa:.1%} post the hidden state") in out
    assert cli.main(["plot", run, "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG
    capsys.readouterr()
    assert cli.main(["plot", run, "--animate", str(tmp_path / "s.gif")]) == 2
    _one_line_error(capsys, "--animate needs a foraging run")
    assert not (tmp_path / "s.gif").exists()


def test_plot_rejects_a_crafted_foraging_store(tmp_path, capsys):
    import zarr

    run = str(tmp_path / "f.zarr")
    assert cli.main(["simulate", "--env", "foraging", "--side", "4", "--patches", "2", "--agents",
                     "20", "--steps", "3", "--backend", "numpy", "--output", run, "--no-progress"]) == 0
    g = zarr.open_group(run, mode="r+")
    g["patch_food"][1, 0] = 99                               # above the capacity
    capsys.readouterr()
    assert cli.main(["plot", run]) == 2
    _one_line_error(capsys, "patch_food holds values outside [0, 21)")


@pytest.mark.parametrize("argv, text", [
    (["--env", "foraging", "--patches", "3", "--regrowth", "1,2"], "--regrowth has 2 rates for --patches 3"),
    (["--env", "foraging", "--capacity", "2", "--regrowth", "1,1,1,3"], "at most --capacity 2, got 3"),
    (["--env", "foraging", "--regrowth", "1,x"], "must be numbers separated by commas"),
    (["--env", "foraging", "--regrowth", "1,-1"], "must be non-negative numbers"),
    (["--env", "foraging", "--side", "2", "--patches", "5"], "--patches 5 exceeds the 4 cells"),
    (["--env", "social", "--degree", "3"], "--degree must be even and below --agents"),
    (["--env", "social", "--agents", "8", "--degree", "8"], "--degree must be even and below --agents 8"),
    (["--env", "social", "--cue-accuracy", "1.5"], "must be a probability in [0, 1], got 1.5"),
    (["--env", "social", "--rewire", "nan"], "must be a probability in [0, 1], got nan"),
    (["--env", "social", "--graph", "er"], "invalid choice: 'er'"),
])
def test_world_option_errors_are_one_line_exit_2(argv, text, capsys, tmp_path):
    out = tmp_path / "r.zarr"
    assert cli.main(["simulate", *argv, "--backend", "numpy", "--steps", "1", "--no-progress",
                     "--output", str(out)]) == 2
    _one_line_error(capsys, text)
    assert not out.exists()


@pytest.mark.parametrize("side, steps", [(2, 0), (16, 100), (64, 10_000), (512, 1000), (4000, 50)])
def test_frame_every_is_the_smallest_interval_under_the_budget(side, steps):
    k = cli.frame_every(side, steps)
    size = lambda k: (steps // k + 1) * 2 * side * side * 4
    assert k >= 1 and (size(k) <= cli._FRAME_BYTES or steps // k == 0)
    assert k == 1 or size(k - 1) > cli._FRAME_BYTES


def test_world_options_show_their_defaults():
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["simulate"]
    text = " ".join(sub.format_help().split())
    for default in ("(default: 5 for grid, 16 for foraging)", "(default: 4)", "(default: 20)",
                    "(default: ws)", "(default: 10)", "(default: 0.1)", "(default: 0.7)",
                    "(default: 2 for grid and tmaze, 1 for foraging and social)"):
        assert default in text, default
    assert "(default: None)" not in text
