"""The fa-gpu command line (fa_gpu.cli, python -m fa_gpu) and the run plot (fa_gpu.plot)."""
from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest

from fa_gpu import cli

PNG = b"\x89PNG\r\n\x1a\n"


def test_info_prints_backends_devices_and_topology(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("backends", "numpy", "numba", "cuda", "NVIDIA", "CPU:", "logical CPUs",
                 "compute threads", "I/O threads"):
        assert word in out, word


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "fa_gpu", "info"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "backends" in done.stdout


def test_simulate_writes_a_store_and_plot_draws_it(tmp_path, capsys):
    import zarr

    from fa_gpu import plot, read_store

    run = str(tmp_path / "run.zarr")
    assert cli.main(["simulate", "--agents", "200", "--steps", "5", "--output", run,
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "backend: " in out and "agent-steps/s" in out and "at the goal" in out
    store = read_store(run)
    assert store["actions"].shape == (5, 200, 1) and store["obs"].shape == (5, 200, 1)
    attrs = store["attrs"]
    assert (attrs["env"], attrs["side"], attrs["goal"], attrs["seed"]) == ("grid", 5, 24, 0)
    assert attrs["backend"] in out and attrs["complete"]
    assert np.all(store["obs"][0] <= 24)
    # the true states after each step; the last row is the share simulate printed
    state = zarr.open_group(run, mode="r")["true_state"][:]
    assert state.shape == (5, 200, 1) and state.dtype == np.int64
    assert f"at the goal after the last step: {(state[-1, :, 0] == 24).mean():.1%}" in out
    # each step's true cell is one move (or none) from the previous one: rows are not shifted
    rows, cols = np.divmod(state[:, :, 0], 5)
    assert np.all(np.abs(np.diff(rows, axis=0)) + np.abs(np.diff(cols, axis=0)) <= 1)

    assert cli.main(["plot", run]) == 0
    assert (tmp_path / "run.zarr.png").read_bytes()[:8] == PNG
    assert cli.main(["plot", run, "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG


def test_simulate_refuses_to_clobber_and_tmaze_plots(tmp_path, capsys):
    run = str(tmp_path / "t.zarr")
    args = ["simulate", "--env", "tmaze", "--agents", "40", "--steps", "3", "--backend", "numpy",
            "--output", run, "--no-progress"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(args) == 2
    _one_line_error(capsys, "already exists; pass --overwrite")
    assert cli.main(args + ["--overwrite"]) == 0
    assert cli.main(["plot", run]) == 0
    assert (tmp_path / "t.zarr.png").read_bytes()[:8] == PNG


def test_plot_rejects_a_foreign_store(tmp_path, capsys):
    from fa_gpu import Recorder

    with Recorder(tmp_path / "x.zarr", 3, num_modalities=1, num_factors=1) as rec:
        rec.record(0, np.zeros((3, 1), int), np.zeros((3, 1), int))
    assert cli.main(["plot", str(tmp_path / "x.zarr")]) == 2
    _one_line_error(capsys, "written by `fa-gpu simulate`")
    assert cli.main(["plot", str(tmp_path / "missing.zarr")]) == 2
    _one_line_error(capsys, "missing.zarr")


def test_bench_without_the_benchmarks_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_REPO_ROOT", tmp_path)       # no benchmarks/ next to the package
    for name in ("benchmarks", "benchmarks.compare"):      # and none importable (nor imported)
        monkeypatch.setitem(sys.modules, name, None)
    assert cli.main(["bench", "--n", "10"]) == 2
    _one_line_error(capsys, "bench is available only in a source checkout")


def test_bench_passes_the_remaining_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("benchmarks.compare")
    fake.main = lambda argv, prog: seen.append((argv, prog)) or {"rows": []}
    monkeypatch.setitem(sys.modules, "benchmarks.compare", fake)
    assert cli.main(["bench", "--n", "10", "--backends", "numpy", "--targets"]) == 0
    assert seen == [(["--n", "10", "--backends", "numpy", "--targets"], "fa-gpu bench")]


def test_bench_help_is_the_comparison_s_own(capsys):
    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fa-gpu bench") and "--targets" in out and "(default:" in out
    assert "benchmarks.compare" not in cli._parser().format_help()


def _one_line_error(capsys, text):
    err = capsys.readouterr().err
    assert err.startswith("fa-gpu: ") and err.count("\n") == 1 and text in err, err


@pytest.mark.parametrize("argv, text", [
    ([], "required: COMMAND"), (["info", "--bogus"], "unrecognized arguments: --bogus"),
    (["moon"], "invalid choice: 'moon'"),
    (["simulate", "--env", "moon"], "simulate: argument --env: invalid choice: 'moon'"),
    (["simulate", "--agents", "0"], "must be an integer >= 1, got 0"),
    (["simulate", "--steps", "x"], "invalid integer value: 'x'"),
    (["simulate", "--backend", "cuda", "--agents", "3", "--steps", "1", "--no-progress"],
     "backend 'cuda' cannot run: "),
])
def test_usage_and_environment_errors_are_one_line_exit_2(argv, text, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FA_GPU_BACKEND", raising=False)
    from fa_gpu.backends import cuda
    if argv[:1] == ["simulate"] and "cuda" in argv and not cuda.unavailable_reason():
        pytest.skip("the cuda backend runs here")
    assert cli.main(argv) == 2
    _one_line_error(capsys, text)


def test_no_gpu_error_names_the_driver_first(capsys, monkeypatch, tmp_path):
    """Through the real command: exit 2, one line, the driver before any package advice."""
    env = {k: v for k, v in __import__("os").environ.items() if k != "FA_GPU_BACKEND"}
    from fa_gpu import devices
    if not devices.driver_reason():
        pytest.skip("an NVIDIA driver answers here")
    done = subprocess.run([sys.executable, "-m", "fa_gpu", "simulate", "--backend", "cuda",
                           "--output", str(tmp_path / "r.zarr")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("fa-gpu: backend 'cuda' cannot run: no NVIDIA driver/GPU found")
    assert done.stderr.count("\n") == 1 and "pip install" not in done.stderr


def test_every_option_has_help_with_its_default():
    parser = cli._parser()
    subs = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"
    text = " ".join(subs.choices["simulate"].format_help().split())
    for default in ("(default: grid)", "(default: auto)", "(default: 0)", "(default: float32)"):
        assert default in text


def test_simulate_overwrite_never_deletes_a_foreign_directory(tmp_path, capsys):
    pytest.importorskip("zarr")
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = ["simulate", "--env", "tmaze", "--agents", "4", "--steps", "1", "--backend", "numpy",
            "--output", str(out), "--no-progress", "--overwrite"]
    assert cli.main(args) == 2
    assert "not a store written by fa_gpu.Recorder" in capsys.readouterr().err
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("world", ["grid", "foraging"])
def test_simulate_resume_continues_a_crashed_run(tmp_path, monkeypatch, world, capsys):
    """A run that dies after a checkpoint, resumed with --resume (same command), writes the store
    of a run never interrupted: every array, row for row."""
    zarr = pytest.importorskip("zarr")
    from fa_gpu import envs

    cls = envs.GridWorldEnv if world == "grid" else envs.Foraging
    common = ["simulate", "--env", world, "--agents", "40", "--steps", "20", "--backend", "numpy",
              "--no-progress", "--checkpoint-every", "6", "--seed", "3"]
    assert cli.main(common + ["--output", str(tmp_path / "whole.zarr")]) == 0
    step, calls = cls.step, []

    def dies_at_step_15(self, actions):
        calls.append(1)
        if len(calls) == 15:
            raise OSError("power cut")
        return step(self, actions)

    monkeypatch.setattr(cls, "step", dies_at_step_15)
    broken = str(tmp_path / "broken.zarr")
    with pytest.raises(OSError, match="power cut"):
        cli.main(common + ["--output", broken])
    monkeypatch.setattr(cls, "step", step)
    assert cli.main(common + ["--output", broken]) == 2  # the store exists: not a new run
    assert "--resume" in capsys.readouterr().err
    assert cli.main(common + ["--output", broken, "--resume", broken + ".ckpt"]) == 0
    out = capsys.readouterr().out
    assert "8 steps x 40 agents" in out  # the steps after the checkpoint of step 12
    a, b = zarr.open_group(tmp_path / "whole.zarr", mode="r"), zarr.open_group(broken, mode="r")
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    assert b.attrs["steps_written"] == 20 and b.attrs["complete"]
    for name in a.array_keys():
        np.testing.assert_array_equal(b[name][:], a[name][:], err_msg=name)
    assert cli.main(common + ["--output", broken, "--resume", broken + ".ckpt", "--agents", "41"]) == 2
    assert "resume with the options of the run" in capsys.readouterr().err


def test_without_ray_shards_and_info_say_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert cli.main(["simulate", "--shards", "2", "--agents", "10", "--steps", "1",
                     "--output", str(tmp_path / "r.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fa-gpu: ") and err.count("\n") == 1 and "pip install 'fa_gpu[distributed]'" in err
    assert not (tmp_path / "r.zarr").exists()
    assert cli.main(["info"]) == 0
    assert "Ray cluster: Ray is not installed (pip install 'fa_gpu[distributed]')" in capsys.readouterr().out
    assert cli.main(["simulate", "--address", "x:1", "--output", str(tmp_path / "r.zarr")]) == 2
    assert "--address needs --shards" in capsys.readouterr().err
