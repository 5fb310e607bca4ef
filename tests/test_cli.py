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
    pytest.importorskip("zarr")
    pytest.importorskip("matplotlib")
    from fa_gpu.runtime.recorder import read_store

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

    assert cli.main(["plot", run]) == 0
    assert (tmp_path / "run.zarr.png").read_bytes()[:8] == PNG
    assert cli.main(["plot", run, "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG


def test_simulate_refuses_to_clobber_and_tmaze_plots(tmp_path, capsys):
    pytest.importorskip("zarr")
    pytest.importorskip("matplotlib")
    run = str(tmp_path / "t.zarr")
    args = ["simulate", "--env", "tmaze", "--agents", "40", "--steps", "3", "--backend", "numpy",
            "--output", run, "--no-progress"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main(args + ["--overwrite"]) == 0
    assert cli.main(["plot", run]) == 0
    assert (tmp_path / "t.zarr.png").read_bytes()[:8] == PNG


def test_plot_rejects_a_foreign_store(tmp_path, capsys):
    pytest.importorskip("zarr")
    from fa_gpu.runtime.recorder import Recorder

    with Recorder(tmp_path / "x.zarr", 3, num_modalities=1, num_factors=1) as rec:
        rec.record(0, np.zeros((3, 1), int), np.zeros((3, 1), int))
    assert cli.main(["plot", str(tmp_path / "x.zarr")]) == 2
    assert "written by `fa-gpu simulate`" in capsys.readouterr().err


def test_bench_without_the_benchmarks_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_REPO_ROOT", tmp_path)       # no benchmarks/ next to the package
    for name in ("benchmarks", "benchmarks.compare"):      # and none importable (nor imported)
        monkeypatch.setitem(sys.modules, name, None)
    assert cli.main(["bench", "--n", "10"]) == 1
    assert "not installed with fa_gpu" in capsys.readouterr().err


def test_bench_passes_the_remaining_arguments(monkeypatch):
    seen = []
    fake = types.ModuleType("benchmarks.compare")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "benchmarks.compare", fake)
    assert cli.main(["bench", "--n", "10", "--backends", "numpy"]) == 3
    assert seen == [["--n", "10", "--backends", "numpy"]]


def test_usage_errors_exit_2():
    for argv in ([], ["info", "--bogus"], ["simulate", "--env", "moon"], ["simulate", "--agents", "0"],
                 ["simulate", "--steps", "x"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2


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
